"""Benchmark: bulk identification on Ray (1 and 2 local workers) next to the plain
identify.py folder path, in the same run, on the same photos, with no crop cache (every
photo is decoded, detected and embedded).

    python benchmarks/bulk_speed.py --model MODEL_DIR PHOTO_FOLDER... | tee benchmarks/results/bulk-speed.txt

MODEL_DIR: any model, e.g. `enroll.py --model MODEL_DIR --backbone sface --name madonna
5-celebrity-faces/train/madonna` (the names do not change the cost).

Reported per path: wall time including start-up (Ray's local cluster, the workers' model
loading), and photos/s after the first result (the steady rate a long run approaches), with
ratios against the plain path. Each Ray run starts its own local cluster with as many CPUs as
workers, so 1 and 2 workers compare like for like.
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path


def plain(model: str, paths: list[str]) -> tuple[float, float]:
    from recognizer.recognizer import Recognizer

    t0 = time.perf_counter()
    with Recognizer.open(model) as rec:  # cache=None: detect every photo
        first = None
        for _ in rec.identify_many(paths):
            first = first or time.perf_counter()
        end = time.perf_counter()
    return end - t0, (len(paths) - 1) / (end - first)


def on_ray(model: str, paths: list[str], workers: int) -> tuple[float, float]:
    import ray

    from recognizer import bulk
    from recognizer.recognizer import Recognizer

    stamps: list[float] = []
    write = bulk._Appender.write

    def timed_write(self, obj):  # when each result reaches the output file
        write(self, obj)
        stamps.append(time.perf_counter())

    bulk._Appender.write = timed_write
    try:
        with tempfile.TemporaryDirectory() as tmp:
            lst = Path(tmp) / "photos.txt"
            lst.write_text("\n".join(paths) + "\n")
            t0 = time.perf_counter()
            with Recognizer.open(model) as rec:  # cache=None: every photo is detected, by the workers too
                rec.identify_bulk([lst], Path(tmp) / "out.jsonl", address="local", workers=workers)
            end = time.perf_counter()
    finally:
        bulk._Appender.write = write
        ray.shutdown()
    return end - t0, (len(paths) - 1) / (stamps[-1] - stamps[0])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True)
    ap.add_argument("inputs", nargs="+")
    args = ap.parse_args()
    from recognizer.bulk import read_inputs

    paths = read_inputs(args.inputs)
    print(f"# {len(paths)} photos; load average at start: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    runs = {"identify.py folder path": plain(args.model, paths)}
    for w in (1, 2):
        runs[f"Ray, {w} worker{'s' * (w > 1)}"] = on_ray(args.model, paths, w)
    ref = runs["identify.py folder path"][1]
    print(f"{'path':<26} {'wall s':>8} {'photos/s':>9}  vs plain")
    for name, (wall, rate) in runs.items():
        print(f"{name:<26} {wall:>8.1f} {rate:>9.2f}  {rate / ref:.2f}x")
    print(f"# load average at end: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()

"""Benchmark: bulk identification on Ray (1 and 2 local workers) next to the plain
identify.py folder path, in the same run, on the same photos, with no crop cache (every
photo is decoded, detected and embedded).

    python benchmarks/bulk_speed.py --model MODEL_DIR PHOTO_FOLDER... | tee benchmarks/results/bulk-speed.txt

MODEL_DIR: any model, e.g. `enroll.py --model MODEL_DIR --backbone sface --name madonna
5-celebrity-faces/train/madonna` (the names do not change the cost).

`--ray local` with no cluster to join analyses in this process (recognizer/bulk.py): its row is
that default; the Ray rows force a local cluster (`local_ray=True`) to show why it is the default.

Reported per path: wall time from the call to the last result, including start-up (opening the
model; for Ray also starting its local cluster and each worker loading the model), the time to
the first result, photos/s over the wall time, and photos/s from the first result to the last
(the rate a long run approaches; the plain path hands out results after each embedding batch,
so its rate is a little flattered), with wall-time ratios against the plain path. Each Ray run
starts its own local cluster with as many CPUs as workers, so 1 and 2 workers compare like for
like; the plain path uses this machine's cores with threads. Last, the time the driver spends
deciding names per photo: the rate one driver cannot exceed however many workers feed it.
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path


def plain(model: str, paths: list[str]) -> tuple[float, float, float]:
    from recognizer.recognizer import Recognizer

    t0 = time.perf_counter()
    stamps = []
    with Recognizer.open(model) as rec:  # cache=None: detect every photo
        for _ in rec.identify_many(paths):
            stamps.append(time.perf_counter())
    return stamps[-1] - t0, stamps[0] - t0, (len(paths) - 1) / (stamps[-1] - stamps[0])


def decide_ms(model: str, paths: list[str]) -> float:
    """Milliseconds per photo the driver spends deciding names (one photo per call, as bulk runs
    do), on photos analysed beforehand."""
    from recognizer.recognizer import Recognizer

    with Recognizer.open(model) as rec:
        results = list(rec.pipeline.analyze_many(paths))
        rec.decide(results[0])  # warm-up
        t0 = time.perf_counter()
        for res in results:
            rec.decide(res)
        return (time.perf_counter() - t0) / len(results) * 1e3


def on_ray(model: str, paths: list[str], workers: int | None, local_ray: bool = True) -> tuple[float, float, float]:
    """identify_bulk with address="local": a local Ray cluster of `workers` CPUs (`local_ray`), or what
    `--ray local` does by default with no cluster to join (analyse in this process)."""
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
                bulk.identify_bulk(rec, [lst], Path(tmp) / "out.jsonl", address="local", workers=workers,
                                   local_ray=local_ray)
    finally:
        bulk._Appender.write = write
        if ray.is_initialized():
            ray.shutdown()
    return stamps[-1] - t0, stamps[0] - t0, (len(paths) - 1) / (stamps[-1] - stamps[0])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True)
    ap.add_argument("inputs", nargs="+")
    args = ap.parse_args()
    from recognizer.bulk import read_inputs

    paths = read_inputs(args.inputs)
    n = len(paths)
    print(f"# {n} photos; load average at start: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    runs = {"identify.py folder path": plain(args.model, paths),
            "--ray local (no cluster)": on_ray(args.model, paths, None, local_ray=False)}
    for w in (1, 2):
        runs[f"Ray, {w} worker{'s' * (w > 1)}"] = on_ray(args.model, paths, w)
    ref = runs["identify.py folder path"][0]
    print(f"{'path':<26} {'wall s':>7} {'first s':>8} {'photos/s':>9} {'after 1st':>10}  wall vs plain")
    for name, (wall, first, rate) in runs.items():
        print(f"{name:<26} {wall:>7.1f} {first:>8.1f} {n / wall:>9.2f} {rate:>10.2f}  {wall / ref:.2f}x")
    print(f"# the driver's share: deciding names takes {decide_ms(args.model, paths):.2f} ms per photo "
          f"(the same photos, one per call)")
    print(f"# load average at end: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()

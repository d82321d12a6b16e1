#!/usr/bin/env python3
"""Load test of serve.py with a finetune in the middle: concurrent clients posting photos to
identify and to enroll while finetune.py switches the served model.

    benchmarks/load_test_finetune.py [--seconds 60] [--clients 8] [--enroll-every 4] [--finetune-at 20]

Builds a temporary sface model (Obama and Biden), starts serve.py on a free 127.0.0.1 port and
runs the clients against it. Every `--enroll-every`th request of a client enrolls a photo under a
new name, so enrolls run concurrently with identifies. It fails (exit 1) on any error response
and when GET /people at the end does not hold every enrolment that was reported done.
With `--finetune-at T`, `finetune.py` (sface, 5-celebrity-faces) starts T seconds in, in its own
process, while the clients go on: the figures are then split into before / during / after the
finetune, and the server must answer 2xx throughout, hold every enrolment reported done (whether
made before, during or after it) and serve the finetuned model's people afterwards without a
restart. Only loopback traffic.
"""
from __future__ import annotations

import random
import sys
import threading
import time
from pathlib import Path

import click

ROOT = Path(__file__).resolve().parent.parent


# Run as a script, this file's folder is on the path: the load test's helpers are shared.
from load_test import Sample, percentile, post, report, served  # noqa: E402


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--seconds", default=60.0, show_default=True, type=click.FloatRange(min=1), help="How long the clients keep sending.")
@click.option("--clients", default=8, show_default=True, type=click.IntRange(min=1), help="Concurrent clients.")
@click.option("--enroll-every", default=4, show_default=True, type=click.IntRange(min=0), help="Every Nth request of a client is an enroll (0: none).")
@click.option("--seed", default=0, show_default=True, help="Random seed for the choice of photos.")
@click.option("--finetune-at", default=None, type=click.FloatRange(min=0), help="Start finetune.py on the served model this many seconds in.")
@click.option("--finetune-epochs", default=5, show_default=True, type=click.IntRange(min=1))
@click.option("--after", default=20.0, show_default=True, type=click.FloatRange(min=0),
              help="With --finetune-at: the clients go on at least this long after the finetune ends.")
def main(seconds: float, clients: int, enroll_every: int, seed: int, finetune_at: float | None, finetune_epochs: int,
         after: float) -> None:
    import httpx

    from recognizer.sample_data import data_dir

    with served(clients, seconds) as (server, model, token, identify_photos, enroll_photos):
        samples: list[Sample] = []
        reported: dict[str, int] = {}
        lock = threading.Lock()
        deadline = time.monotonic() + seconds
        ft: dict = {}

        def going() -> bool:
            if time.monotonic() < deadline:
                return True
            if finetune_at is None:
                return False
            return "end" not in ft or time.monotonic() < ft["end"] + after

        def client(k: int) -> None:
            rng = random.Random(seed * 1000 + k)
            with httpx.Client(base_url=server.url, timeout=300) as http:
                i = 0
                while going():
                    i += 1
                    enroll = enroll_every > 0 and i % enroll_every == 0
                    photo = rng.choice(enroll_photos if enroll else identify_photos)
                    name = f"load-{k}-{i}"
                    sample, added = post(http, photo, name if enroll else None, token)
                    with lock:
                        samples.append(sample)
                        if added is not None:
                            reported[name] = added

        t_start = time.perf_counter()
        threads = [threading.Thread(target=client, args=(k,)) for k in range(clients)]

        def run_finetune() -> None:
            import subprocess

            time.sleep(finetune_at)
            ft["start"] = time.monotonic()
            proc = subprocess.run([sys.executable, str(ROOT / "finetune.py"), str(data_dir() / "5-celebrity-faces"),
                                   "--model", str(model), "--backbone", "sface", "--epochs", str(finetune_epochs),
                                   "--json"], cwd=ROOT, capture_output=True, text=True)
            ft["end"], ft["code"] = time.monotonic(), proc.returncode
            ft["output"] = proc.stdout[-2000:] + proc.stderr[-2000:]

        if finetune_at is not None:
            threads.append(threading.Thread(target=run_finetune))
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        wall = time.perf_counter() - t_start
        found = httpx.get(server.url + "/people", timeout=60).json()["people"]

    if finetune_at is not None:
        print(f"finetune.py: exit {ft['code']}, ran {ft['end'] - ft['start']:.1f} s from {ft['start'] - deadline + seconds:.1f} s in")
        phases = {"before": lambda s: s.at < ft["start"], "during": lambda s: ft["start"] <= s.at <= ft["end"],
                  "after": lambda s: s.at > ft["end"]}
        for phase, within in phases.items():
            part = [s for s in samples if within(s)]
            times = sorted(s.seconds for s in part if s.ok)
            line = f"  {phase:6s} requests {len(part):4d}, errors {sum(not s.ok for s in part)}"
            if times:
                line += f", p50 {1000 * percentile(times, 50):6.0f} ms, p95 {1000 * percentile(times, 95):6.0f} ms"
            print(line)
        celebs = {"ben_afflek", "elton_john", "jerry_seinfeld", "madonna", "mindy_kaling"}
        if ft["code"] != 0 or not celebs <= set(found):
            print(f"the server does not serve the finetuned model (people: {sorted(found)[:8]}...)\n{ft['output']}")
            raise SystemExit(1)
    report(samples, reported, found, wall)


if __name__ == "__main__":
    main()

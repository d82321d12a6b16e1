#!/usr/bin/env python3
"""The long reliability runs that `make test` sizes down.

    .venv/bin/python benchmarks/crash_trials.py                 # defaults below
    .venv/bin/python benchmarks/crash_trials.py --trials 500 --finetune-trials 30 --gallery-trials 300 --race-trials 20

Runs the crash, concurrency, bad-input and name tests with many more trials/examples and prints
each test's summary line (trials run, enrolments reported, lost: must be 0).
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--trials", type=int, default=100, help="enroll.py kills (CRASH_TRIALS; make test: 8)")
    ap.add_argument("--finetune-trials", type=int, default=15, help="finetune.py kills (FINETUNE_CRASH_TRIALS; make test: 3)")
    ap.add_argument("--gallery-trials", type=int, default=200, help="gallery writer kills (GALLERY_CRASH_TRIALS; make test: 30)")
    ap.add_argument("--race-trials", type=int, default=10, help="finetune.py beside enroll.py, either killed (FINETUNE_RACE_TRIALS; make test: 3)")
    ap.add_argument("--kill-window", type=float, default=4.0, help="seconds after start within which a child is killed")
    ap.add_argument("--profile", default="long", help="hypothesis profile (long: 500 examples per test)")
    args = ap.parse_args()
    env = dict(os.environ, CRASH_TRIALS=str(args.trials), FINETUNE_CRASH_TRIALS=str(args.finetune_trials),
               GALLERY_CRASH_TRIALS=str(args.gallery_trials), FINETUNE_RACE_TRIALS=str(args.race_trials),
               CRASH_KILL_WINDOW_S=str(args.kill_window),
               HYPOTHESIS_PROFILE=args.profile)
    tests = ["tests/test_reliability_crash.py", "tests/test_reliability_concurrency.py", "tests/test_reliability_finetune.py",
             "tests/test_gallery_crash.py",
             "tests/test_bad_input.py", "tests/test_reliability_names.py"]
    cmd = [sys.executable, "-m", "pytest", "-q", "-s", "-p", "no:cacheprovider", *tests]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    keys = ("crash trials", "concurrency:", "bad input:", "names:", "passed", "failed", "Error")
    for line in proc.stdout.splitlines():
        if any(k in line for k in keys) and not line.startswith("trial "):
            print(line)
    if proc.returncode:
        print(proc.stdout[-5000:], proc.stderr[-2000:], sep="\n")
    return proc.returncode


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""SIGKILL a Milvus Lite gallery writer at a random moment, reopen, and check every read path.

    .venv/bin/python benchmarks/milvus_lite_kill.py --trials 40            # Milvus Lite
    .venv/bin/python benchmarks/milvus_lite_kill.py --trials 40 --backend faiss

Runs the writer tests/test_gallery_crash.py runs (tests/crash_workload.py: add, add, rename, remove a face,
move a face, remove, ...), kills it after a random 0-3 s, reopens the gallery through the project's API and
checks that count (len), field queries (records, people), vector reads (vectors) and vector
search agree, that no removed person's face comes back from any of them, and that the gallery is
before or after the change in flight. Prints one line per failing trial and the failure count.
"""
from __future__ import annotations

import argparse
import importlib.util
import random
import signal
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from gallery import create_gallery, open_gallery

ROOT = Path(__file__).resolve().parent.parent
# The workload lives with the tests; loaded by its path, so no folder is put on sys.path.
_spec = importlib.util.spec_from_file_location("crash_workload", ROOT / "tests" / "crash_workload.py")
_workload = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_workload)
BATCH, DIM, MODEL, expected_states, matches, op_for, vectors_for, writer_command = (
    _workload.BATCH, _workload.DIM, _workload.MODEL, _workload.expected_states, _workload.matches,
    _workload.op_for, _workload.vectors_for, _workload.writer_command)


def check(path: str, done: int) -> list[str]:
    """What is wrong with the reopened gallery after `done` completed changes ([] = nothing)."""
    states = expected_states(done + 1)
    g = open_gallery(path, MODEL)
    try:
        n = len(g)
        ids, vecs = g.vectors()
        rec_list = g.records()
        people = g.people()
        seeds = sorted({op_for(i)[2] for i in range(done + 1) if op_for(i)[0] == "add"})
        hits = g.search(np.concatenate([vectors_for(s) for s in seeds]),
                        min(max(n, len({r.id for r in rec_list}), 1) + BATCH, 16384), model_id=MODEL) if seeds else []
    finally:
        g.close()
    recs = {r.id: r.person for r in rec_list}
    bad = _read_paths_disagree(n, ids, rec_list, recs, people, hits)
    allowed = set(states[done]) | set(states[done + 1])
    removed = sorted((set(recs) | set(ids.tolist()) | set(h.id for row in hits for h in row)) - allowed)
    if removed:
        bad.append(f"removed faces visible: {removed}")
    actual = {int(i): (recs.get(int(i), "?"), v) for i, v in zip(ids, vecs)}
    if not (matches(actual, states[done]) or matches(actual, states[done + 1])):
        bad.append(f"neither before nor after change {done} ({op_for(done)})")
    return bad


def _read_paths_disagree(n: int, ids: np.ndarray, rec_list: list, recs: dict[int, str], people: dict[str, int],
                         hits: list) -> list[str]:
    """Where count (len), field queries (records, people), vector reads and search disagree."""
    bad = []
    if len(rec_list) != len(recs) or len(set(ids.tolist())) != len(ids):
        seen: dict[int, list[str]] = {}
        for r in rec_list:
            seen.setdefault(r.id, []).append(r.person)
        bad.append(f"one id, several rows: {sorted((i, p) for i, p in seen.items() if len(p) > 1)}")
    if sorted(recs) != sorted(set(ids.tolist())):
        bad.append(f"vectors() ids not in records(): {sorted(set(ids.tolist()) - set(recs))}, "
                   f"records() ids not in vectors(): {sorted(set(recs) - set(ids.tolist()))}")
    if n != len(recs):
        bad.append(f"len() {n} != {len(recs)} records")
    if sum(people.values()) != len(recs):
        bad.append(f"people() counts {sum(people.values())} faces, records() {len(recs)}")
    stray = sorted({h.id for row in hits for h in row} - set(recs))
    if stray:
        bad.append(f"search returned ids records() does not know: {stray}")
    return bad


def trial(backend: str, t: int, window: float) -> tuple[int, int, list[str], str]:
    rnd = random.Random(t)
    with tempfile.TemporaryDirectory(prefix="mlkill-") as tmp:
        path = f"milvus-lite:{tmp}/g.db" if backend == "milvus-lite" else f"{tmp}/g"
        log = Path(tmp) / "log"
        create_gallery(path, MODEL, DIM).close()
        child = subprocess.Popen(writer_command(path, log), cwd=ROOT, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 60
        while not (log.exists() and log.read_text().startswith("ready")):
            if child.poll() is not None or time.monotonic() > deadline:
                child.kill()
                return t, -1, ["writer did not start"], ""
            time.sleep(0.005)
        time.sleep(rnd.uniform(0.0, window))
        child.send_signal(signal.SIGKILL)
        child.wait()
        done = len(log.read_text().splitlines()) - 1
        try:
            bad = check(path, done)
        except Exception as e:  # a gallery that refuses to open is reported, not a crash of the run
            bad = [f"reopen failed: {type(e).__name__}: {e}"]
        return t, done, bad, op_for(done)[0]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--trials", type=int, default=40)
    ap.add_argument("--backend", default="milvus-lite", choices=["milvus-lite", "faiss"])
    ap.add_argument("--window", type=float, default=3.0, help="kill within this many seconds of the writer's start")
    ap.add_argument("--jobs", type=int, default=2, help="trials run at once")
    ap.add_argument("--first", type=int, default=0, help="seed of the first trial")
    args = ap.parse_args()
    failed = 0
    with ThreadPoolExecutor(args.jobs) as ex:
        for t, done, bad, op in ex.map(lambda t: trial(args.backend, t, args.window),
                                       range(args.first, args.first + args.trials)):
            if bad:
                failed += 1
                print(f"trial {t}: killed after {done} changes (in flight: {op}): " + "; ".join(bad), flush=True)
    print(f"{args.backend}: {failed} of {args.trials} trials inconsistent after SIGKILL + reopen")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

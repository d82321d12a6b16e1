"""A deterministic gallery writer workload, for checking what a SIGKILL leaves.

The writer (this file run as a script: `writer_command`) applies change after change (add p0,
add p1, rename p1 to q1, remove one face of q1, move one to p0, remove p0, ...) and logs each one after it returned; `expected_states`
says what the gallery holds after any number of completed changes, and `matches` compares a
reopened gallery with one of them. Shared by tests/test_gallery_crash.py and
benchmarks/milvus_lite_kill.py (which loads it by its path).
"""
from __future__ import annotations

import sys

import numpy as np

from gallery import FaceRecord, open_gallery

__all__ = ["BATCH", "DIM", "MODEL", "expected_states", "matches", "op_for", "vectors_for", "writer_command"]

MODEL = "crash-model"
DIM = 16
BATCH = 5


def op_for(i: int) -> tuple:
    """The i-th change of the writer: add p{4m}, add p{4m+1}, rename p{4m+1}, remove the lowest id of
    q{4m+1}, move its next lowest to p{4m}, remove p{4m}."""
    m, r = divmod(i, 6)
    a = 4 * m
    if r in (0, 1):
        return ("add", f"p{a + r}", i)
    if r == 2:
        return ("rename", f"p{a + 1}", f"q{a + 1}")
    if r == 3:
        return ("remove face", f"q{a + 1}")
    if r == 4:
        return ("move face", f"q{a + 1}", f"p{a}")
    return ("remove", f"p{a}")


def vectors_for(seed: int) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((BATCH, DIM)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def expected_states(n_ops: int) -> list[dict[int, tuple[str, int]]]:
    """states[c] = {id: (person, seed)} after the first c changes."""
    state: dict[int, tuple[str, int]] = {}
    states, next_id = [dict(state)], 0
    for i in range(n_ops):
        op = op_for(i)
        if op[0] == "add":
            for j in range(BATCH):
                state[next_id + j] = (op[1], op[2])
            next_id += BATCH
        elif op[0] == "rename":
            state = {k: (op[2] if p == op[1] else p, s) for k, (p, s) in state.items()}
        elif op[0] == "remove face":
            del state[min(k for k, (p, _) in state.items() if p == op[1])]
        elif op[0] == "move face":
            k = min(k for k, (p, _) in state.items() if p == op[1])
            state[k] = (op[2], state[k][1])
        else:
            state = {k: v for k, v in state.items() if v[0] != op[1]}
        states.append(dict(state))
    return states


def writer_command(path: str, log: str) -> list[str]:
    """The command that runs the writer on gallery `path`, logging to `log`."""
    return [sys.executable, __file__, str(path), str(log)]


def _write(path: str, log_path: str) -> None:
    g = open_gallery(path, MODEL)
    log = open(log_path, "a")
    log.write("ready\n"); log.flush()
    for i in range(10**6):
        op = op_for(i)
        if op[0] == "add":
            g.add(vectors_for(op[2]), [FaceRecord(op[1], f"{op[2]}-{j}.jpg", f"h{op[2]}-{j}", (0, 0, 1, 1))
                                       for j in range(BATCH)], model_id=MODEL)
        elif op[0] == "rename":
            g.rename_person(op[1], op[2])
        elif op[0] == "remove face":
            g.remove_faces([min(r.id for r in g.records(op[1]))])
        elif op[0] == "move face":
            g.move_faces([min(r.id for r in g.records(op[1]))], op[2])
        else:
            g.remove_person(op[1])
        log.write(f"{i}\n"); log.flush()  # written only after the change returned


def matches(actual: dict[int, tuple[str, np.ndarray]], want: dict[int, tuple[str, int]], by_id: bool = True) -> bool:
    """Whether the gallery read (`actual`) is state `want`: the same faces under the same ids, or with
    by_id=False (a Milvus server, whose ids come from the faces) the same faces whatever their ids."""
    if by_id:
        if sorted(actual) != sorted(want) or any(actual[i][0] != want[i][0] for i in want):
            return False
        return all(np.allclose(actual[i][1], vectors_for(s)[i % BATCH], atol=1e-6) for i, (_, s) in want.items())
    left = list(actual.values())
    if len(left) != len(want):
        return False
    for i, (person, s) in want.items():
        v = vectors_for(s)[i % BATCH]
        j = next((j for j, (p, a) in enumerate(left) if p == person and np.allclose(a, v, atol=1e-6)), None)
        if j is None:
            return False
        left.pop(j)
    return True


if __name__ == "__main__":
    _write(*sys.argv[1:3])

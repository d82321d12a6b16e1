"""The approximate ("pq") index at small scale: recall against exact search, removal,
privacy of removed faces, incremental growth, reload across processes."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import faiss
import numpy as np
import pytest

from gallery import FaceRecord, create_gallery, open_gallery

ROOT = Path(__file__).resolve().parents[1]
MODEL = "test-model"
DIM = 128
N = 3000


def unit(rng: np.random.Generator, n: int, dim: int = DIM) -> np.ndarray:
    x = rng.standard_normal((n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def near(rng: np.random.Generator, x: np.ndarray, src: np.ndarray, cos: float) -> np.ndarray:
    q = x[src] + rng.normal(0, np.sqrt((1 / cos**2 - 1) / x.shape[1]), (len(src), x.shape[1])).astype(np.float32)
    return q / np.linalg.norm(q, axis=1, keepdims=True)


def recs(people: list[str]) -> list[FaceRecord]:
    return [FaceRecord(p, f"/photos/{p}/{i}.jpg", f"hash-{p}-{i}", (1.0, 2.0, 30.0, 40.0))
            for i, p in enumerate(people)]


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, list[str]]:
    # 5 faces per person, and person i's faces are near each other (cos ~0.7), as real ones are
    centres = unit(np.random.default_rng(12), N // 5)
    noise = unit(np.random.default_rng(13), N)
    x = np.repeat(centres, 5, axis=0) * 0.7 + noise * np.sqrt(1 - 0.49)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x.astype(np.float32), [f"p{i // 5}" for i in range(N)]


def make(tmp_path: Path, x: np.ndarray, people: list[str]):
    g = create_gallery(tmp_path / "g", MODEL, DIM, approx_threshold=2000)
    g.add(x[:1000], recs(people[:1000]), model_id=MODEL)
    g.add(x[1000:], recs(people[1000:]), model_id=MODEL)
    assert g.index_kind == "pq"
    return g


def test_recall_against_exact(tmp_path: Path, data) -> None:
    x, people = data
    g = make(tmp_path, x, people)
    rng = np.random.default_rng(5)
    for cos, want in ((0.8, 0.99), (0.6, 0.95)):
        q = near(rng, x, rng.integers(0, N, 400), cos)
        exact = np.argsort(-(q @ x.T), axis=1)[:, :5]
        hits = g.search(q, 5, model_id=MODEL)
        assert np.mean([h[0].id == e[0] for h, e in zip(hits, exact)]) >= want
        # similarities are exact (re-ranked from the float vectors), not estimates
        for qq, h in zip(q[:20], hits[:20]):
            np.testing.assert_allclose([t.similarity for t in h], [float(x[t.id] @ qq) for t in h], atol=1e-5)
    exact_g = open_gallery(g.path, MODEL, k_factor=10**6)  # re-ranking every face: exact search
    q = unit(rng, 50)
    assert [[t.id for t in h] for h in exact_g.search(q, 5, model_id=MODEL)] == \
        np.argsort(-(q @ x.T), axis=1)[:, :5].tolist()


def test_growth_is_incremental_and_ids_stable(tmp_path: Path, data) -> None:
    x, people = data
    g = make(tmp_path, x, people)
    before = g._index  # type: ignore[attr-defined]
    extra = unit(np.random.default_rng(6), 10)
    ids = g.add(extra, recs(["late"] * 10), model_id=MODEL)
    assert g._index is before and ids == list(range(N, N + 10))  # type: ignore[attr-defined]
    hits = g.search(extra, 1, model_id=MODEL)
    assert [h[0].id for h in hits] == ids and all(h[0].person == "late" for h in hits)


def test_removal_filters_results_and_leaves_no_bytes(tmp_path: Path, data) -> None:
    x, people = data
    g = make(tmp_path, x, people)
    victims = ("p7", "p300", "p599")  # p599's codes were in the last block: its padding must not keep them
    victim_ids = [i for i, p in enumerate(people) if p in victims]
    _, stored = g.vectors()
    assert [g.remove_person(v) for v in victims] == [5, 5, 5]
    assert len(g) == N - 15 and g.index_kind == "pq"
    # the removed faces are never returned, even for queries equal to their vectors
    hits = g.search(stored[victim_ids], 10, model_id=MODEL)
    assert all(h.person not in victims for hs in hits for h in hs)
    live = np.setdiff1d(np.arange(N), victim_ids)
    assert [h[0].id for h in hits] == live[np.argmax(stored[victim_ids] @ stored[live].T, axis=1)].tolist()
    # their vectors are in no file ...
    blobs = [f.read_bytes() for f in g.path.rglob("*") if f.is_file()]
    assert any(stored[0].tobytes() in b for b in blobs)  # the check can see vectors that are there
    for v in stored[victim_ids]:
        assert not any(v.tobytes() in b for b in blobs)
    # ... and index.faiss holds exactly the codes of the faces left, in order
    on_disk = faiss.read_index(str(g.path / "index.faiss"))
    refine = faiss.downcast_index(on_disk.index)
    pq = faiss.downcast_index(refine.base_index)
    fresh = faiss.clone_index(pq)
    fresh.reset()
    fresh.add(stored[live])
    assert pq.ntotal == len(live) and faiss.downcast_index(refine.refine_index).ntotal == len(live)
    np.testing.assert_array_equal(faiss.vector_to_array(pq.codes), faiss.vector_to_array(fresh.codes))
    np.testing.assert_array_equal(faiss.vector_to_array(on_disk.id_map), live)
    # and the reloaded index agrees with the in-memory one
    g2 = open_gallery(g.path, MODEL)
    q = near(np.random.default_rng(8), x, live[:100], 0.8)
    assert [[t.id for t in h] for h in g2.search(q, 5, model_id=MODEL)] == \
        [[t.id for t in h] for h in g.search(q, 5, model_id=MODEL)]


def test_reload_and_changes_across_processes(tmp_path: Path, data) -> None:
    x, people = data
    g = make(tmp_path, x, people)
    q = near(np.random.default_rng(9), x, np.arange(0, N, 100), 0.7)
    np.save(tmp_path / "q.npy", q)
    mine = [[t.id for t in h] for h in g.search(q, 5, model_id=MODEL)]
    code = (f"import json, numpy as np; from gallery import open_gallery\n"
            f"g = open_gallery({str(tmp_path / 'g')!r}, {MODEL!r})\n"
            f"q = np.load({str(tmp_path / 'q.npy')!r})\n"
            f"print(json.dumps([g.index_kind, [[t.id for t in h] for h in g.search(q, 5, model_id={MODEL!r})]]))\n"
            f"g.remove_person('p0')\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120,
                         check=False)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == ["pq", mine]
    # the other process removed p0: this one sees it at its next read
    assert "p0" not in g.people() and len(g) == N - 5
    assert all(h.person != "p0" for hs in g.search(x[:5], 5, model_id=MODEL) for h in hs)


def test_shrinking_falls_back_to_exact(tmp_path: Path, data) -> None:
    x, people = data
    g = make(tmp_path, x, people)
    for i in range(420):  # 3000 - 420*5 = 900 <= threshold // 2
        g.remove_person(f"p{i}")
    assert len(g) == 900 and g.index_kind == "flat"
    q = unit(np.random.default_rng(10), 10)
    assert [h[0].id for h in g.search(q, 1, model_id=MODEL)] == \
        (2100 + np.argmax(q @ x[2100:].T, axis=1)).tolist()

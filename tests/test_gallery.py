"""Gallery behaviour: correctness against numpy, persistence across processes, damage, privacy.

Tests taking `spec` are the contract every backend passes: they run against the FAISS + SQLite
directory and against Milvus Lite (tests/test_gallery_crash.py holds the kill and concurrency
parts). The others test what only the FAISS directory has (its files, its approximate index).
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from facecore.names import validate_name
from gallery import FaceRecord, Gallery, create_gallery, open_gallery
from gallery_backends import BACKENDS, gallery_spec
from gallery.base import Hit, vote
from facecore.errors import FaceConflict, FaceNotFound, GalleryError, InvalidNameError

ROOT = Path(__file__).resolve().parents[1]
MODEL = "test-model"
DIM = 32


def unit(rng: np.random.Generator, n: int, dim: int = DIM) -> np.ndarray:
    x = rng.standard_normal((n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def recs(people: list[str], tag: str = "") -> list[FaceRecord]:
    return [FaceRecord(p, f"/photos/{p}/{tag}{i}.jpg", f"hash-{p}-{tag}{i}", (1.0, 2.0, 30.0, 40.0))
            for i, p in enumerate(people)]


def positions(g: Gallery) -> dict[int, int]:
    """id -> which of `recs`' faces it is: backends choose ids their own way (FAISS and Milvus Lite
    count, a Milvus server derives them from the person and photo)."""
    return {r.id: int(Path(r.source).stem) for r in g.records()}


def run_py(code: str) -> str:
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return out.stdout


@pytest.fixture(params=BACKENDS)
def spec(request: pytest.FixtureRequest, tmp_path: Path) -> str | Path:
    return gallery_spec(request.param, tmp_path)


@pytest.fixture
def filled(spec: str | Path) -> Iterator[tuple[Gallery, np.ndarray, list[str]]]:
    rng = np.random.default_rng(0)
    people = [f"person{i % 7}" for i in range(60)]
    x = unit(rng, 60)
    g = create_gallery(spec, MODEL, DIM)
    g.add(x, recs(people), model_id=MODEL)
    yield g, x, people
    g.close()


@pytest.fixture
def faiss_filled(tmp_path: Path) -> Iterator[tuple[Gallery, np.ndarray, list[str]]]:
    rng = np.random.default_rng(0)
    people = [f"person{i % 7}" for i in range(60)]
    x = unit(rng, 60)
    g = create_gallery(tmp_path / "g", MODEL, DIM)
    g.add(x, recs(people), model_id=MODEL)
    yield g, x, people
    g.close()


def test_search_and_vote_match_numpy(filled: tuple[Gallery, np.ndarray, list[str]]) -> None:
    g, x, people = filled
    q = unit(np.random.default_rng(1), 20)
    k = 5
    sims = q @ x.T
    idx = positions(g)
    hits = g.search(q, k, model_id=MODEL)
    votes = g.knn_vote(q, k, model_id=MODEL)
    for row, qh, v in zip(sims, hits, votes):
        order = np.argsort(-row)[:k]
        assert [idx[h.id] for h in qh] == order.tolist()
        np.testing.assert_allclose([h.similarity for h in qh], row[order], atol=1e-5)
        assert all(h.person == people[idx[h.id]] for h in qh)
        w: dict[str, float] = {}
        best: dict[str, float] = {}
        for i in order:
            w[people[i]] = w.get(people[i], 0.0) + max(row[i], 0.0)
            best[people[i]] = max(best.get(people[i], -1.0), row[i])
        total = sum(w.values())
        assert v.scores.keys() == w.keys()
        for p in w:
            assert v.scores[p] == pytest.approx(w[p] / total, abs=1e-5)
            assert v.similarity[p] == pytest.approx(best[p], abs=1e-5)
        assert sum(v.scores.values()) == pytest.approx(1.0)
        assert v.best()[0] == max(w, key=w.get)


def test_vectors_are_normalised_and_k_larger_than_gallery(spec: str | Path) -> None:
    g = create_gallery(spec, MODEL, DIM)
    assert g.search(unit(np.random.default_rng(0), 1), 3, model_id=MODEL) == [[]]
    assert g.knn_vote(unit(np.random.default_rng(0), 1), 3, model_id=MODEL)[0].best() == (None, 0.0, 0.0)
    x = unit(np.random.default_rng(2), 3)
    ids = g.add(x * 7.0, recs(["a", "b", "c"]), model_id=MODEL)
    hits = g.search(x[:1] * 0.1, 50, model_id=MODEL)[0]
    assert len(hits) == 3 and hits[0].id == ids[0] and hits[0].similarity == pytest.approx(1.0, abs=1e-5)
    _, stored = g.vectors()
    np.testing.assert_allclose(np.linalg.norm(stored, axis=1), 1.0, atol=1e-6)
    assert g.search(np.empty((0, DIM), np.float32), 5, model_id=MODEL) == []
    assert g.knn_vote(np.empty((0, DIM), np.float32), 5, model_id=MODEL) == []


def test_vote_ignores_negative_similarity() -> None:
    v = vote([Hit(1, "a", 0.6, "s"), Hit(2, "b", -0.5, "s"), Hit(3, "a", 0.2, "s")])
    assert v.scores == {"a": 1.0, "b": 0.0} and v.similarity == {"a": 0.6, "b": -0.5}
    assert vote([Hit(1, "a", -0.1, "s")]).best() == (None, 0.0, 0.0)
    assert v.to_dict()["neighbours"][0] == {"id": 1, "person": "a", "similarity": 0.6, "source": "s"}


def test_bad_vectors_rejected(filled: tuple[Gallery, np.ndarray, list[str]]) -> None:
    g, x, _ = filled
    with pytest.raises(GalleryError, match=r"dimension|shape"):
        g.add(np.ones((1, DIM + 1), np.float32), recs(["a"]), model_id=MODEL)
    bad = x[:2].copy()
    bad[1, 3] = np.nan
    with pytest.raises(GalleryError, match="NaN or infinite.*\\[1\\]"):
        g.add(bad, recs(["a", "b"]), model_id=MODEL)
    with pytest.raises(GalleryError, match="zero vector"):
        g.search(np.zeros((1, DIM), np.float32), model_id=MODEL)
    with pytest.raises(GalleryError, match="2 records|1 records"):
        g.add(x[:2], recs(["a"]), model_id=MODEL)
    with pytest.raises(InvalidNameError):
        g.add(x[:1], recs(["../etc"]), model_id=MODEL)
    assert len(g) == 60


def test_model_id_mismatch_names_dir_and_models(filled: tuple[Gallery, np.ndarray, list[str]]) -> None:
    g, x, _ = filled
    for call in (lambda: g.add(x[:1], recs(["a"]), model_id="other"),
                 lambda: g.search(x[:1], model_id="other"),
                 lambda: g.knn_vote(x[:1], model_id="other"),
                 lambda: open_gallery(g.path, model_id="other")):
        with pytest.raises(GalleryError) as e:
            call()
        assert str(g.path) in str(e.value) and "'other'" in str(e.value) and repr(MODEL) in str(e.value)


def test_create_and_open_errors(spec: str | Path, tmp_path: Path) -> None:
    create_gallery(spec, MODEL, DIM).close()
    with pytest.raises(GalleryError, match="already exists"):
        create_gallery(spec, MODEL, DIM)
    missing = str(spec).replace("g", "missing")
    with pytest.raises(GalleryError, match=re.escape(missing)):
        open_gallery(missing if isinstance(spec, str) else Path(missing))
    for f in tmp_path.rglob("*"):  # whatever the backend wrote is private, or inside a private directory
        private = [p for p in (f, *f.parents) if p != tmp_path and tmp_path in p.parents
                   and p.stat().st_mode & 0o077 == 0]
        assert private, (f, oct(f.stat().st_mode))


def test_faiss_directory_is_private(tmp_path: Path) -> None:
    create_gallery(tmp_path / "g", MODEL, DIM)
    assert oct(os.stat(tmp_path / "g").st_mode & 0o777) == "0o700"
    for f in (tmp_path / "g").iterdir():
        assert f.stat().st_mode & 0o077 == 0, f


def test_ids_stable_across_processes(filled: tuple[Gallery, np.ndarray, list[str]], tmp_path: Path) -> None:
    g, x, people = filled
    idx = positions(g)
    g.remove_person("person3")
    new_ids = g.add(unit(np.random.default_rng(5), 2), recs(["late", "late"]), model_id=MODEL)
    assert len(set(new_ids)) == 2 and not set(new_ids) & set(idx)  # ids are never reused after a removal
    if min(idx) == 0:  # the backends that count
        assert new_ids == [60, 61]
    out = run_py(f"""
import json, numpy as np
from gallery import open_gallery
g = open_gallery({str(g.path)!r}, {MODEL!r})
ids, v = g.vectors()
np.save({str(tmp_path / 'v.npy')!r}, v)
print(json.dumps({{"ids": ids.tolist(), "people": g.people(),
                   "rec": [r.to_dict() for r in g.records('late')]}}))
""")
    got = json.loads(out)
    kept = sorted(i for i, n in idx.items() if people[n] != "person3")
    assert got["ids"] == sorted(kept + new_ids)
    v = np.load(tmp_path / "v.npy", allow_pickle=False)
    rows = [j for j, i in enumerate(got["ids"]) if i in idx]
    np.testing.assert_allclose(v[rows], x[[idx[i] for i in kept]], atol=1e-6)
    assert got["people"] == g.people() and "person3" not in got["people"]
    assert [r["id"] for r in got["rec"]] == new_ids and got["rec"][0]["box"] == [1.0, 2.0, 30.0, 40.0]


def test_remove_rename_persist_and_refresh(filled: tuple[Gallery, np.ndarray, list[str]]) -> None:
    g, x, _ = filled
    run_py(f"""
from gallery import open_gallery
g = open_gallery({str(g.path)!r})
assert g.remove_person('person1') == 9
g.rename_person('person2', 'José María')
""")
    assert "person1" not in g.people()  # reads refresh to the other process's generation
    assert g.people()["José María"] == 9
    assert all(h.person != "person1" for hs in g.search(x, 10, model_id=MODEL) for h in hs)
    with pytest.raises(GalleryError, match="'nobody'"):
        g.remove_person("nobody")
    with pytest.raises(GalleryError, match="'nobody'"):
        g.rename_person("nobody", "x")
    with pytest.raises(GalleryError, match="already exists"):
        g.rename_person("person0", "person4")
    g.rename_person("person0", "person4", merge=True)
    assert g.people()["person4"] == 9 + 8 and "person0" not in g.people()
    assert open_gallery(g.path).people() == g.people()


def test_has_content_and_records(filled: tuple[Gallery, np.ndarray, list[str]]) -> None:
    g, _, _ = filled
    assert g.has_content("person0", "hash-person0-0")
    assert not g.has_content("person1", "hash-person0-0")
    rs = g.records("person0")
    idx = positions(g)
    assert sorted(idx[r.id] for r in rs) == list(range(0, 60, 7)) and all(r.person == "person0" for r in rs)
    assert [r.id for r in rs] == sorted(r.id for r in rs)
    assert len(g.records()) == 60 and g.records("nobody") == []
    assert list(g.people()) == sorted(g.people())


def test_chip_references_on_add_and_set_chips(filled: tuple[Gallery, np.ndarray, list[str]], spec: str | Path) -> None:
    """Each face names its chip (the sha256 of the chip file the model directory keeps): given on
    add, recorded later for faces without one (set_chips), kept through a rename and on reopening."""
    g, _, _ = filled
    assert {r.chip for r in g.records()} == {""}
    chips = {r.id: hashlib.sha256(str(r.id).encode()).hexdigest() for r in g.records("person0")}
    g.set_chips(chips)
    g.set_chips(chips)  # idempotent: a backfill stopped half way is simply run again
    first = min(chips)
    with pytest.raises(GalleryError, match="10000"):  # unknown ids: nothing is changed
        g.set_chips({first: "f" * 64, 10_000: "e" * 64})
    new = FaceRecord("person8", "/photos/new.jpg", "hash-new", (1.0, 2.0, 3.0, 4.0), chip="a" * 64)
    [new_id] = g.add(unit(np.random.default_rng(1), 1), [new], model_id=MODEL)
    g.rename_person("person0", "person9")
    with open_gallery(spec, model_id=MODEL) as again:
        got = {r.id: (r.person, r.chip) for r in again.records()}
    assert {i: got[i] for i in chips} == {i: ("person9", c) for i, c in chips.items()}
    assert got[new_id] == ("person8", "a" * 64)
    assert sum(bool(c) for _, c in got.values()) == len(chips) + 1


@pytest.mark.parametrize("victim", ["index.faiss", "meta.sqlite", "meta.json"])
def test_damaged_files_are_reported(faiss_filled: tuple[Gallery, np.ndarray, list[str]], victim: str) -> None:
    g, _, _ = faiss_filled
    g.close()
    f = g.path / victim
    f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])
    with pytest.raises(GalleryError) as e:
        open_gallery(g.path)
    assert str(g.path) in str(e.value) and victim in str(e.value)


def test_meta_json_must_belong_to_sqlite(faiss_filled: tuple[Gallery, np.ndarray, list[str]]) -> None:
    g, _, _ = faiss_filled
    meta = json.loads((g.path / "meta.json").read_text())
    (g.path / "meta.json").write_text(json.dumps({**meta, "model_id": "other"}))
    with pytest.raises(GalleryError, match="does not belong"):
        open_gallery(g.path)


def test_interrupted_save_is_rebuilt(faiss_filled: tuple[Gallery, np.ndarray, list[str]], caplog) -> None:
    g, x, _ = faiss_filled
    # Simulate a crash after the SQLite commit: meta.json and index.faiss of the previous generation.
    old_meta, old_index = (g.path / "meta.json").read_bytes(), (g.path / "index.faiss").read_bytes()
    g.remove_person("person5")
    (g.path / "meta.json").write_bytes(old_meta)
    (g.path / "index.faiss").write_bytes(old_index)
    g2 = open_gallery(g.path)
    assert "rebuilding the index" in caplog.text
    assert "person5" not in g2.people() and len(g2) == 60 - 8
    assert json.loads((g.path / "meta.json").read_text())["generation"] == g2.generation


def test_removed_vectors_leave_no_bytes_on_disk(tmp_path: Path) -> None:
    g = create_gallery(tmp_path / "g", MODEL, DIM)
    x = unit(np.random.default_rng(9), 40)
    g.add(x, recs(["keep"] * 20 + ["gone"] * 20), model_id=MODEL)
    g.rename_person("keep", "kept")  # rename rewrites no vectors
    _, x = g.vectors()  # exactly the bytes stored (after the gallery's own normalisation)
    assert g.remove_person("gone") == 20
    blobs = [f.read_bytes() for f in g.path.rglob("*") if f.is_file()]
    assert any(x[0].tobytes() in b for b in blobs)  # the check can see vectors that are there
    for v in x[20:]:
        assert not any(v.tobytes() in b for b in blobs)
    assert sorted(p.name for p in g.path.iterdir()) == [".lock", "index.faiss", "meta.json", "meta.sqlite"]


def test_approximate_index_recall_and_removal(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    dim, n = 64, 4000
    g = create_gallery(tmp_path / "g", MODEL, dim, approx_threshold=2000)
    x = unit(rng, n, dim)
    people = [f"p{i // 4}" for i in range(800)] + [f"bulk{i // 400}" for i in range(n - 800)]
    g.add(x[:1500], recs(people[:1500]), model_id=MODEL)
    assert g.index_kind == "flat"
    g.add(x[1500:], recs(people[1500:]), model_id=MODEL)
    assert g.index_kind == "pq"
    src = rng.integers(0, n, 500)
    # Near queries at cosine ~0.8 with their source: the operating point the default k_factor
    # is tuned for (benchmarks/gallery_search.py).
    q = x[src] + rng.normal(0, np.sqrt((1 / 0.8**2 - 1) / dim), (500, dim)).astype(np.float32)
    exact = np.argmax(q @ x.T, axis=1)
    got = np.array([h[0].id for h in g.search(q, 1, model_id=MODEL)])
    assert np.mean(got == exact) >= 0.98
    g_all = open_gallery(g.path, MODEL, k_factor=10**6)  # re-ranking every face is exact search
    assert [h[0].id for h in g_all.search(q, 1, model_id=MODEL)] == exact.tolist()
    victim = "p7"
    assert g.remove_person(victim) == 4
    g2 = open_gallery(g.path, MODEL)
    assert g2.index_kind == "pq" and len(g2) == n - 4
    assert all(h.person != victim for hs in g2.search(q[:50], 5, model_id=MODEL) for h in hs)
    for i in range(8):  # shrink below half the threshold: back to the exact index
        g.remove_person(f"bulk{i}")
    assert len(g) == 796 and g.index_kind == "flat"
    hits = g.search(q[:20], 3, model_id=MODEL)
    live = np.r_[0:28, 32:800]
    assert [h[0].id for h in hits] == live[np.argmax(q[:20] @ x[live].T, axis=1)].tolist()


@pytest.mark.parametrize("name,ok", [
    ("  Ada Lovelace ", "Ada Lovelace"), ("李小龙", "李小龙"), ("José María", "José María"),
    ("O'Brien-Smith", "O'Brien-Smith"), ("a.b", "a.b"), ("x" * 100, "x" * 100)])
def test_validate_name_accepts(name: str, ok: str) -> None:
    assert validate_name(name) == ok


@pytest.mark.parametrize("name", ["", "   ", "x" * 101, "a\nb", "a\x00b", "tab\there", "a\u202eb",
                                  "a/b", "a\\b", "..", "a..b", ".hidden", " .hidden"])
def test_validate_name_rejects(name: str) -> None:
    with pytest.raises(InvalidNameError) as e:
        validate_name(name)
    assert repr(name)[:20] in str(e.value) or repr(name.strip()[:40]) in str(e.value)  # names the value


def test_name_rules_and_one_face_per_person_and_photo(spec: str | Path) -> None:
    """The hardening rules hold in every backend: look-alike names refused on add and rename
    (unless allowed), a photo stored once per person, names found in any normal form."""
    import unicodedata

    g = create_gallery(spec, MODEL, DIM)
    x = unit(np.random.default_rng(4), 4)
    g.add(x[:1], [FaceRecord("José", "a.jpg", "h1", (0, 0, 1, 1))], model_id=MODEL)
    g.add(x[1:2], [FaceRecord("Obama", "b.jpg", "h2", (0, 0, 1, 1))], model_id=MODEL)
    with pytest.raises(InvalidNameError, match="looks the same"):  # a Cyrillic O
        g.add(x[1:2], [FaceRecord("\u041ebama", "b2.jpg", "h5", (0, 0, 1, 1))], model_id=MODEL)
    again = [FaceRecord("José", "a-copy.jpg", "h1", (0, 0, 1, 1)), FaceRecord("José", "c.jpg", "h3", (0, 0, 1, 1))]
    added = g.add(x[1:3], again, model_id=MODEL)
    assert len(added) == 1 and [r.id for r in again] == [-1, added[0]]
    g.add(x[3:4], [FaceRecord("Ada", "d.jpg", "h4", (0, 0, 1, 1))], model_id=MODEL)
    with pytest.raises(InvalidNameError, match="looks the same"):
        g.rename_person("Ada", "\u041ebama")
    g.rename_person("Ada", "\u041ebama", allow_similar=True)
    assert g.people() == {"José": 2, "Obama": 1, "\u041ebama": 1}
    assert g.remove_person(unicodedata.normalize("NFD", "José")) == 2
    g.close()


def test_remove_and_move_single_faces(filled: tuple[Gallery, np.ndarray, list[str]]) -> None:
    """One face at a time (issue 27): removed by id, or moved to another person keeping its id and vector;
    an unknown id or a photo the person has already changes nothing."""
    g, x, _ = filled
    ids = [r.id for r in g.records("person1")]
    n = len(ids)
    gone = g.remove_faces([ids[0]])
    assert [(r.id, r.person) for r in gone] == [(ids[0], "person1")] and g.people()["person1"] == n - 1
    assert all(h.id != ids[0] for hs in g.search(x, 60, model_id=MODEL) for h in hs)
    with pytest.raises(FaceNotFound, match=str(ids[0])):
        g.remove_faces([ids[1], ids[0]])
    assert g.people()["person1"] == n - 1
    moved = g.move_faces([ids[1]], "person2")
    assert [(r.id, r.person) for r in moved] == [(ids[1], "person1")]
    assert g.people()["person1"] == n - 2 and ids[1] in {r.id for r in g.records("person2")}
    vid, vecs = g.vectors()  # a server's ids are not row numbers: the moved face's own vector
    top = g.search(vecs[list(vid).index(ids[1])][None], 1, model_id=MODEL)[0][0]
    assert (top.id, top.person) == (ids[1], "person2")
    other = g.records("person1")[0]
    g.add(unit(np.random.default_rng(1), 1), [FaceRecord("person3", "/x.jpg", other.content_hash, (1.0, 2.0, 3.0, 4.0))],
          model_id=MODEL)
    with pytest.raises(FaceConflict):
        g.move_faces([other.id], "person3")
    with pytest.raises(InvalidNameError):  # a new name like an enrolled one
        g.move_faces([other.id], "Person3")
    assert other.id in {r.id for r in g.records("person1")}
    assert open_gallery(g.path).people() == g.people()

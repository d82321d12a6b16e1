"""The face-data store registry (recognizer.modeldir.stores): removal reaches every store that holds
something of a person, and a new store needs one registration to be reached.

After enrol + finetune (sface, small data: three people, train/ only, so finetune.py holds a
split out and writes split.json) and a removal, every registered store says it holds nothing of
the person, and no file under the model directory or the cache directory holds their name or a
path of their photos. One kind of file is left out of the scan, on purpose: the classifier's
checkpoint (checkpoint*.pt) keeps its trained classes, names included, until the next finetune
(its bytes make the model id; identify masks a class with no faces in the gallery).
"""
from __future__ import annotations

from pathlib import Path

import pytest

import enroll
import finetune as finetune_cli
from reliability_util import CELEB, run_json

FR = "face_recognition-examples/people"
PEOPLE = ("elton_john", "jerry_seinfeld", "madonna")
GONE = "madonna"


@pytest.fixture
def train_only(tmp_path, data) -> Path:
    """train/<person>/ with 8 photos of each of three people and no val/ (symlinks): finetune.py
    holds a share out and saves the split in the model directory."""
    root = tmp_path / "photos"
    for person in PEOPLE:
        (root / "train" / person).mkdir(parents=True)
        for split, n in (("train", 6), ("val", 2)):
            for p in sorted((data / CELEB / split / person).iterdir())[:n]:
                (root / "train" / person / p.name).symlink_to(p)
    return root


def needles(name: str, paths: set[str], hashes: set[str]) -> dict[str, bytes]:
    out = {"name": name.encode(), "name, utf-16": name.encode("utf-16-le")}
    out.update({f"path {p}": p.encode() for p in paths})
    out.update({f"photo hash {h[:12]}": h.encode() for h in hashes})
    return out


def files_holding(root: Path, found: dict[str, bytes], hashes: set[str]) -> list[str]:
    """'what in which file' for every needle in a file's bytes or a photo hash in its name."""
    hits = []
    for p in root.rglob("*"):
        if not p.is_file() or (p.name.startswith("checkpoint") and p.suffix == ".pt"):
            continue
        blob = p.read_bytes()
        hits += [f"{what} in {p.relative_to(root)}" for what, b in found.items() if b in blob]
        hits += [f"photo hash {h[:12]} names {p.relative_to(root)}" for h in hashes if h in p.name]
    return hits


def test_removal_after_a_finetune_leaves_nothing_of_the_person(tmp_path, data, train_only, monkeypatch, fast_open):
    from recognizer.cache import CropCache
    from recognizer.modeldir import stores
    from recognizer.modeldir.directory import ModelDir
    from recognizer.recognizer import Recognizer

    cache_dir = tmp_path / "cache"
    monkeypatch.setenv("FACETOOL_CACHE", str(cache_dir))
    model = tmp_path / "model"
    run_json(enroll, "--model", model, "--backbone", "sface", "--name", "Rose", data / FR / "rose_leslie")
    run_json(finetune_cli, train_only, "--model", model, "--backbone", "sface", "--epochs", "2", "-q")
    md = ModelDir(model)
    assert md.split.is_file() and md.report.is_file()

    rec = Recognizer.open(model, cache=CropCache())
    split = (md.split.read_text(encoding="utf-8"))
    ctx = stores.Removal.of(md, GONE, rec.gallery, rec.config.gallery, cache_root=CropCache().root)
    paths = {str(p) for p in (train_only / "train" / GONE).iterdir()} | ctx.paths
    hashes = {r.content_hash for r in ctx.records}
    ctx.paths |= paths
    assert ctx.records and GONE in split
    found = needles(GONE, paths, hashes)
    before = files_holding(model, found, hashes) + files_holding(cache_dir, found, hashes)
    assert any("report.json" in h for h in before) and any("split.json" in h for h in before)
    held_before = stores.held(ctx)
    assert {"gallery in use", "chips", "split file", "reports", "crop and trunk caches"} <= set(held_before), held_before

    out = run_json(enroll, "--model", model, "--remove", GONE)
    assert out == {"removed": GONE, "faces": len(ctx.records)}

    rec.refresh()
    ctx.gallery = rec.gallery
    assert stores.held(ctx) == {}
    assert files_holding(model, found, hashes) == []
    assert files_holding(cache_dir, found, hashes) == []
    # the files stay valid: the others' figures and split are kept
    import json

    report, split = json.loads(md.report.read_text()), json.loads(md.split.read_text())
    assert {"elton_john", "jerry_seinfeld"} <= set(report["classes"]) and GONE not in report["classes"]
    assert set(split["train"]["labels"]) == {"elton_john", "jerry_seinfeld"}
    assert len(split["train"]["paths"]) == len(split["train"]["labels"])
    assert rec.people() == {"Rose": 3, "elton_john": 8, "jerry_seinfeld": 8} or GONE not in rec.people()
    rec.close()


class ToyStore:
    """A feature's own face data: a file of the faces it saw, one line per person."""

    name = "toy"

    def __init__(self) -> None:
        self.calls: list[tuple] = []

    def _file(self, ctx):
        return ctx.model.root / "toy.txt"

    def held(self, ctx):
        f = self._file(ctx)
        return [ln for ln in f.read_text().splitlines() if ln == ctx.person] if f.exists() else []

    def forget(self, ctx):
        self.calls.append(("forget", ctx.person, sorted(r.source for r in ctx.faces)))
        f = self._file(ctx)
        f.write_text("".join(f"{ln}\n" for ln in f.read_text().splitlines() if ln != ctx.person))

    def rename(self, ctx, old, new):
        self.calls.append(("rename", old, new))
        f = self._file(ctx)
        f.write_text("".join(f"{new if ln == old else ln}\n" for ln in f.read_text().splitlines()))


TOY = ToyStore()


def test_a_new_store_needs_one_registration(tmp_path, data, fast_open):
    from recognizer.modeldir import stores
    from recognizer.recognizer import Recognizer

    rec = Recognizer.open(tmp_path / "m", backbone="sface", create=True)
    rec.enroll("kit", sorted((data / FR / "kit_harington").iterdir()))
    rec.enroll("rose", sorted((data / FR / "rose_leslie").iterdir()))
    (tmp_path / "m" / "toy.txt").write_text("kit\nrose\n")
    toy = TOY
    toy.calls.clear()
    # The one line a feature adds (to stores._REGISTRY, or at run time like this): its store by
    # name, resolved when a removal runs.
    stores.register(f"{__name__}:TOY")
    try:
        assert toy in stores.registered()
        rec.rename("rose", "Rose Leslie")
        assert rec.remove("kit") == 3
    finally:
        stores.unregister(f"{__name__}:TOY")
    assert toy not in stores.registered()
    sources = sorted(str(p) for p in (data / FR / "kit_harington").iterdir())
    assert toy.calls == [("rename", "rose", "Rose Leslie"), ("forget", "kit", sources)]
    assert (tmp_path / "m" / "toy.txt").read_text() == "Rose Leslie\n"
    rec.close()


def test_stores_of_higher_layers_are_named_not_imported():
    """The core names the stores of training and clustering by "module:attr" strings."""
    import ast

    import recognizer.modeldir.stores as mod

    tree = ast.parse(Path(mod.__file__).read_text())
    imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)} | {
        a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    assert not {m for m in imported if m and m.startswith(("recognizer.training", "recognizer.clustering"))}


def test_report_and_split_scrub_only_the_person(tmp_path):
    """The person's entries leave report.json and split.json; everyone else's stay, the lists stay
    parallel, and a name that is also a folder of the path ('home') scrubs only their photos."""
    import json

    from recognizer.modeldir import stores
    from recognizer.modeldir.directory import ModelDir

    md = ModelDir(tmp_path / "m")
    md.root.mkdir()
    photos = {p: f"/home/u/train/{p}/{i}.jpg" for i, p in enumerate(("home", "ada", "bob"))}
    split = {"train": {"paths": list(photos.values()), "labels": list(photos)}, "val": {"paths": [], "labels": []},
             "source": "held-out"}
    report = {"classes": ["ada", "bob", "home"], "knn": {"per_person": {"home": {"recall": 1.0}, "ada": {"recall": 0.5}}},
              "skipped": [{"file": photos["home"], "reason": "no face"}, {"file": photos["ada"], "reason": "no face"}],
              "backbone": "sface"}
    md.split.write_text(json.dumps(split))
    md.report.write_text(json.dumps(report))
    by_name = {s.name: s for s in stores.registered()}

    class NoGallery:
        def people(self):
            return {}

        def records(self, person=None):
            return []

    ctx = stores.Removal.of(md, "home", NoGallery(), "gallery")
    for name in ("split file", "reports"):
        assert by_name[name].held(ctx)
        by_name[name].forget(ctx)
        assert by_name[name].held(ctx) == []
    assert json.loads(md.split.read_text())["train"] == {"paths": [photos["ada"], photos["bob"]], "labels": ["ada", "bob"]}
    assert json.loads(md.report.read_text()) == {
        "classes": ["ada", "bob"], "knn": {"per_person": {"ada": {"recall": 0.5}}},
        "skipped": [{"file": photos["ada"], "reason": "no face"}], "backbone": "sface"}

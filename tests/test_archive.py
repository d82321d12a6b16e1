"""enroll.py --export / --import: one portable archive of a model's faces (names, chips, vectors).

Same backbone: identical identify answers. Another backbone: every face re-embedded from its chip
with the photos gone. Damaged archives and name clashes change nothing.
"""
from __future__ import annotations

import io
import json
import shutil
import tarfile
from pathlib import Path

import pytest

import enroll
import identify
from reliability_util import CELEB, run, run_json

PEOPLE = ("elton_john", "madonna")


def files_of(model: Path) -> dict[str, bytes]:
    return {str(p.relative_to(model)): p.read_bytes() for p in sorted(model.rglob("*")) if p.is_file() and p.name != ".lock"}


@pytest.fixture(scope="module")
def exported(tmp_path_factory, data):
    """An sface model of two people enrolled from photo folders that are deleted once exported."""
    root = tmp_path_factory.mktemp("archive")
    model = root / "model"
    for i, person in enumerate(PEOPLE):
        folder = root / "photos" / person
        folder.mkdir(parents=True)
        for p in sorted((data / CELEB / "train" / person).iterdir())[:5]:
            shutil.copyfile(p, folder / p.name)
        run_json(enroll, "--model", model, *(["--backbone", "sface"] if i == 0 else []), "--name", person, folder)
    archive = root / "faces.tar"
    out = run_json(enroll, "--model", model, "--export", archive)
    assert out["faces"] == out["chips"] == 10 and out["without_chip"] == 0
    shutil.rmtree(root / "photos")
    return model, archive


def test_import_on_the_same_backbone_answers_identically(tmp_path, data, exported, fast_open):
    model, archive = exported
    fresh = tmp_path / "fresh"
    rep = run_json(enroll, "--model", fresh, "--import", archive)  # backbone from the archive
    assert rep["added"] == {"elton_john": 5, "madonna": 5} and rep["reused_vectors"] == 10 and rep["clashes"] == []
    val = [p for person in PEOPLE for p in sorted((data / CELEB / "val" / person).iterdir())]
    assert run_json(identify, "--model", fresh, *val) == run_json(identify, "--model", model, *val)


def test_import_into_another_backbone_reembeds_every_face_from_its_chip(tmp_path, exported):
    from recognizer.recognizer import Recognizer

    _, archive = exported
    other = tmp_path / "facenet"
    rep = run_json(enroll, "--model", other, "--backbone", "facenet", "--weights", "random", "--import", archive)
    assert rep["reembedded"] == 10 and rep["added"] == {"elton_john": 5, "madonna": 5}
    rec = Recognizer.open(other)
    assert rec.config.backbone == "facenet" and rec.gallery.people() == {"elton_john": 5, "madonna": 5}
    assert {r.chip for r in rec.gallery.records()} == rec.chips.ids() and len(rec.chips.ids()) == 10


def test_damaged_archives_and_clashes_change_nothing(tmp_path, exported, fast_open):
    model, archive = exported
    before = files_of(model)
    blob = archive.read_bytes()
    with tarfile.open(archive) as tar:
        chip = next(m for m in tar if m.name.startswith("chips/"))
    tampered = bytearray(blob)
    tampered[chip.offset_data + 200] ^= 0xFF
    cases = {"truncated.tar": blob[: len(blob) // 2], "tampered.tar": bytes(tampered), "empty.tar": b"",
             "not-a-tar.tar": b"hello" * 1000}
    for name, content in cases.items():
        bad = tmp_path / name
        bad.write_bytes(content)
        code, out = run(enroll, "--model", model, "--import", bad)
        assert code != 0 and str(bad) in out and "nothing was imported" in out, (name, out)
    code, out = run(enroll, "--model", tmp_path / "tampered-new", "--import", tmp_path / "tampered.tar")
    assert code != 0 and chip.name in out and not (tmp_path / "tampered-new").exists(), out
    # Importing the model's own faces: every person clashes, nothing is merged, exit 1.
    code, out = run(enroll, "--model", model, "--import", archive)
    assert code == 1 and "'elton_john' is already enrolled" in out and "'madonna' is already enrolled" in out
    assert files_of(model) == before


def test_archive_holds_no_pickle_and_checks_every_member(exported):
    _, archive = exported
    with tarfile.open(archive) as tar:
        names = tar.getnames()
        manifest = json.loads(tar.extractfile("facetool-export.json").read())
        vectors = tar.extractfile("vectors.npy").read()
    assert set(manifest["members"]) == set(names) - {"facetool-export.json"}
    import numpy as np

    assert np.load(io.BytesIO(vectors), allow_pickle=False).shape == (10, 128)


def test_export_and_import_over_http(tmp_path, exported, fast_open):
    import httpx

    from recognizer.recognizer import Recognizer
    from serving import ThreadServer
    from web.settings import Settings

    _, archive = exported
    target = tmp_path / "served"
    Recognizer.open(target, backbone="sface", create=True).gallery.close()
    server = ThreadServer(target, Settings(token="t0ken")).wait()
    auth = {"Authorization": "Bearer t0ken"}
    try:
        with httpx.Client(base_url=server.url, timeout=120) as c:
            assert c.get("/export").status_code == 401
            assert c.post("/import", files={"file": ("faces.tar", archive.read_bytes())}).status_code == 401
            damaged = archive.read_bytes()[: len(archive.read_bytes()) // 2]
            r = c.post("/import", files={"file": ("faces.tar", damaged)}, headers=auth)
            assert r.status_code == 400 and "faces.tar" in r.json()["error"] and "/tmp" not in r.json()["error"], r.text
            assert c.get("/people").json()["people"] == {}
            r = c.post("/import", files={"file": ("faces.tar", archive.read_bytes())}, headers=auth)
            assert r.status_code == 200 and r.json()["added"] == {"elton_john": 5, "madonna": 5}, r.text
            r = c.get("/export", headers=auth)
            assert r.status_code == 200 and r.headers["content-type"] == "application/x-tar"
    finally:
        server.stop()
    again = tmp_path / "again.tar"
    again.write_bytes(r.content)
    from recognizer.archive import read_archive

    manifest, vectors, chips = read_archive(again)
    assert len(manifest["faces"]) == 10 and len(chips) == 10

"""The model directory owns its faces: enroll (CLI and server) -> finetune -> identify loses nothing.

The faces are re-embedded from the chips the model directory keeps, so a deleted photo folder,
an upload, a change made while the finetune trains, or a running server lose nothing; removal
reaches the classifier, the chips and the caches. sface, small training folders (symlinks into
the shared photos, 3 people) and few epochs keep it quick.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import httpx
import numpy as np
import pytest

import enroll
import finetune as finetune_cli
from serving import ThreadServer
from reliability_util import CELEB, celeb_split, run, run_json

FR = "face_recognition-examples/people"
TRAIN_PEOPLE = ("elton_john", "jerry_seinfeld", "madonna")
TOKEN = "lifecycle-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture(scope="module")
def train_dir(tmp_path_factory, data) -> Path:
    """train/<person>/ with 6 photos and val/<person>/ with 2 of each of three people (symlinks)."""
    return celeb_split(tmp_path_factory.mktemp("celeb-small"), data, TRAIN_PEOPLE)


def people(model: Path) -> dict[str, int]:
    return run_json(enroll, "--model", model, "--list")["people"]


def finetune(train_dir: Path, model: Path, *extra) -> dict:
    return run_json(finetune_cli, train_dir, "--model", model, "--backbone", "sface", "--epochs", "4", "-q", *extra)


def copy_folder(src: Path, dst: Path) -> Path:
    dst.mkdir(parents=True)
    for p in sorted(src.iterdir()):
        shutil.copyfile(p, dst / p.name)
    return dst


def test_enroll_finetune_identify_loses_no_one(tmp_path, data, train_dir, fast_open):
    """The issue's three steps: an upload to the running server, a finetune, the server still
    answering for everyone (and taking enrolments) without a restart; plus a person whose photo
    folder was deleted before the finetune."""
    from web.settings import Settings

    model = tmp_path / "model"
    kit = copy_folder(data / FR / "kit_harington", tmp_path / "photos" / "kit")
    run_json(enroll, "--model", model, "--backbone", "sface", "--name", "Kit", kit)
    server = ThreadServer(model, Settings(token=TOKEN)).wait()
    try:
        with httpx.Client(base_url=server.url, timeout=120) as c:
            files = [("file", (p.name, p.read_bytes())) for p in sorted((data / FR / "barack_obama").iterdir())[:3]]
            r = c.post("/people/Barack%20Obama/photos", files=files, headers=AUTH)
            assert r.status_code == 200 and r.json()["added"] == 3, r.text
            shutil.rmtree(kit)  # Kit's photos are gone: the chips are all that is left of them

            report = finetune(train_dir, model)
            g = report["gallery"]
            assert g["enrolled_before"] == 6 and g["reembedded_enrolled"] == 6 and g["dropped_enrolled"] == []
            assert g["people"] == {"Barack Obama": 3, "Kit": 3, "elton_john": 6, "jerry_seinfeld": 6, "madonna": 6}
            assert people(model) == g["people"]

            # The server follows model.json: it lists the new gallery and identifies with the classifier.
            r = c.get("/people")
            assert r.status_code == 200 and r.json()["people"] == g["people"]
            photo = data / FR / "barack_obama" / "examples__obama.jpg"
            r = c.post("/identify", files={"file": (photo.name, photo.read_bytes())})
            assert r.status_code == 200, r.text
            face = max(r.json()["faces"], key=lambda f: f["similarity"])
            assert face["name"] == "Barack Obama" and "classifier" in face
            biden = data / FR / "joe_biden"
            r = c.post("/people/Joe%20Biden/photos", headers=AUTH,
                       files=[("file", (p.name, p.read_bytes())) for p in sorted(biden.iterdir())])
            assert r.status_code == 200 and r.json()["added"] == 2, r.text
    finally:
        server.stop()
    assert people(model)["Joe Biden"] == 2 and people(model)["Kit"] == 3


def test_changes_made_while_a_finetune_runs_are_in_the_new_model(tmp_path, data, train_dir, monkeypatch, fast_open):
    """Enrolments, a removal and a rename made after the finetune read the gallery and before it
    commits all survive the switch; the removed person's training photos do not bring her back."""
    import recognizer.training.run as ft
    from recognizer.recognizer import Recognizer

    model = tmp_path / "model"
    run_json(enroll, "--model", model, "--backbone", "sface", "--name", "Kit", data / FR / "kit_harington")
    run_json(enroll, "--model", model, "--name", "madonna", data / CELEB / "val" / "madonna")
    run_json(enroll, "--model", model, "--name", "Elton", data / CELEB / "val" / "elton_john")
    real = ft._embed_enrolled

    def meanwhile(*args, **kwargs):
        out = real(*args, **kwargs)
        other = Recognizer.open(model)  # another process would do the same
        assert other.enroll("Rose", sorted((data / FR / "rose_leslie").iterdir())).added == 2
        assert other.remove("madonna") == 5
        other.rename("Kit", "Kit Harington")
        return out

    monkeypatch.setattr(ft, "_embed_enrolled", meanwhile)
    report = finetune(train_dir, model)
    g = report["gallery"]
    assert g["enrolled_during_finetune"] == 2 and g["removed_during_finetune"] == ["madonna"]
    assert g["renamed_during_finetune"] == {"Kit": "Kit Harington"}
    want = {"Kit Harington": 3, "Rose": 2, "Elton": 5, "elton_john": 6, "jerry_seinfeld": 6}
    assert g["people"] == want and people(model) == want
    # The classifier was trained on madonna but she was removed: it no longer names her.
    rec = Recognizer.open(model)
    res = rec.identify(sorted((data / CELEB / "val" / "madonna").iterdir())[0])
    assert all(f.name != "madonna" and (f.classifier or {}).get("name") != "madonna" for f in res.faces)
    assert {r.chip for r in rec.gallery.records()} == rec.chips.ids()  # no chip of hers is left


def test_removal_reaches_classifier_chips_and_caches(tmp_path, data, train_dir, fast_open):
    from recognizer.cache import CropCache, crop_hash, default_trunk_cache_dir
    from recognizer.chip_format import LAYOUT, chip_crops
    from recognizer.recognizer import Recognizer

    trunk_dir, crop_dir = default_trunk_cache_dir(), CropCache().root
    model = tmp_path / "model"
    run_json(enroll, "--model", model, "--backbone", "sface", "--name", "Rose", data / FR / "rose_leslie")
    finetune(train_dir, model)
    rec = Recognizer.open(model, cache=CropCache())
    madonna = sorted((data / CELEB / "val" / "madonna").iterdir())
    before = rec.identify(madonna[0]).faces
    assert any((f.classifier or {}).get("name") == "madonna" for f in before)
    records = rec.gallery.records("madonna")
    chips = {r.chip: rec.chips.get(r.chip) for r in records}
    crops = {crop_hash(c) for b in chips.values() for c in chip_crops(b, list(LAYOUT)).values()}
    trunk = {p.stem for p in trunk_dir.rglob("*.npz")}
    cached = {p.name.split("-")[0] for p in crop_dir.rglob("*.npz")}
    assert crops & trunk and {r.content_hash for r in records} <= cached

    out = run_json(enroll, "--model", model, "--remove", "madonna")
    assert out == {"removed": "madonna", "faces": 6}
    rec.refresh()
    after = rec.identify(madonna[0]).faces
    assert all(f.name != "madonna" and (f.classifier or {}).get("name") != "madonna" for f in after)
    assert not set(chips) & rec.chips.ids()
    assert not crops & {p.stem for p in trunk_dir.rglob("*.npz")}
    assert not {r.content_hash for r in records} & {p.name.split("-")[0] for p in crop_dir.rglob("*.npz")}
    # The other people's classes still answer.
    elton = rec.identify(sorted((data / CELEB / "val" / "elton_john").iterdir())[0]).faces
    assert any((f.classifier or {}).get("name") == "elton_john" for f in elton)


def test_finetune_refuses_a_model_json_it_cannot_trust(tmp_path, data, train_dir, fast_open):
    model = tmp_path / "model"
    run_json(enroll, "--model", model, "--backbone", "sface", "--name", "Rose", data / FR / "rose_leslie")
    finetune(train_dir, model)
    cfg = json.loads((model / "model.json").read_text())
    saved = (model / "model.json").read_bytes()
    listing = people(model)

    stale = dict(cfg, gallery="gallery", checkpoint=None)  # an older backup of model.json
    (model / "model.json").write_text(json.dumps(stale))
    code, out = run(finetune_cli, train_dir, "--model", model, "--backbone", "sface", "--epochs", "2", "-q")
    assert code != 0 and "stale" in out and cfg["gallery"] in out, out

    (model / "model.json").unlink()
    code, out = run(finetune_cli, train_dir, "--model", model, "--backbone", "sface", "--epochs", "2", "-q")
    assert code != 0 and "model.json is missing" in out, out
    (model / "model.json").write_bytes(saved)
    assert people(model) == listing  # nothing was changed by the refused runs


def test_older_model_directory_gets_chips_from_its_photos(tmp_path, data, train_dir, fast_open):
    """A gallery made before chips (format 1, no chip column): finetune makes chips from the photos
    still there; a face whose photo is gone keeps its vector (sface's network does not change),
    and with facenet, whose network does, the finetune stops and names it."""
    import sqlite3

    from gallery import open_gallery

    model = tmp_path / "model"
    rose = copy_folder(data / FR / "rose_leslie", tmp_path / "rose")
    run_json(enroll, "--model", model, "--backbone", "sface", "--name", "Rose", rose)
    run_json(enroll, "--model", model, "--name", "Kit", data / FR / "kit_harington")
    with open_gallery(model / "gallery") as g:
        old_vectors = list(g.vectors("Rose")[1])
    db = sqlite3.connect(model / "gallery" / "meta.sqlite")  # back to format 1
    db.executescript("ALTER TABLE faces DROP COLUMN chip; UPDATE kv SET value = '1' WHERE key = 'format_version';")
    db.close()
    shutil.rmtree(model / "chips")
    first_rose = sorted(rose.iterdir())[0]
    first_rose.unlink()
    code, out = run(enroll, "--model", model, "--make-chips")
    assert code == 1 and str(first_rose) in out and "4 of 5 faces have a chip" in out, out
    shutil.rmtree(model / "chips")  # finetune makes them too

    code, out = run(finetune_cli, train_dir, "--model", model, "--backbone", "facenet", "--weights", "random",
                    "--epochs", "1", "-q")
    assert code != 0 and "cannot be re-embedded" in out and str(first_rose) in out, out
    assert people(model) == {"Kit": 3, "Rose": 2}

    report = finetune(train_dir, model)
    assert report["gallery"]["people"]["Rose"] == 2 and report["gallery"]["people"]["Kit"] == 3
    listing = run_json(enroll, "--model", model, "--list")
    assert listing["chips"]["Kit"] == 3 and listing["chips"]["Rose"] == 1
    with open_gallery(model / json.loads((model / "model.json").read_text())["gallery"]) as g:
        (rec,) = [r for r in g.records("Rose") if r.source == str(first_rose)]
        ids, vecs = g.vectors("Rose")
        kept = vecs[ids.tolist().index(rec.id)]
    assert any(np.array_equal(kept, v) for v in old_vectors)


def test_rollback_keeps_what_was_enrolled_and_removed_since(tmp_path, data, train_dir, fast_open):
    """Two finetunes with keep_versions 1; rolling back re-embeds today's faces with the earlier
    network: an enrolment made since is kept, a removal made since stays removed, and rolling
    back again returns to the later version."""
    from recognizer.recognizer import Recognizer
    from recognizer.training.versions import list_versions

    model = tmp_path / "model"
    run_json(enroll, "--model", model, "--backbone", "sface", "--name", "Kit", data / FR / "kit_harington")
    cfg = json.loads((model / "model.json").read_text())
    (model / "model.json").write_text(json.dumps(dict(cfg, keep_versions=1)))
    a = finetune(train_dir, model)["model_id"]
    b = finetune(train_dir, model, "--seed", "1")["model_id"]
    assert a != b and len(list_versions(model)) == 1
    assert len(list(model.glob("checkpoint-*.pt"))) == 2 and len(list(model.glob("gallery*"))) == 1
    run_json(enroll, "--model", model, "--name", "Rose", data / FR / "rose_leslie")
    run_json(enroll, "--model", model, "--remove", "madonna")
    want = {"Kit": 3, "Rose": 2, "elton_john": 6, "jerry_seinfeld": 6}

    out = run_json(finetune_cli, "--model", model, "--rollback")
    assert (out["from"], out["to"]) == (b, a) and people(model) == want
    rec = Recognizer.open(model)
    assert rec.config.model_id == a
    res = rec.identify(sorted((data / CELEB / "val" / "madonna").iterdir())[0])
    assert all(f.name != "madonna" and (f.classifier or {}).get("name") != "madonna" for f in res.faces)
    out = run_json(finetune_cli, "--model", model, "--rollback")
    assert (out["from"], out["to"]) == (a, b) and people(model) == want

"""Migration: a new backbone or weights is built beside the model in use, scored side by side
(closed and open set, the same held-out faces), and switched to only when asked; what changed
since it was built is carried over at the switch; --rollback returns; a pending candidate is
never a version and is replaced or pruned safely. Small real folders (3 people) keep it quick.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import enroll
import finetune as finetune_cli
import identify
from reliability_util import celeb_split, run, run_json

FR = "face_recognition-examples/people"
PEOPLE = ("elton_john", "jerry_seinfeld", "madonna")


@pytest.fixture(scope="module")
def photos(tmp_path_factory, data) -> Path:
    """train/<person>/ with 6 photos and val/<person>/ with 2 of each of three people (symlinks)."""
    return celeb_split(tmp_path_factory.mktemp("migrate-photos"), data, PEOPLE)


def sface_model(root: Path, photos: Path) -> Path:
    model = root / "model"
    for i, person in enumerate(PEOPLE):
        run_json(enroll, "--model", model, *(["--backbone", "sface"] if i == 0 else []), "--name", person,
                 photos / "train" / person)
    return model


def identify_val(model: Path, photos: Path) -> str:
    code, out = run(identify, "--model", model, *sorted((photos / "val").glob("*/*")), "--json")
    assert code == 0, out
    return out


def check_side_by_side(cmp: dict, current: str, candidate: str) -> None:
    """Both models' closed- and open-set figures, on the same faces."""
    c, n = cmp["current"], cmp["candidate"]
    assert (c["backbone"], n["backbone"]) == (current, candidate)
    assert cmp["same_faces"] and c["closed_set"]["n"] == n["closed_set"]["n"] == 6
    for side in (c, n):
        assert 0 <= side["closed_set"]["knn"]["correct"] <= 6
        o = side["open_set"]
        assert o is not None and 0.0 <= o["dir"] <= 1.0 and 0.0 <= o["fpir"] <= 1.0 and -1.0 <= o["threshold"] <= 1.0
    assert c["open_set"]["n_known"] == n["open_set"]["n_known"] > 0
    assert c["open_set"]["n_unknown"] == n["open_set"]["n_unknown"] > 0
    assert c["open_set"]["unknown_source"] == n["open_set"]["unknown_source"]
    assert c["closed_set"]["knn"]["correct"] == 6  # sface knows these people: the figures are real


def test_reembed_builds_beside_switches_when_asked_and_rolls_back(tmp_path, data, photos):
    from recognizer.chips import crop_for
    from recognizer.recognizer import Recognizer
    from recognizer.training.versions import list_versions

    model = sface_model(tmp_path, photos)
    before_json, before_id = (model / "model.json").read_bytes(), identify_val(model, photos)
    out = run_json(finetune_cli, photos, "--model", model, "--reembed", "--backbone", "facenet", "--weights", "random", "-q")
    assert out["switched"] is False and out["candidate"]["faces"] == 18
    check_side_by_side(out["comparison"], "sface", "facenet")
    # the model in use is untouched: same model.json, byte-identical answers, no version counted
    assert (model / "model.json").read_bytes() == before_json and identify_val(model, photos) == before_id
    assert list_versions(model) == [] and (model / "candidate.json").is_file()
    code, text = run(finetune_cli, "--model", model, "--switch", "-q")  # printed side by side, then switched
    assert code == 0 and "DIR: known named right" in text and "FPIR: unknown given a name" in text

    # a second model, changed between the build and the switch
    model2 = sface_model(tmp_path / "two", photos)
    run_json(finetune_cli, photos, "--model", model2, "--reembed", "--backbone", "facenet", "--weights", "random", "-q")
    run_json(enroll, "--model", model2, "--name", "Rose", data / FR / "rose_leslie")
    madonna_chips = {r.chip for r in Recognizer.open(model2).records("madonna")}
    run_json(enroll, "--model", model2, "--remove", "madonna")
    run(enroll, "--model", model2, "--rename", "jerry_seinfeld", "Jerry")
    sw = run_json(finetune_cli, "--model", model2, "--switch", "-q")
    assert sw["enrolled_since_build"] == 2 and sw["renamed_since_build"] == {"jerry_seinfeld": "Jerry"}
    rec = Recognizer.open(model2)
    assert rec.config.backbone == "facenet" and rec.gallery.people() == {"elton_john": 6, "Jerry": 6, "Rose": 2}
    assert not (model2 / "candidate.json").exists() and len(list_versions(model2)) == 1
    assert madonna_chips and not madonna_chips & rec.chip_ids()  # removal reached the candidate's copy
    ids, vecs = rec.gallery.vectors("Rose")  # enrolled after the build: embedded from its chip by facenet
    r = next(x for x in rec.records("Rose") if x.id == ids[0])
    assert np.allclose(vecs[0], rec.embedder.embed(crop_for(rec.chips.get(r.chip), rec.embedder)[None])[0], atol=1e-5)
    assert {x.chip for x in rec.records()} <= rec.chip_ids()
    rec.gallery.close()

    back = run_json(finetune_cli, "--model", model2, "--rollback")
    assert back["to"].startswith("sface") and sorted(back["people"]) == ["Jerry", "Rose", "elton_john"]


def test_finetune_migration_candidate_versions_and_pruning(tmp_path, photos):
    from recognizer.training.versions import list_versions

    model = sface_model(tmp_path, photos)
    cfg = json.loads((model / "model.json").read_text())
    (model / "model.json").write_text(json.dumps(dict(cfg, keep_versions=1)))
    # an ordinary same-backbone finetune switches (as always) and prints the same side by side
    ft = run_json(finetune_cli, photos, "--model", model, "--backbone", "sface", "--epochs", "2", "-q")
    assert ft["switched"] is True and len(list_versions(model)) == 1
    check_side_by_side(ft["comparison"], "sface", "sface")
    assert ft["comparison"]["candidate"]["classifier"] and not ft["comparison"]["current"]["classifier"]
    live = json.loads((model / "model.json").read_text())
    before_id = identify_val(model, photos)

    # another backbone without --switch: built beside, never switched
    nocohort = tmp_path / "no-cohort"
    mig = run_json(finetune_cli, photos, "--model", model, "--backbone", "facenet", "--weights", "random", "--epochs", "1",
                   "--cohort", nocohort, "-q")
    assert mig["switched"] is False and mig["comparison"]["candidate"]["backbone"] == "facenet"
    assert json.loads((model / "model.json").read_text()) == live and identify_val(model, photos) == before_id
    cand = json.loads((model / "candidate.json").read_text())["config"]
    assert (model / cand["checkpoint"]).is_file() and (model / cand["gallery"]).is_dir()
    assert len(list_versions(model)) == 1  # a candidate is not a version
    kept = json.loads(list_versions(model)[0].read_text())

    # a new candidate replaces the pending one: its files go, the model in use and the kept version stay
    run_json(finetune_cli, "--model", model, "--reembed", "--backbone", "facenet", "--weights", "random", "-q")
    assert not (model / cand["checkpoint"]).exists() and not (model / cand["gallery"]).exists()
    assert (model / live["checkpoint"]).is_file() and (model / live["gallery"]).is_dir()
    assert json.loads(list_versions(model)[0].read_text()) == kept

    # the switch keeps keep_versions=1: the replaced model is the one version kept, the older one pruned
    sw = run_json(finetune_cli, "--model", model, "--switch", "-q")
    assert sw["to"].startswith("facenet-random") and len(list_versions(model)) == 1
    assert json.loads(list_versions(model)[0].read_text())["model_id"] == live["model_id"]
    assert sorted(p.name for p in model.glob("checkpoint-*.pt")) == [live["checkpoint"]]
    assert len(list(model.glob("gallery*"))) == 1
    back = run_json(finetune_cli, "--model", model, "--rollback")
    assert back["to"] == live["model_id"] and identify_val(model, photos) == before_id

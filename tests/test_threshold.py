"""The unknown threshold from a target FPIR, on real photos: enroll.py, identify.py, the server's /people, old models.

The shipped sface table (recognizer/fpir_tables/) was built by benchmarks/calibrate_fpir.py from
the calibration part of the stranger cohort; here it is only read.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from recognizer.cli import enroll
from recognizer.cli import identify

CELEB = "5-celebrity-faces"
FR = "face_recognition-examples"


def cli(cmd, *args):
    res = CliRunner().invoke(cmd.main, [str(a) for a in args], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    return res.output


@pytest.fixture(scope="module")
def celeb(tmp_path_factory, data):
    """The five celebrities enrolled from train; the threshold after each person is recorded."""
    model = tmp_path_factory.mktemp("thr") / "model"
    infos = []
    for person in sorted((data / CELEB / "train").iterdir()):
        out = json.loads(cli(enroll, "--model", model, "--name", person.name, person, "--backbone", "sface", "--json"))
        infos.append(out["threshold"])
        for w in out["warnings"]:  # real look-alikes can be flagged; each must be a pair above the threshold
            assert w["person"] == person.name and w["other"] != person.name
            assert w["similarity"] >= out["threshold"]["threshold"]
    return model, infos


def test_new_model_derives_its_threshold_from_the_target_for_the_gallery_it_has(celeb):
    model, infos = celeb
    cfg = json.loads((model / "model.json").read_text())
    assert cfg["target_fpir"] == 0.01
    for n, info in enumerate(infos, start=1):
        assert info["source"] == "target FPIR" and info["people"] == n
        assert 0 < info["expected_fpir"] <= 0.01
        assert 0 <= info["expected_dir_cost"] < 0.05
    # Each person enrolled is one more chance for a stranger to look alike: the threshold rises.
    ts = [i["threshold"] for i in infos]
    assert ts == sorted(ts) and ts[-1] > ts[0]


def test_celebrity_val_all_named_and_group_strangers_unknown(celeb, data):
    model, _ = celeb
    results = json.loads(cli(identify, "--model", model, data / CELEB / "val", "--json"))
    named = [r["faces"][0]["name"] for r in results]
    truth = [Path(r["photo"]).parent.name for r in results]
    assert named == truth, [(n, t) for n, t in zip(named, truth) if n != t]
    # Nobody in these photos is enrolled: every face must stay unknown.
    groups = sorted((data / FR / "group").iterdir()) + sorted((data / "facenet-pytorch-test-images/group").iterdir())
    results = json.loads(cli(identify, "--model", model, *groups, "--json"))
    faces = [f for r in results for f in r["faces"]]
    assert len(faces) >= 10
    assert all(f["name"] is None for f in faces), [(f["knn"]["name"], f["similarity"]) for f in faces if f["name"]]


def test_threshold_option_still_overrides(celeb, data):
    model, _ = celeb
    photo = next(iter(sorted((data / CELEB / "val" / "madonna").iterdir())))
    (res,) = json.loads(cli(identify, "--model", model, photo, "--json", "--threshold", "0.99"))
    assert res["faces"][0]["name"] is None
    (res,) = json.loads(cli(identify, "--model", model, photo, "--json"))
    assert res["faces"][0]["name"] == "madonna"


def test_enroll_warns_about_a_photo_that_matches_another_person(celeb, data, tmp_path):
    model, _ = celeb
    work = tmp_path / "model"
    shutil.copytree(model, work)
    mixed = tmp_path / "ada"
    mixed.mkdir()
    wrong = sorted((data / CELEB / "val" / "madonna").iterdir())[0]
    shutil.copy(wrong, mixed / wrong.name)  # a photo of madonna filed under someone else
    for p in sorted((data / FR / "people" / "kit_harington").iterdir()):
        shutil.copy(p, mixed / p.name)
    out = json.loads(cli(enroll, "--model", work, "--name", "ada", mixed, "--json"))
    warned = {(w["person"], w["other"], Path(w["photo"]).name) for w in out["warnings"]}
    assert ("ada", "madonna", wrong.name) in warned
    assert all(w["similarity"] >= out["threshold"]["threshold"] for w in out["warnings"])
    text = cli(enroll, "--model", work, "--name", "ada", mixed)  # nothing new to add: no warning to repeat
    assert "warning" not in text
    text = cli(enroll, "--model", work, "--list")
    assert "strangers would be named" in text


def test_target_can_be_changed_and_an_old_model_keeps_its_fixed_threshold(celeb, tmp_path):
    model, infos = celeb
    work = tmp_path / "model"
    shutil.copytree(model, work)
    out = json.loads(cli(enroll, "--model", work, "--target-fpir", "0.001", "--json"))
    assert out["threshold"]["target_fpir"] == 0.001 and out["threshold"]["threshold"] > infos[-1]["threshold"]
    # A model.json written before targets existed: its threshold is not silently changed.
    cfg = json.loads((work / "model.json").read_text())
    del cfg["target_fpir"]
    cfg["threshold"] = 0.47
    (work / "model.json").write_text(json.dumps(cfg))
    out = json.loads(cli(enroll, "--model", work, "--list", "--json"))
    assert out["threshold"]["source"] == "fixed" and out["threshold"]["threshold"] == 0.47
    assert out["threshold"]["expected_fpir"] is not None  # still told what that threshold costs
    cfg["target_fpir"] = 1.5
    (work / "model.json").write_text(json.dumps(cfg))
    res = CliRunner().invoke(enroll.main, ["--model", str(work), "--list"])
    assert res.exit_code != 0 and "target_fpir" in res.output


def test_people_endpoint_tells_the_threshold_and_its_costs(celeb):
    from fastapi.testclient import TestClient

    from recognizer.recognizer import Recognizer
    from web.app import create_app
    from web.settings import Settings

    model, infos = celeb
    # The app closes the recognizer when it shuts down; 127.0.0.1 is a host the server accepts.
    with TestClient(create_app(Recognizer.open(model), Settings()), base_url="http://127.0.0.1") as client:
        body = client.get("/people").json()
    assert len(body["people"]) == 5
    assert body["threshold"]["threshold"] == infos[-1]["threshold"]
    assert body["threshold"]["expected_fpir"] <= 0.01 and "expected_dir_cost" in body["threshold"]


def test_finetune_without_a_cohort_keeps_the_fixed_threshold_and_says_so(tmp_path):
    from recognizer.training.run import FinetuneOptions, _calibrate_fpir

    missing = tmp_path / "no-cohort"
    info = _calibrate_fpir(tmp_path / "fpir-abcdef.json", FinetuneOptions(cohort=str(missing)), object(), object(), "m", None)
    assert info["calibrated"] is False and str(missing) in info["how"] and "fixed threshold" in info["how"]
    assert not (tmp_path / "fpir-abcdef.json").exists()
    assert os.environ["FACETOOL_COHORT"]  # the suite's small cohort, which the finetune tests calibrate on

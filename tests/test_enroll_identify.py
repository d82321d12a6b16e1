"""enroll.py and identify.py end to end on real photos, through click's CliRunner."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from recognizer.cli import enroll
from recognizer.cli import identify

ROOT = Path(__file__).resolve().parent.parent
FR = "face_recognition-examples"


def run(cmd, args):
    result = CliRunner().invoke(cmd.main, [str(a) for a in args], catch_exceptions=False)
    return result


def enroll_json(model, name, folder, *extra):
    res = run(enroll, ["--model", model, "--name", name, folder, "--json", *extra])
    assert res.exit_code == 0, res.output
    return json.loads(res.output)


def identify_json(model, *inputs, extra=()):
    res = run(identify, ["--model", model, *inputs, "--json", *extra])
    assert res.exit_code == 0, res.output
    return json.loads(res.output)


@pytest.fixture(scope="module")
def celeb_model(tmp_path_factory, data):
    model = tmp_path_factory.mktemp("celeb") / "model"
    for person in sorted((data / "5-celebrity-faces/train").iterdir()):
        out = enroll_json(model, person.name, person, "--backbone", "sface")
        assert out["added"] >= len(list(person.iterdir())) - 1
    return model


@pytest.fixture(scope="module")
def obama_biden_model(tmp_path_factory, data):
    model = tmp_path_factory.mktemp("ob") / "model"
    for person in ("barack_obama", "joe_biden"):
        enroll_json(model, person, data / FR / "people" / person, "--backbone", "sface")
    return model


def test_celebrity_val_named_correctly(celeb_model, data):
    results = identify_json(celeb_model, data / "5-celebrity-faces/val")
    assert len(results) == 25
    correct = sum(bool(r["faces"]) and r["faces"][0]["name"] == Path(r["photo"]).parent.name for r in results)
    print(f"sface kNN: {correct}/25 of 5-celebrity-faces val named correctly")
    assert correct >= 24
    face = results[0]["faces"][0]
    assert set(face) >= {"box", "name", "score", "similarity", "knn"} and len(face["box"]) == 4


@pytest.mark.parametrize("group", ["barack_obama+joe_biden__two_people.jpg", "barack_obama+joe_biden__obama_and_biden.jpg"])
def test_group_photos_name_obama_and_biden(obama_biden_model, data, group, tmp_path):
    out = tmp_path / "annotated.png"
    (result,) = identify_json(obama_biden_model, data / FR / "group" / group, extra=["--annotate", out])
    names = [f["name"] for f in result["faces"]]
    assert names.count("barack_obama") == 1 and names.count("joe_biden") == 1, names
    # Bystanders in the second photo are nobody we know.
    assert all(n in ("barack_obama", "joe_biden", None) for n in names)
    from PIL import Image

    assert Image.open(out).size == Image.open(data / FR / "group" / group).size


def test_people_not_enrolled_come_back_unknown(obama_biden_model, data):
    results = identify_json(
        obama_biden_model,
        data / FR / "group/kit_harington+rose_leslie__kit_with_rose.jpg",
        data / "facenet-pytorch-test-images/group/multiface__6_faces_unnamed.jpg",
    )
    faces = [f for r in results for f in r["faces"]]
    assert len(faces) == 8
    assert all(f["name"] is None for f in faces), [(f["knn"]["name"], f["similarity"]) for f in faces]


def test_reenrolling_adds_nothing_and_remove_rename_persist(tmp_path, data):
    model = tmp_path / "m"
    folder = data / FR / "people/kit_harington"
    first = enroll_json(model, "kit", folder, "--backbone", "sface")
    assert first["added"] == 3 and first["skipped"] == []
    again = enroll_json(model, "kit", folder)
    assert again["added"] == 0
    assert [s["reason"].split(":")[0] for s in again["skipped"]] == ["duplicate"] * 3
    enroll_json(model, "rose", data / FR / "people/rose_leslie")

    def listing():  # a new process each time: what persisted, not what one process remembers
        out = subprocess.run(
            [sys.executable, str(ROOT / "enroll.py"), "--model", str(model), "--list", "--json"],
            capture_output=True, text=True, check=True, cwd=ROOT,
        )
        return json.loads(out.stdout)["people"]

    assert listing() == {"kit": 3, "rose": 2}
    assert run(enroll, ["--model", model, "--rename", "kit", "Kit Harington"]).exit_code == 0
    assert listing() == {"Kit Harington": 3, "rose": 2}
    assert run(enroll, ["--model", model, "--remove", "rose"]).exit_code == 0
    assert listing() == {"Kit Harington": 3}
    (r,) = identify_json(model, data / FR / "people/kit_harington/knn_test__johnsnow_test1.jpg")
    assert r["faces"][0]["name"] == "Kit Harington"


def test_clear_errors(tmp_path, data, obama_biden_model):
    model = tmp_path / "m"
    res = run(enroll, ["--model", model, "--name", "x", data / FR / "people/joe_biden"])
    assert res.exit_code != 0 and "--backbone" in res.output
    res = run(identify, ["--model", tmp_path / "nothing", data / FR / "people/joe_biden"])
    assert res.exit_code != 0 and "nothing" in res.output
    res = run(enroll, ["--model", obama_biden_model, "--backbone", "facenet", "--name", "x", data / FR / "people/joe_biden"])
    assert res.exit_code != 0 and "sface" in res.output
    res = run(enroll, ["--model", obama_biden_model, "--name", "../evil", data / FR / "people/joe_biden"])
    assert res.exit_code != 0 and "../evil" in res.output
    res = run(enroll, ["--model", obama_biden_model, "--name", "x", tmp_path / "missing-folder"])
    assert res.exit_code != 0 and "missing-folder" in res.output
    res = run(identify, ["--model", obama_biden_model, "--threshold", "3", data / FR / "people/joe_biden"])
    assert res.exit_code != 0


def test_damaged_gallery_names_the_directory(tmp_path, data):
    model = tmp_path / "m"
    enroll_json(model, "joe", data / FR / "people/joe_biden", "--backbone", "sface")
    index = model / "gallery" / "index.faiss"
    index.write_bytes(index.read_bytes()[:50])
    res = run(identify, ["--model", model, data / FR / "people/joe_biden/examples__biden.jpg"])
    assert res.exit_code != 0
    assert str(model / "gallery") in res.output and "Traceback" not in res.output


def test_bad_detector_settings_in_model_json_name_the_file(tmp_path, data):
    model = tmp_path / "m"
    enroll_json(model, "joe", data / FR / "people/joe_biden", "--backbone", "sface")
    cfg = json.loads((model / "model.json").read_text())
    photo = data / FR / "people/joe_biden/examples__biden.jpg"
    for bad in ({"max_side": 40000}, {"min_face_fraction": 1.5}, {"no_such_setting": 1}):
        (model / "model.json").write_text(json.dumps({**cfg, "detector": {**cfg["detector"], **bad}}))
        res = run(identify, ["--model", model, photo])
        assert res.exit_code != 0 and "Traceback" not in res.output, res.output
        assert str(model / "model.json") in res.output and next(iter(bad)) in res.output


def test_unreadable_photo_is_reported_not_fatal(obama_biden_model, data, tmp_path):
    bad = tmp_path / "bad.jpg"
    bad.write_text("not a photo")
    results = identify_json(obama_biden_model, bad, data / FR / "people/joe_biden/examples__biden.jpg")
    assert "error" in results[0] and results[0]["faces"] == []
    assert results[1]["faces"][0]["name"] == "joe_biden"


def test_help_is_fast_and_imports_no_model():
    out = subprocess.run(
        [sys.executable, "-X", "importtime", str(ROOT / "identify.py"), "--help"], capture_output=True, text=True, cwd=ROOT
    )
    assert out.returncode == 0 and "--model" in out.stdout
    # -X importtime names each module loaded, last on its line: no torch, no FAISS library
    # (our own gallery.faiss_store, which loads FAISS only when a gallery is opened, may load).
    loaded = {line.rsplit("|", 1)[-1].strip().split(".")[0] for line in out.stderr.splitlines() if "|" in line}
    assert "torch" not in loaded and "faiss" not in loaded, sorted(loaded)


def test_facetool_command_is_installed_and_runs_the_same_tools(obama_biden_model, data):
    """`facetool` (the console command pip installs) names the tools and answers as identify.py does."""
    exe = Path(sys.executable).with_name("facetool")
    out = subprocess.run([str(exe), "--help"], capture_output=True, text=True, cwd="/", timeout=120)
    assert out.returncode == 0, out.stderr
    for tool in ("enroll", "identify", "finetune", "evaluate", "serve"):
        assert f"  {tool} " in out.stdout, out.stdout
    from recognizer.cli import main as facetool

    photo = data / FR / "group/barack_obama+joe_biden__two_people.jpg"
    res = CliRunner().invoke(facetool, ["identify", "--model", str(obama_biden_model), str(photo), "--json"], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    assert json.loads(res.output) == identify_json(obama_biden_model, photo)
    assert sorted(f["name"] for f in json.loads(res.output)[0]["faces"]) == ["barack_obama", "joe_biden"]


def test_importing_the_packages_leaves_the_environment_alone():
    code = ("import os; before = dict(os.environ)\n"
            "import recognizer, recognizer.cli, recognizer.recognizer, gallery, web.app\n"
            "print(dict(os.environ) == before, 'OMP_WAIT_POLICY' in os.environ)")
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd="/", env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["True", "False"]

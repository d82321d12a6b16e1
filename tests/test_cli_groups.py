"""The command groups `facetool people`, `facetool model` and `facetool clusters` on a real sface
model, and that the older flags of enroll.py / finetune.py / cluster.py answer as they do."""
from __future__ import annotations

import json
import shutil

import pytest
from click.testing import CliRunner

from recognizer.cli import cluster, enroll
from recognizer.cli import finetune as finetune_cli
from recognizer.cli import main as facetool

FR = "face_recognition-examples"
PEOPLE = ("kit_harington", "rose_leslie", "alex_lacamoire")


def run(cmd, *args):
    res = CliRunner().invoke(cmd, [str(a) for a in args], catch_exceptions=False)
    return res.exit_code, res.output


def ok_json(cmd, *args):
    code, out = run(cmd, *args, "--json")
    assert code == 0, out
    return json.loads(out)


@pytest.fixture(scope="module")
def base_model(tmp_path_factory, data):
    model = tmp_path_factory.mktemp("groups") / "model"
    for person in PEOPLE:
        ok_json(enroll.main, "--model", model, "--backbone", "sface", "--name", person, data / FR / "people" / person)
    return model


@pytest.fixture
def model(base_model, tmp_path):
    """A copy of the module's model for one test to change."""
    return shutil.copytree(base_model, tmp_path / "model")


def test_help_names_the_groups_and_their_commands():
    code, out = run(facetool, "--help")
    assert code == 0
    for group in ("people", "model", "clusters", "enroll", "identify", "finetune"):
        assert f"  {group} " in out, out
    for group, commands in (("people", ("list", "rename", "merge", "remove", "faces", "remove-face", "move-face", "export", "import",
                                        "make-chips")),
                            ("model", ("finetune", "reembed", "candidate", "switch", "discard", "rollback")),
                            ("clusters", ("list", "name", "dismiss", "discard"))):
        code, out = run(facetool, group, "--help")
        assert code == 0 and all(f"  {c} " in out for c in commands), out


def test_people_list_answers_as_enroll_list(base_model):
    assert run(facetool, "people", "list", "--model", base_model) == run(enroll.main, "--model", base_model, "--list")
    listed = ok_json(facetool, "people", "list", "--model", base_model)
    assert listed == ok_json(enroll.main, "--model", base_model, "--list")
    assert set(listed["people"]) == set(PEOPLE) and listed["chips"] == listed["people"]


def test_people_rename_refuses_an_enrolled_name_and_names_merge(model):
    before = ok_json(facetool, "people", "list", "--model", model)["people"]
    code, out = run(facetool, "people", "rename", "--model", model, "kit_harington", "rose_leslie")
    assert code == 1 and f"facetool people merge --model {model} kit_harington rose_leslie" in out, out
    assert "merge=True" not in out
    code, out = run(enroll.main, "--model", model, "--rename", "kit_harington", "rose_leslie")
    assert code == 1 and f"enroll.py --model {model} --rename kit_harington rose_leslie --merge" in out, out
    assert ok_json(facetool, "people", "list", "--model", model)["people"] == before  # nothing changed
    code, out = run(enroll.main, "--model", model, "--merge", "--list")
    assert code == 2 and "--merge goes with --rename" in out

    assert ok_json(facetool, "people", "rename", "--model", model, "kit_harington", "Kit") == {"renamed": "kit_harington", "to": "Kit"}
    code, out = run(facetool, "people", "rename", "--model", model, "Nobody", "Somebody")
    assert code == 1 and "Nobody" in out and "Traceback" not in out


def test_people_merge_and_enroll_rename_merge_join_two_names(model):
    before = ok_json(facetool, "people", "list", "--model", model)["people"]
    code, out = run(facetool, "people", "merge", "--model", model, "kit_harington", "rose_leslie")
    after = ok_json(facetool, "people", "list", "--model", model)["people"]
    assert after == {"rose_leslie": before["kit_harington"] + before["rose_leslie"], "alex_lacamoire": before["alex_lacamoire"]}
    # the merge and, as after every change of who is enrolled, the threshold for the gallery as it is now
    assert code == 0 and out.startswith(f"merged kit_harington into rose_leslie ({after['rose_leslie']} faces)\n"
                                        "unknown threshold "), out
    merged = ok_json(enroll.main, "--model", model, "--rename", "alex_lacamoire", "rose_leslie", "--merge")
    assert merged["renamed"] == "alex_lacamoire" and merged["to"] == "rose_leslie" and merged["merged"]
    assert merged["people"] == {"rose_leslie": sum(before.values())} and merged["threshold"]["people"] == 1
    assert ok_json(facetool, "people", "list", "--model", model)["people"] == {"rose_leslie": sum(before.values())}


def test_people_remove(model):
    n = ok_json(facetool, "people", "list", "--model", model)["people"]["rose_leslie"]
    code, out = run(facetool, "people", "remove", "--model", model, "rose_leslie")
    assert code == 0 and out == f"removed rose_leslie ({n} faces)\n"
    assert "rose_leslie" not in ok_json(facetool, "people", "list", "--model", model)["people"]
    code, out = run(facetool, "people", "remove", "--model", model, "rose_leslie")
    assert code == 1 and "rose_leslie" in out


def test_people_export_import_and_make_chips(model, tmp_path):
    archive = tmp_path / "faces.tar"
    out = ok_json(facetool, "people", "export", "--model", model, archive)
    assert out["faces"] == sum(out["people"].values()) and set(out["people"]) == set(PEOPLE)
    fresh = tmp_path / "fresh"
    rep = ok_json(facetool, "people", "import", "--model", fresh, archive)  # backbone from the archive
    assert rep["added"] == out["people"] and rep["clashes"] == []
    assert ok_json(facetool, "people", "list", "--model", fresh)["people"] == out["people"]
    code, text = run(facetool, "people", "import", "--model", fresh, archive)  # everyone clashes: exit 1
    assert code == 1 and "is already enrolled here" in text
    code, text = run(facetool, "people", "make-chips", "--model", model)
    assert code == 0 and text == f"{out['faces']} of {out['faces']} faces have a chip\n"


def test_model_reembed_candidate_discard_switch_rollback(model):
    assert ok_json(facetool, "model", "candidate", "--model", model) == {"candidate": None}
    assert run(facetool, "model", "candidate", "--model", model) == (0, "no candidate is pending\n")
    assert run(facetool, "model", "discard", "--model", model) == (0, "no candidate was pending\n")
    assert run(finetune_cli.main, "--model", model, "--discard-candidate") == (0, "no candidate was pending\n")

    people = ok_json(facetool, "people", "list", "--model", model)["people"]
    out = ok_json(facetool, "model", "reembed", "--model", model, "--backbone", "sface", "-q")
    built = out["candidate"]["model_id"]
    assert out["switch"] is None
    cand = ok_json(facetool, "model", "candidate", "--model", model)["candidate"]
    assert cand["model_id"] == built and cand["kind"] == "reembed" and cand["backbone"] == "sface"
    code, text = run(facetool, "model", "candidate", "--model", model)
    assert code == 0 and built in text and "facetool model switch" in text
    assert ok_json(facetool, "model", "discard", "--model", model) == {"discarded": True}
    assert ok_json(facetool, "model", "candidate", "--model", model) == {"candidate": None}

    ok_json(facetool, "model", "reembed", "--model", model, "--backbone", "sface", "-q")
    sw = ok_json(facetool, "model", "switch", "--model", model, "-q")
    assert sw["faces"] == sum(people.values())
    assert ok_json(facetool, "people", "list", "--model", model)["people"] == people
    back = ok_json(facetool, "model", "rollback", "--model", model)
    assert (back["from"], back["to"]) == (sw["to"], sw["from"])
    assert ok_json(facetool, "people", "list", "--model", model)["people"] == people
    code, text = run(facetool, "model", "switch", "--model", model)  # nothing pending now: one line, no traceback
    assert code == 1 and text.startswith("Error: ") and text.count("\n") == 1, text


def test_clusters_group_answers_as_the_old_flags(model):
    assert run(facetool, "clusters", "list", "--model", model, "--json") == run(cluster.main, "--model", model, "--runs", "--json")
    code, out = run(facetool, "clusters", "dismiss", "--model", model, "latest")
    assert code == 2 and "RUN:ID" in out
    code, out = run(facetool, "clusters", "discard", "--model", model, "latest:1")
    assert code == 2 and "facetool clusters dismiss" in out


def test_model_threshold_answers_as_enroll_target_fpir_alone(model, tmp_path):
    fixed = ok_json(facetool, "model", "threshold", "--model", model)["threshold"]
    other = shutil.copytree(model, tmp_path / "other")
    set_here = run(facetool, "model", "threshold", "--model", model, "--target-fpir", "0.05")
    assert set_here == run(enroll.main, "--model", other, "--target-fpir", "0.05") and set_here[0] == 0
    derived = ok_json(facetool, "model", "threshold", "--model", model)["threshold"]
    assert derived == ok_json(enroll.main, "--model", other, "--target-fpir", "0.05")["threshold"]
    assert derived != fixed and derived["target_fpir"] == 0.05

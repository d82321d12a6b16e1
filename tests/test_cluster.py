"""cluster.py and enroll.py --cluster end to end on the shared photos; saved runs' rules."""
from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from recognizer.cli import cluster, enroll, identify

FR = "face_recognition-examples"


def run(cmd, args, code=0):
    res = CliRunner().invoke(cmd.main, [str(a) for a in args], catch_exceptions=False)
    assert res.exit_code == code, res.output
    return res


def as_json(cmd, args):
    return json.loads(run(cmd, [*args, "--json"]).output)


@pytest.fixture(scope="module")
def photos(data):
    """The group photos plus single-person photos of the same people, none of them enrolled."""
    people = ["barack_obama", "joe_biden", "kit_harington", "rose_leslie"]
    singles = {p: sorted((data / FR / "people" / p).iterdir()) for p in people}
    singles["barack_obama"] = [f for f in singles["barack_obama"] if "p.jpg" not in f.name][:3]  # not its 4 resizes
    return sorted((data / FR / "group").iterdir()), singles


@pytest.fixture(scope="module")
def clustered(tmp_path_factory, data, photos):
    """A model knowing one unrelated person, and one cluster.py run over the photos."""
    model = tmp_path_factory.mktemp("cl") / "model"
    run(enroll, ["--model", model, "--name", "madonna", data / "5-celebrity-faces/val/madonna", "--backbone", "sface"])
    groups, singles = photos
    inputs = [*groups, *[f for fs in singles.values() for f in fs]]
    out = tmp_path_factory.mktemp("sheets")
    meta = as_json(cluster, ["--model", model, *inputs, "--out", out])
    return model, meta, out


def cluster_of(meta, photo: Path) -> dict:
    """The cluster holding the main (largest, so first) face of a single-person photo."""
    faces = [i for i, f in enumerate(meta["faces"]) if meta["photos"][f["photo"]]["photo"] == str(photo)]
    assert faces, photo.name
    return next(c for c in meta["clusters"] if faces[0] in c["faces"])


def test_clusters_follow_people_and_are_deterministic(clustered, photos):
    model, meta, _ = clustered
    groups, singles = photos
    assert meta["id"] and meta["threshold"] == pytest.approx(0.43)
    assert meta["linkage"]["link_threshold"] == pytest.approx(meta["threshold"])  # offset 0 by default
    by_person = {p: {cluster_of(meta, f)["id"] for f in fs} for p, fs in singles.items()}
    assert all(len(ids) == 1 for ids in by_person.values()), by_person  # each person's photos together
    assert len({next(iter(v)) for v in by_person.values()}) == 4  # and apart from the others
    for c in meta["clusters"]:
        # two faces of one photo never share a cluster; the central face is a member
        assert len({meta["faces"][i]["photo"] for i in c["faces"]}) == c["size"] and c["central"] in c["faces"]
        ll = c["looks_like"]
        assert ll is None or (ll["name"] == "madonna" and ll["below_threshold"] and ll["similarity"] < meta["threshold"])
    assert [c["size"] for c in meta["clusters"]] == sorted((c["size"] for c in meta["clusters"]), reverse=True)
    # group photos' faces joined their people's clusters
    biden = next(iter(by_person["joe_biden"]))
    in_biden = {meta["photos"][meta["faces"][i]["photo"]]["photo"] for i in meta["clusters"][biden - 1]["faces"]}
    assert {str(g) for g in groups if "joe_biden" in g.name} <= in_biden
    again = as_json(cluster, ["--model", model, *[meta["photos"][i]["photo"] for i in range(len(meta["photos"]))]])
    assert again["id"] != meta["id"]
    assert (again["faces"], again["clusters"]) == (meta["faces"], meta["clusters"])
    listed = as_json(cluster, ["--model", model, "--runs"])["runs"]
    assert [r["run"] for r in listed] == sorted([meta["id"], again["id"]])
    run(enroll, ["--model", model, "--discard", again["id"]])
    assert [r["run"] for r in as_json(cluster, ["--model", model, "--runs"])["runs"]] == [meta["id"]]


def test_contact_sheets_and_offline_index(clustered):
    _, meta, out = clustered
    from PIL import Image

    page = (out / "index.html").read_text()
    assert "http://" not in page and "https://" not in page and "<script" not in page
    for c in meta["clusters"]:
        sheet = out / f"cluster-{c['id']:04d}.png"
        assert f"src='{sheet.name}'" in page and f"--cluster {meta['id']}:{c['id']}" in page
        w, h = Image.open(sheet).size
        assert w >= 96 and h >= 96
    assert "looks like madonna" in page


def test_enroll_cluster_names_people_in_the_next_identify(clustered, data, photos):
    model, meta, _ = clustered
    groups, singles = photos
    obama, biden = cluster_of(meta, singles["barack_obama"][0]), cluster_of(meta, singles["joe_biden"][0])
    two = str(next(g for g in groups if "two_people" in g.name))
    before = {f["name"] for f in as_json(identify, ["--model", model, two])[0]["faces"]}
    assert before == {None}
    # leave one face out, then merge it into the same person later: both work through --cluster
    out = as_json(enroll, ["--model", model, "--name", "Joe Biden", "--cluster", f"{meta['id']}:{biden['id']}"])
    assert out["added"] == biden["size"]
    left_out = obama["faces"][-1]
    out = as_json(enroll, ["--model", model, "--name", "Barack Obama", "--cluster", f"{meta['id']}:{obama['id']}",
                           "--exclude", str(left_out)])
    assert out["added"] == obama["size"] - 1
    listed = as_json(enroll, ["--model", model, "--list"])
    people = listed["people"]
    # only the cluster's faces: the group photos' other faces were not enrolled with them
    assert people == {"madonna": people["madonna"], "Joe Biden": biden["size"], "Barack Obama": obama["size"] - 1}
    # every face enrolled from a cluster has its chip in the model directory, as an ordinary enrolment
    assert listed["chips"] == people
    res = run(enroll, ["--model", model, "--name", "Joe Biden", "--cluster", f"{meta['id']}:{biden['id']}"], code=1)
    assert "already enrolled as Joe Biden" in res.output
    (named,) = as_json(identify, ["--model", model, two])
    assert sorted(f["name"] for f in named["faces"]) == ["Barack Obama", "Joe Biden"]
    kit = as_json(identify, ["--model", model, *singles["kit_harington"]])
    assert all(f["name"] is None for r in kit for f in r["faces"])  # not enrolled: still unknown


def test_runs_are_private_and_changes_check_what_they_replace(clustered, tmp_path):
    from recognizer.clustering import runs

    model, meta, _ = clustered
    d = model / "clusters" / meta["id"]
    assert stat.S_IMODE(os.stat(model / "clusters").st_mode) == 0o700 and stat.S_IMODE(os.stat(d).st_mode) == 0o700
    for f in (d / "run.json", d / "faces.npz"):
        assert stat.S_IMODE(os.stat(f).st_mode) == 0o600
    r = runs.load_run(model, meta["id"])
    emb, crops = r.arrays()
    assert emb.shape == (len(meta["faces"]), 128) and crops.shape[1:] == (112, 112, 3) and crops.dtype == np.uint8
    stale = runs.load_run(model, meta["id"])
    fresh = runs.load_run(model, meta["id"])
    with runs.runs_lock(model):
        runs.replace_meta(fresh, dict(fresh.meta, note="x"))
        with pytest.raises(runs.RunError, match="changed by another process"):
            runs.replace_meta(stale, dict(stale.meta, note="y"))
    assert runs.load_run(model, meta["id"]).meta["note"] == "x"
    for bad in ("../x", "nope", "20261202-031500:3"):
        with pytest.raises(runs.RunError):
            runs.load_run(model, bad)


def test_clear_errors(clustered, tmp_path):
    from recognizer.clustering import runs

    model, meta, _ = clustered
    open_ = next(c["id"] for c in runs.load_run(model, meta["id"]).meta["clusters"] if c["status"] == "open")
    for args, msg in (
        (["--name", "X", "--cluster", "nonsense"], "RUN:ID"),
        (["--name", "X", "--cluster", f"{meta['id']}:999"], "has no cluster 999"),
        (["--name", "X", "--cluster", "20200101-000000:1"], "no clustering run 20200101-000000"),
        (["--name", "X", "--cluster", f"{meta['id']}:{open_}", "--exclude", "100000"], "not in cluster"),
        (["--cluster", f"{meta['id']}:1"], "--name is required"),
    ):
        res = run(enroll, ["--model", model, *args], code=2 if "required" in msg else 1)
        assert msg in res.output, res.output
    damaged = tmp_path / "m"
    run(cluster, ["--model", damaged, "x.jpg"], code=1)


def test_every_cluster_handled_deletes_the_run(tmp_path, clustered):
    """Dismissing the last open cluster removes the run with its crops."""
    import shutil

    from recognizer.clustering import runs

    model, meta, _ = clustered
    copy = tmp_path / "model"
    shutil.copytree(model, copy)
    r = runs.load_run(copy, meta["id"])
    open_ = [c["id"] for c in r.meta["clusters"] if c["status"] == "open"]
    for cid in open_:
        run(enroll, ["--model", copy, "--discard", f"{meta['id']}:{cid}"])
    assert runs.list_runs(copy) == [] and not (copy / "clusters" / meta["id"]).exists()


def test_cluster_enrolled_faces_are_reembedded_from_their_chips(clustered, photos, tmp_path):
    """A face enrolled from a cluster survives a move to another backbone: export, then import
    into a facenet model re-embeds it from the chip the run kept (no photo is read)."""
    from recognizer.recognizer import Recognizer

    model, meta, _ = clustered
    _, singles = photos
    kit = cluster_of(meta, singles["kit_harington"][0])
    out = as_json(enroll, ["--model", model, "--name", "Kit", "--cluster", f"{meta['id']}:{kit['id']}"])
    assert out["added"] == kit["size"]
    rec = Recognizer.open(model)
    kit_records = rec.records("Kit")
    assert len(kit_records) == kit["size"] and all(r.chip in rec.chip_ids() for r in kit_records)
    archive = tmp_path / "faces.tar"
    exported = as_json(enroll, ["--model", model, "--export", archive])
    assert exported["chips"] == exported["faces"] and exported["without_chip"] == 0
    other = tmp_path / "facenet"
    rep = as_json(enroll, ["--model", other, "--backbone", "facenet", "--weights", "random", "--import", archive])
    assert rep["reembedded"] == exported["faces"] and rep["added"]["Kit"] == kit["size"]
    moved = Recognizer.open(other)
    assert moved.config.backbone == "facenet" and moved.gallery.people()["Kit"] == kit["size"]
    # the facenet vector of a cluster-enrolled face is the one its chip gives the facenet network
    from recognizer.chips import crop_for

    r = moved.records("Kit")[0]
    ids, vecs = moved.gallery.vectors()
    want = moved.embedder.embed(crop_for(moved.chips.get(r.chip), moved.embedder)[None])[0]
    assert np.allclose(vecs[list(ids).index(r.id)], want, atol=1e-5)

"""Removal's reach (issue #25, item 5): a person's removal reaches the clustering runs that saw their enrolled
photos, and every model directory's chips of a gallery that several model directories share."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from recognizer.cli import cluster, enroll

FR = "face_recognition-examples/people"
OBAMA2 = "barack_obama/examples__obama2.jpg"  # one face only: nobody else's face keeps the photo in a run


def run(cmd, args, code=0):
    res = CliRunner().invoke(cmd.main, [str(a) for a in args], catch_exceptions=False)
    assert res.exit_code == code, res.output
    return res


def test_removal_scrubs_a_clustering_runs_enrolled_photos(tmp_path, data, fast_open):
    """A clustering run over photos, one of them enrolled as Obama (so a known face in the run, not a cluster's):
    after `--remove Obama`, run.json keeps neither that photo's path nor its sha256, and the run's other
    clusters stay open and readable."""
    from recognizer.clustering import runs
    from recognizer.modeldir import stores
    from recognizer.modeldir.directory import ModelDir
    from recognizer.recognizer import Recognizer

    model, folder = tmp_path / "model", tmp_path / "obama"
    folder.mkdir()
    photo = data / FR / OBAMA2
    (folder / photo.name).symlink_to(photo)
    run(enroll, ["--model", model, "--backbone", "sface", "--name", "Obama", folder])
    others = [*sorted((data / FR / "joe_biden").iterdir()), *sorted((data / FR / "kit_harington").iterdir())]
    run(cluster, ["--model", model, photo, *others, "--out", tmp_path / "sheets", "--json"])
    [run_file] = (model / "clusters").glob("*/run.json")
    digest = hashlib.sha256(photo.read_bytes()).hexdigest()
    before = run_file.read_text()
    assert str(photo) in before and digest in before and '"Obama"' in before

    with Recognizer.open(model) as rec:
        ctx = stores.Removal.of(ModelDir(model), "Obama", rec.gallery, rec.config.gallery)
        assert "clustering runs" in stores.held(ctx)
        run(enroll, ["--model", model, "--remove", "Obama"])
        rec.refresh()
        ctx.gallery = rec.gallery
        assert stores.held(ctx) == {}

    after = run_file.read_text()
    assert str(photo) not in after and digest not in after and '"Obama"' not in after
    meta = runs.load_run(model, "latest").meta
    assert sum(c["status"] == "open" for c in meta["clusters"]) >= 2
    kept = {meta["photos"][f["photo"]]["photo"] for f in meta["faces"] if not f.get("removed")}
    assert kept == {str(p) for p in others}


def test_removal_reaches_every_model_directory_sharing_a_milvus_gallery(tmp_path, data, fast_open):
    """Two model directories on one Milvus Lite gallery: a person enrolled through B and removed through A
    leaves no chip of theirs in B's gallery-chips/; a recorded directory that is gone is skipped; another
    person's chips in B stay."""
    pytest.importorskip("milvus_lite", reason="Milvus Lite cannot run on this platform")
    from recognizer.recognizer import Recognizer

    uri = f"milvus-lite:{tmp_path / 'faces.db'}"
    a, b, gone = tmp_path / "A", tmp_path / "B", tmp_path / "C"
    with Recognizer.open(gone, backbone="sface", create=True, gallery=uri) as rc:
        rc.enroll("Rose", sorted((data / FR / "rose_leslie").iterdir())[:1])
    import shutil

    shutil.rmtree(gone)  # recorded, then deleted: skipped
    with Recognizer.open(b, backbone="sface", create=True, gallery=uri) as rb:
        assert rb.enroll("Kit", sorted((data / FR / "kit_harington").iterdir())).added == 3
        assert rb.enroll("Biden", sorted((data / FR / "joe_biden").iterdir())).added == 2
        kit = {r.chip for r in rb.records("Kit")}
        biden = {r.chip for r in rb.records("Biden")}
        b_chips = rb.chips
    assert kit and kit <= b_chips.ids() and biden <= b_chips.ids()

    with Recognizer.open(a, backbone="sface", create=True, gallery=uri) as ra:
        assert ra.remove("Kit") == 3
        assert "Kit" not in ra.people()
    assert b_chips.ids() == biden
    from recognizer.modeldir import shared  # the record removal walks (checked after the behaviour above)

    assert {p.name for p in shared.attached(uri)} == {"A", "B", "C"}
    assert json.loads(Path(str(tmp_path / "faces.db") + shared.MODELS_SUFFIX).read_text()) == sorted(
        str(d.resolve()) for d in (a, b, gone))


def test_a_cluster_enrolment_racing_a_removal_enrols_nothing_of_the_removed(tmp_path, data, fast_open, monkeypatch):
    """A run holds an open cluster of Kit's faces; Kit is then enrolled from those photos, and removed just as
    someone (the web page, enroll.py --cluster) enrols that cluster under another name, between reading the run
    and taking the runs' lock: the enrolment sees the run as the removal left it, and adds none of Kit's faces."""
    from recognizer.clustering import runs, service
    from recognizer.clustering.runs import RunError
    from recognizer.recognizer import Recognizer

    model, kit = tmp_path / "model", data / FR / "kit_harington"
    others = [*sorted((data / FR / "rose_leslie").iterdir()), *sorted((data / FR / "joe_biden").iterdir())]
    with Recognizer.open(model, backbone="sface", create=True) as rec:
        rec.enroll("Alex", sorted((data / FR / "alex_lacamoire").iterdir()))
        result = service.cluster_photos(rec, [*sorted(kit.iterdir()), *others])
        run_id = service.save(rec, result)
        meta = runs.load_run(model, run_id).meta
        kit_faces = {i for i, f in enumerate(meta["faces"]) if meta["photos"][f["photo"]]["photo"].startswith(str(kit))}
        [cluster] = [c for c in meta["clusters"] if set(c["faces"]) & kit_faces]
        assert set(cluster["faces"]) == kit_faces and sum(c["status"] == "open" for c in meta["clusters"]) >= 2
        assert rec.enroll("Kit", sorted(kit.iterdir())).added == 3

        real, calls = runs.runs_lock, []

        def removal_first(d):
            calls.append(d)
            if len(calls) == 1:  # the enrolment's lock: the removal runs (taking the lock itself) just before
                assert rec.remove("Kit") == 3
            return real(d)

        monkeypatch.setattr(runs, "runs_lock", removal_first)
        with pytest.raises(RunError, match="person removed|not in|every face"):
            service.enroll_cluster(rec, run_id, cluster["id"], "Jon Snow")
        monkeypatch.setattr(runs, "runs_lock", real)
        assert set(rec.people()) == {"Alex"}
        kit_hashes = {hashlib.sha256(p.read_bytes()).hexdigest() for p in kit.iterdir()}
        assert not {r.content_hash for r in rec.records()} & kit_hashes
        assert runs.load_run(model, run_id).cluster(cluster["id"])["status"] == runs.PERSON_REMOVED

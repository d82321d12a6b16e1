"""Crash safety of a model directory: killed enrolments, full disks, and what enroll.py reports.

CRASH_TRIALS=200 pytest tests/test_reliability_crash.py   # or benchmarks/crash_trials.py
"""
from __future__ import annotations

import errno
import os
import random
import signal
import sqlite3
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from recognizer.cli import enroll
from gallery import FaceRecord, create_gallery, open_gallery
from facecore.errors import GalleryError, ModelError
from reliability_util import check_reported, json_reports

TRIALS = int(os.environ.get("CRASH_TRIALS", "8"))
FR = "face_recognition-examples/people"


def kill_window(forkserver, folders, tmp_path: Path) -> float:
    """Seconds over which kills are spread: CRASH_KILL_WINDOW_S, or else a few times what a
    child takes here for its first two enrolments, so that on a slow or loaded machine kills
    still land both mid-enrolment and after some enrolments finished (a fixed 5 s once ended
    all 8 children before their first report on a loaded 2-core machine)."""
    if "CRASH_KILL_WINDOW_S" in os.environ:
        return float(os.environ["CRASH_KILL_WINDOW_S"])
    probe = tmp_path / "probe"
    runs = [["--model", probe / f"m{i}", "--backbone", "sface", "--name", f"x{i}", folders[i], "--json"] for i in range(2)]
    start = time.monotonic()
    assert forkserver.wait(forkserver.start("enroll", runs, tmp_path / "probe.out")) == 0
    return max(5.0, 4 * (time.monotonic() - start))


def test_killed_enroll_loses_no_reported_enrolment(tmp_path, forkserver, folders, fast_open):
    from recognizer.recognizer import Recognizer

    rnd = random.Random(int(os.environ.get("CRASH_SEED", "20240607")))
    model = tmp_path / "model"
    reported: dict[str, dict] = {}
    in_flight: set[str] = set()  # enrolments a kill interrupted: each may have been committed, unreported
    killed = finished = 0
    window = kill_window(forkserver, folders, tmp_path)
    for trial in range(TRIALS):
        fresh = tmp_path / f"fresh-{trial}"
        # Each child first creates a new model (a kill there must not leave a half-made one),
        # then keeps enrolling new names into the shared model until it is killed.
        runs = [["--model", fresh, "--backbone", "sface", "--name", f"f{trial}", folders[trial % 5], "--json"]]
        runs += [["--model", model, "--backbone", "sface", "--name", f"p{trial}-{i}", folders[(trial + i) % 5], "--json"]
                 for i in range(20)]
        out = tmp_path / f"trial-{trial}.out"
        pid = forkserver.start("enroll", runs, out)
        time.sleep(rnd.uniform(0.0, window))
        os.kill(pid, signal.SIGKILL)
        code = forkserver.wait(pid)
        killed += code == -signal.SIGKILL
        finished += code == 0
        assert code in (0, -signal.SIGKILL), (out.with_name(out.name + ".err")).read_text()
        reports = {r["name"]: r for r in json_reports(out.read_text())}
        fresh_report = reports.pop(f"f{trial}", None)
        # The fresh model: absent (killed before its rename), or complete and loadable.
        if fresh.exists():
            check_reported(fresh, {f"f{trial}": fresh_report} if fresh_report else {})
        else:
            assert fresh_report is None
            # Creating it again works: nothing half-made is in the way.
            Recognizer.open(fresh, backbone="sface", create=True).gallery.close()
        reported.update(reports)
        if model.exists():
            people = check_reported(model, reported)
            in_flight.add(f"p{trial}-{len(reports)}")
            assert people <= set(reported) | in_flight, people - set(reported) - in_flight
        else:
            assert not reported
    print(f"\nenroll crash trials: {TRIALS} children ({killed} killed mid-run, {finished} finished first), "
          f"{len(reported)} reported enrolments, 0 lost; every model directory loaded")
    assert reported, f"no enrolment finished within the kill window ({window:.1f} s)"


def test_enroll_reports_only_after_the_gallery_commit(tmp_path, data, monkeypatch, fast_open):
    from gallery.faiss_store import FaissGallery

    events = []
    real_commit, real_echo = FaissGallery._commit, enroll.click.echo

    def commit(self, *a, **kw):
        gen = real_commit(self, *a, **kw)
        events.append(("commit", self._db_generation()))
        return gen

    monkeypatch.setattr(FaissGallery, "_commit", commit)
    monkeypatch.setattr(enroll.click, "echo", lambda *a, **kw: (events.append(("echo",)), real_echo(*a, **kw)))
    res = CliRunner().invoke(enroll.main, ["--model", str(tmp_path / "m"), "--backbone", "sface", "--name", "joe",
                                           str(data / FR / "joe_biden"), "--json"])
    assert res.exit_code == 0, res.output
    kinds = [e[0] for e in events]
    assert "commit" in kinds and "echo" in kinds
    assert kinds.index("commit") < kinds.index("echo"), events


# ---- full disks --------------------------------------------------------------------------

MODEL, DIM = "full-disk-model", 8


def _vectors(seed: int, n: int = 3) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((n, DIM)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _records(name: str, n: int = 3) -> list[FaceRecord]:
    return [FaceRecord(name, f"{name}-{i}.jpg", f"h-{name}-{i}", (0, 0, 10, 10)) for i in range(n)]


def _snapshot(path: Path) -> tuple[dict, np.ndarray]:
    g = open_gallery(path, MODEL)
    try:
        return g.people(), g.vectors()[1]
    finally:
        g.close()


def enospc(*a, **kw):
    raise OSError(errno.ENOSPC, "No space left on device")


@pytest.fixture
def full_gallery(tmp_path):
    path = tmp_path / "g"
    g = create_gallery(path, MODEL, DIM)
    g.add(_vectors(1), _records("ada"), model_id=MODEL)
    g.add(_vectors(2), _records("bob"), model_id=MODEL)
    before = _snapshot(path)
    yield path, g, before
    g.close()


@pytest.mark.parametrize("where,change", [(w, c) for w in ("faiss.write_index", "fsync", "sqlite")
                                          for c in ("add", "remove", "rename")
                                          if not (c == "rename" and w != "sqlite")])  # a rename writes no index
def test_full_disk_before_commit_keeps_previous_state(full_gallery, monkeypatch, where, change):
    import faiss

    path, g, before = full_gallery
    if where == "faiss.write_index":
        monkeypatch.setattr(faiss, "write_index", lambda *a: (_ for _ in ()).throw(RuntimeError("write error")))
    elif where == "fsync":
        monkeypatch.setattr(os, "fsync", enospc)
    else:  # SQLite itself finds the disk full: no room for one more page
        pages = g._db.execute("PRAGMA page_count").fetchone()[0]
        g._db.execute(f"PRAGMA max_page_count = {pages}")
        if change != "add":  # removals and renames fit in the pages there are: fill the journal instead
            monkeypatch.setattr(g, "_db", _FailingCommit(g._db))
    act = {"add": lambda: g.add(_vectors(3, 200), _records("cy", 200), model_id=MODEL),
           "remove": lambda: g.remove_person("ada"),
           "rename": lambda: g.rename_person("ada", "ada lovelace")}[change]
    with pytest.raises(GalleryError) as err:
        act()
    assert str(path) in str(err.value)
    monkeypatch.undo()
    if where == "sqlite":
        g._db.execute("PRAGMA max_page_count = 1073741823")
    people, vecs = _snapshot(path)
    assert people == before[0] and np.array_equal(vecs, before[1])
    assert not [p.name for p in path.iterdir() if p.name.startswith(".tmp-") or p.name.endswith("-journal")]
    # The same object goes on working once there is room again.
    assert g.people() == before[0]
    act()
    assert _snapshot(path)[0] != before[0]


class _FailingCommit:
    """A connection whose COMMIT fails the way a full disk makes SQLite fail."""

    def __init__(self, db):
        self._db = db

    def execute(self, sql, *a):
        if sql.strip().upper() == "COMMIT":
            raise sqlite3.OperationalError("database or disk is full")
        return self._db.execute(sql, *a)

    def __getattr__(self, name):
        return getattr(self._db, name)


@pytest.mark.parametrize("change", ["add", "remove"])
def test_full_disk_after_commit_keeps_the_change(full_gallery, monkeypatch, caplog, change):
    """os.replace runs after the SQLite commit: the change is durable and the index is rebuilt."""
    path, g, before = full_gallery
    monkeypatch.setattr(os, "replace", enospc)
    if change == "add":
        g.add(_vectors(3), _records("cy"), model_id=MODEL)
        want = {**before[0], "cy": 3}
    else:
        assert g.remove_person("ada") == 3
        want = {"bob": 3}
    assert "rebuilt" in caplog.text
    assert g.people() == want and len(g) == sum(want.values())  # this process, disk still full
    monkeypatch.undo()
    assert _snapshot(path)[0] == want  # a new process rebuilds the index and writes it
    assert _snapshot(path)[0] == want


def test_full_disk_during_enroll_cli_names_the_directory(tmp_path, data, monkeypatch, fast_open):
    import faiss

    model = tmp_path / "m"
    first = CliRunner().invoke(enroll.main, ["--model", str(model), "--backbone", "sface", "--name", "joe",
                                             str(data / FR / "joe_biden"), "--json"])
    assert first.exit_code == 0, first.output
    monkeypatch.setattr(faiss, "write_index", lambda *a: (_ for _ in ()).throw(RuntimeError("write error")))
    res = CliRunner().invoke(enroll.main, ["--model", str(model), "--name", "kit", str(data / FR / "kit_harington"), "--json"])
    assert res.exit_code != 0 and res.stdout == ""
    assert str(model / "gallery") in res.output and "Traceback" not in res.output
    monkeypatch.undo()
    listing = CliRunner().invoke(enroll.main, ["--model", str(model), "--list", "--json"])
    assert '"joe": 2' in listing.output and "kit" not in listing.output


def test_full_disk_while_creating_a_model_leaves_nothing(tmp_path, data, monkeypatch, fast_open):
    from recognizer.modeldir import config as model_mod
    from recognizer.recognizer import Recognizer

    monkeypatch.setattr(model_mod.os, "replace", enospc)  # model.json cannot be put in place
    with pytest.raises(ModelError) as err:
        Recognizer.open(tmp_path / "new model", backbone="sface", create=True)
    assert str(tmp_path / "new model") in str(err.value)
    monkeypatch.undo()
    assert list(tmp_path.iterdir()) == []
    Recognizer.open(tmp_path / "new model", backbone="sface", create=True).gallery.close()


# ---- finetune.py killed ------------------------------------------------------------------

FT_TRIALS = int(os.environ.get("FINETUNE_CRASH_TRIALS", "3"))


def test_killed_finetune_leaves_a_model_that_loads_with_every_enrolment(tmp_path, forkserver, folders, data, fast_open):
    """finetune.py rebuilds the gallery (re-embedding faces enrolled since) and switches model.json
    to it; killed at any moment, the model loads and still holds every reported enrolment."""
    from recognizer.modeldir.config import load_config
    from recognizer.modeldir.layout import CHECKPOINT_NAME, GALLERY_NAME
    from recognizer.recognizer import Recognizer

    for folder in (folders[0], folders[1], folders[2], folders[4]):  # each with 2+ photos: the last one is val
        photos = sorted(folder.iterdir())
        for split, chosen in (("train", photos[:-1]), ("val", photos[-1:])):
            (tmp_path / "people" / split / folder.name).mkdir(parents=True)
            for photo in chosen:
                (tmp_path / "people" / split / folder.name / photo.name).symlink_to(photo)
    model = tmp_path / "model"
    args = [tmp_path / "people", "--model", model, "--backbone", "sface", "--epochs", "3", "--json", "--quiet"]
    first = tmp_path / "first.out"
    assert forkserver.wait(forkserver.start("finetune", [args], first)) == 0, first.with_name("first.out.err").read_text()
    newcomer = ["--model", model, "--name", "newcomer", folders[3], "--json"]
    out = tmp_path / "enroll.out"
    assert forkserver.wait(forkserver.start("enroll", [newcomer], out)) == 0
    (enrolled,) = json_reports(out.read_text())
    t0 = time.monotonic()
    assert forkserver.wait(forkserver.start("finetune", [args], tmp_path / "timed.out")) == 0
    run_s = time.monotonic() - t0
    rnd = random.Random(99)
    killed = 0
    for trial in range(FT_TRIALS):
        pid = forkserver.start("finetune", [args], tmp_path / f"ft-{trial}.out")
        time.sleep(rnd.uniform(0.3, 1.0) * run_s)
        os.kill(pid, signal.SIGKILL)
        killed += forkserver.wait(pid) == -signal.SIGKILL
        rec = Recognizer.open(model)
        assert rec.classifier is not None
        want = sorted(f["file"] for f in enrolled["files"] if f["status"] in ("added", "several faces"))
        assert sorted(r.source for r in rec.gallery.records("newcomer")) == want
        rec.gallery.close()
    # A finished run clears what killed runs left behind.
    assert forkserver.wait(forkserver.start("finetune", [args], tmp_path / "last.out")) == 0
    cfg = load_config(model)
    # Kept versions (for rollback) keep their checkpoints; nothing else of a killed run stays.
    from recognizer.training.versions import kept_checkpoints

    keep = {cfg.gallery, cfg.checkpoint} | kept_checkpoints(model)
    leftovers = [p.name for p in model.iterdir() if (GALLERY_NAME.fullmatch(p.name) or CHECKPOINT_NAME.fullmatch(p.name))
                 and p.name not in keep]
    assert leftovers == []
    from test_reliability_privacy import assert_private

    assert_private(model)  # report.json, curves, split, checkpoint and gallery included
    print(f"\nfinetune crash trials: {FT_TRIALS} runs killed at random ({killed} mid-run, run {run_s:.1f} s), "
          "model loaded each time with the enrolment made since the first finetune")

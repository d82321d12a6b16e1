"""Build leases: a gallery-<token>/ or checkpoint-<token>.pt being built outside the writer lock (a
finetune, a re-embed) is not deleted as unused by another process's commit meanwhile, and the
leftovers of a build that died are deleted by the next commit.
"""
from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import finetune as finetune_cli
from reliability_util import face_image, one_person_model, run

REPO = Path(__file__).resolve().parent.parent


def leftovers(d: Path, token: str) -> set[str]:
    """gallery-<token>/ and checkpoint-<token>.pt with some content, as a build writes them."""
    (d / f"gallery-{token}").mkdir()
    (d / f"gallery-{token}" / "faces.sqlite").write_bytes(b"face data")
    (d / f"checkpoint-{token}.pt").write_bytes(b"weights")
    return {f"gallery-{token}", f"checkpoint-{token}.pt"}


def names(d: Path) -> set[str]:
    return {p.name for p in d.iterdir()}


def test_a_held_lease_keeps_its_files_until_released(tmp_path):
    from recognizer.training.versions import build_lease, remove_unused

    live, dead = "a1b2c3d4e5f6", "0f0e0d0c0b0a"
    with build_lease(tmp_path, live):
        lease = tmp_path / f".build-{live}.lock"
        assert stat.S_IMODE(lease.stat().st_mode) == 0o600
        building = leftovers(tmp_path, live)
        stale = leftovers(tmp_path, dead)
        remove_unused(tmp_path)
        assert building <= names(tmp_path) and not stale & names(tmp_path)  # an unleased leftover still goes
        assert (tmp_path / f"gallery-{live}" / "faces.sqlite").read_bytes() == b"face data"
    remove_unused(tmp_path)  # the build ended without a commit naming them: face data must not linger
    assert names(tmp_path) == set()


CHILD = """
import sys, time
from pathlib import Path
from recognizer.training.versions import build_lease
d, token = Path(sys.argv[1]), sys.argv[2]
with build_lease(d, token):
    (d / f"gallery-{token}").mkdir()
    (d / f"checkpoint-{token}.pt").write_bytes(b"weights")
    print("building", flush=True)
    time.sleep(120)
"""


def test_a_killed_builds_leftovers_are_deleted_by_the_next_commit(tmp_path):
    from recognizer.training.versions import remove_unused

    token = "c0ffee123456"
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(tmp_path), token], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "building"
        remove_unused(tmp_path)
        assert names(tmp_path) == {f"gallery-{token}", f"checkpoint-{token}.pt", f".build-{token}.lock"}
    finally:
        child.send_signal(signal.SIGKILL)
        assert child.wait(timeout=30) == -signal.SIGKILL
    assert f".build-{token}.lock" in names(tmp_path)  # a killed build leaves its lease file behind
    remove_unused(tmp_path)
    assert names(tmp_path) == set()


def test_reembed_in_another_process_survives_a_commit_meanwhile(tmp_path, data, detector, sface):
    """A re-embed (finetune.py --reembed) builds its gallery while this process takes the writer
    lock and deletes what is unused, as every commit does; the re-embed still commits, and its
    candidate is switched to with the enrolled face."""
    from recognizer.modeldir.lock import writer_lock
    from recognizer.recognizer import Recognizer
    from recognizer.training.versions import remove_unused

    model = one_person_model(tmp_path, face_image(data), detector, sface).dir
    stale = leftovers(model, "deadbeef0000")  # an interrupted run's: the commit deletes it
    proc = subprocess.Popen([sys.executable, "finetune.py", "--model", str(model), "--reembed", "--backbone", "facenet",
                             "--weights", "random", "--json", "-q"], cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        deadline = time.monotonic() + 120
        while not list(model.glob(".build-*.lock")):
            assert proc.poll() is None, proc.stdout.read()
            assert time.monotonic() < deadline, "the re-embed never started building"
            time.sleep(0.01)
        token = next(model.glob(".build-*.lock")).name[len(".build-"):-len(".lock")]
        with writer_lock(model):  # its commit waits for this one
            while not (model / f"gallery-{token}").is_dir():
                assert proc.poll() is None, proc.stdout.read()
                time.sleep(0.01)
            time.sleep(1.0)  # let it finish writing the gallery and wait for the lock
            assert not (model / "candidate.json").exists()
            remove_unused(model)
            assert f"gallery-{token}" in names(model) and not stale & names(model)
        out, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, out
    assert json.loads(out)["candidate"]["faces"] == 1
    assert json.loads((model / "candidate.json").read_text())["config"]["gallery"] == f"gallery-{token}"
    assert not list(model.glob(".build-*.lock"))
    code, text = run(finetune_cli, "--model", model, "--switch", "-q")
    assert code == 0, text
    rec = Recognizer.open(model)
    assert rec.config.backbone == "facenet" and rec.gallery.people() == {"paul": 1}

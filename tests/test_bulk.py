"""Bulk identification on Ray: the same answers as the single-process path, and a run killed
half way finishes on a rerun without redoing or losing a photo."""
from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CELEBS = ["ben_afflek", "elton_john", "jerry_seinfeld", "madonna", "mindy_kaling"]
KILL_AFTER = 8

# Runs the bulk function in a fresh process that SIGKILLs itself (and so its Ray driver) right
# after writing its KILL_AFTER-th line, the way a crash or an OOM kill would stop it.
KILLED_RUN = """
import os, signal, sys
from recognizer import bulk
written = 0
write = bulk._Appender.write
def write_then_die(self, obj):
    global written
    write(self, obj)
    written += 1
    if written == {kill_after}:
        os.kill(os.getpid(), signal.SIGKILL)
bulk._Appender.write = write_then_die
bulk.identify_bulk({model!r}, {inputs!r}, {out!r}, address="local", workers=1)
"""


@pytest.fixture(scope="module")
def inputs(data) -> list[str]:
    return [str(data / "5-celebrity-faces/val"), str(data / "face_recognition-examples/group")]


@pytest.fixture
def model(tmp_path, data, fast_open, crop_cache):
    from recognizer.recognizer import Recognizer

    # The crop cache the CLIs (and the Ray workers) use under test: both paths read the same
    # detections, as identify.py with and without --ray do for a user.
    rec = Recognizer.open(tmp_path / "model", backbone="sface", create=True, cache=crop_cache)
    for person in CELEBS:
        rec.enroll(person, sorted((data / "5-celebrity-faces/train" / person).iterdir())[:3])
    reference = [r.to_dict() for r in rec.identify_many(
        sorted(p for d in (data / "5-celebrity-faces/val").iterdir() for p in d.iterdir())
        + sorted((data / "face_recognition-examples/group").iterdir()))]
    rec.gallery.close()
    return tmp_path / "model", reference


def test_killed_ray_run_resumes_to_the_single_process_answers(model, inputs, tmp_path):
    model_dir, reference = model
    assert len(reference) == 28 and sum(bool(r["faces"]) for r in reference) >= 26
    out = tmp_path / "results.jsonl"
    code = KILLED_RUN.format(kill_after=KILL_AFTER, model=str(model_dir), inputs=inputs, out=str(out))
    first = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, start_new_session=True,
                             stderr=subprocess.PIPE, text=True)
    try:
        _, err = first.communicate(timeout=300)
    finally:
        # The local Ray cluster the killed driver started outlives it, as after a real crash
        # (a rerun with --ray auto would join it); this test starts a fresh one.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(first.pid, signal.SIGKILL)
    assert first.returncode == -signal.SIGKILL, err[-3000:]
    assert len(out.read_text().splitlines()) == KILL_AFTER
    with open(out, "a") as fh:  # a line cut short, as a kill in the middle of a write leaves it
        fh.write('{"photo": "half a li')
    second = subprocess.run([sys.executable, "identify.py", "--model", str(model_dir), *inputs, "--json",
                             "--ray", "local", "--workers", "2", "--out", str(out)],
                            cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert second.returncode == 0, second.stderr[-3000:]
    assert f"{KILL_AFTER} photo(s) were already done; analysed {len(reference) - KILL_AFTER}" in second.stderr

    assert json.loads(second.stdout) == reference
    assert [json.loads(line) for line in out.read_text().splitlines()] == reference

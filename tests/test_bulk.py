"""Bulk identification and enrolment on Ray: the same answers (and the same stored faces and chips)
as the single-process path, and a run killed half way finishes on a rerun without redoing or
losing a photo."""
from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest

from recognizer import bulk

ROOT = Path(__file__).resolve().parent.parent
CELEBS = ["ben_afflek", "elton_john", "jerry_seinfeld", "madonna", "mindy_kaling"]
KILL_AFTER = 8

# The head of a local Ray cluster, in a process of its own: it prints the cluster's address and
# keeps the cluster up until its stdin closes. Every run of this module joins it through
# RAY_ADDRESS, as `--ray auto` joins the cluster of the machine it runs on, so the cluster's
# start-up (seconds) is paid once, and a driver killed mid-run leaves the cluster up, as on a
# real cluster.
HEAD = """
import logging, sys, ray
ctx = ray.init(address="local", num_cpus=2, include_dashboard=False, object_store_memory=200 * 2**20,
               logging_level=logging.WARNING)
print(ctx.address_info["gcs_address"], flush=True)
sys.stdin.read()
ray.shutdown()
"""

# Runs the bulk function in a fresh process that SIGKILLs itself right after writing its
# KILL_AFTER-th line, the way a crash or an OOM kill would stop it.
KILLED_RUN = """
import os, signal
import recognizer
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
with recognizer.open({model!r}, cache=True) as rec:
    bulk.identify_bulk(rec, {inputs!r}, {out!r}, address="auto", workers=1)
"""


@pytest.fixture(scope="module")
def ray_env():
    """The environment of a process that joins this module's Ray cluster."""
    # A short private directory for the cluster's sockets (a Unix socket path has ~107 bytes).
    tmp = tempfile.mkdtemp(prefix="ray-", dir="/tmp")
    # Token authentication, as Ray sets up for a new local cluster by default; a process joining
    # by address uses it only when told to (RAY_AUTH_MODE), with the user's token (~/.ray/auth_token).
    env = {**os.environ, "RAY_TMPDIR": tmp, "RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "token"}
    env.pop("RAY_ADDRESS", None)
    head = subprocess.Popen([sys.executable, "-c", HEAD], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                            env=env, start_new_session=True)
    try:
        address = head.stdout.readline().strip()
        assert address, "the Ray head did not start"
        yield {**env, "RAY_ADDRESS": address}
    finally:
        head.stdin.close()
        try:
            head.wait(timeout=60)
        except subprocess.TimeoutExpired:
            pass
        with contextlib.suppress(ProcessLookupError):
            os.killpg(head.pid, signal.SIGKILL)  # the raylet and workers it started, if still there
        subprocess.run(["rm", "-rf", tmp], check=False)


@pytest.fixture(scope="module")
def inputs(data) -> list[str]:
    return [str(data / "5-celebrity-faces/val"), str(data / "face_recognition-examples/group")]


@pytest.fixture
def model(tmp_path, data, fast_open, crop_cache):
    from recognizer.recognizer import Recognizer

    # The crop cache the CLIs (and the Ray workers) use under test: both paths read the same
    # detections, as identify.py with and without --ray do for a user.
    with Recognizer.open(tmp_path / "model", backbone="sface", create=True, cache=crop_cache) as rec:
        for person in CELEBS:
            rec.enroll(person, sorted((data / "5-celebrity-faces/train" / person).iterdir())[:3])
        reference = [r.to_dict() for r in rec.identify_many(
            sorted(p for d in (data / "5-celebrity-faces/val").iterdir() for p in d.iterdir())
            + sorted((data / "face_recognition-examples/group").iterdir()))]
    return tmp_path / "model", reference


def test_killed_ray_run_resumes_to_the_single_process_answers(model, inputs, tmp_path, ray_env):
    model_dir, reference = model
    assert len(reference) == 28 and sum(bool(r["faces"]) for r in reference) >= 26
    out = tmp_path / "results.jsonl"
    code = KILLED_RUN.format(kill_after=KILL_AFTER, model=str(model_dir), inputs=inputs, out=str(out))
    first = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=ray_env, capture_output=True, text=True,
                           timeout=300)
    assert first.returncode == -signal.SIGKILL, first.stderr[-3000:]
    assert len(out.read_text().splitlines()) == 1 + KILL_AFTER  # the header line, then a line per photo
    with open(out, "a") as fh:  # a line cut short, as a kill in the middle of a write leaves it
        fh.write('{"photo": "half a li')
    second = subprocess.run([sys.executable, "identify.py", "--model", str(model_dir), *inputs, "--json",
                             "--ray", "auto", "--out", str(out)],
                            cwd=ROOT, env=ray_env, capture_output=True, text=True, timeout=300)
    assert second.returncode == 0, second.stderr[-3000:]
    assert f"{KILL_AFTER} photo(s) were already done; analysed {len(reference) - KILL_AFTER}" in second.stderr

    assert json.loads(second.stdout) == reference
    assert bulk.read_results(out) == reference


def test_ray_enrolment_into_milvus_stores_the_faces_and_chips_enroll_stores(data, fast_open, crop_cache, tmp_path,
                                                                             ray_env):
    """enroll.py --ray into a Milvus Lite gallery keeps what ordinary enrolment keeps: the same
    faces, vectors and chips (so finetune/export can re-embed them); a rerun adds nothing."""
    from recognizer.chips import crop_for
    from recognizer.recognizer import Recognizer

    photos = sorted((data / "5-celebrity-faces/train/madonna").iterdir())[:6]
    listing = tmp_path / "photos.txt"
    listing.write_text("".join(f"{p}\n" for p in photos))
    with Recognizer.open(tmp_path / "plain", backbone="sface", create=True, cache=crop_cache) as plain:
        plain.enroll("Madonna", photos)
        want = {r.source: r for r in plain.records()}
        ids, vecs = plain.gallery.vectors()
        want_vec = {r.source: v for r, v in zip(sorted(want.values(), key=lambda r: r.id), vecs)}

    uri = f"milvus-lite:{tmp_path / 'faces.db'}"
    cmd = [sys.executable, "enroll.py", "--model", str(tmp_path / "m"), "--backbone", "sface", "--name", "Madonna",
           str(listing), "--gallery", uri, "--ray", "auto", "--json"]
    for run in range(2):
        got = subprocess.run(cmd, cwd=ROOT, env=ray_env, capture_output=True, text=True, timeout=300)
        assert got.returncode == 0, got.stderr[-3000:]
        statuses = [f["status"] for f in json.loads(got.stdout)["files"]]
        assert len(statuses) == len(photos)
        if run == 0:
            assert statuses.count("added") + statuses.count("several faces") == len(want)
        else:  # a new output file: every photo is analysed again, and found enrolled
            assert set(statuses) <= {"duplicate", "no face"} and statuses.count("duplicate") == len(want)

    with Recognizer.open(tmp_path / "m", gallery=uri) as rec:
        records = rec.records()
        assert sorted(r.source for r in records) == sorted(want)
        ids, vecs = rec.gallery.vectors()
        by_id = dict(zip(ids.tolist(), vecs))
        for r in records:
            w = want[r.source]
            assert (r.person, r.content_hash, r.chip) == (w.person, w.content_hash, w.chip) and r.chip
            np.testing.assert_allclose(by_id[r.id], want_vec[r.source], rtol=0, atol=1e-6)
            # The chip is stored with this gallery and gives the enrolled vector back.
            np.testing.assert_allclose(rec.embedder.embed(crop_for(rec.chips.get(r.chip), rec.embedder)[None])[0],
                                       by_id[r.id], atol=1e-5)
        assert rec.chips.ids() == {r.chip for r in records}
        with Recognizer.open(tmp_path / "m") as own:  # the model's own gallery holds none of them
            assert own.chip_ids() == set() and own.people() == {}
        # Removal reaches the chips of this gallery.
        assert rec.remove("Madonna") == len(want)
        assert rec.chips.ids() == set()

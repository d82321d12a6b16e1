"""Bulk identification and enrolment on Ray: the same answers (and the same stored faces and chips)
as the single-process path, and a run killed half way finishes on a rerun without redoing or
losing a photo."""
from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
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
        with Recognizer.open(tmp_path / "m") as again:  # model.json remembers the gallery: no --gallery needed
            assert again.people() == {"Madonna": len(want)} and again.chip_ids() == {r.chip for r in records}
        # Removal reaches the chips of this gallery.
        assert rec.remove("Madonna") == len(want)
        assert rec.chips.ids() == set()


# --- a cluster of two nodes joined the documented way (README, "More than one machine") -------------------------

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ray_start(args: list[str], env: dict, log: Path) -> subprocess.Popen:
    """`ray start ARGS --block` in a session of its own, once it says the runtime started; it stops its
    processes when terminated (the session's group catches any it leaves)."""
    fh = open(log, "w")
    proc = subprocess.Popen([str(Path(sys.executable).with_name("ray")), "start", *args, "--block",
                             "--disable-usage-stats"], stdout=fh, stderr=subprocess.STDOUT, env=env,
                            start_new_session=True)
    fh.close()
    deadline = time.monotonic() + 60
    while "Ray runtime started" not in log.read_text():
        assert proc.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
        time.sleep(0.2)
    return proc


def _session_processes(sessions: list[int]) -> set[int]:
    """Processes of these sessions, and their children (Ray's workers start sessions of their own)."""
    procs = {}
    for d in Path("/proc").iterdir():
        with contextlib.suppress(OSError, ValueError, IndexError):
            fields = (d / "stat").read_text().rsplit(")", 1)[1].split()
            procs[int(d.name)] = (int(fields[1]), int(fields[3]))  # ppid, session id
    ours = {pid for pid, (_, sid) in procs.items() if sid in sessions}
    return ours | {pid for pid, (ppid, _) in procs.items() if ppid in ours}


def _stop(starts: list[subprocess.Popen]) -> None:
    """Stop exactly what these `ray start`s started (`ray stop` would stop every Ray on the machine)."""
    sessions = [p.pid for p in starts]
    left = _session_processes(sessions)
    for proc in reversed(starts):  # the node first, then the head
        proc.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=30)
    deadline = time.monotonic() + 15
    while (left := {pid for pid in left | _session_processes(sessions) if Path(f"/proc/{pid}").exists()}) \
            and time.monotonic() < deadline:
        time.sleep(0.5)
    for pid in left:  # what ignored SIGTERM
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


@pytest.fixture
def two_nodes():
    """A head and a second node on this machine, one CPU each, each with its own temporary directory, joined as the
    README says: `ray start --head`, then `RAY_AUTH_MODE=token ray start --address HEAD:PORT` with the head's token.
    Yields (GCS address, Ray Client address, the environment of a machine set up to join it: RAY_AUTH_MODE=token and
    the cluster's token)."""
    tmp = Path(tempfile.mkdtemp(prefix="rc-", dir="/tmp"))  # short: Unix socket paths have ~107 bytes
    gcs, client, dash = _free_port(), _free_port(), _free_port()
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_TOKEN": secrets.token_hex(32),
           "PYTHONPATH": os.environ.get("PYTHONPATH", str(ROOT))}  # the workers import the code under test
    env.pop("RAY_ADDRESS", None)
    env["RAY_AUTH_MODE"] = "token"
    starts: list[subprocess.Popen] = []
    try:
        (tmp / "head").mkdir()
        (tmp / "node").mkdir()
        starts.append(_ray_start(["--head", f"--port={gcs}", f"--ray-client-server-port={client}",
                                  f"--dashboard-port={dash}", "--include-dashboard=false", "--num-cpus=1",
                                  f"--temp-dir={tmp / 'head'}"], env, tmp / "head.log"))
        starts.append(_ray_start([f"--address=127.0.0.1:{gcs}", "--num-cpus=1", f"--temp-dir={tmp / 'node'}"],
                                 env, tmp / "node.log"))
        yield f"127.0.0.1:{gcs}", f"ray://127.0.0.1:{client}", env
    finally:
        _stop(starts)
        subprocess.run(["rm", "-rf", str(tmp)], check=False)


def test_two_node_cluster_joined_by_address_and_by_ray_client_gives_the_plain_answers(model, inputs, tmp_path,
                                                                                      two_nodes):
    """Every address form README and --help give: ray://HOST:PORT (Ray Client) and HOST:PORT (the head's GCS),
    with the cluster's token (RAY_AUTH_MODE=token, RAY_AUTH_TOKEN); both nodes work."""
    model_dir, reference = model
    gcs, client, env = two_nodes
    for address in (client, gcs):
        out = tmp_path / f"{address.replace('/', '_').replace(':', '_')}.jsonl"
        got = subprocess.run([sys.executable, "identify.py", "-v", "--model", str(model_dir), *inputs, "--json",
                              "--ray", address, "--out", str(out)],
                             cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
        assert got.returncode == 0, got.stderr[-3000:]
        assert "Ray: 2 node(s), 2 CPU(s); 2 analysing actor(s)" in got.stderr, got.stderr[-3000:]
        assert json.loads(got.stdout) == reference
        assert bulk.read_results(out) == reference  # the lines after the tool's header


def test_unreachable_or_refusing_cluster_is_one_line_and_no_output_file(model, inputs, tmp_path):
    model_dir, _ = model
    out = tmp_path / "results.jsonl"
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    env.pop("RAY_ADDRESS", None)
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        for address, says in ((f"127.0.0.1:{port}", "cannot reach the Ray cluster at"),
                              (f"ray://127.0.0.1:{port}", "cannot reach the Ray cluster at"),
                              ("head-without-port", "give 'auto', 'local', HOST:PORT")):
            for cmd in (["identify.py", "--model", str(model_dir), *inputs],
                        ["enroll.py", "--model", str(model_dir), "--name", "Ada", inputs[0]]):
                got = subprocess.run([sys.executable, *cmd, "--ray", address, "--out", str(out)],
                                     cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
                assert got.returncode == 1 and says in got.stderr, got.stderr[-3000:]
                assert "Traceback" not in got.stderr and len(got.stderr.strip().splitlines()) == 1, got.stderr
                assert not out.exists()


def test_no_cluster_to_join_analyses_in_this_process(model, inputs, tmp_path, data):
    """`--ray local` (or `auto` with no cluster) does not start a Ray cluster for one run on one machine (slower
    than the plain path: benchmarks/bulk_speed.py); same lines, same resumable output file, for enroll too."""
    model_dir, reference = model
    ray_tmp = Path(tempfile.mkdtemp(prefix="nr-", dir="/tmp"))  # where a Ray session would go (short: sockets)
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "RAY_TMPDIR": str(ray_tmp)}
    env.pop("RAY_ADDRESS", None)
    out = tmp_path / "results.jsonl"
    try:
        got = subprocess.run([sys.executable, "identify.py", "--model", str(model_dir), *inputs, "--json", "--ray",
                              "local", "--out", str(out)], cwd=ROOT, env=env, capture_output=True, text=True,
                             timeout=300)
        started = list(ray_tmp.iterdir())
    finally:
        subprocess.run(["rm", "-rf", str(ray_tmp)], check=False)
    assert got.returncode == 0, got.stderr[-3000:]
    assert "no Ray cluster to join" in got.stderr and "analysing in this process" in got.stderr
    assert json.loads(got.stdout) == reference
    assert bulk.read_results(out) == reference  # the lines after the tool's header
    assert started == []  # no Ray session was started

    photos = sorted((data / "5-celebrity-faces/train/madonna").iterdir())[:4]
    listing = tmp_path / "photos.txt"
    listing.write_text("".join(f"{p}\n" for p in photos))
    got = subprocess.run([sys.executable, "enroll.py", "--model", str(tmp_path / "new"), "--backbone", "sface",
                          "--name", "Madonna", str(listing),
                          "--ray", "auto", "--json"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert got.returncode == 0, got.stderr[-3000:]
    assert "analysing in this process" in got.stderr
    assert [f["status"] for f in json.loads(got.stdout)["files"]].count("added") >= 3

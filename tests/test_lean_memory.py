"""Memory a process keeps after its work is done (issue 31): glibc's malloc made lean by every
command (`recognizer.image.tune_malloc`), and ONNX Runtime sessions without the arena that
kept every thread's largest buffers (`recognizer.onnx_session.cpu_session`)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import recognizer

# The checkout whose `recognizer` this process imported: the fresh processes below run the same code.
ROOT = Path(recognizer.__file__).resolve().parent.parent

# In a fresh process: after one 5 MB block is freed (glibc's sliding threshold then takes blocks
# that size from the heap), 20 blocks of 5 MB are allocated with a small block kept after each,
# and the big ones freed. Prints how many MB of RSS the freed blocks still hold.
_HOLES = """
import json, sys
if sys.argv[1] == "lean":
    from recognizer.image import tune_malloc
    tune_malloc()
import numpy as np

def rss():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024

a = np.ones(5 * 2 ** 17)
del a
base = rss()
big, keep = [], []
for _ in range(20):
    big.append(np.ones(5 * 2 ** 17))
    keep.append(bytearray(4000))
del big
print(json.dumps(rss() - base))
"""


def held_mb(mode: str) -> float:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    out = subprocess.run([sys.executable, "-c", _HOLES, mode], capture_output=True, text=True, env=env, check=True)
    return json.loads(out.stdout)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc")
def test_tuned_malloc_gives_freed_blocks_back():
    plain, lean = held_mb("plain"), held_mb("lean")
    assert plain > 50, f"glibc kept only {plain:.0f} MB of 100 MB freed: this test no longer shows the problem"
    assert lean < 10, f"{lean:.0f} MB of 100 MB freed still held"


def test_sessions_keep_no_arena():
    """A big input's buffers are not kept by the session: RSS after the call is back near before."""
    from recognizer.detection.networks import MtcnnNets

    nets = MtcnnNets.load()
    assert all(not s.get_session_options().enable_cpu_mem_arena for s in nets._sessions.values())
    x = np.zeros((1, 3, 1500, 1500), np.float32)  # PNet takes about 250 MB at its peak on this
    before = _rss_mb()
    nets.pnet(x)
    assert _rss_mb() - before < 100


def _rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


# A fresh identify.py of one photo, then the project's feature packages it imported.
_FEATURES = ("recognizer.training", "recognizer.evaluation", "recognizer.clustering", "recognizer.lifecycle", "web")
_PROBE = """
import json, runpy, sys
sys.argv = sys.argv[1:]
try:
    runpy.run_path(sys.argv[0], run_name="__main__")
except SystemExit as exc:
    if exc.code not in (0, None):
        raise
print("MODULES " + json.dumps(sorted(m for m in sys.modules if m.startswith(%r))))
""" % (_FEATURES,)


def test_identifying_one_photo_imports_no_feature_it_does_not_use(tmp_path, data, detector, sface):
    """recognizer.open no longer pulls in training and evaluation (recognizer._api's imports): about
    50 ms of a one-photo identify's start-up (benchmarks/results/startup-2026-12-07.txt)."""
    from reliability_util import face_image, one_person_model

    one_person_model(tmp_path, face_image(data), detector, sface).close()
    photo = data / "face_recognition-examples/group/barack_obama+joe_biden__obama_and_biden.jpg"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-c", _PROBE, "identify.py", "--model", str(tmp_path / "model"), str(photo),
                           "--json", "--no-cache"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    assert json.loads(out[: out.rindex("MODULES ")])[0]["faces"], out[:500]
    assert json.loads(out[out.rindex("MODULES ") + len("MODULES "):]) == []

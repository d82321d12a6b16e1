"""Start-up: identifying and enrolling with an existing model import neither torch nor torchvision
(importing them was 4 of the 4.5 s a one-photo identify.py took), and the ONNX networks that
replace them compute what facenet-pytorch's torch networks compute."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
HEAVY = ("torch", "torchvision", "facenet_pytorch", "sklearn", "matplotlib")

# Runs a CLI in a fresh interpreter, then prints the heavy modules it imported.
PROBE = """
import json, sys
sys.argv = [sys.argv[1], *sys.argv[2:]]
import runpy
try:
    runpy.run_path(sys.argv[0], run_name="__main__")
except SystemExit as exc:
    if exc.code not in (0, None):
        raise
print("MODULES " + json.dumps(sorted({m.split(".")[0] for m in sys.modules} & set(%r))))
""" % (HEAVY,)


def run_fresh(*args: str) -> tuple[list[str], str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-c", PROBE, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("MODULES ")][-1]
    return json.loads(line[len("MODULES "):]), proc.stdout


@pytest.fixture(scope="module")
def exports():
    """The MTCNN export in the test cache (made here if missing, as make install makes it)."""
    from recognizer.detection.networks import MtcnnNets

    return MtcnnNets.load()


@pytest.mark.parametrize("backbone", ["sface", "facenet"])
def test_enroll_and_identify_with_an_existing_model_import_no_torch(data, tmp_path, exports, backbone):
    people = data / "face_recognition-examples/people"
    model = tmp_path / "model"
    weights = ["--weights", "random"] if backbone == "facenet" else []
    # Creating the model (and, for facenet, exporting the network to the cache) may import torch.
    mods, _ = run_fresh("enroll.py", "--model", str(model), "--name", "joe_biden", str(people / "joe_biden"),
                        "--backbone", backbone, *weights, "--no-cache")
    mods, _ = run_fresh("enroll.py", "--model", str(model), "--name", "kit_harington", str(people / "kit_harington"), "--no-cache")
    assert "torch" not in mods and "torchvision" not in mods, mods
    photo = data / "face_recognition-examples/group/barack_obama+joe_biden__obama_and_biden.jpg"
    mods, out = run_fresh("identify.py", "--model", str(model), str(photo), "--json", "--no-cache")
    assert mods == [], mods  # nor facenet_pytorch, scikit-learn or matplotlib
    (res,) = json.loads(out[: out.rindex("MODULES ")])
    names = [f["name"] for f in res["faces"]]
    assert len(names) >= 2 and (backbone == "facenet" or "joe_biden" in names), names


def test_help_imports_nothing_heavy():
    for cli in ("identify.py", "enroll.py", "serve.py"):
        mods, out = run_fresh(cli, "--help")
        assert "Usage" in out and mods == [], (cli, mods)


def test_onnx_networks_equal_torch_networks_on_the_recall_photos(data, exports):
    """The exported networks against facenet-pytorch's torch ones, on the candidates the
    detector feeds them for real photos: every stage of the recall fixture's group photos and
    of every sixth other photo (all of them took a minute)."""
    from recognizer.detection.mtcnn import Detector
    from recognizer.detection.networks import EXPORT_TOLERANCE, TorchNets

    photos = sorted(json.loads((ROOT / "tests/data/detections_baseline.json").read_text())["photos"])
    photos = [p for i, p in enumerate(photos) if "/group/" in p or i % 6 == 0]
    det = Detector()
    torch_nets = TorchNets()
    seen = {"pnet": 0, "rnet": 0, "onet": 0}
    worst = 0.0

    class Compare:
        engine = "compare"

        def __getattr__(self, name):
            def call(x):
                got, want = getattr(exports, name)(x), getattr(torch_nets, name)(x)
                nonlocal worst
                for g, w in zip(got, want):
                    worst = max(worst, float(np.abs(g - w).max()))
                seen[name] += len(x)
                return got

            return call

    det._nets = Compare()
    for rel in photos:
        det.detect(data / rel, threads=1)
    assert min(seen.values()) > 0, seen
    assert worst <= EXPORT_TOLERANCE, worst


def test_damaged_export_is_made_again(tmp_path):
    from recognizer.detection.networks import MANIFEST, MtcnnNets, export_dir

    d = export_dir(tmp_path)
    MtcnnNets.load(tmp_path)
    manifest = json.loads((d / MANIFEST).read_text())
    blob = bytearray((d / "rnet.onnx").read_bytes())
    blob[len(blob) // 2] ^= 0xFF
    (d / "rnet.onnx").write_bytes(bytes(blob))
    from facecore.errors import WeightsError

    with pytest.raises(WeightsError, match="rnet.onnx: sha256"):
        MtcnnNets(d)
    nets = MtcnnNets.load(tmp_path)  # exports again instead of running a damaged network
    assert json.loads((d / MANIFEST).read_text())["files"] == manifest["files"]
    reg, prob = nets.rnet(np.zeros((1, 3, 24, 24), np.float32))
    assert reg.shape == (1, 4) and prob.shape == (1, 2)

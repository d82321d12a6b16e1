"""The core install (issue 26): MTCNN without torch, identical to the torch export; the restricted
reader of the legacy weight files; the default path with every extra hidden; the one-line
message of each command that needs a missing extra.

Tests marked `train` compare with torch and facenet-pytorch; the rest run in the core-only venv
that .ci/run builds (where the extras are truly absent) as well as in the full one (where
`_hidden` hides them from a subprocess).
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import struct
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

from facecore.errors import WeightsError
from facecore.extras import EXTRAS, MissingExtra, require_extra
from recognizer.detection import networks
from recognizer.detection.graphs import build_model
from recognizer.detection.legacy_weights import MTCNN_SHA256, read_state_dict, weights_dir

ROOT = Path(__file__).resolve().parent.parent
EVERY_EXTRA = sorted({m for mods in EXTRAS.values() for m in mods})


def _photos(data: Path) -> list[Path]:
    val = sorted(p for p in (data / "5-celebrity-faces" / "val").rglob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    groups = [p for d in ("face_recognition-examples", "facenet-pytorch-test-images", "deepface-test-dataset")
              for p in sorted((data / d / "group").iterdir())]
    return val + groups


# --- the restricted reader -------------------------------------------------------------------


def test_vendored_weights_are_facenet_pytorchs_files():
    for name, digest in MTCNN_SHA256.items():
        assert hashlib.sha256((weights_dir() / f"{name}.pt").read_bytes()).hexdigest() == digest


def test_reader_shapes():
    shapes = {k: v.shape for k, v in read_state_dict(weights_dir() / "onet.pt", MTCNN_SHA256["onet"]).items()}
    assert shapes["conv1.weight"] == (32, 3, 3, 3) and shapes["dense5.weight"] == (256, 1152)
    assert shapes["prelu5.weight"] == (256,) and len(shapes) == 21


# Pickles written out opcode by opcode (the project imports no pickle module, tests included).
def _str(text: str) -> bytes:
    return b"X" + struct.pack("<I", len(text.encode())) + text.encode()  # BINUNICODE


def _p(body: bytes, protocol: int = 2) -> bytes:
    return b"\x80" + bytes([protocol]) + body + b"."  # PROTO ... STOP


_HEADER = (_p(b"\x8a\x0a" + (0x1950A86A20F9469CFC6C).to_bytes(10, "little"))  # LONG1 magic
           + _p(b"M" + struct.pack("<H", 1001))  # BININT2 protocol version
           + _p(b"}(" + _str("little_endian") + b"\x88u"))  # {little_endian: True}
_SYSTEM = b"cos\nsystem\n" + _str("touch /tmp/facetool-reader-ran-code") + b"\x85R"  # os.system(...)


def _legacy(body: bytes, protocol: int = 2) -> bytes:
    """A legacy torch file's layout around the pickle `body`: header pickles, it, no storages."""
    return _HEADER + _p(body, protocol) + _p(b"]")


@pytest.mark.parametrize("payload", [
    _legacy(_SYSTEM),  # a global outside the allow-list
    _legacy(b"}" + _str("w") + _SYSTEM + b"s"),  # {"w": os.system(...)}
    _legacy(b"}" + _str("w") + b"G" + struct.pack(">d", 1.5) + b"s", protocol=4),  # another protocol
    _legacy(b"}" + _str("w") + b"G" + struct.pack(">d", 1.5) + b"s"),  # an entry that is not a tensor
    _legacy(b"](K\x01K\x02e"),  # [1, 2]: not a dict
    _legacy(b"ccollections\nOrderedDict\n" + _str("x") + b"\x85R"),  # OrderedDict("x"): only () is allowed
    _legacy(b"\x93"),  # STACK_GLOBAL: not on the allow-list
    b"\x80\x02}q\x00.",  # one pickle, then nothing
    b"",
    b"not a pickle at all",
], ids=["os-system", "os-system-in-dict", "protocol-4", "not-a-tensor", "not-a-dict", "ordereddict-args", "stack-global",
        "one-pickle", "empty", "text"])
def test_reader_refuses_what_is_not_a_plain_state_dict(tmp_path, payload):
    marker = Path("/tmp/facetool-reader-ran-code")
    marker.unlink(missing_ok=True)
    path = tmp_path / "w.pt"
    path.write_bytes(payload)
    with pytest.raises(WeightsError):
        read_state_dict(path)
    assert not marker.exists()


def test_reader_refuses_damaged_weights(tmp_path):
    blob = (weights_dir() / "pnet.pt").read_bytes()
    for bad in (blob[:-4], blob + b"\0", blob[:1000]):
        path = tmp_path / "pnet.pt"
        path.write_bytes(bad)
        with pytest.raises(WeightsError):
            read_state_dict(path)
    with pytest.raises(WeightsError, match="sha256"):
        read_state_dict(weights_dir() / "pnet.pt", MTCNN_SHA256["rnet"])


# --- against torch ([train]) -----------------------------------------------------------------


def _torch_export(name: str) -> bytes:
    """What networks.export wrote before this change: facenet-pytorch's network, PReLU as clamps,
    through torch.onnx.export (opset 17, TorchScript exporter)."""
    import torch  # [train] only

    class ClampPReLU(torch.nn.Module):
        def __init__(self, prelu):
            super().__init__()
            self.weight = prelu.weight

        def forward(self, x):
            a = self.weight.view(1, -1, *([1] * (x.dim() - 2)))
            return torch.clamp(x, min=0) + a * torch.clamp(x, max=0)

    net = dict(zip(networks.NETS, networks._torch_modules()))[name]
    for child, mod in list(net.named_children()):
        if isinstance(mod, torch.nn.PReLU):
            setattr(net, child, ClampPReLU(mod))
    shape = {"pnet": (1, 3, 48, 64), "rnet": (2, 3, 24, 24), "onet": (2, 3, 48, 48)}[name]
    dynamic = {"pnet": {0: "n", 2: "h", 3: "w"}, "rnet": {0: "n"}, "onet": {0: "n"}}[name]
    outputs = {"pnet": ["reg", "prob"], "rnet": ["reg", "prob"], "onet": ["reg", "points", "prob"]}[name]
    buf = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(net, torch.zeros(shape), buf, input_names=["x"], output_names=outputs,
                          dynamic_axes={"x": dynamic}, opset_version=17, dynamo=False)
    return buf.getvalue()


def _canonical(blob: bytes) -> list:
    """The graph with value names replaced by their position: operators, attributes, constants
    and initializers' bytes, in node order."""
    import onnx
    from onnx import helper, numpy_helper

    g = onnx.load_from_string(blob).graph
    inits = {t.name: numpy_helper.to_array(t) for t in g.initializer}
    names = {"x": "x", "": ""} | {o.name: o.name for o in g.output}
    out = []
    for i, n in enumerate(g.node):
        ins = [("init", inits[v].dtype.str, inits[v].shape, inits[v].tobytes()) if v in inits else names[v] for v in n.input]
        for j, v in enumerate(n.output):
            names.setdefault(v, f"v{i}.{j}")
        attrs = []
        for a in n.attribute:
            val = helper.get_attribute_value(a)
            if isinstance(val, onnx.TensorProto):
                arr = numpy_helper.to_array(val)
                val = (arr.dtype.str, arr.shape, arr.tobytes())
            attrs.append((a.name, val))
        out.append((n.op_type, ins, [names[v] for v in n.output], sorted(attrs)))
    return out


@pytest.mark.train
def test_reader_equals_torch_load():
    import torch

    for name in networks.NETS:
        mine = read_state_dict(weights_dir() / f"{name}.pt", MTCNN_SHA256[name])
        ref = torch.load(weights_dir() / f"{name}.pt", map_location="cpu", weights_only=True)
        assert list(mine) == list(ref)
        for k, v in ref.items():
            assert mine[k].dtype == np.float32 and mine[k].shape == tuple(v.shape)
            assert mine[k].tobytes() == v.contiguous().numpy().tobytes(), k


@pytest.mark.train
@pytest.mark.parametrize("name", networks.NETS)
def test_graph_is_the_torch_export_node_for_node(name):
    from recognizer.onnx_session import cpu_session

    ref = _torch_export(name)
    mine = build_model(name, read_state_dict(weights_dir() / f"{name}.pt", MTCNN_SHA256[name]))
    assert _canonical(mine) == _canonical(ref)
    a, b = cpu_session(ref, 1), cpu_session(mine, 1)
    for x in networks.check_inputs(name):
        for p, q in zip(a.run(None, {"x": x}), b.run(None, {"x": x})):
            assert p.dtype == q.dtype and p.shape == q.shape and (p == q).all()


@pytest.mark.train
def test_detections_identical_to_the_torch_export_on_real_photos(data, tmp_path):
    """Every face of the 5-celebrity val photos and the group photos: box, score and landmarks
    ==, between the graphs built from numpy and the former torch export."""
    import dataclasses

    from recognizer.detection.mtcnn import Detector

    ref_dir = tmp_path / "torch-export"
    ref_dir.mkdir()
    files = {}
    for name in networks.NETS:
        blob = _torch_export(name)
        (ref_dir / f"{name}.onnx").write_bytes(blob)
        files[f"{name}.onnx"] = hashlib.sha256(blob).hexdigest()
    (ref_dir / networks.MANIFEST).write_text(json.dumps({"files": files}))
    built = Detector(engine="onnxruntime", threads=1)
    assert isinstance(built._nets, networks.MtcnnNets)
    ref = Detector(engine="onnxruntime", threads=1)
    ref._nets = networks.MtcnnNets(ref_dir)
    photos = _photos(data)
    faces = 0
    for path in photos:
        got, want = built.detect(path), ref.detect(path)
        assert len(got) == len(want), path
        for f, g in zip(got, want):
            for field in dataclasses.fields(f):
                x, y = getattr(f, field.name), getattr(g, field.name)
                assert np.array_equal(x, y) if isinstance(x, np.ndarray) else x == y, (path, field.name)
        faces += len(got)
    assert len(photos) >= 30 and faces >= len(photos), (len(photos), faces)


# --- the default path with the extras hidden -------------------------------------------------


def _hidden(tmp_path: Path, modules: list[str]) -> dict[str, str]:
    """Environment for a subprocess in which `modules` cannot be imported (as in the core venv):
    a sitecustomize puts a finder first on sys.meta_path that refuses them and their submodules."""
    site = tmp_path / "hide"
    site.mkdir(exist_ok=True)
    (site / "sitecustomize.py").write_text(
        "import sys\n"
        f"_HIDDEN = {tuple(modules)!r}\n"
        "class _Hide:\n"
        "    @staticmethod\n"
        "    def find_spec(name, path=None, target=None):\n"
        "        if name.split('.')[0] in _HIDDEN:\n"
        "            raise ModuleNotFoundError(f'No module named {name!r} (hidden)', name=name)\n"
        "        return None\n"
        "sys.meta_path.insert(0, _Hide)\n")
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(site), str(ROOT), env.get("PYTHONPATH", "")])
    return env


def _facetool(args: list[str], env: dict[str, str], **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", "from recognizer.cli import main; main()", *args], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=600, **kw)


def test_enroll_and_identify_need_no_extra(data, tmp_path):
    """sface, MTCNN built in a fresh cache, enrol and identify, with every extra's modules hidden:
    the same JSON as with them present."""
    env = _hidden(tmp_path, EVERY_EXTRA)
    env["FACETOOL_CACHE"] = str(tmp_path / "cache")
    train = data / "5-celebrity-faces" / "train"
    model = tmp_path / "model"
    for person in ("ben_afflek", "madonna"):
        r = _facetool(["enroll", str(train / person), "--name", person, "--model", str(model), "--backbone", "sface"], env)
        assert r.returncode == 0, r.stderr
    photos = [str(p) for p in _photos(data)[:6]]
    hidden = _facetool(["identify", *photos, "--model", str(model), "--json"], env)
    assert hidden.returncode == 0, hidden.stderr
    env_full = dict(os.environ, FACETOOL_CACHE=str(tmp_path / "cache"))
    full = _facetool(["identify", *photos, "--model", str(model), "--json"], env_full)
    assert full.returncode == 0, full.stderr
    assert hidden.stdout == full.stdout
    assert json.loads(hidden.stdout)


def _one_line_error(r: subprocess.CompletedProcess, extra: str) -> None:
    assert r.returncode != 0
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    msg = [ln for ln in lines if f"[{extra}] extra" in ln]
    assert len(msg) == 1 and f"pip install 'facetool[{extra}]'" in msg[0], r.stderr
    assert "Traceback" not in r.stderr, r.stderr


def test_finetune_without_train_says_which_extra(data, tmp_path):
    env = _hidden(tmp_path, list(EXTRAS["train"]))
    r = _facetool(["finetune", str(data / "5-celebrity-faces" / "train"), "--model", str(tmp_path / "m")], env)
    _one_line_error(r, "train")


def test_facenet_backbone_without_train_says_which_extra(data, tmp_path):
    env = _hidden(tmp_path, list(EXTRAS["train"]))
    env["FACETOOL_CACHE"] = str(tmp_path / "cache")
    r = _facetool(["enroll", str(data / "5-celebrity-faces" / "train" / "madonna"), "--name", "madonna",
                   "--model", str(tmp_path / "m"), "--backbone", "facenet"], env)
    _one_line_error(r, "train")


def test_milvus_gallery_without_milvus_says_which_extra(data, tmp_path):
    env = _hidden(tmp_path, list(EXTRAS["milvus"]))
    r = _facetool(["enroll", str(data / "5-celebrity-faces" / "train" / "madonna"), "--name", "madonna",
                   "--model", str(tmp_path / "m"), "--backbone", "sface", "--gallery", f"milvus-lite:{tmp_path / 'g.db'}"], env)
    _one_line_error(r, "milvus")


def test_ray_without_ray_says_which_extra(data, tmp_path):
    env = _hidden(tmp_path, list(EXTRAS["ray"]))
    model = tmp_path / "m"
    r = _facetool(["enroll", str(data / "5-celebrity-faces" / "train" / "madonna"), "--name", "madonna",
                   "--model", str(model), "--backbone", "sface", "--ray", "auto"], env)
    _one_line_error(r, "ray")  # finding a cluster needs Ray (`--ray local` alone runs in this process, no Ray)


def test_require_extra_names_the_extra_and_the_command(monkeypatch):
    import facecore.extras

    def find_spec(name):
        raise ModuleNotFoundError(name)

    monkeypatch.setattr(facecore.extras, "find_spec", find_spec)
    with pytest.raises(MissingExtra, match=r"--ray needs the \[ray\] extra \(ray not installed\): pip install 'facetool\[ray\]'$"):
        require_extra("ray", "--ray")
    with pytest.raises(MissingExtra, match=r"&& pip install --no-deps facenet-pytorch==2.6.0$"):
        require_extra("train", "facetool finetune")


def test_requirements_and_extras_agree():
    """pyproject reads every list from requirements*.txt; the core list names none of the extras'."""
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    dyn = project["tool"]["setuptools"]["dynamic"]
    assert dyn["dependencies"] == {"file": ["requirements.txt"]}
    extras = dyn["optional-dependencies"]
    for extra in EXTRAS:
        assert extras[extra] == {"file": [f"requirements-{extra}.txt"]}
    assert extras["all"] == {"file": [f"requirements-{e}.txt" for e in ("train", "milvus", "ray")]}
    core = (ROOT / "requirements.txt").read_text().lower()
    for banned in ("torch", "ray", "milvus", "pandas", "pyarrow", "facenet"):
        assert not [ln for ln in core.splitlines() if ln.strip() and not ln.startswith("#") and banned in ln], banned

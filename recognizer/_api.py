"""The functions of the public API (`recognizer.open`, `create`, `finetune`, `evaluate`, `set_threshold`)."""
from __future__ import annotations

import os
from pathlib import Path

from recognizer.cache import CropCache
from recognizer.evaluation.run import EvaluationOptions, EvaluationReport, evaluate_model
from recognizer.evaluation.run import set_threshold as store_threshold
from recognizer.recognizer import Recognizer
from recognizer.network.loop import TrainSettings
from recognizer.training.run import FinetuneOptions, FinetuneReport
from recognizer.training.run import finetune as run_finetune

__all__ = ["create", "evaluate", "finetune", "open", "set_threshold"]

PathLike = str | os.PathLike


def _crop_cache(cache: bool | PathLike | CropCache | None) -> CropCache | None:
    """True: the default crop cache; a path: a cache there; False or None: none."""
    if cache is None or cache is False:
        return None
    if cache is True:
        return CropCache()
    if isinstance(cache, CropCache):
        return cache
    return CropCache(Path(cache))


def open(model_dir: PathLike, *, backbone: str | None = None, weights: str | None = None, weights_dir: PathLike | None = None,
         cache: bool | PathLike | CropCache | None = False, gallery: str | None = None) -> Recognizer:
    """Open an existing model directory (ModelError when there is none, or when it was not built
    with the `backbone` or `weights` given).

    `cache`: keep detections and face crops of the photos seen on disk, so a second run over them
    skips detection (True: under ~/.cache/facetool or $FACETOOL_CACHE; a path: there).
    `gallery`: the enrolled faces in Milvus ("milvus://HOST:PORT/COLLECTION" or
    "milvus-lite:PATH.db") instead of the model directory.
    """
    return Recognizer.open(model_dir, backbone=backbone, weights=weights, weights_dir=weights_dir, cache=_crop_cache(cache),
                           gallery=gallery)


def create(model_dir: PathLike, *, backbone: str | None = None, weights: str | None = None, weights_dir: PathLike | None = None,
           cache: bool | PathLike | CropCache | None = False, gallery: str | None = None) -> Recognizer:
    """Open a model directory, creating it with `backbone` ("sface" or "facenet") when it does not exist yet.

    An existing model must have been built with `backbone`, when one is given (ModelError otherwise).
    """
    return Recognizer.open(model_dir, backbone=backbone, weights=weights, weights_dir=weights_dir, create=True,
                           cache=_crop_cache(cache), gallery=gallery)


def finetune(data_dir: PathLike, model_dir: PathLike, *, backbone: str = "facenet", weights: str | None = None,
             weights_dir: PathLike | None = None, unfreeze: str | None = None, epochs: int = 30, seed: int = 0,
             patience: int = 8, cache_dir: PathLike | None = None, cohort: PathLike | None = None,
             switch: bool | None = None, unknown_dir: PathLike | None = None, progress: bool = False) -> FinetuneReport:
    """Finetune the model in `model_dir` (created when missing) on DATA_DIR/train/<person>/* (and val/).

    Face crops and the frozen trunk's features are cached under `cache_dir` (default
    ~/.cache/facetool or $FACETOOL_CACHE), so a rerun trains in seconds. The new embeddings' FPIR
    table is calibrated on the stranger cohort `cohort` (default $FACETOOL_COHORT or the shared
    cohort-celeba); without one the model keeps its fixed threshold.

    On an existing model the result is built beside the model in use and both are scored side by
    side on the val faces (`report.comparison`: closed and open set; `unknown_dir` adds strangers).
    `switch`: switch to it (default: yes on the same backbone and weights, no on others: then
    `recognizer.lifecycle.switch(model_dir)` switches later).
    """
    opts = FinetuneOptions(
        backbone=backbone, weights=weights, weights_dir=str(weights_dir) if weights_dir else None, unfreeze=unfreeze,
        settings=TrainSettings(epochs=epochs, seed=seed, patience=patience),
        crop_cache=CropCache(Path(cache_dir) / "crops") if cache_dir else None,
        trunk_cache_dir=str(Path(cache_dir) / "trunk") if cache_dir else None, progress=progress,
        cohort=str(cohort) if cohort else None, switch=switch, unknown_dir=_str(unknown_dir),
    )
    return run_finetune(data_dir, model_dir, opts)


def evaluate(model_dir: PathLike, data_dir: PathLike | None = None, *, unknown_dir: PathLike | None = None,
             pairs_file: PathLike | None = None, pairs_root: PathLike | None = None, target_fpir: float = 0.01,
             holdout: float = 0.2, cache: bool | PathLike | CropCache | None = False,
             progress: bool = False) -> EvaluationReport:
    """Closed set, open set and (with `pairs_file`) verification figures of a model; it is not changed.

    The report's `to_dict()`, `markdown()` and `write(out_dir)` give it as JSON, Markdown or files.
    """
    opts = EvaluationOptions(unknown_dir=_str(unknown_dir), pairs_file=_str(pairs_file), pairs_root=_str(pairs_root),
                             target_fpir=target_fpir, holdout_share=holdout, progress=progress)
    return evaluate_model(model_dir, data_dir, opts, cache=_crop_cache(cache))


def set_threshold(model_dir: PathLike, threshold: float) -> None:
    """Store the similarity under which a face is unknown in the model (model.json, written atomically)."""
    store_threshold(model_dir, threshold)


def _str(p: PathLike | None) -> str | None:
    return None if p is None else str(p)

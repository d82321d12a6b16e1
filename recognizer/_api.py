"""The functions of the public API that drive features (`recognizer.finetune`, `evaluate`, `set_threshold`);
`open` and `create` are recognizer._open's (re-exported here), which identifying alone imports."""
from __future__ import annotations

from pathlib import Path

from recognizer._open import PathLike, crop_cache, create, open
from recognizer.cache import CropCache
from recognizer.evaluation.run import EvaluationOptions, EvaluationReport, evaluate_model
from recognizer.evaluation.run import set_threshold as store_threshold
from recognizer.network.loop import TrainSettings
from recognizer.training.run import FinetuneOptions, FinetuneReport
from recognizer.training.run import finetune as run_finetune

__all__ = ["create", "evaluate", "finetune", "open", "set_threshold"]


def finetune(data_dir: PathLike, model_dir: PathLike, *, backbone: str = "facenet", weights: str | None = None,
             weights_dir: PathLike | None = None, unfreeze: str | None = None, epochs: int = 30, seed: int = 0,
             patience: int = 8, cache_dir: PathLike | None = None, cohort: PathLike | None = None,
             switch: bool | None = None, unknown_dir: PathLike | None = None, progress: bool = False) -> FinetuneReport:
    """Finetune the model in `model_dir` (created when missing) on DATA_DIR/train/<person>/* (and val/).

    Crops and trunk features are cached under `cache_dir` (default ~/.cache/facetool or $FACETOOL_CACHE), so a
    rerun trains in seconds; the FPIR table is calibrated on `cohort` (default $FACETOOL_COHORT or the shared
    cohort-celeba; none: the fixed threshold stays). On an existing model the result is built beside it and both
    are scored on the val faces (`report.comparison`; `unknown_dir` adds strangers); `switch` (default: on the
    same backbone and weights) makes it the model in use, else `recognizer.lifecycle.switch` does later.
    """
    opts = FinetuneOptions(backbone=backbone, weights=weights, weights_dir=str(weights_dir) if weights_dir else None,
                           unfreeze=unfreeze, settings=TrainSettings(epochs=epochs, seed=seed, patience=patience),
                           crop_cache=CropCache(Path(cache_dir) / "crops") if cache_dir else None,
                           trunk_cache_dir=str(Path(cache_dir) / "trunk") if cache_dir else None, progress=progress,
                           cohort=str(cohort) if cohort else None, switch=switch, unknown_dir=_str(unknown_dir))
    return run_finetune(data_dir, model_dir, opts)


def evaluate(model_dir: PathLike, data_dir: PathLike | None = None, *, unknown_dir: PathLike | None = None,
             pairs_file: PathLike | None = None, pairs_root: PathLike | None = None, target_fpir: float = 0.01,
             holdout: float = 0.2, cache: bool | PathLike | CropCache | None = False,
             progress: bool = False) -> EvaluationReport:
    """Closed set, open set and (with `pairs_file`) verification figures of a model, which is not changed; the
    report's `to_dict()`, `markdown()` and `write(out_dir)` give them as JSON, Markdown or files."""
    opts = EvaluationOptions(unknown_dir=_str(unknown_dir), pairs_file=_str(pairs_file), pairs_root=_str(pairs_root),
                             target_fpir=target_fpir, holdout_share=holdout, progress=progress)
    return evaluate_model(model_dir, data_dir, opts, cache=crop_cache(cache))


def set_threshold(model_dir: PathLike, threshold: float) -> None:
    """Store the similarity under which a face is unknown in the model (model.json, written atomically)."""
    store_threshold(model_dir, threshold)


def _str(p: PathLike | None) -> str | None:
    return None if p is None else str(p)

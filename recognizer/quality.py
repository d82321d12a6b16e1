"""How recognisable a detected face is: `assess` gives each face a score in [0, 1] and, below the floor,
the reasons ("face 23 px wide", "blurred", "turned away", "unclear to the model").

Built from what the pipeline has anyway, offline and in microseconds a face: the face's size in the
photo (the distance between its eyes, which a box's padding does not inflate), its pose from the five
landmarks (how far the nose sits off the line between the eyes), the sharpness of the aligned crop
(variance of its Laplacian), and the embedding's own length before it is normalised (a network gives
shorter vectors to faces it cannot read, as MagFace makes explicit; measured for the stock SFace only,
other networks skip this signal).

Each signal becomes a component score: below its floor it runs from 0 to `FLOOR`, from the floor to
its "good" level from `FLOOR` to 1. The face's score is the lowest component, so a face is low quality
exactly when one signal is under its floor, and that signal is the reason. This module is the one place
the floors and levels are set: the "good" levels from the cohort's calibration part
(`benchmarks/quality_bands.py`), the floors between the false detections and the real faces of the
shared photos (figures: benchmarks/results/quality-sface.md).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from recognizer.detection.boxes import Face

__all__ = ["FLOOR", "LOW_QUALITY", "NORM_LEVELS", "FaceQuality", "QualityLevels", "assess", "assess_faces",
           "sharpness", "yaw"]

FLOOR = 0.25  # a face scoring under this is low quality
LOW_QUALITY = "low quality"  # the reason an identified face is left unnamed for


@dataclass(frozen=True)
class QualityLevels:
    """Per signal: (floor, good). Pixels of the photo as decoded; yaw: nose offset from the eyes' midpoint
    along the eye line, in eye distances (0 frontal, about 1 in profile); sharpness: Laplacian variance of
    the aligned crop's grey levels."""

    eye_distance: tuple[float, float] = (10.0, 40.0)
    yaw: tuple[float, float] = (1.5, 0.4)  # lower is better
    sharpness: tuple[float, float] = (3.0, 150.0)
    detection: tuple[float, float] = (0.90, 0.995)  # MTCNN's probability (the detector drops faces under 0.90)


# The embedding's length before normalisation, (floor, good), per model id: a property of one network.
NORM_LEVELS: dict[str, tuple[float, float]] = {"sface-fb143eea0783": (5.5, 12.5)}

LEVELS = QualityLevels()


@dataclass
class FaceQuality:
    score: float  # in [0, 1]; under FLOOR: low quality
    reasons: list[str] = field(default_factory=list)  # why it is under the floor (empty when it is not)
    signals: dict[str, float] = field(default_factory=dict)  # the measured signals

    @property
    def low(self) -> bool:
        return self.score < FLOOR

    def to_dict(self) -> dict:
        return {"score": round(self.score, 4), "low": self.low, "reasons": list(self.reasons),
                "signals": {k: round(v, 3) for k, v in self.signals.items()}}


def _component(x: float, floor: float, good: float) -> float:
    """0..FLOOR below the floor, FLOOR..1 from the floor to `good` (either direction)."""
    if good > floor:
        if x < floor:
            return FLOOR * max(x, 0.0) / floor if floor > 0 else 0.0
        return FLOOR + (1.0 - FLOOR) * min((x - floor) / (good - floor), 1.0)
    if x > floor:  # lower is better
        return FLOOR * max(0.0, 1.0 - (x - floor) / floor)
    return FLOOR + (1.0 - FLOOR) * min((floor - x) / (floor - good), 1.0)


def yaw(landmarks: np.ndarray) -> float:
    """The nose's offset from the eyes' midpoint along the eye line, in eye distances (signed)."""
    lm = np.asarray(landmarks, np.float64)
    eyes = lm[1] - lm[0]
    d = float(np.hypot(*eyes))
    if d < 1e-6:
        return 0.0
    return float(np.dot(lm[2] - (lm[0] + lm[1]) / 2, eyes / d) / d)


def sharpness(crop: np.ndarray) -> float:
    """Variance of the Laplacian of the aligned crop's grey levels, over its middle (the face, not the margin)."""
    g = np.asarray(crop, np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
    m = g.shape[0] // 7
    c = g[m:g.shape[0] - m, m:g.shape[1] - m] if g.shape[0] > 32 else g
    lap = 4 * c[1:-1, 1:-1] - c[:-2, 1:-1] - c[2:, 1:-1] - c[1:-1, :-2] - c[1:-1, 2:]
    return float(lap.var()) if lap.size else 0.0


def assess(face: Face, crop: np.ndarray | None, norm: float | None, model_id: str = "",
           levels: QualityLevels = LEVELS) -> FaceQuality:
    """The quality of one face from its detection, aligned crop and raw embedding length (None: not known)."""
    lm = np.asarray(face.landmarks, np.float64)
    width = float(face.box[2] - face.box[0])
    eyes = float(np.hypot(*(lm[1] - lm[0])))
    signals = {"width": width, "eye_distance": eyes, "yaw": yaw(lm), "detection": float(face.score)}
    parts = {"size": _component(eyes, *levels.eye_distance), "pose": _component(abs(signals["yaw"]), *levels.yaw),
             "detection": _component(float(face.score), *levels.detection)}
    if crop is not None:
        signals["sharpness"] = sharpness(crop)
        parts["blur"] = _component(signals["sharpness"], *levels.sharpness)
    if norm is not None:
        signals["norm"] = float(norm)
        if model_id in NORM_LEVELS:
            parts["model"] = _component(float(norm), *NORM_LEVELS[model_id])
    score = min(parts.values())
    reasons = [_reason(part, signals) for part, s in parts.items() if s < FLOOR]
    return FaceQuality(float(score), reasons, signals)


def _reason(part: str, signals: dict[str, float]) -> str:
    if part == "size":
        return f"face {signals['width']:.0f} px wide (eyes {signals['eye_distance']:.0f} px apart)"
    return {"pose": "turned away", "blur": "blurred", "model": "unclear to the model", "detection": "unsure detection"}[part]


def assess_faces(faces: Sequence[Face], crops: np.ndarray | None, norms: np.ndarray | None,
                 model_id: str = "") -> list[FaceQuality]:
    """`assess` for each face of one photo (row i of `crops` and `norms` is face i)."""
    return [assess(f, None if crops is None or len(crops) <= i else crops[i],
                   None if norms is None or len(norms) <= i else float(norms[i]), model_id) for i, f in enumerate(faces)]

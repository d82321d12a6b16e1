"""The detector's settings, apart from the detector: model.json keeps them (`recognizer.modeldir`),
and reading a model directory must not load MTCNN's networks (nor import what they import)."""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass

__all__ = ["DetectorSettings"]


@dataclass(frozen=True)
class DetectorSettings:
    min_face_size: int = 20  # pixels, in the photo as detected (after downscaling): the floor
    thresholds: tuple[float, float, float] = (0.6, 0.7, 0.7)  # MTCNN's three stages
    factor: float = 0.709  # image pyramid scale step
    score_threshold: float = 0.90  # faces below this final score are dropped
    max_side: int = 1600  # photos larger than this are detected on a downscaled copy
    # The smallest face looked for, as a fraction of the photo's short side (at least min_face_size): smaller ones
    # are too small to recognise, and each halving quadruples the first stage's work.
    min_face_fraction: float = 0.05

    def __post_init__(self) -> None:
        # OpenCV's remap, which cuts the candidate crops, takes images under 32767 pixels a side.
        if not (isinstance(self.max_side, int) and 12 <= self.max_side <= 16384):
            raise ValueError(f"max_side {self.max_side!r}: must be a whole number of pixels from 12 to 16384")
        if not 0.0 <= self.min_face_fraction < 1.0:
            raise ValueError(f"min_face_fraction {self.min_face_fraction!r}: must be from 0 up to (not including) 1")

    def key(self) -> str:
        """A short stable hash of the settings, for cache keys."""
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:16]

    def smallest_face(self, width: int, height: int) -> float:
        """The smallest face size (pixels) searched for in a photo of this size, as detected."""
        return max(float(self.min_face_size), self.min_face_fraction * min(width, height))

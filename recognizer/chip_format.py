"""The face chip's layout, and reading a chip back into its crops.

A chip is one lossless PNG holding each backbone's crop side by side (made by `recognizer.chips`). Reading one
needs nothing above `facecore`, so the crop cache (`forget_photos`) reads chips without importing detection.
"""
from __future__ import annotations

import numpy as np

from facecore.errors import ModelError

__all__ = ["HEIGHT", "LAYOUT", "WIDTH", "chip_crops"]

# crop kind (embedder name + crop size) -> (x, y, size) inside the chip
LAYOUT = {"facenet160": (0, 0, 160), "sface112": (160, 0, 112)}
WIDTH, HEIGHT = 272, 160


def chip_crops(data: bytes, kinds: list[str]) -> dict[str, np.ndarray]:
    """The crops of one chip, uint8 RGB (s, s, 3), per crop kind."""
    import cv2  # optional and slow to import: only where a chip is read

    bad = [k for k in kinds if k not in LAYOUT]
    if bad:
        raise ModelError(f"face chips hold {sorted(LAYOUT)} crops, not {bad}")
    img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if img is None or img.shape != (HEIGHT, WIDTH, 3):
        raise ModelError(f"not a face chip (got {None if img is None else img.shape})")
    rgb = img[:, :, ::-1]
    out = {}
    for k in kinds:
        x, y, s = LAYOUT[k]
        out[k] = np.ascontiguousarray(rgb[y : y + s, x : x + s])
    return out

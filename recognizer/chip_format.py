"""The face chip's layout, and reading a chip back into its crops.

A chip is one lossless PNG holding each backbone's crop side by side (made by `recognizer.chips`). Reading one
needs only `recognizer.image`, so the crop cache (`forget_photos`) reads chips without importing detection.
A chip comes from the model directory or from an archive someone sent: it is decoded by the photo decoder
(`recognizer.image.decode`), under the one decode rule, with the chip's own size as its pixel limit, so a
chip that is a decompression bomb is refused from its header.
"""
from __future__ import annotations

import io

import numpy as np
from PIL import Image

from facecore.errors import ImageError, ModelError
from recognizer.image import check_decode, decode, decode_cost

__all__ = ["CHIP_MEMORY_BUDGET", "HEIGHT", "LAYOUT", "WIDTH", "check_chip", "chip_crops"]

# crop kind (embedder name + crop size) -> (x, y, size) inside the chip
LAYOUT = {"facenet160": (0, 0, 160), "sface112": (160, 0, 112)}
WIDTH, HEIGHT = 272, 160
# What decoding one chip may cost (`recognizer.image.decode_cost`): an RGB chip takes 0.2 MB; a palette or
# alpha one adds a conversion strip.
CHIP_MEMORY_BUDGET = 32 * 1024 * 1024


def chip_crops(data: bytes, kinds: list[str], source: str = "chip") -> dict[str, np.ndarray]:
    """The crops of one chip, uint8 RGB (s, s, 3), per crop kind; ModelError naming `source` when it is not
    a chip (over the chip's size or `CHIP_MEMORY_BUDGET` it is refused before it is decoded)."""
    bad = [k for k in kinds if k not in LAYOUT]
    if bad:
        raise ModelError(f"face chips hold {sorted(LAYOUT)} crops, not {bad}")
    try:
        img = decode(bytes(data), source, max_pixels=WIDTH * HEIGHT, memory_budget=CHIP_MEMORY_BUDGET)
    except ImageError as exc:
        raise ModelError(f"not a face chip: {exc}") from None
    if img.size != (WIDTH, HEIGHT):
        raise ModelError(f"not a face chip: {source} is {img.size[0]}x{img.size[1]} pixels, not {WIDTH}x{HEIGHT}")
    rgb = np.asarray(img)
    out = {}
    for k in kinds:
        x, y, s = LAYOUT[k]
        out[k] = np.ascontiguousarray(rgb[y : y + s, x : x + s])
    return out


def check_chip(data: bytes, source: str = "chip") -> None:
    """ModelError naming `source` unless `data`'s header is a chip's (a PNG of the chip's size), read without
    decoding any pixel: how an archive's chips are checked before they are stored."""
    try:
        with Image.open(io.BytesIO(data)) as img:
            w, h, fmt = *img.size, img.format
            check_decode(source, w, h, decode_cost(img), WIDTH * HEIGHT, CHIP_MEMORY_BUDGET, what="chip", mode=img.mode)
    except ImageError as exc:
        raise ModelError(f"not a face chip: {exc}") from None
    except Image.DecompressionBombError as exc:
        raise ModelError(f"not a face chip: {source} is over the limit of {WIDTH * HEIGHT} pixels ({exc})") from None
    except Exception as exc:  # PIL raises many types for malformed headers
        raise ModelError(f"not a face chip: {source} cannot be read ({type(exc).__name__}: {exc})") from None
    if fmt != "PNG" or (w, h) != (WIDTH, HEIGHT):
        raise ModelError(f"not a face chip: {source} is a {w}x{h} {fmt}, not a {WIDTH}x{HEIGHT} PNG")

"""Reading photos from anywhere into RGB PIL images, with errors that name the file.

Photos come from phones (EXIF rotation), scanners (16-bit, CMYK), the web (PNG data behind a
.jpg name, WebP, palettes, alpha) and from broken downloads. Everything past this module sees an
upright 8-bit RGB image or a typed `ImageError`.
"""
from __future__ import annotations

import hashlib
import io
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Union

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from recognizer.errors import ImageError

ImageSource = Union[str, os.PathLike, bytes, Image.Image]

# A 12000x12000 photo is 144 Mpx; larger ones are scans or decompression bombs, and decoding one
# would take gigabytes. Refuse them before decoding: PIL reads the header lazily.
DEFAULT_MAX_PIXELS = 150_000_000
# Bigger than any camera's file; anything larger is refused before it is read into memory.
MAX_FILE_BYTES = 200 * 1024 * 1024
# The one list of image file names: what enroll, identify, finetune and evaluate read from a folder.
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff", ".jfif"}


@dataclass
class Photo:
    """A decoded photo and what identifies it."""

    image: Image.Image  # upright, 8-bit RGB
    source: str  # path, or "<bytes>" / "<image>"
    content_hash: str  # sha256 of the file bytes (of the RGB pixels for in-memory images)

    @property
    def size(self) -> tuple[int, int]:
        return self.image.size


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def read_bytes(path: str | os.PathLike) -> bytes:
    """Read a file's bytes, turning every OS-level failure into an ImageError naming it."""
    p = Path(path)
    try:
        if p.is_dir():
            raise ImageError(p, "is a directory, not an image file")
        size = p.stat().st_size
        if size == 0:
            raise ImageError(p, "is empty (0 bytes)")
        if size > MAX_FILE_BYTES:
            raise ImageError(p, f"is {size} bytes, over the {MAX_FILE_BYTES} byte limit")
        return p.read_bytes()
    except FileNotFoundError:
        raise ImageError(p, "no such file") from None
    except PermissionError:
        raise ImageError(p, "permission denied") from None
    except IsADirectoryError:
        raise ImageError(p, "is a directory, not an image file") from None
    except OSError as exc:
        raise ImageError(p, f"cannot be read ({exc.strerror or exc})") from None


def to_rgb(img: Image.Image) -> Image.Image:
    """Convert any PIL mode to 8-bit RGB; alpha is composited on white, not dropped to black."""
    if img.mode == "RGB":
        return img
    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        # 16/32-bit greyscale: scale to 8 bits by the actual range rather than clipping at 255.
        arr = np.asarray(img, dtype=np.float64)
        hi = float(arr.max()) if arr.size else 0.0
        scale = 255.0 / (65535.0 if hi > 255 else max(hi, 1.0))
        arr = np.clip(arr * scale, 0, 255).astype(np.uint8)
        return Image.fromarray(arr, "L").convert("RGB")
    if img.mode == "F":
        arr = np.asarray(img, dtype=np.float64)
        lo, hi = float(arr.min()), float(arr.max())
        arr = (arr - lo) / max(hi - lo, 1e-12) * 255.0
        return Image.fromarray(arr.astype(np.uint8), "L").convert("RGB")
    if img.mode == "P":
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return img.convert("RGB")


def decode(data: bytes, source: str = "<bytes>", max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Decode image bytes to an upright RGB image, or raise ImageError naming `source`."""
    if not data:
        raise ImageError(source, "is empty (0 bytes)")
    try:
        img = Image.open(io.BytesIO(data))
    except UnidentifiedImageError:
        raise ImageError(source, "is not an image PIL can read (unknown or damaged format)") from None
    except Image.DecompressionBombError as exc:
        raise ImageError(source, f"is over the limit of {max_pixels} pixels ({exc})") from None
    except Exception as exc:  # PIL raises many types for malformed headers
        raise ImageError(source, f"cannot be decoded ({type(exc).__name__}: {exc})") from None
    w, h = img.size
    if w <= 0 or h <= 0:
        raise ImageError(source, f"has an invalid size {w}x{h}")
    if w * h > max_pixels:
        raise ImageError(source, f"is {w}x{h} pixels, over the limit of {max_pixels} pixels")
    try:
        # Animated images: the first frame is the photo.
        img.seek(0)
        img.load()
        img = ImageOps.exif_transpose(img) or img
        return to_rgb(img)
    except Image.DecompressionBombError:
        raise ImageError(source, f"is {w}x{h} pixels, refused as a decompression bomb") from None
    except (OSError, SyntaxError, ValueError, EOFError, IndexError, TypeError, struct.error) as exc:
        raise ImageError(source, f"is truncated or damaged ({exc})") from None
    except MemoryError:
        raise ImageError(source, f"is {w}x{h} pixels, too large to decode in memory") from None


def load_photo(src: ImageSource, max_pixels: int = DEFAULT_MAX_PIXELS) -> Photo:
    """Load a photo from a path, raw bytes or a PIL image."""
    if isinstance(src, Image.Image):
        rgb = to_rgb(ImageOps.exif_transpose(src) or src)
        return Photo(rgb, "<image>", sha256_bytes(rgb.tobytes()))
    if isinstance(src, (bytes, bytearray, memoryview)):
        data = bytes(src)
        return Photo(decode(data, "<bytes>", max_pixels), "<bytes>", sha256_bytes(data))
    if isinstance(src, (str, os.PathLike)):
        data = read_bytes(src)
        return Photo(decode(data, str(src), max_pixels), str(src), sha256_bytes(data))
    raise ImageError(repr(src)[:80], f"unsupported image source type {type(src).__name__}")


def load_image(src: ImageSource, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    return load_photo(src, max_pixels).image


def list_images(folder: str | os.PathLike, recursive: bool = False) -> list[Path]:
    """Image files in a folder, sorted, by suffix (content is checked when they are read)."""
    root = Path(folder)
    if not root.exists():
        raise ImageError(root, "no such file or directory")
    if not root.is_dir():
        raise ImageError(root, "is not a directory")
    pattern = "**/*" if recursive else "*"
    return sorted(p for p in root.glob(pattern) if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


def expand_inputs(paths: list[str | os.PathLike], recursive: bool = False) -> list[Path]:
    """Files as given, folders expanded to their images (sorted)."""
    out: list[Path] = []
    for p in map(Path, paths):
        out.extend(list_images(p, recursive) if p.is_dir() else [p])
    return out

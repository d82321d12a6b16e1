"""Reading photos from anywhere into RGB PIL images, with errors that name the file.

Photos come from phones (EXIF rotation), scanners (16-bit, CMYK), the web (PNG behind a .jpg name, WebP,
palettes, alpha) and broken downloads; everything past this module sees upright 8-bit RGB or an `ImageError`.
"""
from __future__ import annotations

import ctypes
import hashlib
import io
import logging
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Union

import numpy as np
from PIL import Image, UnidentifiedImageError

from facecore.errors import ImageError
from facecore.outputs import special_file

__all__ = ["DEFAULT_MAX_PIXELS", "DEFAULT_MEMORY_BUDGET", "IMAGE_SUFFIXES", "MAX_FILE_BYTES", "STRIP_PIXELS",
           "ImageSource", "Photo", "check_decode", "decode", "decode_cost", "expand_inputs", "frame_cost", "list_images",
           "load_image", "load_photo", "pixels_sha256", "read_bytes", "release_memory", "sha256_bytes", "to_rgb",
           "tune_malloc"]

log = logging.getLogger(__name__)

ImageSource = Union[str, os.PathLike, bytes, Image.Image]

# A 12000x12000 photo is 144 Mpx; larger ones are scans or decompression bombs, and decoding one
# would take gigabytes. Refuse them before decoding: PIL reads the header lazily.
DEFAULT_MAX_PIXELS = 150_000_000
# Bigger than any camera's file; anything larger is refused before it is read into memory.
MAX_FILE_BYTES = 200 * 1024 * 1024
# What decoding one photo may cost in memory (`decode_cost`). Pixels alone say little: a 44 KB GIF of 59 Mpx
# decodes to 59 MB of palette indices, then 236 MB of RGB. A 50-Mpx JPEG fits (decoded reduced if need be).
DEFAULT_MEMORY_BUDGET = 384 * 1024 * 1024
# Conversions to RGB run over strips of this many pixels, so they cost the output plus a strip.
STRIP_PIXELS = 1 << 20
_BYTES_PER_PIXEL = {"1": 1, "L": 1, "P": 1, "I;16": 2, "I;16L": 2, "I;16B": 2, "I;16N": 2}
_TRANSPOSE = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180, 4: Image.Transpose.FLIP_TOP_BOTTOM,
              5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE,
              8: Image.Transpose.ROTATE_90}
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
        if (special := special_file(p)) is not None:  # before any open: a FIFO's open blocks
            raise ImageError(p, special)
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


def _rgb_converter(img: Image.Image):
    """A function turning a strip of `img` into 8-bit RGB; parameters that depend on the whole
    image (the range of 16-bit and float data) are taken from `img` once, so strips agree."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        # 16/32-bit greyscale: scale to 8 bits by the actual range rather than clipping at 255.
        hi = float(img.getextrema()[1])
        scale = 255.0 / (65535.0 if hi > 255 else max(hi, 1.0))

        def grey(strip: Image.Image) -> Image.Image:
            arr = np.clip(np.asarray(strip, dtype=np.float64) * scale, 0, 255).astype(np.uint8)
            return Image.fromarray(arr, "L").convert("RGB")

        return grey
    if img.mode == "F":
        lo, hi = (float(v) for v in img.getextrema())

        def floats(strip: Image.Image) -> Image.Image:
            arr = (np.asarray(strip, dtype=np.float64) - lo) / max(hi - lo, 1e-12) * 255.0
            return Image.fromarray(arr.astype(np.uint8), "L").convert("RGB")

        return floats
    if img.mode in ("P", "RGBA", "LA", "PA", "RGBa", "La"):
        def composite(strip: Image.Image) -> Image.Image:
            rgba = strip.convert("RGBA")
            background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
            return Image.alpha_composite(background, rgba).convert("RGB")

        return composite
    return lambda strip: strip.convert("RGB")


def to_rgb(img: Image.Image) -> Image.Image:
    """Any PIL mode as 8-bit RGB; alpha is composited on white, not dropped to black. Large images are converted
    a strip of rows at a time (per pixel, so the same result), costing the result plus one strip rather than
    several full-size intermediates (a palette image went through two RGBA copies)."""
    if img.mode == "RGB":
        return img
    convert = _rgb_converter(img)
    w, h = img.size
    if w * h <= STRIP_PIXELS:
        return convert(img)
    out = Image.new("RGB", (w, h))
    rows = max(1, STRIP_PIXELS // w)
    for y in range(0, h, rows):
        out.paste(convert(img.crop((0, y, w, min(h, y + rows)))), (0, y))
    return out


def _orientation(img: Image.Image, loaded: bool = True) -> int:
    """The EXIF orientation, 1 when there is none. Before `load()`, a PNG's is read only from
    what its header holds: PIL's `getexif` on an unloaded PNG decodes the whole image to look
    for an eXIf chunk after the pixels."""
    try:
        if img.format == "PNG" and not loaded:
            raw = img.info.get("exif")
            if not raw:
                return 1
            exif = Image.Exif()
            exif.load(raw)
            return int(exif.get(0x0112, 1))
        return int(img.getexif().get(0x0112, 1))
    except Exception:  # a damaged EXIF block is no reason to refuse the photo
        return 1


def _upright(rgb: Image.Image, orientation: int, owned: bool = True) -> Image.Image:
    """`rgb` turned as EXIF `orientation` says, with its EXIF dropped so that nothing turns it
    again. An image not `owned` (the caller's) is left as it is when it needs no turning."""
    if orientation in _TRANSPOSE:
        rgb, owned = rgb.transpose(_TRANSPOSE[orientation]), True
    if owned:
        rgb.info.pop("exif", None)
    return rgb


def pixels_sha256(img: Image.Image) -> str:
    """sha256 of an image's `tobytes()`, hashed a strip at a time so a large image is not copied whole."""
    digest = hashlib.sha256()
    w, h = img.size
    rows = max(1, STRIP_PIXELS // max(w, 1))
    for y in range(0, h, rows):
        digest.update(img.crop((0, y, w, min(h, y + rows))).tobytes())
    return digest.hexdigest()


def decode_cost(img: Image.Image, full_size: tuple[int, int] | None = None) -> int:
    """Bytes that decoding `img` (opened, not loaded; after any `draft`) to upright RGB takes at
    its peak: the image in its own mode, the RGB result (PIL keeps 4 bytes per RGB pixel), a
    rotated copy when EXIF asks for one, the coefficients of a progressive JPEG (at the full
    `full_size`, whatever the draft: libjpeg keeps them all), one strip."""
    w, h = img.size
    fw, fh = full_size or img.size
    px = w * h
    cost = px * _BYTES_PER_PIXEL.get(img.mode, 4)
    if img.mode != "RGB":
        cost += px * 4 + STRIP_PIXELS * 24
    if _orientation(img, loaded=False) in _TRANSPOSE:
        cost += px * 4
    if img.format == "JPEG" and (img.info.get("progressive") or img.info.get("progression")):
        cost += fw * fh * 2 * len(img.getbands())  # every DCT coefficient (int16), kept to the end
    return cost


def frame_cost(width: int, height: int) -> int:
    """Bytes a decoded video frame takes at its peak: OpenCV's BGR frame, its RGB conversion (3 bytes a pixel
    each) and the PIL image made of it (PIL keeps 4 bytes per RGB pixel)."""
    return width * height * (3 + 3 + 4)


def check_decode(source: str, width: int, height: int, cost: int, max_pixels: int = DEFAULT_MAX_PIXELS,
                 memory_budget: int = DEFAULT_MEMORY_BUDGET, what: str = "photo", mode: str = "") -> None:
    """The one rule for every image decode (photos, chips, archive members, video frames), applied to what a
    header declares before anything is decoded: ImageError naming `source` when `width` x `height` is not a
    positive size, is over `max_pixels`, or decoding it would take `cost` bytes, over `memory_budget`."""
    if width <= 0 or height <= 0:
        raise ImageError(source, f"has an invalid size {width}x{height}")
    if width * height > max_pixels:
        raise ImageError(source, f"is {width}x{height} pixels, over the limit of {max_pixels} pixels")
    if cost > memory_budget:
        kind = f" ({mode})" if mode else ""
        raise ImageError(source, f"is {width}x{height} pixels{kind}, which would take about {cost / 2**20:.0f} MB to "
                                 f"decode, over the memory budget of {memory_budget / 2**20:.0f} MB per {what}")


_malloc_tuned = False
# glibc's mallopt parameters (malloc.h).
_M_MMAP_THRESHOLD, _M_ARENA_MAX = -3, -8
MMAP_THRESHOLD = 4 * 1024 * 1024
ARENA_MAX = 2


def tune_malloc() -> None:
    """Keep glibc's malloc from holding freed memory (the one place this process's malloc is set; every command
    calls it first, and the first decode does for library users). A value set with MALLOC_MMAP_THRESHOLD_ or
    MALLOC_ARENA_MAX is kept. Figures: benchmarks/results/implementation-choices.md.

    - A fixed mmap threshold: the adaptive one grows to 32 MB, and big freed blocks (Pillow's 16 MB image
      blocks, decoded photos, MTCNN's first-stage buffers: ONNX Runtime allocates them per call,
      recognizer/onnx_session.py) then stay in the heap.
    - At most two arenas: each thread that allocates gets one of its own (up to 8 per core) and memory freed
      in one stays there; a server's identify workers and MTCNN's threads each grew one.
    """
    global _malloc_tuned
    if _malloc_tuned:
        return
    _malloc_tuned = True
    try:
        libc = ctypes.CDLL(None)
        if "MALLOC_MMAP_THRESHOLD_" not in os.environ:
            libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)  # fixed, no longer adaptive
        if "MALLOC_ARENA_MAX" not in os.environ:
            libc.mallopt(_M_ARENA_MAX, ARENA_MAX)
    except (OSError, AttributeError):  # not glibc: nothing to tune
        pass


def release_memory() -> None:
    """Return freed heap memory to the system (glibc), after a large photo."""
    try:
        ctypes.CDLL(None).malloc_trim(0)
    except (OSError, AttributeError):
        pass


def decode(data: bytes, source: str = "<bytes>", max_pixels: int = DEFAULT_MAX_PIXELS,
           memory_budget: int = DEFAULT_MEMORY_BUDGET) -> Image.Image:
    """Image bytes as an upright RGB image, or ImageError naming `source`. Refused before decoding: over
    `max_pixels`, or costing over `memory_budget` bytes (`decode_cost`), except that a JPEG is first tried
    decoded reduced (1/2, 1/4, 1/8 a side: Pillow's `draft`); its faces then come in the reduced pixels."""
    if not data:
        raise ImageError(source, "is empty (0 bytes)")
    tune_malloc()
    try:
        img = Image.open(io.BytesIO(data))
    except UnidentifiedImageError:
        raise ImageError(source, "is not an image PIL can read (unknown or damaged format)") from None
    except Image.DecompressionBombError as exc:
        raise ImageError(source, f"is over the limit of {max_pixels} pixels ({exc})") from None
    except Exception as exc:  # PIL raises many types for malformed headers
        raise ImageError(source, f"cannot be decoded ({type(exc).__name__}: {exc})") from None
    w, h = img.size
    check_decode(source, w, h, 0, max_pixels, memory_budget)
    big = False
    try:
        cost = decode_cost(img)
        if cost > memory_budget and img.format == "JPEG":
            for scale in (2, 4, 8):
                img.draft("RGB", (max(1, w // scale), max(1, h // scale)))
                cost = decode_cost(img, (w, h))
                if cost <= memory_budget:
                    break
        check_decode(source, w, h, cost, max_pixels, memory_budget, mode=img.mode)
        big = cost > 64 * 1024 * 1024
        # Animated images: the first frame is the photo.
        img.seek(0)
        img.load()
        orientation = _orientation(img)
        rgb = to_rgb(img)
        if rgb is not img:
            img.close()
        # Rotated after the conversion (they commute): the rotated copy is of RGB, not a possibly larger mode.
        return _upright(rgb, orientation)
    except ImageError:
        raise
    except Image.DecompressionBombError:
        raise ImageError(source, f"is {w}x{h} pixels, refused as a decompression bomb") from None
    except (OSError, SyntaxError, ValueError, EOFError, IndexError, TypeError, struct.error) as exc:
        raise ImageError(source, f"is truncated or damaged ({exc})") from None
    except MemoryError:
        raise ImageError(source, f"is {w}x{h} pixels, too large to decode in memory") from None
    finally:
        if big:
            release_memory()


def load_photo(src: ImageSource, max_pixels: int = DEFAULT_MAX_PIXELS, memory_budget: int = DEFAULT_MEMORY_BUDGET) -> Photo:
    """Load a photo from a path, raw bytes or a PIL image."""
    if isinstance(src, Image.Image):
        # No copy of an image already upright RGB: the server hands over photos it decoded, up to the budget.
        rgb = to_rgb(src)
        rgb = _upright(rgb, _orientation(src), owned=rgb is not src)
        return Photo(rgb, "<image>", pixels_sha256(rgb))
    if isinstance(src, (bytes, bytearray, memoryview)):
        data = bytes(src)
        return Photo(decode(data, "<bytes>", max_pixels, memory_budget), "<bytes>", sha256_bytes(data))
    if isinstance(src, (str, os.PathLike)):
        data = read_bytes(src)
        return Photo(decode(data, str(src), max_pixels, memory_budget), str(src), sha256_bytes(data))
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
    found = sorted(p for p in root.glob(pattern) if p.suffix.lower() in IMAGE_SUFFIXES)
    for p in found:
        if (special := special_file(p)) is not None:
            log.warning("%s: %s (skipped)", p, special)
    return [p for p in found if p.is_file()]


def expand_inputs(paths: list[str | os.PathLike], recursive: bool = False) -> list[Path]:
    """Files as given, folders expanded to their images (sorted)."""
    out: list[Path] = []
    for p in map(Path, paths):
        out.extend(list_images(p, recursive) if p.is_dir() else [p])
    return out

"""Reading videos and cameras with OpenCV: what a file is (by content), and its frames, sampled.

A file is judged a video by its first bytes, not its name, so a photo or a text file named `.mp4`
is not sent to the video decoder. Decoding is bounded: the file and frame sizes are checked before
any frame is decoded, FFmpeg's reads time out instead of blocking, one frame is held at a time, and
`max_seconds` caps how much is read. A video that stops decoding before its declared end ends
there, with `truncated` set, instead of raising: what was read is still worth naming.
"""
from __future__ import annotations

import logging
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
from PIL import Image

from facecore.errors import ImageError, VideoError
from facecore.outputs import special_file
from recognizer.image import DEFAULT_MEMORY_BUDGET, check_decode, frame_cost

__all__ = ["DEFAULT_SAMPLE_FPS", "VIDEO_SUFFIXES", "Frame", "VideoInfo", "VideoLimits", "VideoReader", "is_video_file",
           "is_video_input", "sniff_video"]

log = logging.getLogger(__name__)

# A few frames a second follow faces well (people rarely move out of their box in 0.2 s) at a
# sixth of the detection work of every frame of a 30 fps video.
DEFAULT_SAMPLE_FPS = 5.0
VIDEO_SUFFIXES = {".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi", ".mpg", ".mpeg", ".ts", ".m2ts", ".mts",
                  ".wmv", ".asf", ".flv", ".3gp", ".3g2", ".ogv", ".ogg"}
# ISO media files whose major brand says still image (HEIF/AVIF photos share the mp4 container).
_IMAGE_BRANDS = {b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"mif1", b"msf1", b"avif", b"avis"}
# QuickTime files may start with a box other than `ftyp`.
_QT_BOXES = {b"moov", b"mdat", b"wide", b"free", b"skip", b"pnot"}
# Containers known by their first bytes (none of them starts with MPEG-TS's 0x47 or "RIFF").
_MAGIC = ((b"\x1a\x45\xdf\xa3", "matroska"), (b"\x00\x00\x01\xba", "mpeg"), (b"\x00\x00\x01\xb3", "mpeg"),
          (b"FLV", "flv"), (b"\x30\x26\xb2\x75\x8e\x66\xcf\x11", "asf"), (b"OggS", "ogg"))


def sniff_video(head: bytes) -> str | None:
    """The container the bytes start with (`mp4`, `matroska`, `avi`, ...), or None when it is no video."""
    if len(head) >= 12 and head[4:8] == b"ftyp":
        return None if head[8:12] in _IMAGE_BRANDS else "mp4"
    if len(head) >= 8 and head[4:8] in _QT_BOXES:
        return "mov"
    if head[:4] == b"RIFF" and head[8:12] == b"AVI ":
        return "avi"
    if len(head) > 376 and head[0] == head[188] == head[376] == 0x47:
        return "mpegts"
    return next((name for magic, name in _MAGIC if head.startswith(magic)), None)


def is_video_file(path: str | os.PathLike) -> bool:
    """True when the file's content starts like a video container (its name does not matter); never
    opens a FIFO, device or socket (the readers refuse those by name)."""
    if special_file(path) is not None:
        return False
    try:
        with open(path, "rb") as fh:
            return sniff_video(fh.read(512)) is not None
    except OSError:
        return False


def is_video_input(source: str | os.PathLike | bytes) -> bool:
    """Whether to treat `source` (a file, or the start of one as bytes) as a video: by its content,
    or by its name when its content is no image either (the video reader then says what is wrong)
    or when it does not exist yet (an output name). A photo named `.mp4` is still a photo."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        return sniff_video(bytes(source[:512])) is not None
    if special_file(source) is not None:  # a FIFO is opened by no one: the photo reader refuses it by name
        return False
    if is_video_file(source):
        return True
    if Path(source).suffix.lower() not in VIDEO_SUFFIXES:
        return False
    try:
        with Image.open(source):
            return False
    except Exception:  # missing, not an image PIL knows, or unreadable
        return True


@dataclass(frozen=True)
class VideoLimits:
    """Bounds on one video's decoding; a video over them is refused or cut short, never decoded whole."""

    max_bytes: int = 4 * 1024**3  # a file larger than this is refused before it is opened
    max_pixels: int = 8192 * 4320  # per frame (8K)
    memory_budget: int = DEFAULT_MEMORY_BUDGET  # per frame, as `recognizer.image.frame_cost` counts it
    max_seconds: float | None = None  # of video read (a camera: of wall-clock time); None: all of it
    max_duration: float | None = None  # a file whose container declares a longer video is refused
    timeout_ms: int = 10_000  # for opening the file and for each frame read, inside FFmpeg

    def __post_init__(self) -> None:
        if self.max_bytes <= 0 or self.max_pixels <= 0 or self.memory_budget <= 0 or self.timeout_ms <= 0:
            raise ValueError(f"video limits must be positive: {self}")
        for name in ("max_seconds", "max_duration"):
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise ValueError(f"{name} {value!r}: must be positive (or None for no limit)")


@dataclass
class Frame:
    """One sampled frame: its index in the video, its time in seconds, and the picture (RGB)."""

    index: int
    time: float
    image: Image.Image | np.ndarray | None  # None once the caller has let go of it


@dataclass
class VideoInfo:
    source: str
    fps: float  # the video's own frame rate (0.0 when it does not say)
    frame_count: int  # as the container declares it (0 when unknown, e.g. a camera)
    width: int
    height: int

    @property
    def duration(self) -> float:
        return self.frame_count / self.fps if self.fps > 0 and self.frame_count > 0 else 0.0

    def to_dict(self) -> dict:
        return {"fps": round(self.fps, 3), "frames": self.frame_count, "width": self.width, "height": self.height,
                "duration": round(self.duration, 3)}


class VideoReader:
    """Frames of a video file, or of a camera (`source` an int), sampled at `sample_fps`; a context
    manager. `truncated` is set when a file stopped decoding well before its declared frame count."""

    def __init__(self, source: str | os.PathLike | int, *, sample_fps: float | None = DEFAULT_SAMPLE_FPS,
                 limits: VideoLimits = VideoLimits(), name: str | None = None) -> None:
        if sample_fps is not None and not (isinstance(sample_fps, (int, float)) and math.isfinite(sample_fps) and sample_fps > 0):
            raise ValueError(f"sample fps {sample_fps!r}: must be a positive number of frames per second")
        self.limits = limits
        self.sample_fps = float(sample_fps) if sample_fps is not None else None  # None: every frame
        self.camera = isinstance(source, int) and not isinstance(source, bool)
        self.name = name or (f"camera {source}" if self.camera else str(source))
        self.decoded = 0
        self.truncated = False
        self._ended = False  # the decoder ran out of frames (rather than a limit stopping the reading)
        self._cap = self._open(source)
        self.info = self._read_info()
        self._check_frame_size_and_duration()

    def _open(self, source: str | os.PathLike | int):
        """OpenCV's capture of the camera or of the (checked) file; VideoError when it cannot be opened."""
        import cv2  # OpenCV is heavy and only needed once a video is read

        if self.camera:
            cap = cv2.VideoCapture(int(source), cv2.CAP_ANY)
            if not cap.isOpened():
                raise VideoError(self.name, "no such camera, or it cannot be opened")
            return cap
        path = Path(source)
        self._check_file(path)
        params = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, self.limits.timeout_ms, cv2.CAP_PROP_READ_TIMEOUT_MSEC, self.limits.timeout_ms]
        cap = cv2.VideoCapture(str(path), cv2.CAP_FFMPEG, params)
        if not cap.isOpened():
            raise VideoError(self.name, "cannot be opened as a video (damaged, truncated before its index, or a codec FFmpeg lacks)")
        return cap

    def _read_info(self) -> VideoInfo:
        import cv2  # OpenCV is heavy and only needed once a video is read

        cap = self._cap
        fps = float(cap.get(cv2.CAP_PROP_FPS) or 0.0)
        count = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        w, h = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH) or 0), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT) or 0)
        # Containers sometimes carry nonsense here (0, NaN, 90000); frame times then come from the
        # decoder's timestamps instead.
        return VideoInfo(self.name, fps if 0 < fps <= 1000 else 0.0, max(count, 0), w, h)

    def _check_frame(self, w: int, h: int, what: str) -> None:
        """VideoError (too large) when a `w` x `h` frame is over the one decode rule (`recognizer.image.check_decode`)."""
        try:
            check_decode(what, w, h, frame_cost(w, h), self.limits.max_pixels, self.limits.memory_budget, what="frame")
        except ImageError as exc:
            self.close()
            raise VideoError(self.name, f"{exc.path} {exc.reason}", too_large=True) from None

    def _check_frame_size_and_duration(self) -> None:
        w, h, limits = self.info.width, self.info.height, self.limits
        if w and h:  # a camera or a container may not say; each frame is checked as it comes
            self._check_frame(w, h, "each frame")
        if limits.max_duration is not None and self.info.duration > limits.max_duration:
            self.close()
            raise VideoError(self.name, f"the video lasts {self.info.duration:.1f} s, over the limit of {limits.max_duration:g} s", too_large=True)

    def _check_file(self, path: Path) -> None:
        try:
            if path.is_dir():
                raise VideoError(self.name, "is a directory, not a video file")
            if (special := special_file(path)) is not None:  # before any open: a FIFO's open blocks
                raise VideoError(self.name, special)
            size = path.stat().st_size
            with open(path, "rb") as fh:
                head = fh.read(512)
        except FileNotFoundError:
            raise VideoError(self.name, "no such file") from None
        except PermissionError:
            raise VideoError(self.name, "permission denied") from None
        except OSError as exc:
            raise VideoError(self.name, f"cannot be read ({exc.strerror or exc})") from None
        if size == 0:
            raise VideoError(self.name, "is empty (0 bytes)")
        if size > self.limits.max_bytes:
            raise VideoError(self.name, f"is {size} bytes, over the video limit of {self.limits.max_bytes} bytes", too_large=True)
        if sniff_video(head) is None:
            raise VideoError(self.name, f"is not a video: its content starts with no known container signature ({head[:12]!r})")

    def __enter__(self) -> "VideoReader":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        cap = getattr(self, "_cap", None)
        if cap is not None:
            cap.release()
            self._cap = None

    def expected_samples(self) -> int | None:
        """How many frames `frames()` will give, when the container says how long it is."""
        if self.camera or not self.info.duration:
            return None
        seconds = self.info.duration if self.limits.max_seconds is None else min(self.info.duration, self.limits.max_seconds)
        rate = self.info.fps if self.sample_fps is None else min(self.sample_fps, self.info.fps)
        return max(1, math.ceil(seconds * rate - 1e-9))

    def frames(self, *, bgr: bool = False) -> Iterator[Frame]:
        """The first frame at or after each multiple of 1 / sample_fps seconds (every frame when it is
        None), as RGB PIL images, or with `bgr` OpenCV's BGR arrays."""
        cap = self._cap
        if cap is None:
            raise ValueError(f"{self.name}: the reader is closed")
        step = 0.0 if self.sample_fps is None else 1.0 / self.sample_fps
        next_time = 0.0
        self._ended = False
        for index, now in self._grabbed(cap):
            if now + 1e-6 < next_time:
                continue
            ok, pixels = cap.retrieve()
            if not ok or pixels is None:
                self._ended = True
                break
            h, w = pixels.shape[:2]
            self._check_frame(w, h, f"frame {index}")  # a stream may change size midway
            next_time += step
            if next_time <= now:  # behind (a slow camera, a jump in timestamps): sample from here on
                next_time = now + step
            yield Frame(index, now, _convert(pixels, "BGR") if bgr else Image.fromarray(_convert(pixels, "RGB"), "RGB"))
        declared = self.info.frame_count
        # Containers round their frame count; a couple of frames short is a normal end, not damage.
        if self._ended and not self.camera and declared and self.decoded < declared - 2:
            self.truncated = True
            log.warning("%s: decoding stopped at frame %d of the %d it declares (truncated or damaged)", self.name, self.decoded, declared)

    def _grabbed(self, cap) -> Iterator[tuple[int, float]]:
        """(index, time in seconds) of every frame decoded, until `max_seconds` or the decoder's end
        (which sets `_ended`). Grabbing decodes; only sampled frames pay `retrieve()`'s conversion."""
        import cv2  # OpenCV is heavy and only needed once a video is read

        fps = self.info.fps
        limit = self.limits.max_seconds
        start = time.monotonic()
        index = -1
        while True:
            if self.camera:
                now = time.monotonic() - start
            elif fps > 0:
                now = (index + 1) / fps
            else:
                now = None  # read from the decoder once the frame is grabbed
            if limit is not None and now is not None and now >= limit:
                return
            if not cap.grab():
                self._ended = True
                return
            index += 1
            self.decoded += 1
            if now is None:
                now = float(cap.get(cv2.CAP_PROP_POS_MSEC) or 0.0) / 1000.0
                if limit is not None and now >= limit:
                    return
            yield index, now


def _convert(arr: np.ndarray, to: str) -> np.ndarray:
    """OpenCV's picture (BGR, grey or BGRA: all three exist) as 3-channel `to` ("BGR" or "RGB")."""
    import cv2  # OpenCV is heavy and only needed once a video is read

    if arr.ndim == 3 and arr.shape[2] == 3:
        return arr if to == "BGR" else cv2.cvtColor(arr, cv2.COLOR_BGR2RGB)
    source = "GRAY" if arr.ndim == 2 or arr.shape[2] == 1 else "BGRA"
    return cv2.cvtColor(arr, getattr(cv2, f"COLOR_{source}2{to}"))

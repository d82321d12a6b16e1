"""What one server is allowed to take: the token, the upload limits and the guard's settings.

`serve.py` builds a `Settings` from its options and hands it to `web.app.create_app`; routes
read it through the `Config` dependency (web.deps).
"""
from __future__ import annotations

import os
from dataclasses import dataclass

from web.guard import GuardSettings

__all__ = ["DEFAULT_MAX_PHOTO_BYTES", "DEFAULT_MAX_PIXELS", "DEFAULT_MAX_UPLOAD_MB", "DEFAULT_MAX_VIDEO_MB",
           "DEFAULT_MAX_VIDEO_SECONDS", "Settings"]

DEFAULT_MAX_UPLOAD_MB = 10.0
# A short clip: a minute of phone video at 720p is about 50 MB.
DEFAULT_MAX_VIDEO_MB = 50.0
DEFAULT_MAX_VIDEO_SECONDS = 60.0
# Bigger than a 48-Mpx phone photo; a larger image is a scan or a decompression bomb.
DEFAULT_MAX_PIXELS = 60_000_000
# Decoding memory per photo (recognizer.image.decode_cost). Photos are decoded on the identify
# workers and the model thread, one each at a time, so (workers + 1) times this is most of what
# hostile uploads can add to the server's memory.
DEFAULT_MAX_PHOTO_BYTES = 96 * 1024 * 1024


@dataclass(frozen=True)
class Settings:
    token: str | None = None  # None: writes are refused
    protect_reads: bool = False
    max_upload_bytes: int = int(DEFAULT_MAX_UPLOAD_MB * 1024 * 1024)
    max_pixels: int = DEFAULT_MAX_PIXELS
    # POST /identify also takes one video: its own size limit (counted while the body is read)
    # and a cap on its length, which bounds the decoding and detection work one request causes.
    max_video_bytes: int = int(DEFAULT_MAX_VIDEO_MB * 1024 * 1024)
    max_video_seconds: float = DEFAULT_MAX_VIDEO_SECONDS
    max_photo_bytes: int = DEFAULT_MAX_PHOTO_BYTES  # memory one photo's decode may take
    guard: GuardSettings = GuardSettings()  # Host names, timeouts, uploads in flight (web/guard.py)
    # Photos identified side by side (web/app.py); 0: one per core. More than the cores only queues
    # the same work on fewer cores, at the cost of another photo's decode in memory.
    model_workers: int = 0

    def identify_workers(self) -> int:
        """How many identify workers run: `model_workers`, or one per core when it is 0."""
        if self.model_workers < 0:
            raise ValueError(f"model_workers {self.model_workers}: a number of threads, or 0 for one per core")
        return self.model_workers or os.cpu_count() or 1

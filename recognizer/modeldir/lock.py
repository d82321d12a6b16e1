"""The model directory's writer lock: every change of the model takes it."""
from __future__ import annotations

import errno
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from filelock import FileLock, Timeout

from facecore.errors import ModelError
from recognizer.modeldir.layout import LOCK_FILE

__all__ = ["LOCK_TIMEOUT_S", "writer_lock"]

# How long a change waits for another one (a finetune's commit re-embeds the faces enrolled
# while it trained, under this lock).
LOCK_TIMEOUT_S = 300.0


@contextmanager
def writer_lock(model_dir: str | Path, timeout: float = LOCK_TIMEOUT_S) -> Iterator[None]:
    """The model directory's writer lock. Enrolling, removing, renaming and a finetune's commit
    take it, so a change is never made to a gallery that a finetune is replacing: it either lands
    before the commit (which carries it over) or after it, in the new gallery."""
    path = Path(model_dir) / LOCK_FILE
    try:  # a read-only directory is a clear error now, not a wait for a lock that cannot be taken
        os.close(os.open(path, os.O_RDWR | os.O_CREAT, 0o600))
    except OSError as exc:
        if exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
            raise ModelError(f"{model_dir}: cannot change the model: the directory is read-only ({exc.strerror})") from None
        raise
    lock = FileLock(str(path), timeout=timeout, mode=0o600)
    try:
        lock.acquire()
    except Timeout:
        raise ModelError(f"{model_dir}: timed out after {timeout:.0f} s waiting for {LOCK_FILE} "
                         "(another process is changing the model)") from None
    try:
        yield
    finally:
        lock.release()

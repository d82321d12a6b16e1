"""Creating a model directory: built privately beside its place, then renamed into it."""
from __future__ import annotations

import errno
import logging
import os
import shutil
import sqlite3
import tempfile
from pathlib import Path

from facecore.atomic import fsync_dir
from facecore.errors import ModelError
from gallery import create_gallery
from recognizer.modeldir.config import ModelConfig, save_config
from recognizer.modeldir.layout import GALLERY_DIR, MODEL_FILE, ensure_private_dir

__all__ = ["create_model_dir", "has_model"]

log = logging.getLogger(__name__)


def has_model(d: Path) -> bool:
    return (Path(d) / MODEL_FILE).exists()


def create_model_dir(d: Path, cfg: ModelConfig) -> bool:
    """Make `d` a model directory of `cfg` with an empty gallery; False when another process created it
    since the caller looked (then open that one); ModelError when `d` is something else. Built beside `d` and
    renamed in, so a crash never leaves a half-made model, and of two creators the one whose rename won is used."""
    if d.exists() and (not d.is_dir() or any(d.iterdir())):
        if has_model(d):  # another process created it since the caller looked
            return False
        raise ModelError(f"{d}: exists and is not empty, but holds no model.json; choose a new directory")
    tmp: Path | None = None
    try:
        d.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{d.name}.creating-", dir=d.parent))  # mode 0700
        create_gallery(tmp / GALLERY_DIR, model_id=cfg.model_id, dim=cfg.dim).close()
        save_config(tmp, cfg)
        try:
            os.rename(tmp, d)  # atomic; replaces `d` only if it is an empty directory
        except OSError as exc:
            if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST) or not has_model(d):
                raise
            shutil.rmtree(tmp, ignore_errors=True)
            log.info("%s was created by another process meanwhile; opening it", d)
            return False
        tmp = None
        fsync_dir(d.parent)
    except (OSError, sqlite3.Error) as exc:
        raise ModelError(f"{d}: could not create the model directory ({exc})") from exc
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    ensure_private_dir(d)
    return True

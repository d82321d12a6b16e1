"""The model directories attached to a shared (Milvus) gallery, so that removal reaches each one's chips.

One Milvus gallery (`--gallery milvus-lite:PATH.db` or `milvus://HOST:PORT/COLLECTION`) may hold the faces of
several model directories; each keeps the chips of the faces enrolled through it in its own
DIR/gallery-chips/<key>/. Every change made through a model directory to such a gallery (enrol, remove, rename,
chips) first records the directory in the gallery's list, a JSON list of absolute paths:

    Milvus Lite   PATH.db.models, beside the data directory (with its lock, ledger and in-use marker)
    a server      $XDG_CACHE_HOME/facetool/milvus-models/<host>_<port>_<collection>.json (this machine only:
                  model directories on other machines are not reached)

A removal through one directory then deletes the person's chips from every listed directory's chip store of that
gallery (`modeldir.stores`); a directory that is gone, is no model directory, or holds no chip store of that
gallery is skipped.
"""
from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from filelock import FileLock, Timeout

from facecore.atomic import write_json_atomic
from facecore.errors import GalleryError
from gallery.milvus_store import parse
from recognizer.modeldir.layout import MODEL_FILE, chip_store

__all__ = ["MODELS_SUFFIX", "attach", "attached", "record_file", "sharing"]

log = logging.getLogger(__name__)

MODELS_SUFFIX = ".models"  # Milvus Lite: the model directories attached to PATH.db
LOCK_TIMEOUT_S = 30.0


def record_file(gallery_uri: str) -> Path:
    """Where the list of model directories attached to `gallery_uri` is kept."""
    kind, target, collection = parse(gallery_uri)
    if kind == "lite":
        return Path(target + MODELS_SUFFIX)
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    host_port = target.split("//", 1)[1].replace(":", "_")
    return cache / "facetool" / "milvus-models" / f"{host_port}_{collection}.json"


def _read(path: Path) -> list[str]:
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return []
    except (OSError, ValueError) as exc:
        log.warning("%s cannot be read (%s); it is rewritten with this model directory only", path, exc)
        return []
    if not isinstance(raw, list) or not all(isinstance(p, str) for p in raw):
        log.warning("%s is not a list of model directories; it is rewritten with this model directory only", path)
        return []
    return raw


def attach(gallery_uri: str, model_dir: str | os.PathLike) -> None:
    """Record that `model_dir` keeps chips of `gallery_uri`'s faces (atomically, under the record's lock)."""
    path = record_file(gallery_uri)
    me = str(Path(model_dir).resolve())
    if me in _read(path):
        return
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    try:
        with FileLock(str(path) + ".lock", timeout=LOCK_TIMEOUT_S, mode=0o600):
            now = _read(path)
            if me not in now:
                write_json_atomic(path, sorted({*now, me}))
    except Timeout:
        raise GalleryError(f"{path}: another process has held its lock for {LOCK_TIMEOUT_S:g} s") from None


def attached(gallery_uri: str) -> list[Path]:
    """The model directories recorded for `gallery_uri`, as recorded (checked by `sharing`)."""
    return [Path(p) for p in _read(record_file(gallery_uri))]


def sharing(gallery_uri: str, model_dir: str | os.PathLike) -> list[Path]:
    """The other model directories that still keep a chip store of `gallery_uri`."""
    me = Path(model_dir).resolve()
    out = []
    for d in attached(gallery_uri):
        if d.resolve() == me:
            continue
        if not (d / MODEL_FILE).is_file() or not chip_store(d, gallery_uri).root.is_dir():
            log.info("%s no longer keeps chips of %s; skipped", d, gallery_uri)
            continue
        out.append(d)
    return out

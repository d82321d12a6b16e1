"""Atomic, durable file writes (a temp file beside the target, fsynced, then renamed over it),
and file checksums.

Readers and a crash at any moment see the old file or the new one, never half of one. Files are
owner-only (0600) by default, since what this tool saves is mostly biometric data.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO, Iterator

__all__ = ["atomic_path", "atomic_write", "fsync_dir", "sha256_file", "write_json_atomic"]


@contextmanager
def _replacing(tmp: str, path: Path, mode: int) -> Iterator[None]:
    """Run the body writing `tmp`, then fsync it and rename it over `path`; on an error remove it."""
    try:
        yield
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@contextmanager
def atomic_write(path: str | os.PathLike, mode: int = 0o600, *, tmp_prefix: str | None = None,
                 sync_dir: bool = False) -> Iterator[BinaryIO]:
    """Yield a binary file; on a clean exit it replaces `path`, on an error it is removed.

    `tmp_prefix` names the temporary file (default `.<name>.`), for an owner that sweeps up the
    leftovers of a crash by name; `sync_dir` also makes the rename itself durable.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}." if tmp_prefix is None else tmp_prefix,
                               suffix=".tmp")
    with _replacing(tmp, path, mode), os.fdopen(fd, "wb") as fh:
        yield fh
    if sync_dir:
        fsync_dir(path.parent)


@contextmanager
def atomic_path(path: str | os.PathLike, mode: int = 0o600) -> Iterator[Path]:
    """`atomic_write` for writers that want a file name (OpenCV's VideoWriter, PIL's save by
    suffix): a temporary path beside `path` with the same suffix."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=f".tmp{path.suffix}")
    os.close(fd)
    with _replacing(tmp, path, mode):
        yield Path(tmp)


def write_json_atomic(path: str | os.PathLike, obj: Any, **options: Any) -> None:
    """`obj` as indented JSON with sorted keys, written with `atomic_write(path, **options)`."""
    with atomic_write(path, **options) as fh:
        fh.write(json.dumps(obj, indent=2, sort_keys=True).encode("utf-8"))


def fsync_dir(path: str | os.PathLike) -> None:
    """Make a rename or file creation in directory `path` durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def sha256_file(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()

"""Content-addressed store of face chips: what re-embedding a face needs without its photo.

    DIR/ab/<sha256>.chip     one chip, named by the sha256 of its bytes; 0600, directories 0700

A chip is opaque bytes here (`recognizer.chips` decides what is in it). The store lives beside
the gallery, not inside one backend's files, because it outlives any one gallery: a finetune or a
migration builds a new gallery from the same chips. A gallery record names its chip by its sha256
(`FaceRecord.chip`).

Writes are atomic and idempotent; reads verify the checksum, so a damaged chip is reported by
name rather than embedded. Files are never rewritten in place, so deleting a chip leaves no copy
in the model directory (freed blocks are out of a program's reach: see SECURITY.md).
"""
from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import re
from collections.abc import Iterable, Iterator
from pathlib import Path

from facecore.atomic import atomic_write, fsync_dir
from facecore.errors import GalleryError

__all__ = ["SUFFIX", "ChipStore", "chip_id"]

log = logging.getLogger(__name__)

SUFFIX = ".chip"
_NAME = re.compile(r"[0-9a-f]{64}")


def chip_id(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class ChipStore:
    """Chips of one model directory, by sha256."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)

    def _path(self, sha: str) -> Path:
        if not isinstance(sha, str) or not _NAME.fullmatch(sha):
            raise GalleryError(f"{self.root}: {sha!r} is not a chip id (64 hex digits)")
        return self.root / sha[:2] / f"{sha}{SUFFIX}"

    def _private_dir(self, path: Path) -> None:
        for d in (self.root.parent, self.root, path):  # the parent: a gallery's own folder of chips
            if not d.is_dir():
                with contextlib.suppress(FileExistsError):
                    d.mkdir(mode=0o700)
                os.chmod(d, 0o700)  # mkdir's mode is filtered by the umask; chips are biometric data

    def put(self, data: bytes) -> str:
        """Store `data`; returns its id. Storing the same bytes twice keeps one file."""
        sha = chip_id(data)
        path = self._path(sha)
        if path.is_file():
            return sha
        self._private_dir(path.parent)
        with atomic_write(path, mode=0o600) as fh:
            fh.write(data)
        fsync_dir(path.parent)
        return sha

    @contextlib.contextmanager
    def adding(self, chips: Iterable[bytes]) -> Iterator[list[str]]:
        """Store `chips` for a change that may still be refused (a gallery add): yields their ids. When the block
        raises, the chips this call stored (not those already there) are deleted again, and the folders it made,
        so a refused change leaves the store as it was."""
        made: list[str] = []
        new_dirs: list[Path] = []
        try:
            ids = []
            for data in chips:
                sha = chip_id(data)
                path = self._path(sha)
                if not path.is_file():
                    new_dirs += [d for d in (self.root, path.parent) if not d.is_dir() and d not in new_dirs]
                    made.append(sha)
                ids.append(self.put(data))
            yield ids
        except BaseException:
            self.delete(made)
            for d in reversed(new_dirs):
                with contextlib.suppress(OSError):
                    d.rmdir()  # only when empty
            raise

    def get(self, sha: str) -> bytes:
        """The chip's bytes; GalleryError naming the file when it is missing or damaged."""
        path = self._path(sha)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise GalleryError(f"{path}: chip is missing") from None
        if chip_id(data) != sha:
            raise GalleryError(f"{path}: chip is damaged (its checksum does not match its name)")
        return data

    def __contains__(self, sha: object) -> bool:
        return isinstance(sha, str) and bool(_NAME.fullmatch(sha)) and self._path(sha).is_file()

    def ids(self) -> set[str]:
        if not self.root.is_dir():
            return set()
        return {p.name[: -len(SUFFIX)] for p in self.root.glob(f"??/*{SUFFIX}") if _NAME.fullmatch(p.name[: -len(SUFFIX)])}

    def delete(self, shas: Iterable[str]) -> int:
        """Unlink these chips; returns how many were there."""
        dirs = []
        for path in map(self._path, shas):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
                dirs.append(path.parent)
        for d in set(dirs):
            fsync_dir(d)
        return len(dirs)

    def sweep(self, keep: set[str]) -> int:
        """Delete every chip not in `keep`, and temp files of interrupted writes; returns how many.
        Run under the model's writer lock, with `keep` = the chips the current gallery names."""
        if not self.root.is_dir():
            return 0
        n = self.delete(self.ids() - set(keep))
        for tmp in self.root.glob("??/.*.tmp"):  # atomic_write's temp files left by a kill
            tmp.unlink(missing_ok=True)
            n += 1
        if n:
            log.info("%s: deleted %d unreferenced chip files", self.root, n)
        return n

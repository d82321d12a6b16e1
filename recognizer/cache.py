"""On-disk cache of detections and crops, so a second run over the same photos skips detection.

The key is the photo's content hash plus the detector settings and the crop kind: renaming or
moving a photo keeps its entry, editing it or changing a detector setting does not. Entries are
`.npz` files read with `allow_pickle=False` and written atomically, so a crash leaves either no
entry or a whole one, and a damaged entry is treated as a miss.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np

from gallery.atomic import atomic_write
from recognizer.detection.mtcnn import Face

log = logging.getLogger(__name__)


def default_cache_dir() -> Path:
    base = os.environ.get("FACETOOL_CACHE") or os.path.join(os.environ.get("XDG_CACHE_HOME", "~/.cache"), "facetool")
    return Path(base).expanduser() / "crops"


def make_private_dirs(path: Path) -> None:
    """`mkdir -p path`, every directory it creates being mode 0700 whatever the umask.

    Directories that already exist are left alone, except by the caller: the cache holds face
    crops, so its own root is made owner-only, but a FACETOOL_CACHE=/tmp must not chmod /tmp.
    """
    missing = []
    p = path
    while not p.exists() and p != p.parent:
        missing.append(p)
        p = p.parent
    for p in reversed(missing):
        try:
            p.mkdir(mode=0o700)
            os.chmod(p, 0o700)
        except FileExistsError:  # made by a concurrent process meanwhile
            pass


class CropCache:
    """Detections and crops per (photo content, detector settings, crop kind)."""

    def __init__(self, root: str | Path | None = None) -> None:
        self.root = Path(root) if root else default_cache_dir()
        self.hits = 0
        self.misses = 0
        self._root_private = False

    def _path(self, content_hash: str, kind: str) -> Path:
        # `kind` names the detector settings and the crop, e.g. "3f9a...-sface112".
        return self.root / content_hash[:2] / f"{content_hash}-{kind}.npz"

    def get(self, content_hash: str, kind: str) -> tuple[list[Face], np.ndarray, tuple[int, int]] | None:
        """(faces, crops uint8 (n, s, s, 3), photo size) or None on a miss."""
        path = self._path(content_hash, kind)
        try:
            with np.load(path, allow_pickle=False) as z:
                boxes, scores, landmarks = z["boxes"], z["scores"], z["landmarks"]
                crops, size = z["crops"], tuple(int(v) for v in z["size"])
        except FileNotFoundError:
            self.misses += 1
            return None
        except Exception as exc:  # a damaged entry is a miss, and is rewritten
            log.warning("ignoring damaged cache entry %s: %s", path, exc)
            self.misses += 1
            return None
        self.hits += 1
        faces = [Face(box=b, score=float(s), landmarks=l) for b, s, l in zip(boxes, scores, landmarks)]
        return faces, crops, size

    def forget(self, content_hash: str) -> int:
        """Delete every entry of one photo (all detector settings and crop kinds); returns how many."""
        removed = 0
        for entry in (self.root / content_hash[:2]).glob(f"{content_hash}-*.npz"):
            entry.unlink(missing_ok=True)
            removed += 1
        return removed

    def put(self, content_hash: str, kind: str, faces: list[Face], crops: np.ndarray, size: tuple[int, int]) -> None:
        path = self._path(content_hash, kind)
        try:
            if not self._root_private:
                make_private_dirs(self.root)
                if self.root.stat().st_mode & 0o077:  # e.g. made by an older version
                    os.chmod(self.root, 0o700)
                self._root_private = True
            make_private_dirs(path.parent)
            with atomic_write(path) as fh:
                np.savez(
                    fh,
                    boxes=np.array([f.box for f in faces], np.float32).reshape(-1, 4),
                    scores=np.array([f.score for f in faces], np.float32),
                    landmarks=np.array([f.landmarks for f in faces], np.float32).reshape(-1, 5, 2),
                    crops=np.asarray(crops, np.uint8),
                    size=np.array(size, np.int64),
                )
        except OSError as exc:  # a cache that cannot be written only costs time
            log.warning("could not write cache entry %s: %s", path, exc)

"""On-disk cache of detections and crops, so a second run over the same photos skips detection.

Keyed by the photo's content hash, the detector settings and the crop kind (a moved photo keeps its entry, an
edited one does not). Entries are `.npz` files (`allow_pickle=False`) written atomically, holding their key and
a sha256 of key and arrays: a damaged, edited or misplaced entry is a miss, rebuilt from the photo.

`forget_photos` is the one place that clears photos from every cache (crops and the trunk features made from
them); every removal path calls it, which is why the trunk cache's directory and key are defined here.
"""
from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path
from typing import Iterable

import numpy as np

from facecore.atomic import atomic_write, sha256_file
from recognizer.chip_format import LAYOUT, chip_crops
from recognizer.detection.boxes import Face

__all__ = ["ENTRY_ARRAYS", "CropCache", "cache_root", "checked", "crop_hash", "default_cache_dir",
           "default_trunk_cache_dir", "entry_checksum", "forget_photos", "make_private_dirs", "save_checked",
           "weights_cache_dir"]

log = logging.getLogger(__name__)


def _xdg_cache_home() -> str:
    return os.environ.get("XDG_CACHE_HOME") or "~/.cache"


def cache_root() -> Path:
    """The tool's cache directory: $FACETOOL_CACHE, else $XDG_CACHE_HOME/facetool (~/.cache/facetool)."""
    base = os.environ.get("FACETOOL_CACHE") or os.path.join(_xdg_cache_home(), "facetool")
    return Path(base).expanduser()


def default_cache_dir() -> Path:
    return cache_root() / "crops"


def default_trunk_cache_dir() -> Path:
    """Where finetuning's trunk features are cached: beside the crops."""
    return default_cache_dir().parent / "trunk"


def crop_hash(crop: np.ndarray) -> str:
    """The trunk cache's key for one crop: the sha256 of its uint8 pixels."""
    return hashlib.sha256(np.ascontiguousarray(crop, dtype=np.uint8).tobytes()).hexdigest()


def weights_cache_dir() -> Path:
    """$TORCH_HOME/checkpoints, else $XDG_CACHE_HOME/torch/checkpoints: where facenet-pytorch downloads to."""
    home = os.environ.get("TORCH_HOME") or os.path.join(_xdg_cache_home(), "torch")
    return Path(home).expanduser() / "checkpoints"


def make_private_dirs(path: Path) -> None:
    """`mkdir -p path`, each directory it creates mode 0700 whatever the umask; existing ones are left alone
    (a FACETOOL_CACHE=/tmp must not chmod /tmp)."""
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


ENTRY_ARRAYS = ("boxes", "scores", "landmarks", "crops", "size")


def save_checked(path: Path, blob: bytes, what: str) -> None:
    """Cache `blob` at `path`, then its sha256 in `<name>.sha256`, each atomically (`checked` refuses the file
    until the record matches). A cache that cannot be written only costs time: logged, not raised."""
    try:
        make_private_dirs(path.parent)
        with atomic_write(path, mode=0o644) as fh:
            fh.write(blob)
        with atomic_write(path.with_name(path.name + ".sha256"), mode=0o644) as fh:
            fh.write(hashlib.sha256(blob).hexdigest().encode())
    except OSError as exc:
        log.warning("could not cache %s at %s: %s", what, path, exc)


def checked(path: Path, what: str) -> bool:
    """Whether a file cached by `save_checked` is there and matches its recorded sha256 (a mismatch is logged;
    the caller makes it again). The directory is owner-only: not expected to change before the load."""
    try:
        want = path.with_name(path.name + ".sha256").read_text().strip()
        ok = sha256_file(path) == want
    except OSError:
        return False
    if not ok:
        log.warning("%s: cached %s fails its checksum; making it again", path, what)
    return ok


def entry_checksum(key: str, arrays: dict[str, np.ndarray]) -> str:
    """sha256 of a cache entry's key and arrays (names, dtypes, shapes and bytes, in name order)."""
    h = hashlib.sha256(key.encode("utf-8"))
    for name in sorted(arrays):
        a = np.ascontiguousarray(arrays[name])
        h.update(f"|{name}|{a.dtype.str}|{a.shape}|".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def forget_photos(content_hashes: Iterable[str], crops_root: str | Path | None = None,
                  trunk_root: str | Path | None = None, *, chips: Iterable[bytes] = ()) -> dict[str, int]:
    """Delete every cached trace of these photos (detections and crops of all kinds, and the trunk features of
    those crops) and return how many entries of each went. The trunk cache is keyed by crop, so its entries are
    found through the cached crops (call this before they go) and through `chips`, the removed faces' chips."""
    crops = CropCache(crops_root)
    # Beside the crops, as finetune.py --cache-dir lays them out.
    trunk = Path(trunk_root) if trunk_root else crops.root.parent / "trunk" if crops_root else default_trunk_cache_dir()
    counts = {"crops": 0, "trunk": 0}

    def forget_crop(crop) -> None:
        digest = crop_hash(crop)
        for entry in trunk.glob(f"*/{digest[:2]}/{digest}.npz"):  # one folder per trunk's weights
            entry.unlink(missing_ok=True)
            counts["trunk"] += 1

    for data in chips:
        try:
            for crop in chip_crops(data, list(LAYOUT)).values():
                forget_crop(crop)
        except Exception as exc:  # a damaged chip: its crops cannot be matched
            log.warning("could not read a removed face's chip to clear the trunk cache: %s", exc)
    for h in set(content_hashes):
        for crop in crops.crops_of(h):
            forget_crop(crop)
        counts["crops"] += crops.forget(h)
    return counts


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
        key = f"{content_hash}-{kind}"
        try:
            with np.load(path, allow_pickle=False) as z:
                if "checksum" not in z.files:  # written by an older version: rebuilt, nothing is wrong
                    self.misses += 1
                    return None
                arrays = {name: z[name] for name in ENTRY_ARRAYS}
                stored_key, stored_sum = str(z["key"]), str(z["checksum"])
        except FileNotFoundError:
            self.misses += 1
            return None
        except Exception as exc:  # a damaged entry is a miss, and is rewritten
            log.warning("ignoring damaged cache entry %s: %s", path, exc)
            self.misses += 1
            return None
        if stored_key != key or stored_sum != entry_checksum(key, arrays):
            log.warning("ignoring cache entry %s: its content does not match its key (%s)", path,
                        "another photo's entry" if stored_key != key else "changed after it was written")
            self.misses += 1
            return None
        self.hits += 1
        faces = [Face(box=b, score=float(s), landmarks=l)
                 for b, s, l in zip(arrays["boxes"], arrays["scores"], arrays["landmarks"])]
        return faces, arrays["crops"], tuple(int(v) for v in arrays["size"])

    def crops_of(self, content_hash: str) -> list[np.ndarray]:
        """Every face crop cached for one photo, under any detector settings and crop kind."""
        out = []
        for entry in (self.root / content_hash[:2]).glob(f"{content_hash}-*.npz"):
            try:
                with np.load(entry, allow_pickle=False) as z:
                    out.extend(np.asarray(z["crops"], np.uint8))
            except Exception as exc:  # unreadable: nothing to learn from it, it is deleted anyway
                log.warning("could not read cache entry %s: %s", entry, exc)
        return out

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
            arrays = {
                "boxes": np.array([f.box for f in faces], np.float32).reshape(-1, 4),
                "scores": np.array([f.score for f in faces], np.float32),
                "landmarks": np.array([f.landmarks for f in faces], np.float32).reshape(-1, 5, 2),
                "crops": np.asarray(crops, np.uint8),
                "size": np.array(size, np.int64),
            }
            key = f"{content_hash}-{kind}"
            with atomic_write(path) as fh:
                np.savez(fh, key=np.array(key), checksum=np.array(entry_checksum(key, arrays)), **arrays)
        except OSError as exc:  # a cache that cannot be written only costs time
            log.warning("could not write cache entry %s: %s", path, exc)

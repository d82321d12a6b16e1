"""Saved clustering runs, kept in the model directory until their clusters are named or dismissed.

    DIR/clusters/<run id>/run.json    photos, faces (photo, box), clusters and their state
    DIR/clusters/<run id>/faces.npz   per face: embedding, the crop it was embedded from, its chip

The crops let a cluster be named without the photos (which may be gone, or be group photos whose other
faces must not be enrolled): the model that made the run gets the stored embedding back from each, a
finetuned model of the same backbone its own. Everything is owner-only (0700/0600: face crops are biometric
data). A run is built in a temporary directory and renamed in, so a crash leaves a whole run or none;
run.json changes are atomic, under a lock, after checking the run is still the one read. A run with every
cluster enrolled or dismissed is deleted. Removing a person zeroes their faces' embedding, crop and chip,
drops their name from run.json, the path and hash of their photos (found by the faces they are known by, or
by their enrolled faces' photo hashes) unless someone else's face is in one, and closes a cluster enrolled as
them as "person removed".
"""
from __future__ import annotations

import json
import logging
import os
import re
import shutil
import tempfile
import time
from contextlib import contextmanager, nullcontext, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
from filelock import FileLock, Timeout

from facecore.atomic import atomic_write, fsync_dir, write_json_atomic
from facecore.errors import FaceToolError
from gallery.base import face_key
from recognizer.modeldir.layout import RUNS_DIR, ensure_private_dir

__all__ = ["FACES_FILE", "PERSON_REMOVED", "RUNS_DIR", "RUN_FILE", "Run", "RunError", "RunNotFound", "discard_run",
           "forget_faces", "forget_person", "list_runs", "load_run", "rename_person", "replace_meta", "runs_lock", "runs_lock_if_any",
           "runs_root", "save_run", "summary"]

log = logging.getLogger(__name__)

RUN_FILE = "run.json"
FACES_FILE = "faces.npz"
FORMAT_VERSION = 1
RUN_ID = re.compile(r"\d{8}-\d{6}(-\d{1,4})?")
LOCK_TIMEOUT_S = 30.0
PERSON_REMOVED = "person removed"  # a cluster's status once the person it was enrolled as is removed
# A temporary run directory this old belongs to a run that crashed while being saved.
STALE_TMP_S = 24 * 3600


class RunError(FaceToolError):
    """A clustering run or cluster that is damaged or cannot be used as asked."""


class RunNotFound(RunError):
    """No such clustering run, cluster or face."""


@dataclass
class Run:
    id: str
    dir: Path
    meta: dict[str, Any]  # run.json
    text: str  # run.json as read, to check it is unchanged before replacing it

    def cluster(self, cluster_id: int) -> dict:
        for c in self.meta["clusters"]:
            if c["id"] == cluster_id:
                return c
        raise RunNotFound(f"run {self.id} has no cluster {cluster_id} (it has 1..{len(self.meta['clusters'])})")

    def chips(self) -> list[bytes | None]:
        """Each face's chip (PNG bytes), or None for runs saved before runs kept chips."""
        path = self.dir / FACES_FILE
        n = len(self.meta["faces"])
        try:
            with np.load(path, allow_pickle=False) as z:
                if "chips" not in z.files:
                    return [None] * n
                blob, offsets = z["chips"], z["chip_offsets"]
        except (OSError, ValueError, KeyError) as exc:
            raise RunError(f"{path}: damaged clustering run ({exc})") from None
        if offsets.shape != (n + 1,) or offsets[0] != 0 or offsets[-1] != len(blob) or np.any(np.diff(offsets) < 0):
            raise RunError(f"{path}: its chips do not match the {n} faces run.json lists")
        return [bytes(blob[offsets[i]:offsets[i + 1]]) or None for i in range(n)]

    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """(embeddings (n, d) float32, crops (n, s, s, 3) uint8)."""
        path = self.dir / FACES_FILE
        try:
            with np.load(path, allow_pickle=False) as z:
                emb, crops = z["embeddings"], z["crops"]
        except (OSError, ValueError, KeyError) as exc:
            raise RunError(f"{path}: damaged clustering run ({exc})") from None
        n = len(self.meta["faces"])
        if emb.shape[0] != n or crops.shape[0] != n:
            raise RunError(f"{path}: holds {emb.shape[0]} faces, run.json lists {n}")
        return emb, crops


def summary(model_dir: str | os.PathLike, run_id: str) -> dict:
    """One line of a listing of the runs, not counting faces scrubbed by a removal."""
    meta = load_run(model_dir, run_id).meta
    return {"run": run_id, "created": meta.get("created"),
            "faces": sum(not f.get("removed") for f in meta["faces"]), "clusters": len(meta["clusters"]),
            "open": sum(c["status"] == "open" for c in meta["clusters"])}


def runs_root(model_dir: str | os.PathLike) -> Path:
    return Path(model_dir) / RUNS_DIR


def _check_id(run_id: str) -> str:
    if not isinstance(run_id, str) or not RUN_ID.fullmatch(run_id):
        raise RunNotFound(f"{run_id!r} is not a clustering run id (like 20261202-031500)")
    return run_id


@contextmanager
def runs_lock(model_dir: str | os.PathLike) -> Iterator[None]:
    """One writer of the model's runs at a time, across processes."""
    root = runs_root(model_dir)
    ensure_private_dir(root)
    lock = FileLock(str(root / ".lock"), mode=0o600)
    try:
        with lock.acquire(timeout=LOCK_TIMEOUT_S):
            yield
    except Timeout:
        raise RunError(f"{root}: another process has held the clustering runs' lock for {LOCK_TIMEOUT_S:g} s") from None


def save_run(model_dir: str | os.PathLike, meta: dict, embeddings: np.ndarray, crops: np.ndarray,
             chips: list[bytes | None] | None = None) -> str:
    """Store a new run; returns its id (the UTC time, made unique). `chips` (one per face, or None) are stored
    as one byte array with offsets (no pickle)."""
    chips = list(chips) if chips is not None else [None] * len(embeddings)
    if len(chips) != len(embeddings):
        raise ValueError(f"got {len(chips)} chips for {len(embeddings)} faces")
    root = runs_root(model_dir)
    ensure_private_dir(root)
    _sweep_tmp(root)
    tmp = Path(tempfile.mkdtemp(prefix=".new-", dir=root))  # 0700
    try:
        _write_faces(tmp / FACES_FILE, embeddings, crops, chips)
        with runs_lock(model_dir):
            base = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
            run_id, n = base, 1
            while (root / run_id).exists():
                n += 1
                run_id = f"{base}-{n}"
            meta = dict(meta, id=run_id, version=FORMAT_VERSION)
            write_json_atomic(tmp / RUN_FILE, meta)
            os.rename(tmp, root / run_id)
            fsync_dir(root)
        return run_id
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _write_faces(path: Path, embeddings: np.ndarray, crops: np.ndarray, chips: list[bytes | None]) -> None:
    offsets = np.cumsum([0] + [len(c or b"") for c in chips]).astype(np.int64)
    blob = np.frombuffer(b"".join(c or b"" for c in chips), np.uint8)
    with atomic_write(path) as fh:
        np.savez(fh, embeddings=np.asarray(embeddings, np.float32), crops=np.asarray(crops, np.uint8),
                 chips=blob, chip_offsets=offsets)


def _sweep_tmp(root: Path) -> None:
    now = time.time()
    for p in root.glob(".new-*"):
        with suppress(FileNotFoundError):
            if now - p.stat().st_mtime > STALE_TMP_S:
                shutil.rmtree(p, ignore_errors=True)


def load_run(model_dir: str | os.PathLike, run_id: str) -> Run:
    """A saved run; `latest` names the newest."""
    if run_id == "latest":
        ids = list_runs(model_dir)
        if not ids:
            raise RunNotFound("this model has no saved clustering runs")
        run_id = ids[-1]
    d = runs_root(model_dir) / _check_id(run_id)
    path = d / RUN_FILE
    try:
        text = path.read_text(encoding="utf-8")
        meta = json.loads(text)
    except FileNotFoundError:
        raise RunNotFound(f"no clustering run {run_id} in this model (enrolled, discarded, or never made)") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise RunError(f"{path}: damaged clustering run ({exc})") from None
    if not isinstance(meta, dict) or meta.get("version", 0) > FORMAT_VERSION or not {"faces", "clusters", "photos"} <= set(meta):
        raise RunError(f"{path}: not a clustering run this version can read")
    return Run(run_id, d, meta, text)


def list_runs(model_dir: str | os.PathLike) -> list[str]:
    """Ids of the saved runs, oldest first."""
    root = runs_root(model_dir)
    return sorted(p.name for p in root.iterdir() if RUN_ID.fullmatch(p.name) and (p / RUN_FILE).is_file()) if root.is_dir() else []


def replace_meta(run: Run, meta: dict) -> None:
    """Write the run's new state (refused when run.json changed since `run` was read; deleted when no cluster
    is left open). The caller holds `runs_lock`."""
    path = run.dir / RUN_FILE
    try:
        now = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise RunError(f"clustering run {run.id} was discarded meanwhile") from None
    if now != run.text:
        raise RunError(f"clustering run {run.id} was changed by another process meanwhile; try again")
    if all(c["status"] != "open" for c in meta["clusters"]):
        _delete(run.dir)
        log.info("clustering run %s: every cluster enrolled or dismissed; deleted", run.id)
        return
    write_json_atomic(path, meta)
    run.meta = meta
    run.text = path.read_text(encoding="utf-8")


def discard_run(model_dir: str | os.PathLike, run_id: str) -> None:
    run = load_run(model_dir, run_id)
    with runs_lock(model_dir):
        _delete(run.dir)


def _delete(d: Path) -> None:
    # Renamed out of the way first, so a crash part-way never leaves a run that looks whole.
    trash = d.parent / f".new-gone-{d.name}"
    os.rename(d, trash)
    fsync_dir(d.parent)
    shutil.rmtree(trash)


@contextmanager
def runs_lock_if_any(model_dir: str | os.PathLike) -> Iterator[None]:
    """`runs_lock` when the model has a runs directory (none is made for a model never clustered)."""
    with runs_lock(model_dir) if runs_root(model_dir).is_dir() else nullcontext():
        yield


def _renamed(meta: dict, old: str, new: str | None) -> dict:
    """run.json with every mention of person `old` renamed `new` (None: forgotten)."""
    meta = json.loads(json.dumps(meta))
    for c in meta["clusters"]:
        _rename_guess(c, "looks_like", old, new)
        if c.get("person") == old and new is not None:
            c["person"] = new
    for f in meta["faces"]:
        _rename_guess(f, "nearest", old, new)
    for p in meta["photos"]:
        known = [dict(k, name=new) if k.get("name") == old else k for k in p.get("known", [])]
        p["known"] = [k for k in known if k.get("name") is not None]
    return meta


def _rename_guess(item: dict, key: str, old: str, new: str | None) -> None:
    if (item.get(key) or {}).get("name") == old:
        if new is None:
            item[key] = None
        else:
            item[key]["name"] = new


def _readable_runs(model_dir: str | os.PathLike, left: Callable[[str], str]) -> Iterator[Run]:
    """Every saved run that can be read; one that cannot is said loudly (`left(run id)`: what it may still
    hold), never skipped silently."""
    for rid in list_runs(model_dir):
        try:
            yield load_run(model_dir, rid)
        except RunError as exc:
            log.warning("%s; %s", exc, left(rid))


def rename_person(model_dir: str | os.PathLike, old: str, new: str) -> int:
    """Rename a person in every saved run; returns the runs changed. The caller holds `runs_lock`."""
    changed = 0
    for run in _readable_runs(model_dir, lambda rid: f"{old} was not renamed in it"):
        meta = _renamed(run.meta, old, new)
        if meta != run.meta:
            replace_meta(run, meta)
            changed += 1
    return changed


def _faces_to_drop(meta: dict, name: str | None, faces: set[tuple]) -> set[int]:
    """Indices of the faces of the clusters enrolled as `name`, and of the faces whose face_key is in `faces`."""
    drop = {i for c in meta["clusters"] if name is not None and c.get("person") == name for i in c["faces"]}
    for i, f in enumerate(meta["faces"]):
        if "box" in f and face_key(meta["photos"][f["photo"]].get("content_hash", ""), f["box"]) in faces:
            drop.add(i)
    return drop


def _close_clusters(meta: dict, name: str | None, drop: set[int]) -> None:
    """Take the `drop` faces out of the clusters; one enrolled as `name`, or left empty, is PERSON_REMOVED."""
    for c in meta["clusters"]:
        mine = name is not None and c.get("person") == name
        left = [i for i in c["faces"] if i not in drop]
        if not mine and left == c["faces"]:
            continue
        c.update(faces=left, size=len(left))
        if "enrolled_faces" in c:
            c["enrolled_faces"] = [i for i in c["enrolled_faces"] if i not in drop]
        if c.get("central") not in left:
            c["central"] = left[0] if left else None
        if mine or not left:
            c.pop("person", None)
            c["status"] = PERSON_REMOVED


def _their_photos(meta: dict, name: str, hashes: set[str]) -> set[int]:
    """Indices of the photos where `name` was a known face, or whose content hash is one of their faces'."""
    return {pi for pi, p in enumerate(meta["photos"])
            if any(k.get("name") == name for k in p.get("known", [])) or (p.get("content_hash") or None) in hashes}


def _scrub_faces_and_photos(meta: dict, drop: set[int], photos: set[int] = frozenset()) -> None:
    """The `drop` faces keep only their photo index; a photo with no other face left loses its name and hash,
    and so does each of `photos` (the person's own, enrolled ones) with no one else's face in it."""
    hit_photos = {meta["faces"][i]["photo"] for i in drop} | set(photos)
    for i in drop:
        f = meta["faces"][i]
        meta["faces"][i] = {"photo": f["photo"], "removed": True}
    for pi in hit_photos:
        p = meta["photos"][pi]
        if p.get("known") or any(f["photo"] == pi and not f.get("removed") for f in meta["faces"]):
            continue  # someone else's face is in it too: the photo stays theirs
        meta["photos"][pi] = {"photo": "", "content_hash": "", "size": p.get("size"), "known": [], "removed": True}


def _zero_faces(run: Run, drop: set[int]) -> None:
    """Zero the embedding and crop and drop the chip of the `drop` faces in faces.npz."""
    emb, crops = run.arrays()
    chips = run.chips()
    for i in drop:
        emb[i], crops[i], chips[i] = 0, 0, None
    _write_faces(run.dir / FACES_FILE, emb, crops, chips)


def _forget_in_run(run: Run, name: str | None, faces: set[tuple]) -> int | None:
    """forget_person for one run (`name` None: only the `faces`, `forget_faces`): the faces scrubbed, or None
    when the run never mentioned them."""
    meta = _renamed(run.meta, name, None) if name is not None else json.loads(json.dumps(run.meta))
    drop = _faces_to_drop(meta, name, faces)
    photos = _their_photos(run.meta, name, {h for h, _ in faces})
    if not drop and not photos and meta == run.meta:
        return None
    _close_clusters(meta, name, drop)
    _scrub_faces_and_photos(meta, drop, photos)
    if not drop and meta == run.meta:
        return None  # their photos hold someone else's faces too: they stay
    if drop and any(c["status"] == "open" for c in meta["clusters"]):
        _zero_faces(run, drop)  # before run.json: the faces go first
    replace_meta(run, meta)  # deletes the run when no cluster is left open
    return len(drop)


def forget_person(model_dir: str | os.PathLike, name: str, faces: set[tuple] = frozenset()) -> int:
    """Remove a person from every saved run (the faces of clusters enrolled as `name` and those whose
    (content hash, box) is in `faces`, and every mention of the name); returns the faces scrubbed. The
    caller holds `runs_lock` and the model's writer lock (so no enrolment from a run is half way)."""
    faces = {face_key(h, b) for h, b in faces}
    total = 0
    for run in _readable_runs(model_dir,
                              lambda rid: f"it may still hold faces of {name} (discard it: enroll.py --discard {rid})"):
        scrubbed = _forget_in_run(run, name, faces)
        if scrubbed is None:
            continue
        total += scrubbed
        log.info("clustering run %s: removed %d faces and every mention of %s", run.id, scrubbed, name)
    return total


def forget_faces(model_dir: str | os.PathLike, faces: set[tuple]) -> int:
    """Remove the faces whose (content hash, box) is in `faces` from every saved run (one wrongly enrolled
    face: its person stays); returns the faces scrubbed. The caller holds the locks forget_person needs."""
    keys = {face_key(h, b) for h, b in faces}
    total = 0
    for run in _readable_runs(model_dir,
                              lambda rid: f"it may still hold a removed face (discard it: enroll.py --discard {rid})"):
        total += _forget_in_run(run, None, keys) or 0
    return total

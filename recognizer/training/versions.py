"""Earlier versions of a model directory (DIR/versions/v000001.json ..., oldest first), for rollback.

A finetune or a switch to a candidate keeps the replaced model.json here with its checkpoint, but not its
gallery (kept aside, it would go stale and keep the faces of people removed since). `rollback` re-embeds the
faces enrolled *now* from their chips with the kept version's network, so it loses no enrolment and brings
back no one removed since; the version left is kept in turn. At most `keep_versions` are kept; a pending
candidate is not counted, and its files are kept while it is pending.

A finetune or re-embed builds checkpoint-<token>.pt and gallery-<token>/ before taking the writer lock, under
a build lease on its token (`build_lease`): `remove_unused` leaves a leased token's files alone until no live
process holds it (the OS releases it when the builder dies). candidate.json (`Candidate`) is read and written
here because deleting unused files must know what it names; `candidate.py` builds and switches to it.
"""
from __future__ import annotations

import fcntl
import json
import logging
import os
import re
import secrets
import shutil
import tempfile
import time
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Iterator

from facecore.atomic import write_json_atomic
from facecore.errors import ModelError
from gallery import open_gallery
from recognizer.modeldir.config import load_config, ModelConfig, save_config
from recognizer.modeldir.layout import (CANDIDATE_FILE, CANDIDATE_REPORT, CHECKPOINT_NAME, FPIR_TABLE_NAME, GALLERY_DIR,
                                        GALLERY_NAME, VERSIONS_DIR, ensure_private_dir)
from recognizer.modeldir.lock import writer_lock
from recognizer.embedding.backbones import make_embedder
from recognizer.modeldir.rebuild import build_gallery, fresh_record
from recognizer.network.checkpoint import load_finetuned

__all__ = ["CANDIDATE_FILE", "CANDIDATE_REPORT", "Candidate", "LEASE_NAME", "VERSIONS_DIR", "base_of", "build_lease",
           "check_no_other_build", "config_from", "discard_candidate", "kept_checkpoints", "list_versions",
           "load_candidate", "load_version", "pending_files", "pending_stamp", "push_version", "remove_unused", "rollback",
           "write_candidate"]

log = logging.getLogger(__name__)

_VERSION = re.compile(r"v(\d{6})\.json")
LEASE_NAME = re.compile(r"\.build-([0-9a-f]{6,64})\.lock")


def _lease_path(d: Path, token: str) -> Path:
    return Path(d) / f".build-{token}.lock"


@contextmanager
def build_lease(model_dir: str | Path, token: str) -> Iterator[None]:
    """Hold `token`'s build lease (so `remove_unused` keeps its files): taken before creating them, left once
    they are committed (named by model.json or candidate.json) or deleted."""
    path = _lease_path(model_dir, token)
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            # a `remove_unused` may have taken this file as a dead lease and unlinked it before
            # this lock: holding an unlinked file protects nothing
            if os.path.samestat(os.fstat(fd), os.stat(path)):
                break
        except FileNotFoundError:
            pass
        except BaseException:
            os.close(fd)
            raise
        os.close(fd)
    try:
        yield
    finally:
        path.unlink(missing_ok=True)  # still locked, so no one takes it as a dead lease first
        os.close(fd)


def _take_dead_lease(d: Path, token: str, held: ExitStack) -> bool:
    """False when a live build holds `token`'s lease; else True, and a lease file left by a dead
    build is locked (released, unlinked first, when `held` closes)."""
    path = _lease_path(d, token)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return True
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return False
    held.callback(os.close, fd)
    held.callback(path.unlink, missing_ok=True)  # runs first: unlinked while locked
    return True


def list_versions(d: Path) -> list[Path]:
    root = Path(d) / VERSIONS_DIR
    return sorted((p for p in root.iterdir() if _VERSION.fullmatch(p.name)), key=lambda p: p.name) if root.is_dir() else []


def load_version(path: Path) -> ModelConfig:
    """A kept model.json, checked like the one in use."""
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelError(f"{path}: damaged version file ({exc})") from None
    return config_from(raw, path)


def config_from(raw, path: Path) -> ModelConfig:
    """A model.json's content kept in another file (`path`, for errors), checked like the one in use."""
    if not isinstance(raw, dict):
        raise ModelError(f"{path}: damaged file (no model config)")
    with tempfile.TemporaryDirectory() as tmp:  # load_config's checks, on a copy
        write_json_atomic(Path(tmp) / "model.json", raw)
        try:
            return load_config(tmp)
        except ModelError as exc:
            raise ModelError(f"{path}: {str(exc).split(': ', 1)[-1]}") from None


def push_version(d: Path, cfg: ModelConfig) -> None:
    """Keep `cfg` (the model.json being replaced) as the newest version, pruned to `keep_versions`. Under the writer lock."""
    root = Path(d) / VERSIONS_DIR
    ensure_private_dir(root)
    existing = list_versions(d)
    n = int(_VERSION.fullmatch(existing[-1].name).group(1)) + 1 if existing else 1
    write_json_atomic(root / f"v{n:06d}.json", cfg.to_dict())
    kept = list_versions(d)
    for old in kept[: max(0, len(kept) - max(0, int(cfg.keep_versions)))]:
        old.unlink(missing_ok=True)


def kept_checkpoints(d: Path) -> set[str]:
    """The checkpoints and FPIR tables the kept versions name (a rollback needs both)."""
    out = set()
    for p in list_versions(d):
        with suppress(ModelError):
            v = load_version(p)
            out |= {v.checkpoint or "", v.fpir_table or ""}
    return out - {""}


def remove_unused(d: Path, keep: set[str] = frozenset()) -> None:
    """Delete the galleries, checkpoints and FPIR tables that neither model.json, a kept version, the pending candidate nor
    `keep` names (they hold face data, so they must not linger), but not a live build's. Under the writer lock."""
    pending = pending_files(d)
    if pending is None:  # a damaged candidate.json: it might name any of them
        return
    keep = set(keep) | kept_checkpoints(d) | pending
    with suppress(ModelError):
        cur = load_config(d)
        keep |= {cur.gallery, cur.checkpoint or "", cur.fpir_table or ""}
    with ExitStack() as held:
        live: dict[str, bool] = {}

        def live_build(token: str) -> bool:
            if token not in live:
                live[token] = not _take_dead_lease(d, token, held)
            return live[token]

        # listed before the leases are looked at: a build takes its lease before creating its files
        for p in sorted(Path(d).iterdir()):
            if p.name in keep:
                continue
            if m := GALLERY_NAME.fullmatch(p.name) or CHECKPOINT_NAME.fullmatch(p.name) or FPIR_TABLE_NAME.fullmatch(p.name):
                if m.group(1) and live_build(m.group(1)[1:]):
                    continue
                if p.is_dir():
                    shutil.rmtree(p, ignore_errors=True)
                else:
                    p.unlink(missing_ok=True)
            elif p.name in (f"{GALLERY_DIR}.new", f"{GALLERY_DIR}.old"):
                shutil.rmtree(p, ignore_errors=True)
            elif m := LEASE_NAME.fullmatch(p.name):  # a dead build's lease, even with no file left
                live_build(m.group(1))


@dataclass
class Candidate:
    """What candidate.json holds: a new version of the model built beside the one in use (`candidate.py`)."""

    config: ModelConfig  # the candidate's model.json
    base: dict  # the model in use when it was built: {"model_id", "gallery", "checkpoint"}
    base_faces: list  # [content_hash, box, person] of every face enrolled in it then
    chips: list[str]  # the chips its gallery names (kept by every chip sweep while it is pending)
    kind: str  # "finetune" | "reembed"
    built_at: str = field(default_factory=lambda: time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
    comparison: dict | None = None  # side by side with the model in use (recognizer.evaluation.compare)
    report: dict = field(default_factory=dict)  # what built it (finetune figures, re-embed counts)

    def to_dict(self) -> dict:
        return asdict(self)


def base_of(cfg: ModelConfig) -> dict:
    return {"model_id": cfg.model_id, "gallery": cfg.gallery, "checkpoint": cfg.checkpoint}


def load_candidate(model_dir: str | Path) -> Candidate | None:
    """The pending candidate, or None. ModelError naming the file when it is damaged."""
    path = Path(model_dir) / CANDIDATE_FILE
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise ModelError(f"{path}: damaged candidate file ({exc})") from None
    try:
        cfg = config_from(raw["config"], path)
        return Candidate(cfg, dict(raw["base"]), [list(x) for x in raw["base_faces"]], [str(c) for c in raw["chips"]],
                         str(raw["kind"]), str(raw.get("built_at", "")), raw.get("comparison"), dict(raw.get("report") or {}))
    except (KeyError, TypeError, ValueError) as exc:
        raise ModelError(f"{path}: damaged candidate file ({exc!r})") from None


def pending_files(model_dir: str | Path) -> set[str] | None:
    """The gallery, checkpoint and FPIR table the pending candidate names (empty: none pending);
    None when candidate.json is damaged (then nothing it might name may be deleted)."""
    try:
        cand = load_candidate(model_dir)
    except ModelError as exc:
        log.warning("%s; keeping every gallery and checkpoint", exc)
        return None
    if cand is None:
        return set()
    return {n for n in (cand.config.gallery, cand.config.checkpoint, cand.config.fpir_table) if n}


def pending_stamp(model_dir: str | Path) -> bytes | None:
    """candidate.json as it is now (None: no candidate pending), read when a build starts."""
    try:
        return (Path(model_dir) / CANDIDATE_FILE).read_bytes()
    except FileNotFoundError:
        return None


def check_no_other_build(model_dir: str | Path, stamp: bytes | None) -> None:
    """Under the writer lock, before a build (finetune or re-embed) commits: ModelError when another build made a
    candidate since this one started (`stamp`), so that of two builds at once one commits and the other changes
    nothing. A candidate pending when it started is replaced, as asked."""
    if pending_stamp(model_dir) not in (stamp, None):
        raise ModelError(f"{model_dir}: another finetune or re-embed committed a candidate while this build ran; "
                         "nothing was changed by this one (run it again once that one is done)")


def write_candidate(model_dir: str | Path, cand: Candidate) -> None:
    """Make `cand` the pending candidate, deleting any other one's files. Under the writer lock."""
    d = Path(model_dir)
    write_json_atomic(d / CANDIDATE_FILE, cand.to_dict())
    remove_unused(d)


def discard_candidate(model_dir: str | Path, reason: str) -> bool:
    """Delete the pending candidate and its files; returns whether there was one. Under the writer lock, after
    model.json is saved."""
    d = Path(model_dir)
    path = d / CANDIDATE_FILE
    if not path.exists():
        return False
    path.unlink()
    (d / CANDIDATE_REPORT).unlink(missing_ok=True)
    log.warning("%s: discarded the pending candidate (%s)", d, reason)
    remove_unused(d)
    return True


def rollback(model_dir: str | Path, *, weights_dir=None, progress: bool = False) -> dict:
    """Return the model to its newest kept version; returns a summary."""
    d = Path(model_dir)
    with writer_lock(d):
        versions = list_versions(d)
        if not versions:
            raise ModelError(f"{d}: no earlier version to roll back to ({VERSIONS_DIR}/ is empty)")
        cur = load_config(d)
        prev = load_version(versions[-1])
        embedder = _network_of(d, prev, versions[-1], weights_dir)
        with open_gallery(d / cur.gallery, model_id=cur.model_id) as g:
            records = g.records()
        name = f"{GALLERY_DIR}-{secrets.token_hex(6)}"
        build_gallery(d, name, prev.model_id, embedder, [fresh_record(r) for r in records], progress=progress,
                      failure=lambda n: f"{d}: {n} enrolled faces have no usable chip, so the earlier network cannot "
                                        "embed them; nothing was changed")
        restored = replace(prev, gallery=name, keep_versions=cur.keep_versions)
        versions[-1].unlink()
        push_version(d, cur)  # the version left, so it can be returned to
        save_config(d, restored)  # the commit point
        discard_candidate(d, "the model was rolled back, so it was built beside a model no longer in use")
        remove_unused(d, keep={name, restored.checkpoint or ""})
    log.info("%s: rolled back from %s to %s", d, cur.model_id, restored.model_id)
    return {"model_dir": str(d), "from": cur.model_id, "to": restored.model_id, "backbone": restored.backbone,
            "faces": len(records), "people": sorted({r.person for r in records})}


def _network_of(d: Path, prev: ModelConfig, version: Path, weights_dir):
    """The embedder of a kept version, checked against its model id."""
    if prev.checkpoint:
        if not (d / prev.checkpoint).is_file():
            raise ModelError(f"{version} names {prev.checkpoint}, which is not there; nothing was changed")
        embedder, _ = load_finetuned(d, prev, weights_dir=weights_dir)
    else:
        embedder = make_embedder(prev.backbone, prev.weights, weights_dir)
    if embedder.model_id != prev.model_id:
        raise ModelError(f"{version}: its network now has model id {embedder.model_id}, not {prev.model_id} "
                         "(other weights?); nothing was changed")
    return embedder

"""A migration candidate: a new version of a model built beside the one in use, switched to only when asked.

    DIR/candidate.json   the candidate's model.json (its own gallery-<token>/, checkpoint and FPIR
                         table), what it was built beside (the model in use then and its faces),
                         the chips its gallery names, and the side-by-side figures

`finetune.py` builds one (a finetune, possibly on another backbone or weights) and
`finetune.py --reembed` too (no training: every enrolled face re-embedded from its chip with
another network). The model in use (model.json, its gallery and checkpoint) is not touched, so
identify and running servers go on with it. `switch` makes the candidate the model in use:
under the writer lock it carries over what changed since the candidate was built, exactly as a
finetune's commit does for what changed while it trained (faces enrolled since are embedded
from their chips with the candidate's network, people removed since are left out, training
faces included, people renamed keep their new name, in the classifier's answers too), keeps
the replaced model.json as a version (`versions.py`, for `--rollback`) and deletes the
candidate file. A candidate is not a version: it is never counted in `keep_versions`, and
there is at most one: building another replaces it, and a switch made another way (a finetune
that switches, a rollback) discards it, since it was built beside a model that is gone.
Removing a person removes them from the candidate too (gallery rows and chips).
"""
from __future__ import annotations

import json
import logging
import secrets
import shutil
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from facecore.atomic import write_json_atomic
from recognizer.config import GALLERY_DIR, MODEL_FILE, ModelConfig, chip_store, load_config, save_config, writer_lock
from facecore.errors import ModelError
from gallery.base import face_key

log = logging.getLogger(__name__)

CANDIDATE_FILE = "candidate.json"
CANDIDATE_REPORT = "candidate-report.json"  # a finetune's report.json while its result is a candidate


@dataclass
class Candidate:
    config: ModelConfig  # the candidate's model.json
    base: dict  # the model in use when it was built: {"model_id", "gallery", "checkpoint"}
    base_faces: list  # [content_hash, box, person] of every face enrolled in it then
    chips: list[str]  # the chips its gallery names (kept by every chip sweep while it is pending)
    kind: str  # "finetune" | "reembed"
    built_at: str = field(default_factory=lambda: time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
    comparison: dict | None = None  # side by side with the model in use (recognizer.evaluation.compare)
    report: dict = field(default_factory=dict)  # what built it (finetune figures, re-embed counts)

    def to_dict(self) -> dict:
        return {"config": self.config.to_dict(), "base": self.base, "base_faces": self.base_faces, "chips": self.chips,
                "kind": self.kind, "built_at": self.built_at, "comparison": self.comparison, "report": self.report}


def base_of(cfg: ModelConfig) -> dict:
    return {"model_id": cfg.model_id, "gallery": cfg.gallery, "checkpoint": cfg.checkpoint}


def load_candidate(model_dir: str | Path) -> Candidate | None:
    """The pending candidate, or None. ModelError naming the file when it is damaged."""
    from recognizer.training.versions import config_from

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


def pending_chips(model_dir: str | Path) -> set[str] | None:
    """Chips the pending candidate's gallery names (None: candidate.json is damaged, keep all)."""
    try:
        cand = load_candidate(model_dir)
    except ModelError:
        return None
    return set(cand.chips) if cand else set()


def write_candidate(model_dir: str | Path, cand: Candidate) -> None:
    """Make `cand` the pending candidate, replacing (and deleting the files of) any other one.
    Caller holds the writer lock."""
    from recognizer.training.versions import remove_unused

    d = Path(model_dir)
    write_json_atomic(d / CANDIDATE_FILE, cand.to_dict())
    remove_unused(d)


def discard_candidate(model_dir: str | Path, reason: str) -> bool:
    """Delete the pending candidate and its files; returns whether there was one. Caller holds the
    writer lock and has saved model.json."""
    from recognizer.training.versions import remove_unused

    d = Path(model_dir)
    path = d / CANDIDATE_FILE
    if not path.exists():
        return False
    path.unlink()
    (d / CANDIDATE_REPORT).unlink(missing_ok=True)
    log.warning("%s: discarded the pending candidate (%s)", d, reason)
    remove_unused(d)
    return True


def network_for(model_dir: str | Path, cfg: ModelConfig, weights_dir=None):
    """(embedder, classifier or None) of a model.json, checked against its model id."""
    from recognizer.embedding.backbones import make_embedder

    classifier = None
    if cfg.checkpoint:
        from recognizer.training.checkpoint import load_finetuned

        if not (Path(model_dir) / cfg.checkpoint).is_file():
            raise ModelError(f"{model_dir}: {cfg.checkpoint} is not there")
        embedder, classifier = load_finetuned(Path(model_dir), cfg, weights_dir=weights_dir)
    else:
        embedder = make_embedder(cfg.backbone, cfg.weights, weights_dir)
    if embedder.model_id != cfg.model_id:
        raise ModelError(f"{model_dir}: the {cfg.backbone} network found now has model id {embedder.model_id}, not "
                         f"{cfg.model_id} (other weights?); nothing was changed")
    return embedder, classifier


def switch(model_dir: str | Path, *, weights_dir=None, progress: bool = False) -> dict:
    """Make the pending candidate the model in use (see the module docstring); returns a summary."""
    from recognizer.training.versions import push_version, remove_unused

    d = Path(model_dir)
    with writer_lock(d):
        cand = load_candidate(d)
        if cand is None:
            raise ModelError(f"{d}: no candidate to switch to (build one with finetune.py DATA --backbone/--weights "
                             "..., or finetune.py --reembed; both leave the model in use as it is)")
        live = load_config(d)
        if base_of(live) != cand.base:
            raise ModelError(f"{d}: the candidate was built beside model {cand.base['model_id']} (gallery "
                             f"{cand.base['gallery']}), but {MODEL_FILE} now names {live.model_id} (gallery "
                             f"{live.gallery}): the model was switched since; build the candidate again. Nothing was changed")
        embedder, _ = network_for(d, cand.config, weights_dir)
        info, name, chips = _carry_over(d, cand, live, embedder, progress)
        cfg = replace(cand.config, gallery=name, keep_versions=live.keep_versions)
        if live.backbone == cfg.backbone:  # set since the build (e.g. evaluate.py --set-threshold)
            cfg.threshold, cfg.knn_k, cfg.target_fpir = live.threshold, live.knn_k, live.target_fpir
        try:
            push_version(d, live)  # for --rollback
            save_config(d, cfg)  # the commit point
        except BaseException:
            if load_config(d).gallery != name:
                shutil.rmtree(d / name, ignore_errors=True)
            raise
        (d / CANDIDATE_FILE).unlink(missing_ok=True)
        if (d / CANDIDATE_REPORT).exists():
            import os

            os.replace(d / CANDIDATE_REPORT, d / "report.json")
        chip_store(d).sweep(chips)
        remove_unused(d, keep={name, cfg.checkpoint or ""})
    log.info("%s: switched from %s to the candidate %s", d, live.model_id, cfg.model_id)
    return {"model_dir": str(d), "from": live.model_id, "to": cfg.model_id, "backbone": cfg.backbone,
            "kind": cand.kind, "built_at": cand.built_at, "gallery": name, "comparison": cand.comparison, **info}


def _carry_over(d: Path, cand: Candidate, live: ModelConfig, embedder, progress: bool):
    """Build the gallery the switch installs: the candidate's, with what changed in the model in
    use since the candidate was built. Returns (counts, its name, its chips)."""
    from gallery import FaceRecord, create_gallery, open_gallery
    from recognizer.chips import embed_chips

    with open_gallery(d / cand.config.gallery, model_id=cand.config.model_id) as g:
        c_records = g.records()
        ids, vecs = g.vectors()
    by_id = dict(zip(ids.tolist(), vecs))
    with open_gallery(d / live.gallery, model_id=live.model_id) as g:
        current = g.records()
    base = [(face_key(h, box), p) for h, box, p in cand.base_faces]
    base_keys = {k for k, _ in base}
    now_people: dict[tuple, set[str]] = {}
    for r in current:
        now_people.setdefault(face_key(r.content_hash, r.box), set()).add(r.person)
    # People gone since the build: renamed (their faces live on under one new name) or removed.
    fate: dict[str, str | None] = {}
    for p in {q for _, q in base} - {r.person for r in current}:
        survivors = set().union(*[now_people.get(k, set()) for k, q in base if q == p])
        fate[p] = survivors.pop() if len(survivors) == 1 else None
    vectors: list = []
    records: list = []
    cand_vec: dict[tuple, np.ndarray] = {}
    for r in c_records:
        k = face_key(r.content_hash, r.box)
        cand_vec.setdefault(k, by_id[r.id])
        if k in base_keys:
            continue  # enrolled when the candidate was built: it comes from the model in use below, or is gone
        name = fate.get(r.person, r.person)
        if name is None:  # removed since the build: removal wins over the training folder
            continue
        vectors.append(by_id[r.id])
        records.append(FaceRecord(name, r.source, r.content_hash, tuple(r.box), added_at=r.added_at, chip=r.chip))
    covered = {(x.person, x.content_hash) for x in records}
    todo = []
    reused = 0
    for r in current:
        if (r.person, r.content_hash) in covered:
            continue  # a training photo of the same person
        k = face_key(r.content_hash, r.box)
        if k in cand_vec:
            vectors.append(cand_vec[k])
            reused += 1
        else:
            todo.append(len(vectors))
            vectors.append(None)
        records.append(FaceRecord(r.person, r.source, r.content_hash, tuple(r.box), added_at=r.added_at, chip=r.chip))
    if todo:  # enrolled since the build: embedded from their chips now
        new = embed_chips([records[i] for i in todo], embedder, chip_store(d), progress=progress,
                          desc="faces enrolled since",
                          failure=lambda n: f"{d}: {n} faces enrolled since the candidate was built cannot be "
                                            "re-embedded; nothing was changed")
        for i, v in zip(todo, new):
            vectors[i] = v
    check_none_lost(d, current, records)
    name = f"{GALLERY_DIR}-{secrets.token_hex(6)}"
    try:
        gal = create_gallery(d / name, model_id=cand.config.model_id, dim=embedder.dim)
        if records:
            gal.add(np.stack(vectors).astype(np.float32), records, model_id=cand.config.model_id, allow_similar=True)
        gal.close()
    except BaseException:
        shutil.rmtree(d / name, ignore_errors=True)
        raise
    # Classes of the classifier follow people renamed since the build.
    names = dict(cand.config.class_names)
    for label in set(names) | set(fate):
        now = names.get(label, label)
        if fate.get(now):
            names[label] = fate[now]
    cand.config.class_names = {k: v for k, v in names.items() if v != k}
    info = {"faces": len(records), "people": sorted({r.person for r in records}),
            "enrolled_since_build": len(todo), "carried_from_candidate": reused,
            "removed_since_build": sorted(p for p, q in fate.items() if q is None),
            "renamed_since_build": {p: q for p, q in fate.items() if q is not None}}
    return info, name, {r.chip for r in records if r.chip}


def check_none_lost(d: Path, current, records) -> None:
    """ModelError unless every face of `current` (the records of the model in use) is, by person
    and photo, in `records` (those of a gallery about to replace it)."""
    have = {(x.person, x.content_hash) for x in records}
    missing = [(r.person, r.content_hash) for r in current if (r.person, r.content_hash) not in have]
    if missing:  # cannot happen by construction; never switch to a gallery that lost a face
        raise ModelError(f"{d}: internal error, {len(missing)} enrolled faces would be lost; nothing was changed")


def remove_person(model_dir: str | Path, name: str) -> tuple[int, set[str]]:
    """Remove `name` from the pending candidate's gallery; returns (faces removed, their chips).
    Caller holds the writer lock."""
    from gallery import open_gallery

    d = Path(model_dir)
    cand = load_candidate(d)
    if cand is None or not (d / cand.config.gallery).is_dir():
        return 0, set()
    with open_gallery(d / cand.config.gallery, model_id=cand.config.model_id) as g:
        if name not in g.people():
            return 0, set()
        gone = g.records(name)
        n = g.remove_person(name)
        still = {r.chip for r in g.records() if r.chip}
    cand.chips = sorted(still)
    cand.base_faces = [f for f in cand.base_faces if f[2] != name]
    cand.report = _without(cand.report, name)
    if cand.comparison is not None and name in json.dumps(cand.comparison, ensure_ascii=False):
        # e.g. held out for the open-set figures: they were scored with this person, so they go
        cand.comparison = {"error": "the side-by-side figures were dropped when a person in them was removed; "
                                    "build the candidate again to score it"}
    write_json_atomic(d / CANDIDATE_FILE, cand.to_dict())
    return n, {r.chip for r in gone if r.chip}


def _without(obj, name: str):
    """`obj` (JSON data) with every mention of `name` left out (list items, keys, values)."""
    if isinstance(obj, dict):
        return {k: _without(v, name) for k, v in obj.items() if k != name and v != name}
    if isinstance(obj, list):
        return [_without(v, name) for v in obj if v != name]
    if isinstance(obj, str) and name in obj:
        return ""
    return obj


def reembed(model_dir: str | Path, backbone: str, weights: str | None, *, weights_dir=None,
            progress: bool = False) -> tuple[Candidate, ModelConfig]:
    """Build a candidate with no training: every enrolled face re-embedded from its chip with the
    `backbone`/`weights` network. Returns (the candidate, the model in use it was built beside)."""
    from gallery import FaceRecord, create_gallery, open_gallery
    from recognizer.chips import embed_chips
    from recognizer.config import DEFAULT_THRESHOLDS
    from recognizer.embedding.backbones import default_weights, make_embedder
    from recognizer.training.run import starting_point
    from recognizer.training.versions import build_lease

    d = Path(model_dir)
    live = starting_point(d)
    if live is None:
        raise ModelError(f"{d}: no model here to re-embed")
    weights = default_weights(backbone, weights)
    embedder = make_embedder(backbone, weights, weights_dir)
    with writer_lock(d):
        live = load_config(d)
        with open_gallery(d / live.gallery, model_id=live.model_id) as g:
            records = g.records()
    vectors = embed_chips(records, embedder, chip_store(d), progress=progress,
                          no_chip="enrolled before chips were kept; enroll.py --make-chips makes it from the photo",
                          failure=lambda n: f"{d}: {n} enrolled faces have no usable chip, so the new network "
                                            "cannot embed them; nothing was changed")
    token = secrets.token_hex(6)
    name = f"{GALLERY_DIR}-{token}"
    cfg = ModelConfig(backbone=backbone, weights=weights, model_id=embedder.model_id, dim=embedder.dim,
                      threshold=live.threshold if live.backbone == backbone else DEFAULT_THRESHOLDS[backbone],
                      knn_k=live.knn_k, detector=dict(live.detector), gallery=name, keep_versions=live.keep_versions,
                      target_fpir=live.target_fpir)
    # until candidate.json names the gallery, another process's commit must not delete it as unused
    with build_lease(d, token):
        try:
            gal = create_gallery(d / name, model_id=cfg.model_id, dim=embedder.dim)
            if records:
                gal.add(vectors, [FaceRecord(r.person, r.source, r.content_hash, tuple(r.box), added_at=r.added_at, chip=r.chip)
                                  for r in records], model_id=cfg.model_id, allow_similar=True)
            gal.close()
            cand = Candidate(cfg, base_of(live), [[r.content_hash, list(r.box), r.person] for r in records],
                             sorted({r.chip for r in records if r.chip}), "reembed",
                             report={"faces": len(records), "people": sorted({r.person for r in records})})
            with writer_lock(d):
                if base_of(load_config(d)) != cand.base:
                    raise ModelError(f"{d}: the model was switched while re-embedding; nothing was changed, run it again")
                with open_gallery(d / live.gallery, model_id=live.model_id) as g:
                    gone = sorted(set(cand.report["people"]) - set(g.people()))
                if gone:  # removed while re-embedding: removal reaches the candidate too
                    with open_gallery(d / name, model_id=cfg.model_id) as gal:
                        for p in set(gone) & set(gal.people()):  # the removal may have reached this gallery already
                            gal.remove_person(p)
                        cand.chips = sorted({r.chip for r in gal.records() if r.chip})
                        cand.report = {"faces": len(gal), "people": sorted(gal.people())}
                    cand.base_faces = [f for f in cand.base_faces if f[2] not in gone]
                # faces enrolled or removed meanwhile are carried over by the switch, like any change since the build
                write_candidate(d, cand)
        except BaseException:
            if (pending_files(d) or set()).isdisjoint({name}):
                shutil.rmtree(d / name, ignore_errors=True)
            raise
    return cand, live


def side_by_side(model_dir: str | Path, current: ModelConfig, candidate: ModelConfig, photos, *, unknown_dir=None,
                 weights_dir=None, cache=None, progress: bool = False) -> dict:
    """The model in use and the candidate scored on the same held-out `photos` ((paths, labels,
    description); see `recognizer.evaluation.compare`), kept in candidate.json for a later switch.
    A failure to score is reported in the result ({"error": ...}), never raised: the candidate stands."""
    from facecore.errors import FaceToolError
    from recognizer.evaluation.compare import compare
    from recognizer.evaluation.run import EvaluationOptions
    from recognizer.recognizer import Recognizer

    d = Path(model_dir)
    try:
        cur = Recognizer.pinned(d, current, weights_dir=weights_dir, cache=cache)
        try:
            new = Recognizer.pinned(d, candidate, weights_dir=weights_dir, cache=cache)
            try:
                out = compare(cur, new, photos, EvaluationOptions(unknown_dir=str(unknown_dir) if unknown_dir else None,
                                                                  progress=progress))
            finally:
                new.gallery.close()
        finally:
            cur.gallery.close()
    except (FaceToolError, ValueError, OSError) as exc:
        log.warning("could not score the two models side by side: %s", exc)
        return {"error": str(exc)}
    with writer_lock(d):
        cand = load_candidate(d)
        if cand is not None and cand.config.gallery == candidate.gallery:
            cand.comparison = out
            write_json_atomic(d / CANDIDATE_FILE, cand.to_dict())
    return out


def migrate(model_dir: str | Path, backbone: str, weights: str | None, *, photos=None, unknown_dir=None,
            switch_now: bool = False, weights_dir=None, cache=None, progress: bool = False) -> dict:
    """Re-embed every enrolled face with another network as a candidate (`reembed`), score it
    beside the model in use on `photos` when given, and switch to it only when `switch_now`."""
    d = Path(model_dir)
    cand, live = reembed(d, backbone, weights, weights_dir=weights_dir, progress=progress)
    out = {"model_dir": str(d), "kind": "reembed", "current": {"model_id": live.model_id, "backbone": live.backbone},
           "candidate": {"model_id": cand.config.model_id, "backbone": cand.config.backbone,
                         "weights": cand.config.weights, **cand.report},
           "comparison": None, "switched": False, "switch": None}
    if photos is not None:
        out["comparison"] = side_by_side(d, live, cand.config, photos, unknown_dir=unknown_dir, weights_dir=weights_dir,
                                         cache=cache, progress=progress)
    if switch_now:
        out["switch"] = switch(d, weights_dir=weights_dir, progress=progress)
        out["switched"] = True
    return out


def pending(model_dir: str | Path) -> dict | None:
    """What `finetune.py --switch` would switch to, with its side-by-side figures (None: nothing pending)."""
    cand = load_candidate(model_dir)
    if cand is None:
        return None
    return {"model_id": cand.config.model_id, "backbone": cand.config.backbone, "weights": cand.config.weights,
            "kind": cand.kind, "built_at": cand.built_at, "built_beside": cand.base["model_id"],
            "comparison": cand.comparison}

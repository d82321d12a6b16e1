"""A migration candidate (DIR/candidate.json): a new version of a model built beside the one in use,
switched to only when asked.

`finetune.py` builds one (possibly on another backbone or weights), `finetune.py --reembed` too (every
enrolled face re-embedded from its chip). The model in use is not touched, so identify and running servers
go on with it. `switch`, under the writer lock, carries over what changed since the build (as a finetune's
commit does), keeps the replaced model.json as a version (for `--rollback`) and deletes candidate.json.
A candidate is not a version (never counted in `keep_versions`); there is at most one, and a switch made
another way (a finetune that switches, a rollback) discards it, since the model it was built beside is gone.
"""
from __future__ import annotations

import json
import logging
import os
import secrets
import shutil
from contextlib import ExitStack
from dataclasses import replace
from pathlib import Path

from facecore.atomic import write_json_atomic
from facecore.errors import FaceToolError, ModelError
from gallery import open_gallery
from gallery.base import face_key
from recognizer.modeldir.config import DEFAULT_THRESHOLDS, load_config, ModelConfig, save_config
from recognizer.modeldir.layout import chip_store, GALLERY_DIR, MODEL_FILE
from recognizer.modeldir.lock import writer_lock
from recognizer.embedding.backbones import default_weights, make_embedder
from recognizer.evaluation.compare import compare
from recognizer.evaluation.run import EvaluationOptions
from recognizer.modeldir.rebuild import build_gallery, carry_over, fresh_record, starting_point
from recognizer.recognizer import Recognizer
from recognizer.view import open_network
from recognizer.training.versions import (CANDIDATE_FILE, CANDIDATE_REPORT, Candidate, base_of, build_lease,
                                          check_no_other_build, load_candidate, pending_files, pending_stamp,
                                          push_version, remove_unused, write_candidate)

__all__ = ["migrate", "pending", "pending_chips", "reembed", "remove_faces", "remove_person", "side_by_side", "switch"]

log = logging.getLogger(__name__)


def pending_chips(model_dir: str | Path) -> set[str] | None:
    """Chips the pending candidate's gallery names (None: candidate.json is damaged, keep all)."""
    try:
        cand = load_candidate(model_dir)
    except ModelError:
        return None
    return set(cand.chips) if cand else set()


def switch(model_dir: str | Path, *, weights_dir=None, progress: bool = False, expect: str | None = None) -> dict:
    """Make the pending candidate the model in use (see the module docstring); returns a summary. `expect`: the
    gallery of the candidate the caller built (a finetune switching to its own build); another is refused."""
    d = Path(model_dir)
    with writer_lock(d):
        cand = load_candidate(d)
        if expect is not None and (cand is None or cand.config.gallery != expect):
            raise ModelError(f"{d}: the candidate this build made ({expect}) was replaced or switched to by another "
                             "build meanwhile (two finetunes or re-embeds at once); nothing was switched by this one")
        if cand is None:
            raise ModelError(f"{d}: no candidate to switch to (build one with finetune.py DATA --backbone/--weights "
                             "..., or finetune.py --reembed; both leave the model in use as it is)")
        live = load_config(d)
        if base_of(live) != cand.base:
            raise ModelError(f"{d}: the candidate was built beside model {cand.base['model_id']} (gallery "
                             f"{cand.base['gallery']}), but {MODEL_FILE} now names {live.model_id} (gallery "
                             f"{live.gallery}): the model was switched since; build the candidate again. Nothing was changed")
        embedder, _ = open_network(d, cand.config, weights_dir)
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
            os.replace(d / CANDIDATE_REPORT, d / "report.json")
        chip_store(d).sweep(chips)
        remove_unused(d, keep={name, cfg.checkpoint or ""})
    log.info("%s: switched from %s to the candidate %s", d, live.model_id, cfg.model_id)
    return {"model_dir": str(d), "from": live.model_id, "to": cfg.model_id, "backbone": cfg.backbone,
            "kind": cand.kind, "built_at": cand.built_at, "gallery": name, "comparison": cand.comparison, **info}


def _carry_over(d: Path, cand: Candidate, live: ModelConfig, embedder, progress: bool):
    """The candidate's gallery with what changed in the model in use since the build; returns (counts, its
    name, its chips)."""
    with open_gallery(d / cand.config.gallery, model_id=cand.config.model_id) as g:
        c_records = g.records()
        ids, vecs = g.vectors()
    by_id = dict(zip(ids.tolist(), vecs))
    with open_gallery(d / live.gallery, model_id=live.model_id) as g:
        current = g.records()
    base = [(face_key(h, box), p) for h, box, p in cand.base_faces]
    base_keys = {k for k, _ in base}
    cand_vec: dict = {}
    built = []  # the candidate's own faces: enrolled ones come from the model in use, or are gone
    for r in c_records:
        k = face_key(r.content_hash, r.box)
        cand_vec.setdefault(k, by_id[r.id])
        if k not in base_keys:
            built.append((r, by_id[r.id]))
    carried = carry_over(d, base, built, [(face_key(r.content_hash, r.box), r) for r in current], cand_vec)
    name = f"{GALLERY_DIR}-{secrets.token_hex(6)}"
    build_gallery(d, name, cand.config.model_id, embedder, carried.records, carried.vectors, progress=progress,
                  desc="faces enrolled since", failure=lambda n: f"{d}: {n} faces enrolled since the candidate was "
                                                                 "built cannot be re-embedded; nothing was changed")
    # Classes of the classifier follow people renamed since the build.
    fate = carried.fate
    names = dict(cand.config.class_names)
    for label in set(names) | set(fate):
        now = names.get(label, label)
        if fate.get(now):
            names[label] = fate[now]
    cand.config.class_names = {k: v for k, v in names.items() if v != k}
    info = {"faces": len(carried.records), "people": sorted({r.person for r in carried.records}),
            "enrolled_since_build": carried.new, "carried_from_candidate": carried.reused,
            "removed_since_build": carried.removed(), "renamed_since_build": carried.renamed()}
    return info, name, {r.chip for r in carried.records if r.chip}


def remove_person(model_dir: str | Path, name: str) -> tuple[int, set[str]]:
    """Remove `name` from the pending candidate; returns (faces removed, their chips). Caller holds the writer lock."""
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


def remove_faces(model_dir: str | Path, person: str, keys: set[tuple]) -> tuple[int, set[str]]:
    """Remove `person`'s faces whose face_key is in `keys` from the pending candidate; returns (faces removed,
    their chips). Caller holds the writer lock."""
    d = Path(model_dir)
    cand = load_candidate(d)
    if cand is None or not (d / cand.config.gallery).is_dir():
        return 0, set()
    with open_gallery(d / cand.config.gallery, model_id=cand.config.model_id) as g:
        gone = g.remove_faces([r.id for r in g.records() if r.person == person and face_key(r.content_hash, r.box) in keys]
                              ) if person in g.people() else []
        still = {r.chip for r in g.records() if r.chip}
    base = [f for f in cand.base_faces if not (f[2] == person and face_key(f[0], f[1]) in keys)]
    if not gone and base == cand.base_faces:
        return 0, set()
    cand.chips, cand.base_faces = sorted(still), base
    write_json_atomic(d / CANDIDATE_FILE, cand.to_dict())
    return len(gone), {r.chip for r in gone if r.chip}


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
    """A candidate with every enrolled face re-embedded from its chip by another network; returns (the
    candidate, the model in use it was built beside)."""
    d = Path(model_dir)
    stamp = pending_stamp(d)  # before model.json: a candidate committed after it is seen at the commit
    live = starting_point(d)
    if live is None:
        raise ModelError(f"{d}: no model here to re-embed")
    weights = default_weights(backbone, weights)
    embedder = make_embedder(backbone, weights, weights_dir)
    with writer_lock(d):
        live = load_config(d)
        with open_gallery(d / live.gallery, model_id=live.model_id) as g:
            records = g.records()
    token = secrets.token_hex(6)
    name = f"{GALLERY_DIR}-{token}"
    cfg = ModelConfig(backbone=backbone, weights=weights, model_id=embedder.model_id, dim=embedder.dim,
                      threshold=live.threshold if live.backbone == backbone else DEFAULT_THRESHOLDS[backbone],
                      knn_k=live.knn_k, detector=dict(live.detector), gallery=name, keep_versions=live.keep_versions,
                      target_fpir=live.target_fpir)
    # until candidate.json names the gallery, another process's commit must not delete it as unused
    with build_lease(d, token):
        try:
            build_gallery(d, name, cfg.model_id, embedder, [fresh_record(r) for r in records], progress=progress,
                          no_chip="enrolled before chips were kept; enroll.py --make-chips makes it from the photo",
                          failure=lambda n: f"{d}: {n} enrolled faces have no usable chip, so the new network "
                                            "cannot embed them; nothing was changed")
            cand = Candidate(cfg, base_of(live), [[r.content_hash, list(r.box), r.person] for r in records],
                             sorted({r.chip for r in records if r.chip}), "reembed",
                             report={"faces": len(records), "people": sorted({r.person for r in records})})
            with writer_lock(d):
                check_no_other_build(d, stamp)
                _commit_reembed(d, cand, live)
        except BaseException:
            if (pending_files(d) or set()).isdisjoint({name}):
                shutil.rmtree(d / name, ignore_errors=True)
            raise
    return cand, live


def _commit_reembed(d: Path, cand: Candidate, live: ModelConfig) -> None:
    """Under the writer lock: the re-embedded gallery made the candidate, without people removed meanwhile."""
    cfg = cand.config
    if base_of(load_config(d)) != cand.base:
        raise ModelError(f"{d}: the model was switched while re-embedding; nothing was changed, run it again")
    with open_gallery(d / live.gallery, model_id=live.model_id) as g:
        gone = sorted(set(cand.report["people"]) - set(g.people()))
    if gone:  # removed while re-embedding: removal reaches the candidate too
        with open_gallery(d / cfg.gallery, model_id=cfg.model_id) as gal:
            for p in set(gone) & set(gal.people()):  # the removal may have reached this gallery already
                gal.remove_person(p)
            cand.chips = sorted({r.chip for r in gal.records() if r.chip})
            cand.report = {"faces": len(gal), "people": sorted(gal.people())}
        cand.base_faces = [f for f in cand.base_faces if f[2] not in gone]
    # faces enrolled or removed meanwhile are carried over by the switch, like any change since the build
    write_candidate(d, cand)


def side_by_side(model_dir: str | Path, current: ModelConfig, candidate: ModelConfig, photos, *, unknown_dir=None,
                 weights_dir=None, cache=None, progress: bool = False) -> dict:
    """The model in use and the candidate scored on the same held-out `photos` ((paths, labels, description)),
    kept in candidate.json. A failure to score is returned as {"error": ...}, never raised: the candidate stands."""
    d = Path(model_dir)
    try:
        with ExitStack() as opened:
            cur = Recognizer.pinned(d, current, weights_dir=weights_dir, cache=cache)
            opened.callback(cur.gallery.close)
            new = Recognizer.pinned(d, candidate, weights_dir=weights_dir, cache=cache)
            opened.callback(new.gallery.close)
            out = compare(cur, new, photos, EvaluationOptions(unknown_dir=str(unknown_dir) if unknown_dir else None,
                                                              progress=progress))
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
    """`reembed`, scored beside the model in use on `photos` when given, switched to when `switch_now`."""
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

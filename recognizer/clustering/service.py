"""Clustering a model's unknown faces, and naming a cluster: the Recognizer-facing side.

    run = cluster_photos(rec, photos)                 # detect, embed, set known faces aside, group
    run_id = save(rec, run)                           # into DIR/clusters/ until named or dismissed
    enroll_cluster(rec, run_id, 3, "Grace")           # the cluster's stored crops, not the photos

Each unknown face's chip is kept in the run, so a face enrolled from a cluster can be re-embedded later
without its photo. The linkage threshold is the model's decision threshold plus `offset` (0): a wrong merge
costs the user more than a split they can fix; benchmarks/cluster_quality.py measures both.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Iterable, Sequence

import numpy as np

from facecore.errors import ImageError
from facecore.names import validate_name
from gallery import FaceRecord
from recognizer.chips import chip_vectors, make_chip
from recognizer.clustering import runs as runs_mod
from recognizer.clustering.graph import DEFAULT_K, LINKAGES, central_faces, cluster_embeddings
from recognizer.clustering.runs import RunError
from recognizer.image import load_photo
from recognizer.quality import LOW_QUALITY

__all__ = ["DEFAULT_LINK_OFFSET", "ClusterEnrollment", "ClusterResult", "cluster_photos", "describe_clusters",
           "dismiss_cluster", "enroll_cluster", "link_threshold", "looks_like_text", "parse_ref", "save"]

log = logging.getLogger(__name__)

DEFAULT_LINK_OFFSET = 0.0


def link_threshold(decision_threshold: float, offset: float = DEFAULT_LINK_OFFSET) -> float:
    return float(min(1.0, max(-1.0, decision_threshold + offset)))


@dataclass
class ClusterResult:
    """One clustering of unknown faces, before it is saved: run.json's content plus the arrays."""

    meta: dict
    embeddings: np.ndarray
    crops: np.ndarray
    chips: list = field(default_factory=list)  # per face: its chip's PNG bytes
    id: str | None = None

    def to_dict(self) -> dict:
        return dict(self.meta, id=self.id)


def _check_arguments(sources: Sequence, labels: Sequence[str] | None, linkage: str) -> None:
    if labels is not None and len(labels) != len(sources):
        raise ValueError(f"got {len(labels)} labels for {len(sources)} photos")
    if linkage not in LINKAGES:
        raise ValueError(f"linkage must be one of {LINKAGES}, got {linkage!r}")


@dataclass
class _Gathered:
    """run.json's photos and unknown faces, per face its embedding, crop and chip; `cannot`: faces sharing a photo."""

    photos: list = field(default_factory=list)
    faces: list = field(default_factory=list)
    emb: list = field(default_factory=list)
    crops: list = field(default_factory=list)
    chips: list = field(default_factory=list)
    cannot: list = field(default_factory=list)


def _photo_entry(res, label: str | None) -> dict:
    p = {"photo": res.source if label is None else label, "content_hash": res.content_hash,
         "size": list(res.size), "known": [], "low_quality": []}
    if res.error is not None:
        p["error"] = res.error
    return p


def _image_for_chips(src, res, ident, pipeline) -> tuple[object, str | None]:
    """(the decoded photo or None when it has no unknown face, None) or (None, why it cannot be read)."""
    if res.error is not None or not any(f.name is None for f in ident.faces):
        return None, None
    # The chips are cut from the photo itself, decoded as the pipeline decoded it, so their
    # crops are the very crops that were embedded (as enrolment does).
    try:
        photo = load_photo(src, pipeline.max_pixels, pipeline.memory_budget)
    except ImageError as exc:
        return None, exc.reason
    if photo.content_hash != res.content_hash:
        return None, "the file changed while it was being read"
    return photo.image, None


def _gather_faces(acc: _Gathered, pi: int, p: dict, res, ident, image) -> None:
    """The known faces of photo `pi` into its entry `p`, and those under the quality floor (set aside: not
    people to name); its other unknown ones into `acc`."""
    here = []
    for i, f in enumerate(ident.faces):
        box = [round(v, 1) for v in f.box]
        if f.name is not None:
            p["known"].append({"name": f.name, "box": box, "similarity": round(f.similarity, 4)})
            continue
        if f.unknown_reason == LOW_QUALITY:
            p["low_quality"].append({"box": box, "reasons": list(f.quality.reasons)})
            continue
        here.append(len(acc.faces))
        guess = f.knn.get("name")
        acc.faces.append({"photo": pi, "box": box, "detection_score": round(f.detection_score, 4),
                          "nearest": {"name": guess, "similarity": f.knn.get("similarity", 0.0)} if guess else None})
        acc.emb.append(res.embeddings[i])
        acc.crops.append(res.crops[i])
        acc.chips.append(make_chip(image, res.faces[i]))
    if len(here) > 1:
        acc.cannot.append(here)  # two faces of one photo are two people


def _gather(rec, sources: Sequence, labels: Sequence[str] | None, thr: float, progress: bool) -> _Gathered:
    acc = _Gathered()
    for src, (res, ident), label in zip(sources, rec.analyze_and_identify(sources, threshold=thr, progress=progress),
                                         labels if labels is not None else [None] * len(sources)):
        p = _photo_entry(res, label)
        pi = len(acc.photos)
        acc.photos.append(p)
        image, error = _image_for_chips(src, res, ident, rec.pipeline)
        if error is not None:
            p["error"] = error
            continue
        _gather_faces(acc, pi, p, res, ident, image)
    return acc


def cluster_photos(rec, sources: Sequence, *, labels: Sequence[str] | None = None, k: int = DEFAULT_K,
                   linkage: str = "average", offset: float = DEFAULT_LINK_OFFSET, threshold: float | None = None,
                   progress: bool = False) -> ClusterResult:
    """Detect and embed every face of `sources`, set aside the faces `rec` names, and group the rest.
    `labels` (one per source) name the photos in the run instead of their paths; `threshold` defaults to the model's."""
    _check_arguments(sources, labels, linkage)
    thr = rec.config.threshold if threshold is None else float(threshold)
    t_link = link_threshold(thr, offset)
    t0 = time.perf_counter()
    acc = _gather(rec, sources, labels, thr, progress)
    t_embed = time.perf_counter() - t0
    dim, size = rec.embedder.dim, rec.embedder.crop_size
    E = np.stack(acc.emb).astype(np.float32) if acc.emb else np.zeros((0, dim), np.float32)
    C = np.stack(acc.crops).astype(np.uint8) if acc.crops else np.zeros((0, size, size, 3), np.uint8)
    t1 = time.perf_counter()
    labels_ = (cluster_embeddings(E, t_link, k=k, linkage=linkage, cannot_link=acc.cannot) if len(E)
               else np.zeros(0, np.int64))
    clusters = describe_clusters(E, labels_, acc.faces, thr)
    t_cluster = time.perf_counter() - t1
    for c in clusters:
        for fi in c["faces"]:
            acc.faces[fi]["cluster"] = c["id"]
    meta = {"model_id": rec.config.model_id, "backbone": rec.config.backbone, "crop_size": size, "threshold": thr,
            "linkage": {"rule": linkage, "k": k, "offset": offset, "link_threshold": round(t_link, 6)},
            "photos": acc.photos, "faces": acc.faces, "clusters": clusters,
            "low_quality": sum(len(p.get("low_quality", ())) for p in acc.photos),
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    log.info("clustered %d unknown faces of %d photos into %d clusters, %d low-quality faces set aside "
             "(embedding %.1f s, clustering %.2f s)", len(acc.faces), len(acc.photos), len(clusters), meta["low_quality"],
             t_embed, t_cluster)
    return ClusterResult(meta, E, C, acc.chips)


def describe_clusters(E: np.ndarray, labels: np.ndarray, faces: list[dict], threshold: float) -> list[dict]:
    """Clusters numbered 1.. by size, then first face; each with its faces, most central face, cohesion and
    the enrolled person it comes closest to."""
    if len(E) == 0:
        return []
    central, cohesion = central_faces(E, labels)
    members = [np.flatnonzero(labels == c) for c in range(int(labels.max()) + 1)]
    order = sorted(range(len(members)), key=lambda c: (-len(members[c]), int(members[c][0])))
    out = []
    for new_id, c in enumerate(order, start=1):
        idx = [int(i) for i in members[c]]
        guesses = [faces[i]["nearest"] for i in idx if faces[i].get("nearest")]
        looks = max(guesses, key=lambda g: (g["similarity"], g["name"])) if guesses else None
        out.append({"id": new_id, "size": len(idx), "faces": idx, "central": int(central[c]),
                    "cohesion": round(float(cohesion[c]), 4),
                    "looks_like": None if looks is None else {"name": looks["name"], "similarity": looks["similarity"],
                                                              "below_threshold": looks["similarity"] < threshold},
                    "status": "open"})
    return out


def looks_like_text(cluster: dict, threshold: float) -> str:
    ll = cluster.get("looks_like")
    if not ll:
        return "no enrolled person is near"
    rel = "below" if ll["similarity"] < threshold else "at or above"
    return f"looks like {ll['name']}, {ll['similarity']:.2f} — {rel} the threshold ({threshold:.2f})"


def save(rec, result: ClusterResult) -> str:
    result.id = runs_mod.save_run(rec.dir, result.meta, result.embeddings, result.crops, result.chips)
    return result.id


def parse_ref(ref: str) -> tuple[str, int]:
    """'RUN:ID' -> (run id, cluster id); RUN may be `latest`."""
    run_id, sep, cid = str(ref).rpartition(":")
    if not sep or not run_id or not cid.isdigit():
        raise RunError(f"{ref!r}: name a cluster as RUN:ID (e.g. 20261202-031500:3 or latest:3)")
    return run_id, int(cid)


@dataclass
class ClusterEnrollment:
    run: str
    cluster: int
    name: str
    added: int
    skipped: list[dict]

    def to_dict(self) -> dict:
        return {"run": self.run, "cluster": self.cluster, "name": self.name, "added": self.added, "skipped": self.skipped}


def _chosen_faces(run: runs_mod.Run, cluster_id: int, exclude: Iterable[int]) -> list[int]:
    """The open cluster's faces less `exclude` (RunError when not open, a stray exclude, or nothing left)."""
    cl = run.cluster(cluster_id)
    if cl["status"] != "open":
        who = f" as {cl['person']}" if cl.get("person") else ""
        raise RunError(f"cluster {run.id}:{cluster_id} is already {cl['status']}{who}")
    exclude = {int(v) for v in exclude}
    stray = sorted(exclude - set(cl["faces"]))
    if stray:
        raise RunError(f"faces {stray} are not in cluster {run.id}:{cluster_id} (its faces: {cl['faces']})")
    chosen = [i for i in cl["faces"] if i not in exclude]
    if not chosen:
        raise RunError(f"cluster {run.id}:{cluster_id}: every face is excluded; nothing to enroll")
    return chosen


def _stored_faces(rec, run: runs_mod.Run, chosen: list[int]) -> tuple[list, bool, np.ndarray, np.ndarray]:
    """(the run's chips, whether every chosen face has one, embeddings, crops); RunError when chipless crops
    do not fit this model's backbone."""
    meta = run.meta
    run_chips = run.chips()
    with_chips = all(run_chips[i] is not None for i in chosen)
    if not with_chips and (meta.get("backbone") != rec.config.backbone or meta.get("crop_size") != rec.embedder.crop_size):
        raise RunError(f"clustering run {run.id} was made with the {meta.get('backbone')} backbone; "
                       f"this model uses {rec.config.backbone}")
    emb, crops = run.arrays()
    if not with_chips:
        log.warning("clustering run %s was saved before runs kept chips: the faces enrolled from it get none "
                    "(a finetune or migration needs their photos)", run.id)
    return run_chips, with_chips, emb, crops


def _new_records(gallery, name: str, meta: dict, chosen: list[int]) -> tuple[list, list[int], list[dict]]:
    """(records to add, their rows in `chosen`, the faces skipped): one face per photo not yet enrolled for `name`."""
    records, keep, skipped, seen = [], [], [], set()
    for row, fi in enumerate(chosen):
        f = meta["faces"][fi]
        photo = meta["photos"][f["photo"]]
        if gallery.has_content(name, photo["content_hash"]) or photo["content_hash"] in seen:
            skipped.append({"face": fi, "photo": photo["photo"], "reason": f"a face of this photo is already enrolled for {name}"})
            continue
        seen.add(photo["content_hash"])
        keep.append(row)
        records.append(FaceRecord(name, photo["photo"], photo["content_hash"], tuple(float(v) for v in f["box"])))
    return records, keep, skipped


def _vectors(now, meta: dict, picked: list[int], with_chips: bool, run_chips: list, emb: np.ndarray,
             crops: np.ndarray) -> np.ndarray:
    """The embeddings of the `picked` faces under the model's current network."""
    if meta.get("model_id") == now.config.model_id:
        return emb[picked]
    if with_chips:  # another network since the run (finetuned, migrated): its crop from the chip
        return chip_vectors([run_chips[i] for i in picked], now.embedder)
    # finetuned since the run, same backbone: the stored crops give the current network's vectors
    return now.embedder.embed(crops[picked])


def _mark_enrolled(run: runs_mod.Run, cluster_id: int, name: str, enrolled: list[int]) -> None:
    meta = run.meta
    new = dict(meta, clusters=[dict(c) for c in meta["clusters"]])
    target = next(c for c in new["clusters"] if c["id"] == cluster_id)
    target.update(status="enrolled", person=name, enrolled_faces=enrolled)
    runs_mod.replace_meta(run, new)


def enroll_cluster(rec, run_id: str, cluster_id: int, name: str, *, exclude: Iterable[int] = (),
                   allow_similar: bool = False) -> ClusterEnrollment:
    """Enroll a cluster's faces (less the run face numbers in `exclude`) as `name` from the run's stored crops
    and mark it enrolled. Faces of a photo already enrolled for `name` are skipped; a new name that looks like
    an enrolled person's is refused unless `allow_similar`."""
    name = validate_name(name)
    runs_mod.load_run(rec.dir, run_id)  # RunNotFound before a runs directory is made for a model never clustered
    with runs_mod.runs_lock(rec.dir):
        run = runs_mod.load_run(rec.dir, run_id)  # under the lock: as a removal that ran meanwhile left it
        chosen = _chosen_faces(run, cluster_id, exclude)
        meta = run.meta
        run_chips, with_chips, emb, crops = _stored_faces(rec, run, chosen)
        with rec._writing() as now:  # the model's writer lock: a finetune's commit carries this enrolment over
            records, keep, skipped = _new_records(now.gallery, name, meta, chosen)
            if records:
                picked = [chosen[r] for r in keep]
                vectors = _vectors(now, meta, picked, with_chips, run_chips, emb, crops)
                if with_chips:
                    store = rec.chips
                    for r, i in zip(records, picked):
                        r.chip = store.put(run_chips[i])
                now.gallery.add(np.asarray(vectors, np.float32), records, model_id=now.config.model_id,
                                allow_similar=allow_similar)
        _mark_enrolled(run, cluster_id, name, [chosen[r] for r in keep])
    log.info("cluster %s:%d enrolled as %s: %d faces", run.id, cluster_id, name, len(records))
    return ClusterEnrollment(run.id, cluster_id, name, len(records), skipped)


def dismiss_cluster(rec, run_id: str, cluster_id: int) -> None:
    """Mark a cluster as not to be enrolled (the run goes once none is left open)."""
    runs_mod.load_run(rec.dir, run_id)
    with runs_mod.runs_lock(rec.dir):
        run = runs_mod.load_run(rec.dir, run_id)
        cl = run.cluster(cluster_id)
        if cl["status"] != "open":
            raise RunError(f"cluster {run.id}:{cluster_id} is already {cl['status']}")
        new = dict(run.meta, clusters=[dict(c) for c in run.meta["clusters"]])
        next(c for c in new["clusters"] if c["id"] == cluster_id)["status"] = "dismissed"
        runs_mod.replace_meta(run, new)

"""Finetune a model directory on a folder of labelled photos (the library behind `finetune.py`).

Split train/val -> crop the largest face of each photo (crop cache) -> run the frozen trunk once per face
(trunk cache) -> train the tail and a cosine head (early stopping on val loss) -> checkpoint -> rebuild the
gallery: the training faces plus every enrolled face re-embedded from its chip (a face with no chip and no
photo keeps its vector only when the network does not change, sface; otherwise the finetune stops before
changing anything) -> FPIR table on the stranger cohort -> model.json -> val scores, curves, report.json.

The commit takes the writer lock and carries over what changed while it trained (enrolled, removed, renamed),
and refuses to replace a model it did not start from. The new checkpoint and gallery are written beside the
old ones as a candidate (`recognizer.training.candidate`), scored side by side on the val faces, and switched
to in one atomic rename of model.json: by default for a retrain on the same network, only when asked
(`switch`) for another. A crash leaves the old model, the new one, or the old one with the candidate pending.
"""
from __future__ import annotations

import logging
import secrets
import shutil
import time
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from facecore.atomic import write_json_atomic
from facecore.errors import ImageError, ModelError
from facecore.names import match_folders
from gallery import FaceRecord, open_gallery
from gallery.chip_store import chip_id
from recognizer.cache import CropCache
from recognizer.chips import backfill_chips, embed_chips, make_chip
from recognizer.modeldir.config import config_stamp, DEFAULT_THRESHOLDS, load_config, ModelConfig, save_config
from recognizer.modeldir.layout import GALLERY_DIR, MODEL_FILE, REPORT_FILE, chip_store, ensure_private_dir
from recognizer.modeldir.lock import writer_lock
from recognizer.detection.mtcnn import Detector
from recognizer.embedding.backbones import FacenetEmbedder, default_weights, make_embedder
from recognizer.evaluation.calibration import calibrate
from recognizer.evaluation.closed_set import closed_set_scores
from recognizer.evaluation.cohort import default_cohort_dir
from recognizer.fpir import DEFAULT_TARGET_FPIR, shipped_table
from recognizer.image import load_photo
from recognizer.modeldir.rebuild import build_gallery, carry_over, starting_point
from recognizer.pipeline import FacePipeline
from recognizer.training.candidate import side_by_side, switch
from recognizer.network.checkpoint import finetuned_model_id, save_checkpoint
from recognizer.training.curves import plot_curves
from recognizer.training.dataset import load_split
from recognizer.network.head import CosineClassifier, class_means, make_head
from recognizer.network.loop import TrainSettings, train
from recognizer.network.trunk import SplitNet, TrunkCache, parse_unfreeze
from recognizer.training.versions import (CANDIDATE_REPORT, Candidate, base_of, build_lease, check_no_other_build,
                                         pending_stamp, remove_unused, write_candidate)

__all__ = ["REPORT_FILE", "FinetuneOptions", "FinetuneReport", "finetune"]

log = logging.getLogger(__name__)


@dataclass
class FinetuneOptions:
    backbone: str = "facenet"
    weights: str | None = None  # facenet only; default vggface2
    weights_dir: str | None = None
    unfreeze: str | None = None  # e.g. "repeat_3,block8"; default block8,last_linear,last_bn
    settings: TrainSettings = field(default_factory=TrainSettings)
    crop_cache: CropCache | None = None
    trunk_cache_dir: str | None = None  # default: beside the crop cache
    progress: bool = False
    cohort: str | None = None  # stranger cohort for the FPIR table; default FACETOOL_COHORT or the shared cohort-celeba
    # None: switch for a retrain on the same backbone and weights, not for a migration to another
    switch: bool | None = None
    unknown_dir: str | None = None  # strangers' photos (<person>/) for the side-by-side open-set figures


@dataclass
class FinetuneReport:
    model_dir: str
    backbone: str
    model_id: str
    classes: list[str]
    n_train: int
    n_val: int
    split: str
    skipped: list[dict]
    training: dict
    scores: dict  # closed-set scores on val: {"n", "classifier", "knn", "combined"}
    gallery: dict
    timings: dict
    files: list[str]
    comparison: dict | None = None
    fpir: dict = field(default_factory=dict)  # how the FPIR table of the new embeddings was made
    switched: bool = True  # False: built as a candidate beside the model in use (finetune.py --switch switches)
    switch: dict | None = None  # what the switch carried over since the build (recognizer.training.candidate)
    matched_folders: list = field(default_factory=list)  # [folder, enrolled person] matched other than exactly
    # ([folder, None]: nobody enrolled, but close to someone's name)
    held_back: str | None = None  # why a build that would have switched did not

    def to_dict(self) -> dict:
        return {**self.scores, "model_dir": self.model_dir, "backbone": self.backbone, "model_id": self.model_id,
                "classes": self.classes, "n_train": self.n_train, "n_val": self.n_val, "split": self.split,
                "skipped": self.skipped, "training": self.training, "gallery": self.gallery,
                "timings": self.timings, "files": self.files, "comparison": self.comparison,
                "fpir_table": self.fpir, "switched": self.switched, "switch": self.switch,
                "matched_folders": self.matched_folders, "held_back": self.held_back}


def _largest_crops(pipeline, paths: list[str], labels: list[str], progress: bool, desc: str, with_chips: bool = False):
    from tqdm import tqdm  # imported with the progress bars it draws, like torch: not needed to import this module

    crops, kept_labels, records, skipped = [], [], [], []
    for path, label in tqdm(list(zip(paths, labels)), desc=desc, unit="photo", disable=not progress, dynamic_ncols=True):
        try:
            res = pipeline.detect_or_error(path)
            if res.skip_reason is not None:
                skipped.append({"file": path, "reason": res.skip_reason})
                continue
            chip = None
            if with_chips:  # training faces go into the gallery: they need chips like any enrolled face
                photo = load_photo(path, pipeline.max_pixels, pipeline.memory_budget)
                if photo.content_hash != res.content_hash:
                    skipped.append({"file": path, "reason": "the file changed while it was being read"})
                    continue
                chip = make_chip(photo.image, res.faces[0])
        except ImageError as exc:
            skipped.append({"file": path, "reason": exc.reason})
            continue
        crops.append(res.crops[0])
        kept_labels.append(label)
        records.append((path, res.content_hash, tuple(float(v) for v in res.faces[0].box), chip))
    size = pipeline.embedder.crop_size
    return (np.stack(crops) if crops else np.zeros((0, size, size, 3), np.uint8)), kept_labels, records, skipped


@dataclass
class _Start:
    dir: Path
    cfg: ModelConfig
    stamp: tuple | None
    records: list  # FaceRecords of the gallery when the finetune started
    vectors: dict  # id -> old vector
    no_chip: list  # records whose chip could not be made from their photo


def _snapshot(d: Path, cfg: ModelConfig, detector) -> _Start:
    with writer_lock(d):
        stamp = config_stamp(d)
        with open_gallery(d / cfg.gallery, model_id=cfg.model_id) as g:
            failed = backfill_chips(d, g, detector, chip_store(d))
            records = g.records()
            ids, vecs = g.vectors()
    return _Start(d, cfg, stamp, records, dict(zip(ids.tolist(), vecs)), failed)


def _embed_enrolled(start: _Start, embedder, reuse_vectors: bool, progress: bool) -> dict[int, np.ndarray]:
    """id -> the new network's vector of every enrolled face (ModelError, before any change, when one has none)."""
    vectors = embed_chips(start.records, embedder, chip_store(start.dir), progress=progress, desc="enrolled faces",
                          no_chip="enrolled before chips were kept, and its photo is gone or changed",
                          spare=(lambda r: start.vectors[r.id]) if reuse_vectors else None,
                          failure=lambda n: f"{n} enrolled faces cannot be re-embedded with the new network, and "
                                            "finetuning would drop them; nothing was changed. Put their photos back "
                                            "where they were enrolled from (or remove those people with enroll.py "
                                            "--remove) and run again")
    return {r.id: v for r, v in zip(start.records, vectors)}


@dataclass
class _Faces:
    old_cfg: ModelConfig | None
    source: str  # where the train/val split came from
    weights: str | None
    base: object  # the base embedder
    detector: Detector
    pipeline: FacePipeline
    start: _Start | None
    reuse_vectors: bool  # sface: the network never trains, so a face with no chip keeps its vector
    x_tr: np.ndarray
    y_tr: list[str]
    rec_tr: list  # (path, content hash, box, chip) of each training face
    x_va: np.ndarray = None
    y_va: list[str] = field(default_factory=list)
    val_paths: list[str] = field(default_factory=list)
    skipped: list[dict] = field(default_factory=list)
    classes: list[str] = field(default_factory=list)
    yi_tr: np.ndarray = None
    yi_va: np.ndarray = None
    matched: list = field(default_factory=list)  # (folder, enrolled person) matched other than exactly
    pending: bytes | None = None  # candidate.json when the finetune started (None: none was pending)


@dataclass
class _Trained:
    unfreeze: tuple
    net: SplitNet
    cache: TrunkCache
    f_tr: np.ndarray
    f_va: np.ndarray
    head: object
    result: object  # loop.TrainResult
    classifier: CosineClassifier


def finetune(data_dir: str | Path, model_dir: str | Path, opts: FinetuneOptions) -> FinetuneReport:
    """Finetune `model_dir` on the labelled photos of `data_dir`."""
    timings: dict[str, float] = {}
    d = Path(model_dir)
    faces = _read_faces(data_dir, d, opts, timings)
    trained = _train(faces, opts, timings)
    return _build(d, faces, trained, opts, timings)


def _read_faces(data_dir: str | Path, d: Path, opts: FinetuneOptions, timings: dict) -> _Faces:
    """Split, detect and crop the training and val photos; snapshot the enrolled faces."""
    t = time.perf_counter()
    pending = pending_stamp(d)  # read before model.json: a candidate written after it is seen at the commit
    old_cfg = starting_point(d)
    ensure_private_dir(d)
    s = opts.settings
    split = load_split(data_dir, d, seed=s.seed)
    matched = []
    if old_cfg is not None and (d / old_cfg.gallery).exists():
        with open_gallery(d / old_cfg.gallery) as old:
            matched = _as_enrolled(split, old_cfg, old.people())

    weights = default_weights(opts.backbone, opts.weights)
    base = make_embedder(opts.backbone, weights, opts.weights_dir, seed=s.seed)
    detector = Detector(old_cfg.detector_settings()) if old_cfg else Detector()
    pipeline = FacePipeline(detector, base, opts.crop_cache or CropCache())
    # What the new gallery starts from: the enrolled faces now (faces enrolled before chips get
    # theirs from their photos first). Changes made from here on are carried over at the commit.
    start = _snapshot(d, old_cfg, detector) if old_cfg else None
    reuse_vectors = (old_cfg is not None and opts.backbone == "sface" and old_cfg.backbone == "sface"
                     and old_cfg.model_id.startswith(base.model_id))  # sface's network never trains
    if start and start.no_chip and not reuse_vectors:
        raise ModelError(f"{len(start.no_chip)} enrolled faces have no chip and their photos are gone or changed, so "
                         "the new network cannot embed them and finetuning would drop them; nothing was changed. Put "
                         "their photos back where they were enrolled from (or remove those people with enroll.py "
                         "--remove) and run again; they cannot be re-embedded:\n  " + "\n  ".join(start.no_chip[:50]))
    x_tr, y_tr, rec_tr, skipped = _largest_crops(pipeline, split.train.paths, split.train.labels, opts.progress,
                                                 "train photos", with_chips=True)
    x_va, y_va, rec_va, skipped_va = _largest_crops(pipeline, split.val.paths, split.val.labels, opts.progress, "val photos")
    timings["detect_s"] = time.perf_counter() - t
    faces = _Faces(old_cfg, split.source, weights, base, detector, pipeline, start, reuse_vectors, x_tr, y_tr, rec_tr,
                   skipped=skipped + skipped_va, matched=matched, pending=pending)
    _label(data_dir, faces, x_va, y_va, rec_va)
    return faces


def _as_enrolled(split, old_cfg: ModelConfig, enrolled) -> list:
    """Name the training folders as the enrolled people they match (`match_folders`: a folder "madonna" trains
    the enrolled "Madonna", not a second person who prints alike); folders of classes renamed since the last
    finetune keep their name (model.json's class names map them)."""
    folders = sorted(set(split.train.labels) | set(split.val.labels))
    match = match_folders([f for f in folders if f not in old_cfg.class_names], enrolled)
    for f, p in match.near.items():
        log.warning("training folder %s is nobody enrolled, so it trains a new person; did you mean %s?", f, p)
    for part in (split.train, split.val):
        part.labels = [match.people.get(lab, lab) for lab in part.labels]
    return [*match.loose, *((f, None) for f in match.near)]


def _label(data_dir, faces: _Faces, x_va, y_va, rec_va) -> None:
    """The classes (training folders) and the val faces of people trained on."""
    classes = sorted(set(faces.y_tr))
    if len(classes) < 2:
        raise ValueError(f"{data_dir}: faces of at least two people are needed to train a classifier")
    unseen = sorted(set(y_va) - set(classes))
    if unseen:
        log.warning("val people with no training face are left out of validation: %s", unseen)
    keep_va = [i for i, y in enumerate(y_va) if y in classes]
    faces.x_va, faces.y_va, faces.val_paths = x_va[keep_va], [y_va[i] for i in keep_va], [rec_va[i][0] for i in keep_va]
    faces.classes = classes
    faces.yi_tr = np.array([classes.index(y) for y in faces.y_tr])
    faces.yi_va = np.array([classes.index(y) for y in faces.y_va])


def _train(f: _Faces, opts: FinetuneOptions, timings: dict) -> _Trained:
    """Run the frozen trunk once per face (trunk cache), then train the tail and the head."""
    t = time.perf_counter()
    unfreeze = parse_unfreeze(opts.unfreeze) if opts.backbone == "facenet" else ()
    net = SplitNet.facenet(f.base, unfreeze) if opts.backbone == "facenet" else SplitNet.sface(f.base)
    cache = TrunkCache(net, opts.trunk_cache_dir)
    f_tr = cache.features(f.x_tr, progress=opts.progress)
    f_va = cache.features(f.x_va, progress=opts.progress)
    timings["trunk_s"] = time.perf_counter() - t

    t = time.perf_counter()
    n = len(f.classes)
    head = make_head(f.base.dim, n, init=class_means(net.embed_features(f_tr[:, 0]), f.yi_tr, n))
    result = train(net.tail, head, f_tr, f.yi_tr, f_va, f.yi_va, opts.settings, progress=opts.progress)
    timings["train_s"] = time.perf_counter() - t
    classifier = CosineClassifier.from_head(f.classes, head.weight.detach().numpy(), float(head.scale.detach()))
    return _Trained(unfreeze, net, cache, f_tr, f_va, head, result, classifier)


def _build(d: Path, f: _Faces, tr: _Trained, opts: FinetuneOptions, timings: dict) -> FinetuneReport:
    """Write the checkpoint, FPIR table and gallery beside the model in use under fresh names (so a failure
    before the commit leaves the old model whole), commit them (the model, or a candidate), then report."""
    token = secrets.token_hex(6)
    ckpt_name, gallery_name, fpir_name = f"checkpoint-{token}.pt", f"{GALLERY_DIR}-{token}", f"fpir-{token}.json"
    committed = False
    lease = ExitStack()  # until the commit names them, another commit must not delete them as unused
    lease.enter_context(build_lease(d, token))
    try:
        model_id = _save_checkpoint(d / ckpt_name, f, tr, opts)

        t = time.perf_counter()
        if opts.backbone == "facenet":
            tuned = FacenetEmbedder(f.weights, module=f.base.module, model_id=model_id, batch_size=f.base.batch_size)
        else:
            tuned = f.base
        train_emb = tr.net.embed_features(tr.f_tr[:, 0])
        enrolled = _embed_enrolled(f.start, tuned, f.reuse_vectors, opts.progress) if f.start else {}
        timings["gallery_s"] = time.perf_counter() - t

        t = time.perf_counter()
        fpir_info = _calibrate_fpir(d / fpir_name, opts, f.base, tuned, model_id, FacePipeline(f.detector, tuned, f.pipeline.cache))
        timings["fpir_s"] = time.perf_counter() - t

        cfg = _new_config(f, opts, model_id, ckpt_name, gallery_name, fpir_name if fpir_info["calibrated"] else None)
        t = time.perf_counter()
        with writer_lock(d):
            check_no_other_build(d, f.pending)
            gallery_info, keep_chips, current = _commit(d, f.old_cfg, f.start, cfg, tuned, train_emb, f.y_tr, f.rec_tr,
                                                        enrolled)
            if f.old_cfg is None:  # a new model: nothing to compare with or keep beside
                save_config(d, cfg)  # the commit point
                committed = True
                chip_store(d).sweep(keep_chips)  # chips of killed enrolments
                remove_unused(d, keep={ckpt_name, gallery_name})
            else:  # built beside the model in use, which stays as it is until the switch
                write_candidate(d, Candidate(cfg, base_of(f.old_cfg), [[r.content_hash, list(r.box), r.person] for r in current],
                                             sorted(keep_chips), "finetune", report={"gallery": gallery_info}))
                committed = True
        lease.close()
        timings["commit_s"] = time.perf_counter() - t
        return _compare_and_report(d, f, tr, opts, cfg, gallery_info, fpir_info, timings)
    except BaseException:
        if not committed:  # failed before the commit: the old model stands
            (d / ckpt_name).unlink(missing_ok=True)
            (d / fpir_name).unlink(missing_ok=True)
            shutil.rmtree(d / gallery_name, ignore_errors=True)
        raise
    finally:
        lease.close()


def _save_checkpoint(path: Path, f: _Faces, tr: _Trained, opts: FinetuneOptions) -> str:
    """Write checkpoint-<token>.pt (what training changed); returns the finetuned model id."""
    s = opts.settings
    tail_state = {}
    if opts.backbone == "facenet":
        tail_state = {f"{b}.{k}": v.detach().clone() for b in tr.unfreeze
                      for k, v in getattr(f.base.module, b).state_dict().items()}
    best = tr.result.history[tr.result.best_epoch - 1]
    sha = save_checkpoint(path, {
        "backbone": opts.backbone, "weights": f.weights, "base_model_id": f.base.model_id, "base_seed": s.seed,
        "unfreeze": list(tr.unfreeze), "tail": tail_state,
        "head": {"weight": tr.head.weight.detach().clone(), "scale": tr.head.scale.detach().clone()},
        "classes": f.classes, "settings": s.to_dict(),
        "metrics": {"best_epoch": tr.result.best_epoch, **best.to_dict()},
    })
    return finetuned_model_id(f.base.model_id, sha)


def _new_config(f: _Faces, opts: FinetuneOptions, model_id: str, ckpt_name: str, gallery_name: str,
                fpir_table: str | None) -> ModelConfig:
    """The finetuned model's model.json: the starting model's settings where they still apply."""
    old_cfg = f.old_cfg
    same_backbone = old_cfg is not None and old_cfg.backbone == opts.backbone
    return ModelConfig(backbone=opts.backbone, weights=f.weights, model_id=model_id, dim=f.base.dim,
                       threshold=old_cfg.threshold if same_backbone else DEFAULT_THRESHOLDS[opts.backbone],
                       knn_k=old_cfg.knn_k if old_cfg else ModelConfig.knn_k,
                       detector=dict(old_cfg.detector) if old_cfg else asdict(f.detector.settings),
                       checkpoint=ckpt_name, gallery=gallery_name,
                       keep_versions=old_cfg.keep_versions if old_cfg else ModelConfig.keep_versions,
                       target_fpir=old_cfg.target_fpir if old_cfg is not None else DEFAULT_TARGET_FPIR,
                       fpir_table=fpir_table)


def _compare_and_report(d: Path, f: _Faces, tr: _Trained, opts: FinetuneOptions, cfg: ModelConfig, gallery_info: dict,
                        fpir_info: dict, timings: dict) -> FinetuneReport:
    """After the commit: compare a candidate with the model in use, maybe switch, score on val, write the report."""
    old_cfg, gallery_name = f.old_cfg, cfg.gallery
    comparison, switched, switch_info, held_back = None, old_cfg is None, None, None
    if old_cfg is not None:
        t = time.perf_counter()
        comparison = side_by_side(d, old_cfg, cfg, (f.val_paths, f.y_va, f"the val faces ({f.source})"),
                                  unknown_dir=opts.unknown_dir, weights_dir=opts.weights_dir, cache=f.pipeline.cache)
        timings["compare_s"] = time.perf_counter() - t
        network_changed = (old_cfg.backbone, old_cfg.weights) != (cfg.backbone, cfg.weights)
        wanted = opts.switch if opts.switch is not None else not network_changed
        held_back = _hold_back(d, comparison, opts.switch) if wanted else None
        if wanted and held_back is None:
            switch_info = {k: v for k, v in switch(d, weights_dir=opts.weights_dir, expect=gallery_name).items()
                           if k != "comparison"}
            gallery_name, switched = switch_info["gallery"], True
    gal = open_gallery(d / gallery_name, model_id=cfg.model_id)
    gallery_info = {"faces": len(gal), "people": gal.people(), **gallery_info}
    scores = closed_set_scores(gal, tr.classifier, tr.net.embed_features(tr.f_va[:, 0]), f.y_va, k=cfg.knn_k,
                               model_id=cfg.model_id)
    gal.close()
    files = [str(p) for p in plot_curves(tr.result.history, d, tr.result.best_epoch)]
    s = opts.settings
    report = FinetuneReport(str(d), opts.backbone, cfg.model_id, f.classes, len(f.y_tr), len(f.y_va), f.source, f.skipped,
                            {**tr.result.to_dict(), "unfreeze": list(tr.unfreeze), "settings": s.to_dict(),
                             "trunk_cache": {"hits": tr.cache.hits, "misses": tr.cache.misses}},
                            scores.to_dict(), gallery_info, {k: round(v, 3) for k, v in timings.items()}, files,
                            comparison, fpir_info, switched, switch_info, [list(m) for m in f.matched],
                            held_back)
    # report.json describes the model in use: a candidate's waits beside it until the switch
    write_json_atomic(d / (REPORT_FILE if switched else CANDIDATE_REPORT), report.to_dict())
    return report


def _deployed(side: dict) -> str:
    return "combined" if side["classifier"] else "knn"


def _hold_back(d: Path, cmp: dict, asked: bool | None) -> str | None:
    """Why the build must not replace the model in use on its own (None: it may). A build that names none of
    the held-out faces right never switches; one that scores worse than the model in use on the same faces
    switches only when asked (--switch). Without figures (the scoring failed: cmp["error"]) nothing is held back."""
    if "current" not in cmp or "candidate" not in cmp:
        return None
    cur, new = cmp["current"], cmp["candidate"]
    new_acc = new["closed_set"].get(_deployed(new), {}).get("accuracy")
    if new["closed_set"]["n"] and not new_acc:
        return f"it names none of the {new['closed_set']['n']} held-out faces right"
    if asked or not cmp.get("same_faces"):
        return None
    cur_acc = cur["closed_set"].get(_deployed(cur), {}).get("accuracy", 0.0)
    co, no = cur["open_set"], new["open_set"]
    if new_acc is not None and new_acc < cur_acc:
        why = f"it names {new_acc:.3f} of the held-out faces right against {cur_acc:.3f} for the model in use"
    elif co and no and no["dir"] < co["dir"] and no["fpir"] >= co["fpir"]:
        why = (f"at its threshold it names fewer known faces (DIR {no['dir']:.3f} against {co['dir']:.3f}) and no "
               f"fewer strangers (FPIR {no['fpir']:.3f} against {co['fpir']:.3f})")
    else:
        return None
    return f"{why}; switch anyway with: finetune.py --model {d} --switch"


def _calibrate_fpir(path: Path, opts: FinetuneOptions, base, tuned, model_id: str, pipeline) -> dict:
    """Write the FPIR table of the finetuned embeddings to `path`; says what was done. sface finetuning trains
    the head alone, so the base model's shipped table is copied; else the cohort is embedded with the new
    network, and without a cohort the model keeps its fixed threshold."""
    if tuned is base:
        table = shipped_table(base.model_id)
        if table is not None:
            table.model_id = model_id
            table.cohort = {**table.cohort, "copied_from": base.model_id}
            table.save(path)
            return {"calibrated": True, "how": f"the embeddings are {base.model_id}'s: its shipped table"}
    root = Path(opts.cohort) if opts.cohort else default_cohort_dir()
    try:
        table, _ = calibrate(pipeline, root, progress=opts.progress)
    except (FileNotFoundError, ValueError) as exc:
        log.warning("no FPIR calibration for the finetuned model (%s): it uses its fixed threshold", exc)
        return {"calibrated": False, "how": f"{exc}; the model uses its fixed threshold"}
    table.model_id = model_id
    table.save(path)
    return {"calibrated": True, "how": f"cohort {root}: {table.cohort}"}


def _commit(d: Path, old_cfg, start: _Start | None, cfg: ModelConfig, embedder, train_emb, train_labels, train_records,
            enrolled: dict[int, np.ndarray]):
    """Under the writer lock: build `cfg.gallery` with what changed since the start carried over. Returns
    (report info, its chips, the records of the model in use)."""
    current = _current_faces(d, old_cfg, cfg)
    # A training folder's name -> the person's name in the gallery: people renamed since the last
    # finetune (model.json's class names) or while this one ran keep their new name; people
    # removed while it ran stay removed, training photos included (the carry-over's fate).
    gallery_people = {r.person for r in current}
    at_start = {label: _class_name(old_cfg, label, gallery_people) for label in set(train_labels)}
    built = [(FaceRecord(at_start[label], src, digest, box, chip=chip_id(chip) if chip else ""), v)
             for v, label, (src, digest, box, chip) in zip(train_emb, train_labels, train_records)]
    # the gallery in use is the one the finetune started from, so its ids name the same faces
    carried = carry_over(d, [(r.id, r.person) for r in start.records] if start else [], built,
                         [(r.id, r) for r in current], enrolled)
    names = {label: carried.fate.get(name, name) for label, name in at_start.items()}
    new_chips = [rec[3] for label, rec in zip(train_labels, train_records) if names[label] is not None and rec[3] is not None]
    build_gallery(d, cfg.gallery, cfg.model_id, embedder, carried.records, carried.vectors, put_chips=new_chips,
                  failure=lambda n: f"{d}: {n} faces enrolled while this finetune ran cannot be "
                                    "re-embedded; nothing was changed")
    # The new classifier's classes are the training folders' names; identify shows the gallery's.
    cfg.class_names = {label: name for label, name in names.items() if name is not None and name != label}
    info = {"enrolled_before": len(current),
            "reembedded_enrolled": carried.reused + carried.new, "enrolled_during_finetune": carried.new,
            "removed_during_finetune": carried.removed(), "renamed_during_finetune": carried.renamed(),
            "covered_by_training_photos": len(current) - carried.reused - carried.new, "dropped_enrolled": []}
    return info, {r.chip for r in carried.records if r.chip}, current


def _class_name(old_cfg: ModelConfig | None, label: str, gallery_people: set[str]) -> str:
    """Training folder `label`'s name in the gallery: model.json's class name unless that name has no face now."""
    name = old_cfg.class_names.get(label, label) if old_cfg is not None else label
    if old_cfg is not None and name != label and name not in gallery_people:
        name = label  # renamed, then the new name was removed or renamed again: back to the folder's
    return name


def _current_faces(d: Path, old_cfg: ModelConfig | None, cfg: ModelConfig) -> list:
    """The records of the model in use, checked to be the one the finetune started from (else ModelError);
    settings changed meanwhile go into `cfg`."""
    if cfg.checkpoint and not (d / cfg.checkpoint).is_file():
        # deleted as unused by another finetune's commit that ran meanwhile
        raise ModelError(f"{d}: {cfg.checkpoint} was removed while this finetune ran (another finetune finished "
                         "meanwhile); nothing was changed by this one, run it again")
    if old_cfg is None:
        if (d / MODEL_FILE).exists():
            raise ModelError(f"{d}: a model was created here while this finetune ran; nothing was changed, run it again")
        return []
    now = load_config(d) if (d / MODEL_FILE).exists() else None
    if now is None or (now.gallery, now.checkpoint, now.model_id) != (old_cfg.gallery, old_cfg.checkpoint, old_cfg.model_id):
        raise ModelError(f"{d}: the model was replaced while this finetune ran (another finetune or an import "
                         "switched model.json); nothing was changed by this one, run it again")
    with open_gallery(d / old_cfg.gallery, model_id=old_cfg.model_id) as g:
        current = g.records()
    if now.backbone == cfg.backbone:  # e.g. set meanwhile by evaluate.py --set-threshold
        cfg.threshold, cfg.knn_k = now.threshold, now.knn_k
    return current

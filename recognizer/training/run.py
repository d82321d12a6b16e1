"""Finetune a model directory on a folder of labelled photos (the library behind `finetune.py`).

Steps: split train/val -> detect and crop the largest face of each photo (crop cache) -> run the
frozen trunk once per face and view (trunk cache) -> train the tail and a cosine head (early
stopping on val loss) -> save `checkpoint.pt` -> rebuild the gallery with the finetuned network
-> calibrate the FPIR table of the new embeddings on the stranger cohort -> write `model.json`
-> score classifier, kNN and combined on val -> curves and `report.json`.

Rerunning on an existing model directory retrains from the base weights and rebuilds the gallery:
the training faces plus every enrolled face, re-embedded with the new network from its chip
(`recognizer.chips`: stored at enrolment, so uploads, imports and moved photo folders are all
kept). Faces enrolled before chips existed get theirs from their photos first; one whose photo is
gone keeps its old vector when the embedding network does not change (sface), and otherwise the
finetune stops before changing anything and names it.

Changes made while it trains are not lost: the commit takes the model's writer lock, reads the
gallery again, and carries over what changed since the start (faces enrolled are embedded from
their chips, people removed are left out, training faces included, people renamed keep their new
name, in the classifier's answers too). It refuses to replace a model it did not start from: a
model.json switched meanwhile (another finetune), or a directory that holds faces but no
model.json, or a model.json naming a gallery that is not there (restored from a backup).
The new checkpoint and gallery are written beside the old ones as a candidate
(`recognizer.training.candidate`), scored side by side with the model in use on the val faces
(closed and open set), and model.json is switched to them in one atomic rename: by default for a
retrain on the same backbone and weights, only when asked (`switch`) for another backbone or
weights. A crash leaves the old model, or the new one, or the old one with the candidate pending.
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

from recognizer.cache import CropCache
from facecore.atomic import write_json_atomic
from facecore.errors import ModelError
from recognizer.config import (
    CHECKPOINT_NAME,
    CHIPS_DIR,
    DEFAULT_THRESHOLDS,
    GALLERY_DIR,
    GALLERY_NAME,
    MODEL_FILE,
    ModelConfig,
    chip_store,
    config_stamp,
    ensure_private_dir,
    load_config,
    save_config,
    writer_lock,
)
from recognizer.fpir import DEFAULT_TARGET_FPIR
from recognizer.training.loop import TrainSettings
from recognizer.training.candidate import (
    CANDIDATE_REPORT, Candidate, base_of, check_none_lost, side_by_side, switch, write_candidate,
)
from recognizer.training.versions import build_lease, remove_unused

log = logging.getLogger(__name__)

REPORT_FILE = "report.json"


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
    # Switch the model to the result? None: yes for the same backbone and weights (a retrain), no
    # for another backbone or weights (a migration: built beside, compared, switched on request).
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
    # the model in use's closed-set and open-set figures beside this one's, on the same val faces
    # (recognizer.evaluation.compare); None for a new model
    comparison: dict | None = None
    fpir: dict = field(default_factory=dict)  # how the FPIR table of the new embeddings was made
    switched: bool = True  # False: built as a candidate beside the model in use (finetune.py --switch switches)
    switch: dict | None = None  # what the switch carried over since the build (recognizer.training.candidate)

    def to_dict(self) -> dict:
        return {**self.scores, "model_dir": self.model_dir, "backbone": self.backbone, "model_id": self.model_id,
                "classes": self.classes, "n_train": self.n_train, "n_val": self.n_val, "split": self.split,
                "skipped": self.skipped, "training": self.training, "gallery": self.gallery,
                "timings": self.timings, "files": self.files, "comparison": self.comparison,
                "fpir_table": self.fpir, "switched": self.switched, "switch": self.switch}


def _largest_crops(pipeline, paths: list[str], labels: list[str], progress: bool, desc: str, with_chips: bool = False):
    from tqdm import tqdm

    from facecore.errors import ImageError

    from recognizer.chips import make_chip
    from recognizer.image import load_photo

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


def finetune(data_dir: str | Path, model_dir: str | Path, opts: FinetuneOptions) -> FinetuneReport:
    from gallery import open_gallery
    from recognizer.training.checkpoint import finetuned_model_id, save_checkpoint
    from recognizer.training.curves import plot_curves
    from recognizer.training.dataset import load_split
    from recognizer.detection.mtcnn import Detector
    from recognizer.embedding.backbones import FacenetEmbedder, default_weights, make_embedder
    from recognizer.training.head import CosineClassifier, class_means, make_head
    from recognizer.pipeline import FacePipeline
    from recognizer.training.loop import train
    from recognizer.training.trunk import SplitNet, TrunkCache, parse_unfreeze

    timings: dict[str, float] = {}
    t = time.perf_counter()
    d = Path(model_dir)
    old_cfg = starting_point(d)
    ensure_private_dir(d)
    s = opts.settings
    split = load_split(data_dir, d, seed=s.seed)
    if old_cfg is not None and (d / old_cfg.gallery).exists():
        # A training folder "Madonna" beside an enrolled "madonna" would become two people who
        # print alike: refused before any training, like the same name given to enroll.py.
        from facecore.names import refuse_lookalikes
        from gallery import open_gallery

        with open_gallery(d / old_cfg.gallery) as old:
            refuse_lookalikes(sorted(set(split.train.labels)), old.people())

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
    x_tr, y_tr, rec_tr, skipped = _largest_crops(pipeline, split.train.paths, split.train.labels, opts.progress, "train photos",
                                                 with_chips=True)
    x_va, y_va, rec_va, skipped_va = _largest_crops(pipeline, split.val.paths, split.val.labels, opts.progress, "val photos")
    skipped += skipped_va
    timings["detect_s"] = time.perf_counter() - t

    classes = sorted(set(y_tr))
    if len(classes) < 2:
        raise ValueError(f"{data_dir}: faces of at least two people are needed to train a classifier")
    unseen = sorted(set(y_va) - set(classes))
    if unseen:
        log.warning("val people with no training face are left out of validation: %s", unseen)
    keep_va = [i for i, y in enumerate(y_va) if y in classes]
    x_va, y_va, val_paths = x_va[keep_va], [y_va[i] for i in keep_va], [rec_va[i][0] for i in keep_va]
    yi_tr = np.array([classes.index(y) for y in y_tr])
    yi_va = np.array([classes.index(y) for y in y_va])

    t = time.perf_counter()
    unfreeze = parse_unfreeze(opts.unfreeze) if opts.backbone == "facenet" else ()
    net = SplitNet.facenet(base, unfreeze) if opts.backbone == "facenet" else SplitNet.sface(base)
    cache = TrunkCache(net, opts.trunk_cache_dir)
    f_tr = cache.features(x_tr, progress=opts.progress)
    f_va = cache.features(x_va, progress=opts.progress)
    timings["trunk_s"] = time.perf_counter() - t

    t = time.perf_counter()
    head = make_head(base.dim, len(classes), init=class_means(net.embed_features(f_tr[:, 0]), yi_tr, len(classes)))
    result = train(net.tail, head, f_tr, yi_tr, f_va, yi_va, s, progress=opts.progress)
    timings["train_s"] = time.perf_counter() - t
    classifier = CosineClassifier.from_head(classes, head.weight.detach().numpy(), float(head.scale.detach()))

    tail_state = {}
    if opts.backbone == "facenet":
        tail_state = {f"{b}.{k}": v.detach().clone() for b in unfreeze for k, v in getattr(base.module, b).state_dict().items()}
    best = result.history[result.best_epoch - 1]
    # The new checkpoint and gallery go beside the ones in use, under fresh names; model.json is
    # switched to them in one atomic rename, so a crash or a failure before that leaves the old
    # model whole, and one after it the new model whole.
    token = secrets.token_hex(6)
    ckpt_name, gallery_name, fpir_name = f"checkpoint-{token}.pt", f"{GALLERY_DIR}-{token}", f"fpir-{token}.json"
    committed = False
    lease = ExitStack()  # until the commit names them, another commit must not delete them as unused
    lease.enter_context(build_lease(d, token))
    try:
        sha = save_checkpoint(d / ckpt_name, {
            "backbone": opts.backbone, "weights": weights, "base_model_id": base.model_id, "base_seed": s.seed,
            "unfreeze": list(unfreeze), "tail": tail_state,
            "head": {"weight": head.weight.detach().clone(), "scale": head.scale.detach().clone()},
            "classes": classes, "settings": s.to_dict(),
            "metrics": {"best_epoch": result.best_epoch, **best.to_dict()},
        })
        model_id = finetuned_model_id(base.model_id, sha)

        t = time.perf_counter()
        if opts.backbone == "facenet":
            tuned = FacenetEmbedder(weights, module=base.module, model_id=model_id, batch_size=base.batch_size)
        else:
            tuned = base
        train_emb = net.embed_features(f_tr[:, 0])
        enrolled = _embed_enrolled(start, tuned, reuse_vectors, opts.progress) if start else {}
        timings["gallery_s"] = time.perf_counter() - t

        t = time.perf_counter()
        fpir_info = _calibrate_fpir(d / fpir_name, opts, base, tuned, model_id, FacePipeline(detector, tuned, pipeline.cache))
        timings["fpir_s"] = time.perf_counter() - t

        same_backbone = old_cfg is not None and old_cfg.backbone == opts.backbone
        cfg = ModelConfig(
            backbone=opts.backbone, weights=weights, model_id=model_id, dim=base.dim,
            threshold=old_cfg.threshold if same_backbone else DEFAULT_THRESHOLDS[opts.backbone],
            knn_k=old_cfg.knn_k if old_cfg else ModelConfig.knn_k,
            detector=dict(old_cfg.detector) if old_cfg else asdict(detector.settings),
            checkpoint=ckpt_name,
            gallery=gallery_name,
            keep_versions=old_cfg.keep_versions if old_cfg else ModelConfig.keep_versions,
            target_fpir=old_cfg.target_fpir if old_cfg is not None else DEFAULT_TARGET_FPIR,
            fpir_table=fpir_name if fpir_info["calibrated"] else None,
        )
        t = time.perf_counter()
        with writer_lock(d):
            gallery_info, keep_chips, current = _commit(d, old_cfg, start, cfg, tuned, train_emb, y_tr, rec_tr, enrolled)
            if old_cfg is None:  # a new model: nothing to compare with or keep beside
                save_config(d, cfg)  # the commit point
                committed = True
                chip_store(d).sweep(keep_chips)  # chips of killed enrolments
                remove_unused(d, keep={ckpt_name, gallery_name})
            else:  # built beside the model in use, which stays as it is until the switch
                write_candidate(d, Candidate(cfg, base_of(old_cfg), [[r.content_hash, list(r.box), r.person] for r in current],
                                             sorted(keep_chips), "finetune", report={"gallery": gallery_info}))
                committed = True
        lease.close()
        timings["commit_s"] = time.perf_counter() - t
        comparison, switched, switch_info = None, old_cfg is None, None
        if old_cfg is not None:
            t = time.perf_counter()
            comparison = side_by_side(d, old_cfg, cfg, (val_paths, y_va, f"the val faces ({split.source})"),
                                      unknown_dir=opts.unknown_dir, weights_dir=opts.weights_dir, cache=pipeline.cache)
            timings["compare_s"] = time.perf_counter() - t
            network_changed = (old_cfg.backbone, old_cfg.weights) != (cfg.backbone, cfg.weights)
            if opts.switch if opts.switch is not None else not network_changed:
                switch_info = {k: v for k, v in switch(d, weights_dir=opts.weights_dir).items() if k != "comparison"}
                gallery_name, switched = switch_info["gallery"], True
        gal = open_gallery(d / gallery_name, model_id=model_id)
        gallery_info = {"faces": len(gal), "people": gal.people(), **gallery_info}

        from recognizer.evaluation.closed_set import closed_set_scores

        scores = closed_set_scores(gal, classifier, net.embed_features(f_va[:, 0]), y_va, k=cfg.knn_k, model_id=model_id)
        gal.close()
        files = [str(p) for p in plot_curves(result.history, d)]
        report = FinetuneReport(
            str(d), opts.backbone, model_id, classes, len(y_tr), len(y_va), split.source, skipped,
            {**result.to_dict(), "unfreeze": list(unfreeze), "settings": s.to_dict(),
             "trunk_cache": {"hits": cache.hits, "misses": cache.misses}},
            scores.to_dict(), gallery_info, {k: round(v, 3) for k, v in timings.items()}, files, comparison, fpir_info,
            switched, switch_info,
        )
        # report.json describes the model in use: a candidate's waits beside it until the switch
        write_json_atomic(d / (REPORT_FILE if switched else CANDIDATE_REPORT), report.to_dict())
        return report
    except BaseException:
        if not committed:  # failed before the commit: the old model stands
            (d / ckpt_name).unlink(missing_ok=True)
            (d / fpir_name).unlink(missing_ok=True)
            shutil.rmtree(d / gallery_name, ignore_errors=True)
        raise
    finally:
        lease.close()


def _calibrate_fpir(path: Path, opts: FinetuneOptions, base, tuned, model_id: str, pipeline) -> dict:
    """Write the FPIR table of the finetuned embeddings to `path`; says what was done.

    sface finetuning trains the head alone, so its embeddings are the base model's: the shipped
    table of the base model is the right one, copied under the new model id. Otherwise the
    calibration part of the cohort is embedded with the new network. Without a cohort the model
    keeps its fixed threshold, and the report says so.
    """
    from recognizer.evaluation.calibration import calibrate
    from recognizer.evaluation.cohort import default_cohort_dir
    from recognizer.fpir import shipped_table

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


def starting_point(d: Path) -> ModelConfig | None:
    """The model a finetune of `d` starts from (None: a new model), or ModelError when `d` holds
    faces that model.json does not account for: replacing them would lose them."""
    if (d / MODEL_FILE).exists():
        cfg = load_config(d)
        if not (d / cfg.gallery).is_dir():
            others = sorted(p.name for p in d.iterdir() if GALLERY_NAME.fullmatch(p.name))
            raise ModelError(f"{d / MODEL_FILE} names gallery {cfg.gallery!r}, which is not there"
                             + (f" (the directory holds {', '.join(others)}): model.json is stale, e.g. restored "
                                "from an older backup; restore the model.json that goes with them" if others else "")
                             + "; nothing was changed")
        return cfg
    if d.exists():
        held = sorted(p.name for p in d.iterdir() if GALLERY_NAME.fullmatch(p.name) or p.name == CHIPS_DIR
                      or CHECKPOINT_NAME.fullmatch(p.name))
        if held:
            raise ModelError(f"{d}: {MODEL_FILE} is missing but the directory holds {', '.join(held)}; finetuning "
                             "would start a new model and delete those faces. Restore model.json (or finetune "
                             "into a new directory); nothing was changed")
    return None


@dataclass
class _Start:
    dir: Path
    cfg: ModelConfig
    stamp: tuple | None
    records: list  # FaceRecords of the gallery when the finetune started
    vectors: dict  # id -> old vector
    no_chip: list  # records whose chip could not be made from their photo


def _snapshot(d: Path, cfg: ModelConfig, detector) -> _Start:
    from gallery import open_gallery

    from recognizer.chips import backfill_chips

    with writer_lock(d):
        stamp = config_stamp(d)
        with open_gallery(d / cfg.gallery, model_id=cfg.model_id) as g:
            failed = backfill_chips(d, g, detector, chip_store(d))
            records = g.records()
            ids, vecs = g.vectors()
    return _Start(d, cfg, stamp, records, dict(zip(ids.tolist(), vecs)), failed)


def _embed_enrolled(start: _Start, embedder, reuse_vectors: bool, progress: bool) -> dict[int, np.ndarray]:
    """id -> the new network's vector of every enrolled face, from its chip (or its old vector
    when the network is unchanged and the chip is missing). Faces that can be neither stop the
    finetune here, before anything is changed."""
    from recognizer.chips import embed_chips

    vectors = embed_chips(start.records, embedder, chip_store(start.dir), progress=progress, desc="enrolled faces",
                          no_chip="enrolled before chips were kept, and its photo is gone or changed",
                          spare=(lambda r: start.vectors[r.id]) if reuse_vectors else None,
                          failure=lambda n: f"{n} enrolled faces cannot be re-embedded with the new network, and "
                                            "finetuning would drop them; nothing was changed. Put their photos back "
                                            "where they were enrolled from (or remove those people with enroll.py "
                                            "--remove) and run again")
    return {r.id: v for r, v in zip(start.records, vectors)}


def _commit(d: Path, old_cfg, start: _Start | None, cfg: ModelConfig, embedder, train_emb, train_labels, train_records,
            enrolled: dict[int, np.ndarray]):
    """Under the writer lock: carry over what changed since the start and build the new gallery
    (`cfg.gallery`), for the caller to switch model.json to. Returns (report info, its chips)."""
    from gallery import FaceRecord, create_gallery, open_gallery

    from recognizer.chips import embed_chips

    if cfg.checkpoint and not (d / cfg.checkpoint).is_file():
        # deleted as unused by another finetune's commit that ran meanwhile
        raise ModelError(f"{d}: {cfg.checkpoint} was removed while this finetune ran (another finetune finished "
                         "meanwhile); nothing was changed by this one, run it again")
    if old_cfg is not None:
        now = load_config(d) if (d / MODEL_FILE).exists() else None
        if now is None or (now.gallery, now.checkpoint, now.model_id) != (old_cfg.gallery, old_cfg.checkpoint, old_cfg.model_id):
            raise ModelError(f"{d}: the model was replaced while this finetune ran (another finetune or an import "
                             "switched model.json); nothing was changed by this one, run it again")
        with open_gallery(d / old_cfg.gallery, model_id=old_cfg.model_id) as g:
            current = g.records()
        if now.backbone == cfg.backbone:  # e.g. set meanwhile by evaluate.py --set-threshold
            cfg.threshold, cfg.knn_k = now.threshold, now.knn_k
    elif (d / MODEL_FILE).exists():
        raise ModelError(f"{d}: a model was created here while this finetune ran; nothing was changed, run it again")
    else:
        current = []
    before = {r.id: r for r in (start.records if start else [])}
    now_by_id = {r.id: r for r in current}
    # People gone since the start: renamed (their faces live on under one new name) or removed.
    fate: dict[str, str | None] = {}
    for p in {r.person for r in before.values()} - {r.person for r in current}:
        survivors = {now_by_id[i].person for i, r in before.items() if r.person == p and i in now_by_id}
        fate[p] = survivors.pop() if len(survivors) == 1 else None
    # A training folder's name -> the person's name in the gallery: people renamed since the last
    # finetune (model.json's class names) or while this one ran keep their new name; people
    # removed while it ran (None) stay removed, training photos included.
    gallery_people = {r.person for r in current}
    names: dict[str, str | None] = {}
    for label in set(train_labels):
        name = old_cfg.class_names.get(label, label) if old_cfg is not None else label
        if old_cfg is not None and name != label and name not in gallery_people:
            name = label  # renamed, then the new name was removed or renamed again: back to the folder's
        names[label] = fate.get(name, name)
    store = chip_store(d)
    vectors, records, train_chips = [], [], []
    for v, label, (src, digest, box, chip) in zip(train_emb, train_labels, train_records):
        name = names[label]
        if name is None:  # removed while this finetune ran: removal wins over the training folder
            continue
        vectors.append(v)
        records.append(FaceRecord(name, src, digest, box, chip=_sha(chip) if chip else ""))
        train_chips.append(chip)
    covered = {(r.person, r.content_hash) for r in records}
    kept = added = 0
    new_ids = []
    for r in current:
        if (r.person, r.content_hash) in covered:
            continue  # a training photo of the same person
        if r.id in enrolled:
            vectors.append(enrolled[r.id])
            kept += 1
        else:
            new_ids.append(len(vectors))
            vectors.append(None)
            added += 1
        records.append(FaceRecord(r.person, r.source, r.content_hash, tuple(r.box), added_at=r.added_at, chip=r.chip))
    if new_ids:  # enrolled while this finetune ran: embedded from their chips now
        new = embed_chips([records[i] for i in new_ids], embedder, store,
                          failure=lambda n: f"{d}: {n} faces enrolled while this finetune ran cannot be "
                                            "re-embedded; nothing was changed")
        for i, v in zip(new_ids, new):
            vectors[i] = v
    check_none_lost(d, current, records)
    for chip in train_chips:
        if chip is not None:
            store.put(chip)
    new_path = d / cfg.gallery
    gal = create_gallery(new_path, model_id=cfg.model_id, dim=embedder.dim)
    if records:
        gal.add(np.stack(vectors).astype(np.float32), records, model_id=cfg.model_id, allow_similar=True)
    gal.close()
    # The new classifier's classes are the training folders' names; identify shows the gallery's.
    cfg.class_names = {label: name for label, name in names.items() if name is not None and name != label}
    info = {"enrolled_before": len(current),
            "reembedded_enrolled": kept + added, "enrolled_during_finetune": added,
            "removed_during_finetune": sorted(p for p, q in fate.items() if q is None),
            "renamed_during_finetune": {p: q for p, q in fate.items() if q is not None},
            "covered_by_training_photos": len(current) - kept - added, "dropped_enrolled": []}
    return info, {r.chip for r in records if r.chip}, current


def _sha(chip: bytes) -> str:
    from gallery.chip_store import chip_id

    return chip_id(chip)

"""Finetune a model directory on a folder of labelled photos (the library behind `finetune.py`).

Steps: split train/val -> detect and crop the largest face of each photo (crop cache) -> run the
frozen trunk once per face and view (trunk cache) -> train the tail and a cosine head (early
stopping on val loss) -> save `checkpoint.pt` -> rebuild the gallery with the finetuned network
-> write `model.json` -> score classifier, kNN and combined on val -> curves and `report.json`.

Rerunning on an existing model directory retrains from the base weights and rebuilds the gallery:
the training faces, plus every face enrolled since (e.g. with enroll.py) that is not one of the
training photos, re-embedded from its source photo with the new network. An enrolled face whose
photo is gone or has changed (its sha256 differs) cannot be re-embedded and is dropped; the
report lists it. `model.json` is written last, so until then the directory keeps its old model id
and a crash midway makes the next open fail loudly (model id mismatch) rather than mix models.
"""
from __future__ import annotations

import logging
import secrets
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from recognizer.cache import CropCache
from gallery.atomic import write_json_atomic
from recognizer.config import (
    CHECKPOINT_NAME,
    DEFAULT_THRESHOLDS,
    GALLERY_DIR,
    GALLERY_NAME,
    ModelConfig,
    ensure_private_dir,
    load_config,
    save_config,
)
from recognizer.training.loop import TrainSettings

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

    def to_dict(self) -> dict:
        return {**self.scores, "model_dir": self.model_dir, "backbone": self.backbone, "model_id": self.model_id,
                "classes": self.classes, "n_train": self.n_train, "n_val": self.n_val, "split": self.split,
                "skipped": self.skipped, "training": self.training, "gallery": self.gallery,
                "timings": self.timings, "files": self.files}


def _largest_crops(pipeline, paths: list[str], labels: list[str], progress: bool, desc: str):
    from tqdm import tqdm

    from recognizer.errors import ImageError

    crops, kept_labels, records, skipped = [], [], [], []
    for path, label in tqdm(list(zip(paths, labels)), desc=desc, unit="photo", disable=not progress, dynamic_ncols=True):
        try:
            res = pipeline.detect_and_crop(path)
        except ImageError as exc:
            skipped.append({"file": path, "reason": exc.reason})
            continue
        if not res.faces:
            skipped.append({"file": path, "reason": "no face"})
            continue
        crops.append(res.crops[0])
        kept_labels.append(label)
        records.append((path, res.content_hash, tuple(float(v) for v in res.faces[0].box)))
    size = pipeline.embedder.crop_size
    return (np.stack(crops) if crops else np.zeros((0, size, size, 3), np.uint8)), kept_labels, records, skipped


def finetune(data_dir: str | Path, model_dir: str | Path, opts: FinetuneOptions) -> FinetuneReport:
    from recognizer.training.checkpoint import finetuned_model_id, save_checkpoint
    from recognizer.training.curves import plot_curves
    from recognizer.training.dataset import load_split
    from recognizer.detection.mtcnn import Detector
    from recognizer.embedding.backbones import FacenetEmbedder, make_embedder
    from recognizer.training.head import CosineClassifier, class_means, make_head
    from recognizer.pipeline import FacePipeline
    from recognizer.training.loop import train
    from recognizer.training.trunk import SplitNet, TrunkCache, parse_unfreeze

    timings: dict[str, float] = {}
    t = time.perf_counter()
    d = Path(model_dir)
    old_cfg = load_config(d) if (d / "model.json").exists() else None
    ensure_private_dir(d)
    s = opts.settings
    split = load_split(data_dir, d, seed=s.seed)
    if old_cfg is not None and (d / old_cfg.gallery).exists():
        # A training folder "Madonna" beside an enrolled "madonna" would become two people who
        # print alike: refused before any training, like the same name given to enroll.py.
        from gallery import open_gallery, refuse_lookalikes

        with open_gallery(d / old_cfg.gallery) as old:
            refuse_lookalikes(sorted(set(split.train.labels)), old.people())

    weights = (opts.weights or "vggface2") if opts.backbone == "facenet" else None
    base = make_embedder(opts.backbone, weights, opts.weights_dir, seed=s.seed)
    detector = Detector(old_cfg.detector_settings()) if old_cfg else Detector()
    pipeline = FacePipeline(detector, base, opts.crop_cache or CropCache())
    x_tr, y_tr, rec_tr, skipped = _largest_crops(pipeline, split.train.paths, split.train.labels, opts.progress, "train photos")
    x_va, y_va, _, skipped_va = _largest_crops(pipeline, split.val.paths, split.val.labels, opts.progress, "val photos")
    skipped += skipped_va
    timings["detect_s"] = time.perf_counter() - t

    classes = sorted(set(y_tr))
    if len(classes) < 2:
        raise ValueError(f"{data_dir}: faces of at least two people are needed to train a classifier")
    unseen = sorted(set(y_va) - set(classes))
    if unseen:
        log.warning("val people with no training face are left out of validation: %s", unseen)
    keep_va = [i for i, y in enumerate(y_va) if y in classes]
    x_va, y_va = x_va[keep_va], [y_va[i] for i in keep_va]
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
    ckpt_name, gallery_name = f"checkpoint-{token}.pt", f"{GALLERY_DIR}-{token}"
    committed = False
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
        gal, gallery_info = _rebuild_gallery(d, gallery_name, old_cfg, model_id, tuned, FacePipeline(detector, tuned, pipeline.cache),
                                             train_emb, y_tr, rec_tr, opts.progress)
        timings["gallery_s"] = time.perf_counter() - t

        same_backbone = old_cfg is not None and old_cfg.backbone == opts.backbone
        cfg = ModelConfig(
            backbone=opts.backbone, weights=weights, model_id=model_id, dim=base.dim,
            threshold=old_cfg.threshold if same_backbone else DEFAULT_THRESHOLDS[opts.backbone],
            knn_k=old_cfg.knn_k if old_cfg else ModelConfig.knn_k,
            detector=dict(old_cfg.detector) if old_cfg else asdict(detector.settings),
            checkpoint=ckpt_name,
            gallery=gallery_name,
        )
        save_config(d, cfg)  # the commit point
        committed = True
        _remove_unused(d, keep={ckpt_name, gallery_name})

        from recognizer.evaluation.closed_set import closed_set_scores

        scores = closed_set_scores(gal, classifier, net.embed_features(f_va[:, 0]), y_va, k=cfg.knn_k, model_id=model_id)
        gal.close()
        files = [str(p) for p in plot_curves(result.history, d)]
        report = FinetuneReport(
            str(d), opts.backbone, model_id, classes, len(y_tr), len(y_va), split.source, skipped,
            {**result.to_dict(), "unfreeze": list(unfreeze), "settings": s.to_dict(),
             "trunk_cache": {"hits": cache.hits, "misses": cache.misses}},
            scores.to_dict(), gallery_info, {k: round(v, 3) for k, v in timings.items()}, files,
        )
        write_json_atomic(d / REPORT_FILE, report.to_dict())
        return report
    except BaseException:
        if not committed:  # failed before the commit: the old model stands
            (d / ckpt_name).unlink(missing_ok=True)
            shutil.rmtree(d / gallery_name, ignore_errors=True)
        raise


def _remove_unused(d: Path, keep: set[str]) -> None:
    """Delete the galleries and checkpoints model.json no longer names: the replaced ones, and any
    left by an interrupted run (they hold face embeddings, so they must not linger)."""
    for p in d.iterdir():
        if p.name in keep:
            continue
        if GALLERY_NAME.fullmatch(p.name) or p.name in (f"{GALLERY_DIR}.new", f"{GALLERY_DIR}.old"):
            shutil.rmtree(p, ignore_errors=True)
        elif CHECKPOINT_NAME.fullmatch(p.name):
            p.unlink(missing_ok=True)


def _rebuild_gallery(d: Path, gallery_name: str, old_cfg, model_id: str, embedder, pipeline, train_emb, train_labels,
                     train_records, progress: bool):
    """A new gallery beside the one in use; model.json is switched to it once it is complete."""
    from gallery import FaceRecord, create_gallery, open_gallery

    new_path = d / gallery_name
    gal = create_gallery(new_path, model_id=model_id, dim=embedder.dim)
    records = [FaceRecord(label, src, digest, box) for label, (src, digest, box) in zip(train_labels, train_records)]
    gal.add(train_emb, records, model_id=model_id)

    kept, dropped = 0, []
    train_hashes = {digest for _, digest, _ in train_records}
    if old_cfg is not None and (d / old_cfg.gallery).exists():
        with open_gallery(d / old_cfg.gallery) as old:
            extra = [r for r in old.records() if r.content_hash not in train_hashes]
        vectors, new_records = [], []
        for r in extra:
            vec, why = _reembed(pipeline, r)
            if vec is None:
                dropped.append({"person": r.person, "source": r.source, "reason": why})
                log.warning("dropping enrolled face of %s from %s: %s", r.person, r.source, why)
                continue
            vectors.append(vec)
            new_records.append(FaceRecord(r.person, r.source, r.content_hash, tuple(r.box)))
        if vectors:
            # Names the old gallery holds were accepted when enrolled (look-alikes only when allowed).
            gal.add(np.stack(vectors), new_records, model_id=model_id, allow_similar=True)
        kept = len(vectors)
    gal.close()
    gal = open_gallery(new_path, model_id=model_id)
    return gal, {"faces": len(gal), "people": gal.people(), "reembedded_enrolled": kept, "dropped_enrolled": dropped}


def _reembed(pipeline, record) -> tuple[np.ndarray | None, str]:
    """The new network's embedding of an enrolled face, found again in its source photo by its box."""
    from recognizer.errors import ImageError

    try:
        res = pipeline.detect_and_crop(record.source)
    except ImageError as exc:
        return None, exc.reason
    if res.content_hash != record.content_hash:
        return None, "the photo changed since it was enrolled"
    if not res.faces:
        return None, "no face found any more"
    import torch
    from torchvision.ops import box_iou

    ious = box_iou(torch.tensor([record.box], dtype=torch.float32),
                   torch.tensor(np.array([f.box for f in res.faces]), dtype=torch.float32))[0]
    best = int(torch.argmax(ious))
    if float(ious[best]) < 0.5:
        return None, "the enrolled face was not found again in the photo"
    return pipeline.embedder.embed(res.crops[best : best + 1])[0], ""


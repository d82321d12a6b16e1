"""Bulk identify / enrol on Ray: millions of photos over the cores of one machine or a cluster.

    summary = identify_bulk("model", ["photos/", "more.txt"], "out.jsonl", address="auto")

A Ray Data pipeline reads the photo paths (folders, or list files of one path per line),
and a pool of Ray actors, one CPU each, decodes, detects, crops and embeds them in batches
(each actor holds its own detector and embedder, loaded once). The driver, this process,
receives the results in input order, decides the names against the gallery (or adds the
faces to it), and appends one JSON line per photo to the output file: exactly what
`identify.py --json` prints for that photo, errors included.

Resumable: the output file is a prefix of the inputs, in order. A rerun reads it, checks
that its photos are the first inputs, drops a last line cut short by a kill, and sends only
the remaining photos to Ray, so nothing is done twice and nothing is lost. Bulk enrolment
adds faces before it writes their lines; a run killed in between finds them enrolled on the
rerun (status "duplicate"), never twice.

`address`: None or "auto" joins the Ray cluster this machine belongs to (RAY_ADDRESS, or one
started with `ray start`) and otherwise starts a local one; "local" always starts a local one;
anything else is a cluster address ("ray://head:10001" or "HOST:6379"). On a cluster, every
node needs this package and the model directory at the same path (a shared file system), and
the photo paths must be readable on every node.
"""
from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from recognizer.errors import FaceToolError
from recognizer.image import expand_inputs

log = logging.getLogger(__name__)

LIST_SUFFIXES = (".txt", ".lst")
SYNC_EVERY = 256  # lines between fsyncs of the output file (a kill loses none; a power cut at most these)


class BulkError(FaceToolError):
    """The inputs or the output file of a bulk run are not usable."""


@dataclass
class BulkSummary:
    out: str
    total: int  # photos in the inputs
    done_before: int  # already in the output file when the run started (skipped)
    processed: int  # analysed in this run
    failed: int  # of those, unreadable photos


def read_inputs(inputs: Sequence[str | os.PathLike]) -> list[str]:
    """Photo paths, in order: folders expanded to their images (recursively, sorted), list
    files (.txt, .lst) read as one path per line (blank lines and # comments skipped)."""
    out: list[str] = []
    for item in map(Path, inputs):
        if item.suffix.lower() in LIST_SUFFIXES and item.is_file():
            with open(item, encoding="utf-8") as fh:
                out.extend(line.strip() for line in fh if line.strip() and not line.lstrip().startswith("#"))
        else:
            out.extend(str(p) for p in expand_inputs([item], recursive=True))
    return out


def _resume(out: Path, paths: list[str], key: str) -> int:
    """How many photos the output file already holds; cuts a last line left incomplete by a kill.
    BulkError if the file was written for other inputs."""
    if not out.exists():
        return 0
    data = out.read_bytes()
    end = data.rfind(b"\n") + 1
    if end < len(data):
        log.warning("%s: dropping an incomplete last line (the previous run was interrupted)", out)
        with open(out, "r+b") as fh:
            fh.truncate(end)
            os.fsync(fh.fileno())
    lines = data[:end].splitlines()
    for n, line in enumerate(lines):
        try:
            got = json.loads(line)[key]
        except (ValueError, KeyError, TypeError):
            raise BulkError(f"{out}: line {n + 1} is not a result line of this tool; choose another output file") from None
        if n >= len(paths) or got != paths[n]:
            raise BulkError(f"{out}: line {n + 1} is for {got!r}, but input {n + 1} is "
                            f"{paths[n] if n < len(paths) else 'missing'!r}: this file was written for other "
                            "inputs; choose another output file")
    return len(lines)


def _encode(res) -> dict[str, Any]:
    """A PhotoResult as plain values for the trip from a Ray actor (floats round-trip exactly)."""
    return {"source": res.source, "hash": res.content_hash, "size": list(res.size), "error": res.error,
            "faces": [{"box": [float(v) for v in f.box], "score": float(f.score),
                       "landmarks": np.asarray(f.landmarks, np.float64).tolist()} for f in res.faces],
            "emb": np.asarray(res.embeddings, np.float64).tolist()}


def _decode(d: dict[str, Any], dim: int):
    from recognizer.detection.mtcnn import Face
    from recognizer.pipeline import PhotoResult

    faces = [Face(np.array(f["box"], np.float32), f["score"], np.array(f["landmarks"], np.float32)) for f in d["faces"]]
    emb = np.array(d["emb"], np.float32).reshape(len(faces), dim)
    return PhotoResult(d["source"], d["hash"], tuple(d["size"]), faces, embeddings=emb, error=d["error"])


class _Analyzer:
    """Ray actor: decode, detect, crop and embed a batch of photos with the model's own networks."""

    def __init__(self, model_dir: str, weights_dir: str | None, use_cache: bool) -> None:
        from recognizer.cache import CropCache
        from recognizer.detection.mtcnn import Detector
        from recognizer.config import load_config
        from recognizer.pipeline import FacePipeline
        from recognizer.recognizer import open_embedder

        cfg = load_config(model_dir)
        embedder, _ = open_embedder(Path(model_dir), cfg, weights_dir)
        self.pipeline = FacePipeline(Detector(cfg.detector_settings()), embedder, CropCache() if use_cache else None)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        # One thread: Ray runs one actor per CPU, so the parallelism is across actors.
        results = self.pipeline.analyze_many(batch["path"].tolist(), workers=1)
        return {"i": batch["i"], "result": np.array([json.dumps(_encode(r)) for r in results], dtype=object)}


def init_ray(address: str | None, workers: int | None) -> int:
    """Connect to (or start) Ray; returns how many analysing actors to run."""
    import ray

    if not ray.is_initialized():
        kw: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False, "logging_level": logging.WARNING}
        if address == "local":
            ray.init(address="local", num_cpus=workers, **kw)
        elif address in (None, "auto"):
            ray.init(num_cpus=workers if not os.environ.get("RAY_ADDRESS") else None, **kw)
        else:
            ray.init(address=address, **kw)
    cpus = int(ray.cluster_resources().get("CPU", 1))
    return max(1, min(workers or cpus, cpus))


def analyze_bulk(model_dir: str | Path, paths: list[str], *, address: str | None = "auto", workers: int | None = None,
                 weights_dir: str | Path | None = None, use_cache: bool = True, batch_size: int = 4,
                 dim: int) -> Iterator[tuple[int, Any]]:
    """(input index, PhotoResult) for each path, in input order, analysed by Ray actors."""
    import ray.data

    actors = init_ray(address, workers)
    # Ray Data logs every dataset's start and end at INFO on stderr; this tool's own progress
    # bar and summary say the same.
    logging.getLogger("ray.data").setLevel(logging.WARNING)
    ctx = ray.data.DataContext.get_current()
    ctx.execution_options.preserve_order = True
    ctx.enable_progress_bars = False
    ds = ray.data.from_items([{"i": i, "path": p} for i, p in enumerate(paths)],
                             override_num_blocks=max(1, min(len(paths) // batch_size, 4 * actors * 8)))
    ds = ds.map_batches(_Analyzer, fn_constructor_kwargs={"model_dir": str(Path(model_dir).resolve()),
                                                          "weights_dir": None if weights_dir is None else str(weights_dir),
                                                          "use_cache": use_cache},
                        batch_size=batch_size, num_cpus=1, compute=ray.data.ActorPoolStrategy(size=actors),
                        batch_format="numpy")
    for row in ds.iter_rows():
        yield int(row["i"]), _decode(json.loads(row["result"]), dim)


class _Appender:
    """Appends JSON lines to the output file: flushed per line (a killed process loses none),
    fsynced every SYNC_EVERY lines and at the end."""

    def __init__(self, out: Path) -> None:
        out.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)  # results name people: owner only
        self.fh = os.fdopen(fd, "a", encoding="utf-8")
        self.pending = 0

    def write(self, obj: dict[str, Any]) -> None:
        self.fh.write(json.dumps(obj, ensure_ascii=False) + "\n")
        self.fh.flush()
        self.pending += 1
        if self.pending >= SYNC_EVERY:
            os.fsync(self.fh.fileno())
            self.pending = 0

    def close(self) -> None:
        self.fh.flush()
        os.fsync(self.fh.fileno())
        self.fh.close()


def _progress(total: int, initial: int, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, unit="photo", disable=not enabled, dynamic_ncols=True)


def identify_bulk(model_dir: str | Path, inputs: Sequence[str | os.PathLike], out: str | Path, *,
                  address: str | None = "auto", workers: int | None = None, threshold: float | None = None,
                  weights_dir: str | Path | None = None, gallery: str | None = None, use_cache: bool = True,
                  progress: bool = False) -> BulkSummary:
    """Identify every photo of `inputs` into the JSON Lines file `out` (see the module doc)."""
    from recognizer.recognizer import Recognizer

    out = Path(out)
    paths = read_inputs(inputs)
    if not paths:
        raise BulkError(f"no image files found in {', '.join(map(str, inputs))}")
    done = _resume(out, paths, "photo")
    rec = Recognizer.open(model_dir, weights_dir=weights_dir, gallery=gallery)
    failed = processed = 0
    todo = paths[done:]
    if todo:
        writer, bar = _Appender(out), _progress(len(paths), done, progress)
        try:
            for _, res in analyze_bulk(model_dir, todo, address=address, workers=workers, weights_dir=weights_dir,
                                       use_cache=use_cache, dim=rec.config.dim):
                ident = rec.decide(res, threshold)
                writer.write(ident.to_dict())
                processed += 1
                failed += ident.error is not None
                bar.update(1)
        finally:
            writer.close()
            bar.close()
            rec.gallery.close()
    else:
        rec.gallery.close()
    log.info("%s: %d photos, %d already done, %d analysed (%d unreadable)", out, len(paths), done, processed, failed)
    return BulkSummary(str(out), len(paths), done, processed, failed)


def enroll_bulk(model_dir: str | Path, name: str, inputs: Sequence[str | os.PathLike], out: str | Path, *,
                address: str | None = "auto", workers: int | None = None, weights_dir: str | Path | None = None,
                gallery: str | None = None, use_cache: bool = True, chunk: int = 256, progress: bool = False,
                backbone: str | None = None) -> BulkSummary:
    """Enrol `name` from every photo of `inputs` (one face per photo, the largest), writing one
    line per photo ({"file", "status", "detail"}, as `enroll.py --json` reports them) to `out`.
    Faces are added to the gallery `chunk` photos at a time, each chunk before its lines."""
    from gallery import validate_name
    from recognizer.recognizer import Recognizer

    name = validate_name(name)
    out = Path(out)
    paths = read_inputs(inputs)
    if not paths:
        raise BulkError(f"no image files found in {', '.join(map(str, inputs))}")
    done = _resume(out, paths, "file")
    rec = Recognizer.open(model_dir, backbone=backbone, weights_dir=weights_dir, create=True, gallery=gallery)
    processed = failed = 0
    todo = paths[done:]
    writer, bar = _Appender(out), _progress(len(paths), done, progress)

    def flush(results: list) -> None:
        nonlocal failed
        report = rec.enroll_results(name, results)
        for outcome in report.files:
            writer.write(outcome.to_dict())
            failed += outcome.status == "unreadable"
        bar.update(len(results))

    try:
        if todo:
            results: list = []
            for _, res in analyze_bulk(model_dir, todo, address=address, workers=workers, weights_dir=weights_dir,
                                       use_cache=use_cache, dim=rec.config.dim):
                results.append(res)
                processed += 1
                if len(results) >= chunk:
                    flush(results)
                    results = []
            flush(results)
    finally:
        writer.close()
        bar.close()
        rec.gallery.close()
    return BulkSummary(str(out), len(paths), done, processed, failed)

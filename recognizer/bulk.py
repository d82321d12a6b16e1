"""Bulk identify / enrol on Ray: millions of photos over the cores of one machine or a cluster.

    with recognizer.open("model") as model:
        summary = model.identify_bulk(["photos/", "more.txt"], "out.jsonl", address="auto")

Ray actors (one CPU each, with their own detector and embedder) decode, detect, crop and embed the photos
(folders, or list files of one path per line); this process receives the results in input order, decides
the names (or enrols the faces with their chips) and appends one JSON line per photo: what
`identify.py --json` prints for it, errors included.

Resumable: the output file is a prefix of the inputs. A rerun checks that, drops a last line cut short by a
kill and sends only the rest to Ray. Enrolment adds faces before writing their lines, so a run killed in
between finds them enrolled on the rerun ("duplicate"), never twice.

`address`: None or "auto" joins this machine's Ray cluster (RAY_ADDRESS or `ray start`), else starts a local
one; "local" always starts one; else a cluster address ("ray://head:10001", "HOST:6379"), whose nodes all
need this package, the model directory at the same path and the photo paths readable.
"""
from __future__ import annotations

import base64
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
from tqdm import tqdm

from facecore.errors import FaceToolError, ImageError
from facecore.extras import require_extra
from facecore.names import refuse_lookalikes, validate_name
from recognizer.cache import CropCache
from recognizer.chips import chip_of
from recognizer.modeldir.config import load_config
from recognizer.detection.boxes import Face
from recognizer.detection.mtcnn import Detector
from recognizer.image import expand_inputs
from recognizer.pipeline import FacePipeline, PhotoResult
from recognizer.quality import FaceQuality
from recognizer.view import open_embedder

__all__ = ["BulkError", "BulkSummary", "analyze_bulk", "enroll_bulk", "identify_bulk", "init_ray", "read_inputs"]

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
    """Photo paths in order: folders' images (recursive, sorted), list files (.txt, .lst) one path per line
    (blank lines and # comments skipped)."""
    out: list[str] = []
    for item in map(Path, inputs):
        if item.suffix.lower() in LIST_SUFFIXES and item.is_file():
            with open(item, encoding="utf-8") as fh:
                out.extend(line.strip() for line in fh if line.strip() and not line.lstrip().startswith("#"))
        else:
            out.extend(str(p) for p in expand_inputs([item], recursive=True))
    return out


def _resume(out: Path, paths: list[str], key: str) -> int:
    """How many photos `out` already holds, cutting a last line left incomplete; BulkError if for other inputs."""
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


def _inputs(inputs: Sequence[str | os.PathLike], out: Path, key: str) -> tuple[list[str], int]:
    """The photo paths of `inputs` (BulkError when none) and how many of them `out` already holds."""
    paths = read_inputs(inputs)
    if not paths:
        raise BulkError(f"no image files found in {', '.join(map(str, inputs))}")
    return paths, _resume(out, paths, key)


def _encode(res, chip: bytes | str | None) -> dict[str, Any]:
    """A PhotoResult and its chip (or why none) as plain values for the trip from an actor (floats exact)."""
    return {"source": res.source, "hash": res.content_hash, "size": list(res.size), "error": res.error,
            "faces": [{"box": [float(v) for v in f.box], "score": float(f.score),
                       "landmarks": np.asarray(f.landmarks, np.float64).tolist()} for f in res.faces],
            "emb": np.asarray(res.embeddings, np.float64).tolist(),
            "quality": [{"score": q.score, "reasons": q.reasons, "signals": q.signals} for q in res.quality],
            "chip": base64.b64encode(chip).decode("ascii") if isinstance(chip, bytes) else None,
            "chip_error": chip if isinstance(chip, str) else None}


def _decode(d: dict[str, Any], dim: int):
    """(PhotoResult, chip bytes or the reason there is none, or None)."""
    faces = [Face(np.array(f["box"], np.float32), f["score"], np.array(f["landmarks"], np.float32)) for f in d["faces"]]
    emb = np.array(d["emb"], np.float32).reshape(len(faces), dim)
    chip = base64.b64decode(d["chip"]) if d.get("chip") else d.get("chip_error")
    quality = [FaceQuality(q["score"], list(q["reasons"]), dict(q["signals"])) for q in d.get("quality", [])]
    return PhotoResult(d["source"], d["hash"], tuple(d["size"]), faces, embeddings=emb, error=d["error"], quality=quality), chip


class _Analyzer:
    """Ray actor: decode, detect, crop and embed a batch of photos with the model's own networks."""

    def __init__(self, model_dir: str, weights_dir: str | None, cache_dir: str | None, chips: bool,
                 max_pixels: int, memory_budget: int) -> None:
        cfg = load_config(model_dir)
        embedder, _ = open_embedder(Path(model_dir), cfg, weights_dir)
        self.pipeline = FacePipeline(Detector(cfg.detector_settings()), embedder,
                                     CropCache(cache_dir) if cache_dir is not None else None)
        self.pipeline.max_pixels, self.pipeline.memory_budget = max_pixels, memory_budget
        self.chips = chips

    def _chip(self, path: str, res) -> bytes | str | None:
        """The largest face's chip, cut where the photo is (not read twice over the network), or why not."""
        if not self.chips or res.skip_reason is not None:
            return None
        try:
            return chip_of(path, res, self.pipeline.max_pixels, self.pipeline.memory_budget)
        except ImageError as exc:
            return exc.reason

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        # One thread: Ray runs one actor per CPU, so the parallelism is across actors.
        paths = batch["path"].tolist()
        results = self.pipeline.analyze_many(paths, workers=1)
        return {"i": batch["i"], "result": np.array([json.dumps(_encode(r, self._chip(p, r))) for p, r in zip(paths, results)],
                                                    dtype=object)}


def init_ray(address: str | None, workers: int | None) -> int:
    """Connect to (or start) Ray; returns how many analysing actors to run."""
    require_extra("ray", "--ray")
    import ray  # heavy (seconds to import): only bulk runs need it

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


def analyze_bulk(rec, paths: list[str], *, address: str | None = "auto", workers: int | None = None,
                 chips: bool = False, batch_size: int = 4) -> Iterator[tuple[int, Any, bytes | str | None]]:
    """(input index, PhotoResult, chip) per path in input order, analysed by Ray actors with `rec`'s networks;
    the chip (bytes, or why none) only with `chips`."""
    require_extra("ray", "--ray")
    import ray.data  # heavy (seconds to import): only bulk runs need it

    actors = init_ray(address, workers)
    # Ray Data logs every dataset's start and end at INFO on stderr; our progress bar says the same.
    logging.getLogger("ray.data").setLevel(logging.WARNING)
    ctx = ray.data.DataContext.get_current()
    ctx.execution_options.preserve_order = True
    ctx.enable_progress_bars = False
    ds = ray.data.from_items([{"i": i, "path": p} for i, p in enumerate(paths)],
                             override_num_blocks=max(1, min(len(paths) // batch_size, 4 * actors * 8)))
    weights_dir = rec._weights_dir
    kw = {"model_dir": str(rec.dir.resolve()), "weights_dir": None if weights_dir is None else str(weights_dir),
          "cache_dir": None if rec.cache is None else str(rec.cache.root), "chips": chips,
          "max_pixels": rec.pipeline.max_pixels, "memory_budget": rec.pipeline.memory_budget}
    ds = ds.map_batches(_Analyzer, fn_constructor_kwargs=kw, batch_size=batch_size, num_cpus=1,
                        compute=ray.data.ActorPoolStrategy(size=actors), batch_format="numpy")
    dim = rec.config.dim
    for row in ds.iter_rows():
        res, chip = _decode(json.loads(row["result"]), dim)
        yield int(row["i"]), res, chip


class _Appender:
    """Appends JSON lines: flushed per line (a kill loses none), fsynced every SYNC_EVERY lines and at the end."""

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
    return tqdm(total=total, initial=initial, unit="photo", disable=not enabled, dynamic_ncols=True)


def identify_bulk(rec, inputs: Sequence[str | os.PathLike], out: str | Path, *, address: str | None = "auto",
                  workers: int | None = None, threshold: float | None = None, progress: bool = False) -> BulkSummary:
    """Identify every photo of `inputs` with the Recognizer `rec` into the JSON Lines file `out`."""
    out = Path(out)
    paths, done = _inputs(inputs, out, "photo")
    failed = processed = 0
    todo = paths[done:]
    if todo:
        writer, bar = _Appender(out), _progress(len(paths), done, progress)
        try:
            for _, res, _ in analyze_bulk(rec, todo, address=address, workers=workers):
                ident = rec.decide(res, threshold=threshold)
                writer.write(ident.to_dict())
                processed += 1
                failed += ident.error is not None
                bar.update(1)
        finally:
            writer.close()
            bar.close()
    log.info("%s: %d photos, %d already done, %d analysed (%d unreadable)", out, len(paths), done, processed, failed)
    return BulkSummary(str(out), len(paths), done, processed, failed)


def enroll_bulk(rec, name: str, inputs: Sequence[str | os.PathLike], out: str | Path, *, address: str | None = "auto",
                workers: int | None = None, allow_similar: bool = False, chunk: int = 256,
                progress: bool = False) -> BulkSummary:
    """Enrol `name` from every photo of `inputs` into `rec` as `Recognizer.enroll` does, writing one line per photo
    ({"file", "status", "detail"}) to `out`; faces are added `chunk` photos at a time, each chunk before its lines."""
    name = validate_name(name)
    if not allow_similar:  # before any photo is read, as enroll does
        refuse_lookalikes([name], rec.people())
    out = Path(out)
    paths, done = _inputs(inputs, out, "file")
    processed = failed = 0
    todo = paths[done:]
    writer, bar = _Appender(out), _progress(len(paths), done, progress)

    def flush(results: list) -> None:
        nonlocal failed
        report = rec.enroll_results(name, results, allow_similar=allow_similar)
        for outcome in report.files:
            writer.write(outcome.to_dict())
            failed += outcome.status == "unreadable"
        bar.update(len(results))

    try:
        if todo:
            results: list = []
            for _, res, chip in analyze_bulk(rec, todo, address=address, workers=workers, chips=True):
                results.append((res, chip))
                processed += 1
                if len(results) >= chunk:
                    flush(results)
                    results = []
            flush(results)
    finally:
        writer.close()
        bar.close()
    return BulkSummary(str(out), len(paths), done, processed, failed)

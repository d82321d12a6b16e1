"""Bulk identify / enrol on Ray: millions of photos over the cores of one machine or a cluster.

    with recognizer.open("model") as model:
        summary = model.identify_bulk(["photos/", "more.txt"], "out.jsonl", address="auto")

Ray actors (one CPU each, with their own detector and embedder) decode, detect, crop and embed the photos
(folders, or list files of one path per line); this process receives the results in input order, decides
the names (or enrols the faces with their chips) and appends one JSON line per photo: what
`identify.py --json` prints for it, errors included.

Resumable: the output file is a header line (it says the file is this tool's) and then a prefix of the inputs. A
rerun checks the whole file first (any other file is refused, untouched), then drops a last line cut short by a kill
and sends only the rest to Ray. The file is never an input nor inside an input folder (facecore.outputs). Enrolment adds faces before writing their lines, so a run killed in
between finds them enrolled on the rerun ("duplicate"), never twice.

`address`: None or "auto" joins this machine's Ray cluster (RAY_ADDRESS, or `ray start` here); "HOST:6379" (a
head's GCS, as `ray start --address` takes it) or "ray://HOST:10001" (Ray Client) joins that cluster, whose nodes
all need this package, the model directory at the same path and the photo paths readable. With no cluster to
join ("local", or "auto" with none) the photos are analysed in this process, with the plain path's threads: a
Ray cluster started for one run on one machine only adds its start-up and its own processes on the cores the
plain path keeps busy (benchmarks/bulk_speed.py); the output file is the same. A cluster with token auth (Ray's
default for `ray start --head`) is joined with this machine's token (RAY_AUTH_TOKEN, or the file
RAY_AUTH_TOKEN_PATH, default ~/.ray/auth_token) by Ray itself for "auto", and given an address only with
RAY_AUTH_MODE=token, as `ray start --address` needs it; a cluster that cannot be reached (or refuses us) is a
BulkError, raised before the output file is touched.
"""
from __future__ import annotations

import base64
import json
import logging
import os
import socket
import stat
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
from tqdm import tqdm

from facecore.atomic import atomic_write
from facecore.errors import FaceToolError, ImageError
from facecore.extras import require_extra
from facecore.names import refuse_lookalikes, validate_name
from facecore.outputs import check_not_input, special_file
from recognizer.cache import CropCache
from recognizer.chips import chip_of
from recognizer.modeldir.config import load_config
from recognizer.detection.boxes import Face
from recognizer.detection.mtcnn import Detector
from recognizer.image import expand_inputs
from recognizer.pipeline import FacePipeline, PhotoResult
from recognizer.quality import FaceQuality
from recognizer.view import open_embedder

__all__ = ["BulkError", "BulkSummary", "analyze_bulk", "cluster_to_join", "enroll_bulk", "identify_bulk", "init_ray",
           "read_inputs", "read_results"]

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
        if (special := special_file(item)) is not None:  # before any open: a FIFO's open blocks
            raise BulkError(f"{item}: {special}")
        if item.suffix.lower() in LIST_SUFFIXES and item.is_file():
            with open(item, encoding="utf-8") as fh:
                out.extend(line.strip() for line in fh if line.strip() and not line.lstrip().startswith("#"))
        else:
            out.extend(str(p) for p in expand_inputs([item], recursive=True))
    return out


def _header(key: str) -> bytes:
    """The first line of every bulk results file: it says the file is this tool's, and of which kind."""
    return (json.dumps({"facetool": "bulk-results", "format": 1, "key": key}, sort_keys=True) + "\n").encode()


def read_results(out: str | Path) -> list[dict[str, Any]]:
    """The result lines of a bulk results file (its header line left out)."""
    with open(out, encoding="utf-8") as fh:
        return [json.loads(line) for n, line in enumerate(fh) if n and line.strip()]


def _check_results(out: Path, data: bytes, paths: list[str], key: str) -> int:
    """How many complete result lines `data` (the bytes of `out`) holds; BulkError when it does not start with
    this tool's header line of this kind, or a line is no result line, or is for another input."""
    header = _header(key)
    if not data.startswith(header):
        raise BulkError(f"{out}: is not a results file of this tool (its first line is not the header "
                        f"{header.decode().strip()}); it is left as it is: choose another output file")
    end = data.rfind(b"\n") + 1
    lines = data[len(header):end].splitlines()
    for n, line in enumerate(lines):
        try:
            got = json.loads(line)[key]
        except (ValueError, KeyError, TypeError):
            raise BulkError(f"{out}: line {n + 2} is not a result line of this tool; it is left as it is: "
                            "choose another output file") from None
        if n >= len(paths) or got != paths[n]:
            raise BulkError(f"{out}: line {n + 2} is for {got!r}, but input {n + 1} is "
                            f"{paths[n] if n < len(paths) else 'missing'!r}: this file was written for other "
                            "inputs; it is left as it is: choose another output file")
    return len(lines)


def _resume(out: Path, paths: list[str], key: str) -> int:
    """How many photos `out` already holds (0: none there yet). The whole file is checked first (the tool's
    header, then result lines for these inputs, in order); only then is a last line left incomplete by a
    kill cut off. BulkError, with `out` untouched, for any other file."""
    if not os.path.lexists(out):
        return 0
    if not stat.S_ISREG(os.stat(out).st_mode):
        raise BulkError(f"{out}: is not a regular file; choose another output file")
    data = out.read_bytes()
    done = _check_results(out, data, paths, key)
    end = data.rfind(b"\n") + 1
    if end < len(data):
        log.warning("%s: dropping an incomplete last line (the previous run was interrupted)", out)
        with open(out, "r+b") as fh:
            if fh.read() != data:  # changed since it was checked: cut nothing
                raise BulkError(f"{out}: changed while it was being read; run again")
            fh.truncate(end)
            os.fsync(fh.fileno())
    return done


def _inputs(inputs: Sequence[str | os.PathLike], out: Path, key: str) -> tuple[list[str], int]:
    """The photo paths of `inputs` (BulkError when none) and how many of them `out` already holds; `out`
    is never an input nor inside an input folder (facecore.outputs)."""
    paths = read_inputs(inputs)
    if not paths:
        raise BulkError(f"no image files found in {', '.join(map(str, inputs))}")
    name = out.name.casefold()
    check_not_input(out, [*inputs, *(p for p in paths if Path(p).name.casefold() == name)], what="results file")
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


def _chip(path: str, res, pipeline: FacePipeline) -> bytes | str | None:
    """The largest face's chip, cut where the photo is (not read twice over the network), or why not."""
    if res.skip_reason is not None:
        return None
    try:
        return chip_of(path, res, pipeline.max_pixels, pipeline.memory_budget)
    except ImageError as exc:
        return exc.reason


class _Analyzer:
    """Ray actor: decode, detect, crop and embed batches of photos with the model's own networks."""

    def __init__(self, model_dir: str, weights_dir: str | None, cache_dir: str | None, chips: bool,
                 max_pixels: int, memory_budget: int) -> None:
        cfg = load_config(model_dir)
        embedder, _ = open_embedder(Path(model_dir), cfg, weights_dir)
        self.pipeline = FacePipeline(Detector(cfg.detector_settings()), embedder,
                                     CropCache(cache_dir) if cache_dir is not None else None)
        self.pipeline.max_pixels, self.pipeline.memory_budget = max_pixels, memory_budget
        self.chips = chips

    def analyze(self, paths: list[str]) -> list[str]:
        """One JSON string per path (`_encode`)."""
        # One thread: Ray runs one actor per CPU, so the parallelism is across actors.
        results = self.pipeline.analyze_many(paths, workers=1)
        return [json.dumps(_encode(r, _chip(p, r, self.pipeline) if self.chips else None)) for p, r in zip(paths, results)]


def cluster_to_join(address: str | None) -> str | None:
    """The Ray cluster `address` names: None where a run would start a Ray cluster of its own on this machine
    ("local"; None or "auto" with no RAY_ADDRESS and no `ray start` on this machine), else the address."""
    if address == "local":
        return None
    if address not in (None, "auto"):
        return address
    require_extra("ray", "--ray")
    from ray._private.services import canonicalize_bootstrap_address  # heavy: only bulk runs need it

    return canonicalize_bootstrap_address(None)


def _reachable(address: str, timeout: float = 5.0) -> None:
    """BulkError unless something listens at `address` ("HOST:PORT" or "ray://HOST:PORT"): Ray itself retries an
    unreachable address for minutes, one log line per try."""
    host, sep, port = address.removeprefix("ray://").rpartition(":")
    if not sep or not port.isdigit():
        raise BulkError(f"--ray {address!r}: give 'auto', 'local', HOST:PORT (the head's GCS port, 6379 by default) "
                        "or ray://HOST:PORT (the head's Ray Client port, 10001 by default)")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()
    except OSError as exc:
        raise BulkError(f"cannot reach the Ray cluster at {address}: {exc.strerror or exc} "
                        "(is `ray start --head` running there, and the port open?)") from None


def _connect(ray, given: str | None, address: str, kw: dict[str, Any]) -> None:
    """ray.init on the existing cluster at `address` (`given` as the user gave it); BulkError (one line) when the
    cluster cannot be reached or refuses us."""
    _reachable(address)
    try:
        # "auto": Ray itself uses this machine's token (RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH, ~/.ray/auth_token) for
        # the cluster it finds here; for an address, as for `ray start --address`, only with RAY_AUTH_MODE=token
        # (a driver sending a token to a cluster without auth has its actors die).
        ray.init(address="auto" if given in (None, "auto") else address, **kw)
    except (ConnectionError, TimeoutError, ray.exceptions.AuthenticationError, ray.exceptions.RaySystemError) as exc:
        ray.shutdown()
        reason = " ".join(str(exc).split(". Ensure")[0].split())
        hint = ("" if os.environ.get("RAY_AUTH_MODE") == "token" else
                "; if the cluster uses token auth, set RAY_AUTH_MODE=token and its token (RAY_AUTH_TOKEN, or the file "
                "~/.ray/auth_token copied from the head)")
        raise BulkError(f"cannot join the Ray cluster at {address}: {reason or type(exc).__name__}{hint}") from None


def init_ray(address: str | None, workers: int | None) -> int:
    """Connect to (or start) Ray; returns how many analysing actors to run."""
    require_extra("ray", "--ray")
    import ray  # heavy (seconds to import): only bulk runs need it

    joining = not ray.is_initialized()
    if joining:
        kw: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False, "logging_level": logging.WARNING}
        target = cluster_to_join(address)
        if target is None:
            ray.init(address="local", num_cpus=workers, **kw)
        else:
            _connect(ray, address, target, kw)
    cpus = int(ray.cluster_resources().get("CPU", 1))
    actors = max(1, min(workers or cpus, cpus))
    if joining:
        log.info("Ray: %d node(s), %d CPU(s); %d analysing actor(s)", sum(n["Alive"] for n in ray.nodes()), cpus,
                 actors)
    return actors


def _analyze_here(rec, paths: list[str], workers: int | None, chips: bool) -> Iterator[tuple[int, Any, bytes | str | None]]:
    """`analyze_bulk` in this process, with the plain path's threads (`Recognizer.identify_many`'s pipeline)."""
    rec.refresh()
    pipeline = rec.pipeline
    for i, (path, res) in enumerate(zip(paths, pipeline.analyze_many(paths, workers=workers))):
        yield i, res, _chip(path, res, pipeline) if chips else None


def analyze_bulk(rec, paths: list[str], *, address: str | None = "auto", workers: int | None = None,
                 chips: bool = False, batch_size: int = 4) -> Iterator[tuple[int, Any, bytes | str | None]]:
    """(input index, PhotoResult, chip) per path in input order, analysed by Ray actors with `rec`'s networks;
    the chip (bytes, or why none) only with `chips`."""
    require_extra("ray", "--ray")
    import ray  # heavy (seconds to import): only bulk runs need it

    n_actors = max(1, min(init_ray(address, workers), -(-len(paths) // batch_size)))
    weights_dir = rec._weights_dir
    kw = {"model_dir": str(rec.dir.resolve()), "weights_dir": None if weights_dir is None else str(weights_dir),
          "cache_dir": None if rec.cache is None else str(rec.cache.root), "chips": chips,
          "max_pixels": rec.pipeline.max_pixels, "memory_budget": rec.pipeline.memory_budget}
    # Plain actors (one CPU each), fed batches in turn, two in flight per actor, results taken in input order;
    # unlike Ray Data (AttributeError: no core_worker) this also runs through Ray Client (ray://).
    actors = [ray.remote(num_cpus=1)(_Analyzer).remote(**kw) for _ in range(n_actors)]
    starts = iter(range(0, len(paths), batch_size))
    pending: deque = deque()

    def submit() -> None:
        start = next(starts, None)
        if start is not None:
            batch = paths[start:start + batch_size]
            pending.append((start, actors[(start // batch_size) % n_actors].analyze.remote(batch)))

    dim = rec.config.dim
    try:
        for _ in range(2 * n_actors):
            submit()
        while pending:
            start, ref = pending.popleft()
            encoded = ray.get(ref)
            submit()
            for k, item in enumerate(encoded):
                res, chip = _decode(json.loads(item), dim)
                yield start + k, res, chip
    finally:
        for actor in actors:
            ray.kill(actor)


def _analyze(rec, paths: list[str], *, address: str | None, workers: int | None, chips: bool,
             local_ray: bool) -> Iterator[tuple[int, Any, bytes | str | None]]:
    """`analyze_bulk` on the Ray cluster `address` names, connected now (before any output is written); where
    that would be a cluster started for this run alone (and not `local_ray`), in this process instead."""
    if not local_ray and cluster_to_join(address) is None:
        log.warning("no Ray cluster to join (RAY_ADDRESS, `ray start` or an address): analysing in this process; "
                    "a Ray cluster started for one run on this machine only adds its start-up, its processes "
                    "sharing the cores (benchmarks/bulk_speed.py)")
        return _analyze_here(rec, paths, workers, chips)
    init_ray(address, workers)
    return analyze_bulk(rec, paths, address=address, workers=workers, chips=chips)


class _Appender:
    """Appends JSON lines: flushed per line (a kill loses none), fsynced every SYNC_EVERY lines and at the end.
    A new file starts with the header line (`_header`), written atomically, so the file is never without it."""

    def __init__(self, out: Path, key: str) -> None:
        out.parent.mkdir(parents=True, exist_ok=True)
        if not os.path.lexists(out):
            with atomic_write(out, sync_dir=True) as fh:  # results name people: owner only
                fh.write(_header(key))
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
                  workers: int | None = None, threshold: float | None = None, progress: bool = False,
                  local_ray: bool = False) -> BulkSummary:
    """Identify every photo of `inputs` with the Recognizer `rec` into the JSON Lines file `out`. Without a Ray
    cluster to join (see `address` above), in this process unless `local_ray` (start one anyway: benchmarks)."""
    out = Path(out)
    paths, done = _inputs(inputs, out, "photo")
    failed = processed = 0
    todo = paths[done:]
    if todo:
        analysed = _analyze(rec, todo, address=address, workers=workers, chips=False, local_ray=local_ray)
        writer, bar = _Appender(out, "photo"), _progress(len(paths), done, progress)
        try:
            for _, res, _ in analysed:
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
                progress: bool = False, local_ray: bool = False) -> BulkSummary:
    """Enrol `name` from every photo of `inputs` into `rec` as `Recognizer.enroll` does, writing one line per photo
    ({"file", "status", "detail"}) to `out`; faces are added `chunk` photos at a time, each chunk before its lines."""
    name = validate_name(name)
    if not allow_similar:  # before any photo is read, as enroll does
        refuse_lookalikes([name], rec.people())
    out = Path(out)
    paths, done = _inputs(inputs, out, "file")
    processed = failed = 0
    todo = paths[done:]
    analysed = _analyze(rec, todo, address=address, workers=workers, chips=True, local_ray=local_ray) if todo else None
    writer, bar = _Appender(out, "file"), _progress(len(paths), done, progress)

    def flush(results: list) -> None:
        nonlocal failed
        report = rec.enroll_results(name, results, allow_similar=allow_similar)
        for outcome in report.files:
            writer.write(outcome.to_dict())
            failed += outcome.status == "unreadable"
        bar.update(len(results))

    try:
        if analysed is not None:
            results: list = []
            for _, res, chip in analysed:
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

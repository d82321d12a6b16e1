"""Photo -> faces -> crops -> embeddings, for one photo or a stream of many.

Faces of many photos are embedded together in batches (several times faster per face); for a stream of
photos, detection runs in worker threads ahead of the embedding (`FacePipeline.analyze_many`).
"""
from __future__ import annotations

import logging
import os
from collections import deque
from dataclasses import dataclass, field
from typing import Iterable, Iterator

import numpy as np

from recognizer.cache import CropCache
from recognizer.detection.boxes import Face
from recognizer.detection.mtcnn import Detector
from recognizer.embedding.backbones import Embedder
from facecore.errors import ImageError
from recognizer.quality import FaceQuality, assess_faces
from recognizer.image import DEFAULT_MAX_PIXELS, DEFAULT_MEMORY_BUDGET, ImageSource, Photo, decode, load_photo, read_bytes, sha256_bytes

__all__ = ["FacePipeline", "PhotoResult"]

log = logging.getLogger(__name__)


@dataclass
class PhotoResult:
    """Faces of one photo, largest first, with their crops and embeddings (row i is face i)."""

    source: str
    content_hash: str = ""
    size: tuple[int, int] = (0, 0)
    faces: list[Face] = field(default_factory=list)
    crops: np.ndarray = field(default_factory=lambda: np.zeros((0, 0, 0, 3), np.uint8))
    embeddings: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), np.float32))
    error: str | None = None  # set instead of raising when a photo in a stream cannot be read
    quality: list[FaceQuality] = field(default_factory=list)  # per face, once embedded (empty: not assessed)

    @property
    def skip_reason(self) -> str | None:
        """Why this photo gives no face to enroll, train or evaluate on (its read error, or "no face"); None when
        it gives one (face 0, the largest)."""
        if self.error is not None:
            return self.error
        return None if self.faces else "no face"

    def to_dict(self) -> dict:
        faces = [f.to_dict() for f in self.faces]
        for d, q in zip(faces, self.quality):
            d["quality"] = q.to_dict()
        return {"photo": self.source, "size": list(self.size), "faces": faces, "error": self.error}

    def low_quality(self, i: int) -> FaceQuality | None:
        """Face i's quality when it is under the floor (None: it is not, or was not assessed)."""
        q = self.quality[i] if i < len(self.quality) else None
        return q if q is not None and q.low else None


class FacePipeline:
    """A detector, an embedder and an optional crop cache working together."""

    def __init__(self, detector: Detector, embedder: Embedder, cache: CropCache | None = None,
                 max_pixels: int = DEFAULT_MAX_PIXELS) -> None:
        self.detector = detector
        self.embedder = embedder
        self.cache = cache
        self.max_pixels = max_pixels  # larger photos are refused (ImageError) before they are decoded
        self.memory_budget = DEFAULT_MEMORY_BUDGET  # bytes one photo's decode may take (recognizer.image)
        # The engine too: torch's and ONNX Runtime's networks differ in the last float digits.
        self.crop_kind = f"{detector.settings.key()}-{detector.engine}-{embedder.name}{embedder.crop_size}"

    def detect_and_crop(self, src: ImageSource, *, threads: int | None = None) -> PhotoResult:
        """Faces and crops of one photo (no embeddings yet; `threads`: the detector's override); raises ImageError."""
        use_cache = self.cache is not None and isinstance(src, (str, os.PathLike))
        if use_cache:
            # Hashing needs the bytes but not the decode, which is most of what a hit saves.
            data = read_bytes(src)
            digest = sha256_bytes(data)
            cached = self.cache.get(digest, self.crop_kind)
            if cached is not None:
                faces, crops, size = cached
                return PhotoResult(str(src), digest, size, faces, crops)
            photo = Photo(decode(data, str(src), self.max_pixels, self.memory_budget), str(src), digest)
        else:
            photo = load_photo(src, self.max_pixels, self.memory_budget)
        faces = self.detector.detect(photo.image, threads=threads)
        crops = self._crops(photo.image, faces)
        if use_cache:
            self.cache.put(photo.content_hash, self.crop_kind, faces, crops, photo.size)
        return PhotoResult(photo.source, photo.content_hash, photo.size, faces, crops)

    def _crops(self, image, faces: list[Face]) -> np.ndarray:
        s = self.embedder.crop_size
        if not faces:
            return np.zeros((0, s, s, 3), np.uint8)
        return np.stack([self.embedder.crop(image, f) for f in faces])

    def analyze(self, src: ImageSource) -> PhotoResult:
        """Detect, crop and embed every face of one photo; raises ImageError."""
        result = self.detect_and_crop(src)
        self._embed_into(result, *self.embedder.embed_with_norms(result.crops))
        return result

    def _embed_into(self, result: PhotoResult, embeddings: np.ndarray, norms: np.ndarray) -> None:
        """Set a photo's embeddings and its faces' quality (from the crops and the vectors' raw lengths)."""
        result.embeddings = embeddings
        if result.error is None:
            result.quality = assess_faces(result.faces, result.crops, norms, self.embedder.model_id)

    def analyze_many(self, sources: Iterable[ImageSource], *, progress: bool = False, total: int | None = None,
                     workers: int | None = None) -> Iterator[PhotoResult]:
        """Results in input order; unreadable photos come back with `error` set instead of raising.
        Reading, decoding, detecting and cropping run in `workers` threads (default: one per core) while this
        thread embeds the photos before them in batches: the stages overlap, the networks and decoders free the GIL."""
        from concurrent.futures import ThreadPoolExecutor
        from tqdm import tqdm

        sources = list(sources) if total is None else sources
        workers = max(1, workers or os.cpu_count() or 1)
        bar = tqdm(total=total if total is not None else len(sources), unit="photo", disable=not progress, dynamic_ncols=True)
        window: deque = deque()
        # Enough photos in flight to keep the workers busy while a batch is embedded, few enough not to pile up.
        ahead = 2 * workers + 2
        pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="detect")
        # Photos side by side, one core each, beat each photo on every core (MTCNN's parallel steps are small).
        per_photo = 1 if workers > 1 else None

        def detected() -> Iterator[PhotoResult]:
            for src in sources:
                window.append(pool.submit(self.detect_or_error, src, per_photo))
                if len(window) >= ahead:
                    yield window.popleft().result()
            while window:
                yield window.popleft().result()

        pending: list[PhotoResult] = []
        n_crops = 0
        try:
            for res in detected():
                pending.append(res)
                n_crops += len(res.faces)
                if n_crops >= self.embedder.batch_size:
                    yield from self._flush(pending, bar)
                    pending, n_crops = [], 0
            yield from self._flush(pending, bar)
        finally:
            # A caller that stops early leaves photos queued: drop them rather than detect them.
            pool.shutdown(wait=True, cancel_futures=True)
            bar.close()

    def detect_or_error(self, src: ImageSource, threads: int | None = None) -> PhotoResult:
        """`detect_and_crop`, with an unreadable photo's reason in `error` instead of raised."""
        try:
            return self.detect_and_crop(src, threads=threads)
        except ImageError as exc:
            log.info("skipping %s", exc)
            return PhotoResult(str(src), error=exc.reason)

    def _flush(self, pending: list[PhotoResult], bar) -> Iterator[PhotoResult]:
        crops = [r.crops for r in pending if len(r.faces)]
        all_emb, all_norms = self.embedder.embed_with_norms(np.concatenate(crops) if crops else [])
        i = 0
        for r in pending:
            n = len(r.faces)
            if r.error is None:
                self._embed_into(r, all_emb[i : i + n], all_norms[i : i + n])
            else:
                r.embeddings = np.zeros((0, self.embedder.dim), np.float32)
            i += n
            bar.update(1)
            yield r

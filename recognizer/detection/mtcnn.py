"""Face detection with facenet-pytorch's MTCNN (the crops the backbones take are in `alignment`).

Large photos are detected on a downscaled copy and the boxes mapped back (a 20-megapixel photo costs about what a
2-megapixel one does); the smallest face looked for grows with the photo (a fraction of its short side), which
spares the pyramid's largest levels, where most of the first stage's work is.
"""
from __future__ import annotations

import logging
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
from PIL import Image

from recognizer.detection.boxes import Face, bbreg, generate_boxes, nms, nms_min, rerec
from recognizer.detection.networks import load_nets
from recognizer.detection.settings import DetectorSettings
from recognizer.image import ImageSource, load_image

__all__ = ["ACROSS_LEVELS_NMS", "ONET_CHUNK", "RNET_CHUNK", "Detector", "largest"]

log = logging.getLogger(__name__)

# IoU above which a first-stage candidate is dropped for a better one of another pyramid level. MTCNN's usual
# 0.7 never drops anything (levels 0.709 apart overlap by at most 0.503); 0.5 drops a quarter of the candidates
# with every face of tests/test_detection_recall.py still found; 0.4 lost some
# (figures: benchmarks/results/implementation-choices.md).
ACROSS_LEVELS_NMS = 0.5

# Candidates per RNet / ONet call. Each network call runs on one thread and a photo's candidates are always cut
# into the same chunks, so its boxes and landmarks are the same whatever the thread count and however it arrived:
# kernels may split reductions by thread count (torch's ONet Linear summed differently on 2 threads than on 1)
# and pick their blocking by batch size. Parallelism comes from running independent calls side by side.
RNET_CHUNK = 64
ONET_CHUNK = 16


@dataclass
class Detector:
    """MTCNN face detector; the networks load in the constructor, never at import.

    facenet-pytorch's three networks run as ONNX files on ONNX Runtime (networks.py), so detecting imports no
    torch (`engine="torch"` runs its torch modules instead). The pipeline around them is ours, since
    facenet-pytorch's `detect_face` spends most of its time outside the networks: here the pyramid starts from
    one downscaled copy and a stage's candidate crops are cut at once from a summed-area table (`_crop_boxes`).
    """

    settings: DetectorSettings = field(default_factory=DetectorSettings)
    device: str = "cpu"
    # Threads a lone photo's independent network calls run on; None: one per core. Speed only, never the result
    # (see RNET_CHUNK). FacePipeline.analyze_many rather detects several photos at once, one thread each.
    threads: int | None = None
    engine: str = "auto"  # "onnxruntime" ("auto" when installed) or "torch"
    _pools: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.device != "cpu":
            raise ValueError(f"device {self.device!r}: detection runs on the CPU")
        self._nets = load_nets(self.engine)
        self.engine = self._nets.engine

    def detect(self, image: ImageSource, *, threads: int | None = None) -> list[Face]:
        """Every face in the photo, largest first; [] when there is none."""
        return self.detect_many([image], threads=threads)[0]

    def detect_many(self, images: Sequence[ImageSource], *, threads: int | None = None) -> list[list[Face]]:
        """`detect` for several photos. `threads` overrides the detector's thread count for this call."""
        imgs = [im if isinstance(im, Image.Image) and im.mode == "RGB" else load_image(im) for im in images]
        return self._detect_loaded(imgs, threads or self.threads or os.cpu_count() or 1)

    def _map(self, fn, items: list, threads: int) -> list:
        """[fn(x) for x in items], on up to `threads` pooled threads."""
        if threads <= 1 or len(items) <= 1:
            return [fn(x) for x in items]
        pool = self._pools.get(threads)
        if pool is None:
            # setdefault: two threads racing to create the pool keep one of them.
            pool = self._pools.setdefault(threads, ThreadPoolExecutor(threads, thread_name_prefix="mtcnn"))
        return list(pool.map(fn, items))

    def _detect_loaded(self, imgs: list[Image.Image], threads: int) -> list[list[Face]]:
        # Photo by photo, never batched together: a photo's result must not depend on its company.
        out: list[list[Face]] = []
        for img in imgs:
            arr, inv_scale = self._prepare(img)
            out.append([] if arr is None else self._to_faces(*self._mtcnn(arr, threads), inv_scale, img.size))
        return out

    def _prepare(self, img: Image.Image) -> tuple[np.ndarray | None, float]:
        """The uint8 (h, w, 3) array detection runs on, and the factor back to photo pixels."""
        w, h = img.size
        scale = min(1.0, self.settings.max_side / max(w, h))
        small = img if scale == 1.0 else img.resize((max(1, round(w * scale)), max(1, round(h * scale))), Image.BILINEAR)
        # A photo whose short side is under min_face_size has no pyramid level at all, and one
        # under 12 pixels is below MTCNN's smallest window: nothing can be found in either.
        if min(small.size) < max(12, self.settings.min_face_size):
            return None, 1.0
        return np.array(small), 1.0 / scale

    def pyramid(self, width: int, height: int) -> list[float]:
        """The first stage's scales for a photo of this size (as detected), largest first: facenet-pytorch's
        (12 / min_face_size times powers of `factor`; the same scales keep borderline faces found as before), less
        the largest levels, whose 12-pixel window finds faces smaller than the smallest face looked for."""
        s = self.settings
        m = 12.0 / s.min_face_size
        scales, minl = [], min(width, height) * m
        while minl >= 12:
            scales.append(m)
            m *= s.factor
            minl *= s.factor
        smallest = s.smallest_face(width, height)
        # The first level kept is the last whose window (12 / scale pixels) is <= the smallest face.
        first = max([i for i, sc in enumerate(scales) if 12.0 / sc <= smallest * (1 + 1e-9)], default=0)
        return scales[first:]

    def _mtcnn(self, arr: np.ndarray, threads: int) -> tuple[np.ndarray, np.ndarray]:
        """MTCNN's three stages on one uint8 photo: boxes (n, 5) with score, points (n, 5, 2), whatever `threads`."""
        import cv2  # optional and slow to import: only where a photo is detected

        t1, t2, t3 = self.settings.thresholds
        h, w = arr.shape[:2]
        scales = self.pyramid(w, h)
        empty = (np.zeros((0, 5), np.float32), np.zeros((0, 5, 2), np.float32))
        if not scales:
            return empty
        # Stage 1 (PNet) over the pyramid. Every level is resampled from one copy at the largest
        # scale rather than from the full photo: for a big photo that copy is small.
        base = cv2.resize(arr, _level_size(w, h, scales[0]), interpolation=cv2.INTER_AREA)

        def level(sc: float) -> np.ndarray:
            size = _level_size(w, h, sc)
            lvl = base if base.shape[1::-1] == size else cv2.resize(base, size, interpolation=cv2.INTER_AREA)
            x = lvl.transpose(2, 0, 1)[None].astype(np.float32)  # NCHW
            x -= np.float32(127.5)
            x *= np.float32(0.0078125)
            reg, probs = self._nets.pnet(x)
            bx = generate_boxes(reg[0], probs[0, 1], sc, t1)
            return bx[nms(bx[:, :4], bx[:, 4], 0.5)]

        # The largest level is about half the work: listed first, the others fill the other threads.
        boxes = np.concatenate(self._map(level, scales, threads))
        boxes = boxes[nms(boxes[:, :4], boxes[:, 4], ACROSS_LEVELS_NMS)]
        if len(boxes) == 0:
            return empty
        regw, regh = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
        boxes = rerec(np.stack([boxes[:, 0] + boxes[:, 5] * regw, boxes[:, 1] + boxes[:, 6] * regh,
                                boxes[:, 2] + boxes[:, 7] * regw, boxes[:, 3] + boxes[:, 8] * regh,
                                boxes[:, 4]], axis=1))

        # Stage 2 (RNet) on 24x24 crops of the candidates.
        table = _summed_area(arr)
        x, keep = _crop_boxes(table, boxes, 24)
        boxes = boxes[keep]
        if len(boxes) == 0:
            return empty
        reg, probs = self._chunked(self._nets.rnet, x, RNET_CHUNK, threads)
        ok = probs[:, 1] > t2
        boxes = np.concatenate([boxes[ok, :4], probs[ok, 1:2]], axis=1)
        reg = reg[ok]
        pick = nms(boxes[:, :4], boxes[:, 4], 0.7)
        boxes = rerec(bbreg(boxes[pick], reg[pick]))

        # Stage 3 (ONet) on 48x48 crops: final boxes, scores and the five landmarks.
        x, keep = _crop_boxes(table, boxes, 48)
        boxes = boxes[keep]
        if len(boxes) == 0:
            return empty
        reg, pts, probs = self._chunked(self._nets.onet, x, ONET_CHUNK, threads)
        ok = probs[:, 1] > t3
        if not ok.any():
            return empty
        boxes = np.concatenate([boxes[ok, :4], probs[ok, 1:2]], axis=1)
        reg, pts = reg[ok], pts[ok]
        bw = (boxes[:, 2] - boxes[:, 0] + np.float32(1))[:, None]
        bh = (boxes[:, 3] - boxes[:, 1] + np.float32(1))[:, None]
        points = np.stack([bw * pts[:, :5] + boxes[:, 0:1] - np.float32(1), bh * pts[:, 5:] + boxes[:, 1:2] - np.float32(1)], axis=2)
        boxes = bbreg(boxes, reg)
        pick = nms_min(boxes[:, :4], boxes[:, 4], 0.7)
        return boxes[pick], points[pick]

    def _chunked(self, net, x: np.ndarray, chunk: int, threads: int) -> tuple[np.ndarray, ...]:
        """`net(x)` as the concatenation of `net` on fixed chunks of `chunk` rows."""
        parts = self._map(lambda i: net(x[i : i + chunk]), list(range(0, len(x), chunk)), threads)
        return tuple(np.concatenate(outs) for outs in zip(*parts))

    def _to_faces(self, boxes, points, inv_scale: float, size: tuple[int, int]) -> list[Face]:
        if boxes is None or len(boxes) == 0:
            return []
        probs = np.asarray(boxes, dtype=np.float32)[:, 4]
        boxes = np.asarray(boxes, dtype=np.float32)[:, :4] * inv_scale
        points = np.asarray(points, dtype=np.float32).reshape(-1, 5, 2) * inv_scale
        w, h = size
        faces = []
        for box, prob, pts in zip(boxes, probs, points):
            if not np.isfinite(prob) or prob < self.settings.score_threshold:
                continue
            box = box.copy()
            box[[0, 2]] = np.clip(box[[0, 2]], 0, w)
            box[[1, 3]] = np.clip(box[[1, 3]], 0, h)
            if box[2] - box[0] < 2 or box[3] - box[1] < 2:
                continue
            faces.append(Face(box=box, score=float(prob), landmarks=pts))
        faces.sort(key=lambda f: f.area, reverse=True)
        return faces


def _level_size(w: int, h: int, scale: float) -> tuple[int, int]:
    """(width, height) of a pyramid level, rounded as facenet-pytorch rounds it."""
    return int(w * scale + 1), int(h * scale + 1)


def _summed_area(arr: np.ndarray) -> np.ndarray:
    """A photo's summed-area table, (h + 1, w + 1, 3) float64: pixel sums are exact integers."""
    import cv2  # OpenCV is slow to import: loaded where pixels are processed

    return cv2.integral(arr, sdepth=cv2.CV_64F)


def _crop_boxes(table: np.ndarray, boxes, size: int):
    """Candidate boxes cut from a photo (`table`: its summed-area table) and resampled to size x size, as a
    normalised float32 (n, 3, size, size) array, and the mask of boxes with any pixels inside the photo.

    Area averaging exactly as facenet-pytorch's `interpolate(mode="area")` (cell k averages pixels floor(k*n/size)
    to ceil((k+1)*n/size)): OpenCV's fractional-weight resampling lost two borderline faces of
    tests/test_detection_recall.py. A cell's sum is four table lookups, for all boxes at once by OpenCV's
    nearest-neighbour remap, where a torch call per box took several times longer.
    """
    import cv2  # OpenCV is slow to import: loaded where pixels are processed

    h, w = table.shape[0] - 1, table.shape[1] - 1
    b = np.trunc(np.asarray(boxes)[:, :4]).astype(np.int32)
    x0, y0 = np.maximum(b[:, 0], 1) - 1, np.maximum(b[:, 1], 1) - 1
    x1, y1 = np.minimum(b[:, 2], w), np.minimum(b[:, 3], h)
    keep = (y1 > y0) & (x1 > x0)
    x0, y0, x1, y1 = x0[keep], y0[keep], x1[keep], y1[keep]
    k = np.arange(size)

    def cells(a0, a1):
        n = (a1 - a0)[:, None]
        return a0[:, None] + (k * n) // size, a0[:, None] - (-(k + 1) * n) // size

    sy, ey = cells(y0, y1)
    sx, ex = cells(x0, x1)
    # The float64 sums are exact; rounded once to float32, the crops match torch's averages to 1.2e-7.
    x = np.empty((len(x0), size, size, 3), np.float32)
    # remap takes images under 32767 pixels a side: at most that many rows of boxes per call.
    step = (2**15 - 1) // size
    for j in range(0, len(x0), step):
        c = slice(j, j + step)
        # remap's maps: output pixel (i * size + r, q), row r and column q of box i's crop,
        # reads the table at (y[i, r], x[i, q]); index 0 of a pair is the start, 1 the end.
        xmap = [np.repeat(v[c].astype(np.float32), size, axis=0) for v in (sx, ex)]
        ymap = [np.repeat(v[c].astype(np.float32).ravel(), size).reshape(-1, size) for v in (sy, ey)]

        def corner(yi: int, xi: int, xmap=xmap, ymap=ymap) -> np.ndarray:
            return cv2.remap(table, xmap[xi], ymap[yi], cv2.INTER_NEAREST)

        total = corner(1, 1) - corner(0, 1) - corner(1, 0) + corner(0, 0)
        x[c] = total.reshape(-1, size, size, 3)
    x /= ((ey - sy)[:, :, None] * (ex - sx)[:, None, :])[..., None].astype(np.float32)
    x -= np.float32(127.5)
    x *= np.float32(0.0078125)
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2)), keep


def largest(faces: list[Face]) -> Face | None:
    return max(faces, key=lambda f: f.area) if faces else None

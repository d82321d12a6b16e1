"""Face detection with facenet-pytorch's MTCNN, and the two crops the backbones need.

`Detector.detect` returns every face in a photo as `Face` objects (box, score, 5 landmarks),
an empty list when there is none. Large photos are detected on a downscaled copy and the boxes
mapped back, so a 20-megapixel phone photo costs about what a 2-megapixel one does.
"""
from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import asdict, dataclass, field

import numpy as np
from PIL import Image

from recognizer.image import ImageSource, load_image

log = logging.getLogger(__name__)

# ArcFace's 5-point template for 112x112 crops (eyes, nose, mouth corners), the one SFace and
# OpenCV's FaceRecognizerSF.alignCrop use.
ARCFACE_TEMPLATE = np.array(
    [[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655], [70.7299, 92.2041]],
    dtype=np.float32,
)


@dataclass
class Face:
    """One detected face, in the pixel coordinates of the upright photo."""

    box: np.ndarray  # float32 (4,): x1, y1, x2, y2
    score: float
    landmarks: np.ndarray  # float32 (5, 2): left eye, right eye, nose, mouth left, mouth right

    @property
    def area(self) -> float:
        return float(max(self.box[2] - self.box[0], 0) * max(self.box[3] - self.box[1], 0))

    def to_dict(self) -> dict:
        return {
            "box": [round(float(v), 1) for v in self.box],
            "score": round(float(self.score), 4),
            "landmarks": [[round(float(x), 1), round(float(y), 1)] for x, y in self.landmarks],
        }


@dataclass(frozen=True)
class DetectorSettings:
    min_face_size: int = 20  # pixels, in the photo as detected (after downscaling)
    thresholds: tuple[float, float, float] = (0.6, 0.7, 0.7)  # MTCNN's three stages
    factor: float = 0.709  # image pyramid scale step
    score_threshold: float = 0.90  # faces below this final score are dropped
    max_side: int = 1600  # photos larger than this are detected on a downscaled copy

    def key(self) -> str:
        """A short stable hash of the settings, for cache keys."""
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:16]


@dataclass
class Detector:
    """MTCNN face detector. The networks are built in the constructor, never at import."""

    settings: DetectorSettings = field(default_factory=DetectorSettings)
    device: str = "cpu"

    def __post_init__(self) -> None:
        from facenet_pytorch import MTCNN

        s = self.settings
        self._mtcnn = MTCNN(
            min_face_size=s.min_face_size,
            thresholds=list(s.thresholds),
            factor=s.factor,
            keep_all=True,
            device=self.device,
        )

    def detect(self, image: ImageSource) -> list[Face]:
        """Every face in the photo, largest first; [] when there is none."""
        import torch

        img = image if isinstance(image, Image.Image) and image.mode == "RGB" else load_image(image)
        w, h = img.size
        scale = min(1.0, self.settings.max_side / max(w, h))
        small = img if scale == 1.0 else img.resize((max(1, round(w * scale)), max(1, round(h * scale))), Image.BILINEAR)
        # MTCNN's first scale shrinks the photo by 12 / min_face_size; a photo whose short side is under
        # min_face_size has no pyramid level at all (facenet-pytorch then fails in torch.cat), and
        # one under 12 pixels is below MTCNN's smallest window: nothing can be found in either.
        if min(small.size) < max(12, self.settings.min_face_size):
            return []
        with torch.inference_mode():
            boxes, probs, points = self._mtcnn.detect(small, landmarks=True)
        return self._to_faces(boxes, probs, points, 1.0 / scale, (w, h))

    def _to_faces(self, boxes, probs, points, inv_scale: float, size: tuple[int, int]) -> list[Face]:
        if boxes is None or len(boxes) == 0:
            return []
        # With numpy 2, facenet-pytorch hands back probabilities as an object array.
        boxes = np.asarray(boxes, dtype=np.float32) * inv_scale
        probs = np.asarray(probs, dtype=np.float32).reshape(-1)
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


def crop_facenet(img: Image.Image, face: Face, size: int = 160, margin: int = 14) -> np.ndarray:
    """The crop Inception-ResNet-v1 was trained on: box plus margin, resized, uint8 RGB (size, size, 3).

    The margin is in pixels of the output, as facenet-pytorch's `extract_face` counts it.
    """
    x1, y1, x2, y2 = (float(v) for v in face.box)
    mx = margin * (x2 - x1) / (size - margin)
    my = margin * (y2 - y1) / (size - margin)
    w, h = img.size
    box = (
        int(max(x1 - mx / 2, 0)),
        int(max(y1 - my / 2, 0)),
        int(min(x2 + mx / 2, w)),
        int(min(y2 + my / 2, h)),
    )
    return np.asarray(img.crop(box).resize((size, size), Image.BILINEAR), dtype=np.uint8)


def crop_aligned(img: Image.Image, face: Face, size: int = 112) -> np.ndarray:
    """A 5-point similarity-aligned crop on the ArcFace template, uint8 RGB (size, size, 3)."""
    import cv2

    dst = ARCFACE_TEMPLATE * (size / 112.0)
    matrix, _ = cv2.estimateAffinePartial2D(face.landmarks.astype(np.float32), dst, method=cv2.LMEDS)
    if matrix is None:  # degenerate landmarks: fall back to the box, resized
        return crop_facenet(img, face, size=size, margin=0)
    return cv2.warpAffine(np.asarray(img), matrix, (size, size), flags=cv2.INTER_LINEAR, borderValue=0)


def largest(faces: list[Face]) -> Face | None:
    return max(faces, key=lambda f: f.area) if faces else None

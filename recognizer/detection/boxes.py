"""Detected faces (`Face`) and box arithmetic in numpy, so detection needs neither torch nor torchvision.

`Face` sits here, below both the detector that returns it and the crop cache that stores it. `iou_matrix` is
the project's one IoU. The MTCNN helpers compute what their facenet-pytorch / torchvision counterparts do, in
the same precision and order (`nms`: torchvision's; `nms_min`: facenet-pytorch's "Min", "+1" pixel areas).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["Face", "bbreg", "generate_boxes", "iou_matrix", "nms", "nms_min", "rerec"]

_F = np.float32


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
        return {"box": [round(float(v), 1) for v in self.box], "score": round(float(self.score), 4),
                "landmarks": [[round(float(x), 1), round(float(y), 1)] for x, y in self.landmarks]}


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU (float64) of every x1, y1, x2, y2 box of `a` (n, 4) with every one of `b` (m, 4); 0 for an empty union."""
    a = np.asarray(a, np.float64).reshape(-1, 4)
    b = np.asarray(b, np.float64).reshape(-1, 4)
    x1 = np.maximum(a[:, None, 0], b[None, :, 0])
    y1 = np.maximum(a[:, None, 1], b[None, :, 1])
    x2 = np.minimum(a[:, None, 2], b[None, :, 2])
    y2 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)


def generate_boxes(reg: np.ndarray, prob: np.ndarray, scale: float, thresh: float) -> np.ndarray:
    """First-stage candidates of one pyramid level from PNet's (4, h, w) regression `reg` and (h, w) probability
    `prob` (cell (r, c): the level's 12x12 window at (2c, 2r)): (n, 9) float32 x1, y1, x2, y2, score, 4 offsets."""
    rows, cols = np.nonzero(prob >= thresh)  # row-major, the order torch's nonzero gives
    score = prob[rows, cols]
    bb = np.stack([cols, rows], axis=1).astype(_F)
    s = _F(scale)
    q1 = np.floor((_F(2) * bb + _F(1)) / s)
    q2 = np.floor((_F(2) * bb + _F(12)) / s)
    return np.concatenate([q1, q2, score[:, None], reg[:, rows, cols].T], axis=1).astype(_F, copy=False)


def nms(boxes: np.ndarray, scores: np.ndarray, threshold: float) -> np.ndarray:
    """Indices kept by greedy non-maximum suppression, best score first (torchvision's nms)."""
    return _greedy(boxes, scores, threshold, plus_one=False, method="union")


def nms_min(boxes: np.ndarray, scores: np.ndarray, threshold: float) -> np.ndarray:
    """facenet-pytorch's last-stage suppression: overlap over the smaller of the two boxes."""
    return _greedy(boxes, scores, threshold, plus_one=True, method="min")


def _greedy(boxes: np.ndarray, scores: np.ndarray, threshold: float, *, plus_one: bool, method: str) -> np.ndarray:
    n = len(boxes)
    if n == 0:
        return np.zeros(0, np.int64)
    boxes = np.asarray(boxes)
    x1, y1, x2, y2 = (boxes[:, i] for i in range(4))
    one = boxes.dtype.type(1 if plus_one else 0)
    zero = boxes.dtype.type(0)
    area = (x2 - x1 + one) * (y2 - y1 + one)
    order = np.argsort(-np.asarray(scores), kind="stable")
    keep = []
    while len(order):
        i, rest = order[0], order[1:]
        keep.append(i)
        w = np.maximum(zero, np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]) + one)
        h = np.maximum(zero, np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]) + one)
        inter = w * h
        if method == "min":
            over = inter / np.minimum(area[i], area[rest])
        else:
            over = inter / (area[i] + area[rest] - inter)
        order = rest[over <= threshold]
    return np.asarray(keep, np.int64)


def bbreg(boxes: np.ndarray, reg: np.ndarray) -> np.ndarray:
    """Boxes moved by the network's regression (offsets in units of the box's +1 width/height)."""
    out = boxes.copy()
    w = boxes[:, 2] - boxes[:, 0] + _F(1)
    h = boxes[:, 3] - boxes[:, 1] + _F(1)
    out[:, 0] = boxes[:, 0] + reg[:, 0] * w
    out[:, 1] = boxes[:, 1] + reg[:, 1] * h
    out[:, 2] = boxes[:, 2] + reg[:, 2] * w
    out[:, 3] = boxes[:, 3] + reg[:, 3] * h
    return out


def rerec(boxes: np.ndarray) -> np.ndarray:
    """Boxes made square about their centres, on their longer side."""
    out = boxes.copy()
    h = boxes[:, 3] - boxes[:, 1]
    w = boxes[:, 2] - boxes[:, 0]
    side = np.maximum(w, h)
    out[:, 0] = boxes[:, 0] + w * _F(0.5) - side * _F(0.5)
    out[:, 1] = boxes[:, 1] + h * _F(0.5) - side * _F(0.5)
    out[:, 2] = out[:, 0] + side
    out[:, 3] = out[:, 1] + side
    return out

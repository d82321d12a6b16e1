"""Face crops for the backbones: facenet's box-plus-margin crop and the 5-point ArcFace-aligned crop."""
from __future__ import annotations

import numpy as np
from PIL import Image

from recognizer.detection.boxes import Face

__all__ = ["ARCFACE_TEMPLATE", "crop_aligned", "crop_facenet"]

# ArcFace's 5-point template for 112x112 crops (eyes, nose, mouth corners), the one SFace and
# OpenCV's FaceRecognizerSF.alignCrop use.
ARCFACE_TEMPLATE = np.array([[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655],
                             [70.7299, 92.2041]], dtype=np.float32)


def crop_facenet(img: Image.Image, face: Face, size: int = 160, margin: int = 14) -> np.ndarray:
    """The crop Inception-ResNet-v1 was trained on: box plus margin (in output pixels, as facenet-pytorch's
    `extract_face` counts it), resized, uint8 RGB (size, size, 3)."""
    x1, y1, x2, y2 = (float(v) for v in face.box)
    mx = margin * (x2 - x1) / (size - margin)
    my = margin * (y2 - y1) / (size - margin)
    w, h = img.size
    box = (int(max(x1 - mx / 2, 0)), int(max(y1 - my / 2, 0)), int(min(x2 + mx / 2, w)), int(min(y2 + my / 2, h)))
    return np.asarray(img.crop(box).resize((size, size), Image.BILINEAR), dtype=np.uint8)


def crop_aligned(img: Image.Image, face: Face, size: int = 112) -> np.ndarray:
    """A 5-point similarity-aligned crop on the ArcFace template, uint8 RGB (size, size, 3)."""
    import cv2  # OpenCV is slow to import: loaded where pixels are processed

    dst = ARCFACE_TEMPLATE * (size / 112.0)
    matrix, _ = cv2.estimateAffinePartial2D(face.landmarks.astype(np.float32), dst, method=cv2.LMEDS)
    if matrix is None:  # degenerate landmarks: fall back to the box, resized
        return crop_facenet(img, face, size=size, margin=0)
    return cv2.warpAffine(np.asarray(img), matrix, (size, size), flags=cv2.INTER_LINEAR, borderValue=0)

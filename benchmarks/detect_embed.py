"""Detection ms per photo at 640x480 and 1920x1080, embedding faces/s per backbone at batch 1, 8, 32.

    .venv/bin/python benchmarks/detect_embed.py [--repeats N] [--backbones sface,facenet]

facenet runs with random weights: the speed of Inception-ResNet-v1 does not depend on them.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from recognizer.data import data_dir  # noqa: E402

PHOTO = "facenet-pytorch-test-images/group/multiface__6_faces_unnamed.jpg"


def time_it(fn, repeats: int) -> list[float]:
    fn()  # warm-up: first calls allocate and pick kernels
    out = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--backbones", default="sface,facenet")
    args = ap.parse_args()

    import torch

    from recognizer.detect import Detector
    from recognizer.embed import make_embedder

    print(f"cores: {os.cpu_count()}  torch threads: {torch.get_num_threads()}  torch {torch.__version__}")
    photo = Image.open(data_dir() / PHOTO).convert("RGB")
    det = Detector()
    print("\ndetection (MTCNN)")
    print(f"{'size':>10} {'faces':>6} {'median ms':>10} {'min ms':>8}")
    crops_src = None
    for size in [(640, 480), (1920, 1080)]:
        img = photo.resize(size, Image.BILINEAR)
        faces = det.detect(img)
        crops_src = crops_src or (img, faces)
        t = time_it(lambda: det.detect(img), args.repeats)
        print(f"{size[0]}x{size[1]:<5} {len(faces):>6} {statistics.median(t) * 1e3:>10.1f} {min(t) * 1e3:>8.1f}")

    print("\nembedding")
    print(f"{'backbone':>9} {'batch':>6} {'faces/s':>9} {'ms/face':>8}")
    img, faces = crops_src
    for name in args.backbones.split(","):
        emb = make_embedder(name, "random" if name == "facenet" else None)
        one = emb.crop(img, faces[0])
        for batch in (1, 8, 32):
            crops = np.stack([one] * batch)
            emb.batch_size = batch
            t = statistics.median(time_it(lambda: emb.embed(crops), max(2, args.repeats // 2)))
            print(f"{name:>9} {batch:>6} {batch / t:>9.1f} {t / batch * 1e3:>8.1f}")


if __name__ == "__main__":
    main()

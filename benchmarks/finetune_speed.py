"""Finetune speed on a CPU: epoch time with and without the trunk cache, and finetune end to end.

    .venv/bin/python benchmarks/finetune_speed.py [--threads 1] [--epochs 30] [--data DIR]

1. Epoch time, in one process on the same faces: (a) the cached path, which trains only the tail
   on stored trunk features; (b) the uncached path, which runs the frozen trunk again for every
   face each epoch before training the same tail. The ratio is what the cache buys.
2. `finetune.py` end to end (facenet, random weights: speed does not depend on them) in a fresh
   subprocess with empty caches (detection included), then again with the caches warm.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from recognizer.cli._options import passive_openmp
from recognizer.sample_data import data_dir

ROOT = Path(__file__).resolve().parent.parent


def epoch_times(data: Path, threads: int, repeats: int) -> tuple[float, float, int]:
    import numpy as np
    import torch

    torch.set_num_threads(threads)
    from recognizer.cache import CropCache
    from recognizer.training.dataset import load_split
    from recognizer.detection.mtcnn import Detector
    from recognizer.embedding.backbones import FacenetEmbedder
    from recognizer.training.run import _largest_crops
    from recognizer.network.head import make_head
    from recognizer.pipeline import FacePipeline
    from recognizer.network.loop import TrainSettings, train
    from recognizer.network.trunk import SplitNet, TrunkCache

    emb = FacenetEmbedder("random")
    net = SplitNet.facenet(emb)
    with tempfile.TemporaryDirectory() as tmp:
        split = load_split(data, tmp)
        crops, labels, _, _ = _largest_crops(FacePipeline(Detector(), emb, CropCache()), split.train.paths, split.train.labels, False, "")
    classes = sorted(set(labels))
    y = np.array([classes.index(v) for v in labels])
    feats = TrunkCache(net).features(crops)
    settings = TrainSettings(epochs=repeats, patience=10**6)

    head = make_head(emb.dim, len(classes))
    res = train(net.tail, head, feats, y, None, None, settings)
    cached = res.seconds_per_epoch

    # Uncached: the same epoch, but every face goes through the frozen trunk first.
    flipped = np.ascontiguousarray(crops[:, :, ::-1])
    times = []
    for _ in range(max(1, repeats // 3)):
        t = time.perf_counter()
        view = np.random.default_rng(0).integers(0, 2, len(crops))
        fresh = net.run_trunk(np.where(view[:, None, None, None] == 1, flipped, crops))[:, None]
        train(net.tail, head, fresh, y, None, None, TrainSettings(epochs=1, augment=False))
        times.append(time.perf_counter() - t)
    return cached, float(np.median(times)), len(crops)


def end_to_end(data: Path, threads: int, epochs: int) -> tuple[float, float]:
    out = []
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "FACETOOL_CACHE": str(Path(tmp) / "cache")}
        cmd = [sys.executable, str(ROOT / "finetune.py"), str(data), "--model", str(Path(tmp) / "model"), "--backbone", "facenet",
               "--weights", "random", "--epochs", str(epochs), "--patience", str(epochs), "--threads", str(threads), "-q"]
        for _ in range(2):
            t = time.perf_counter()
            subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL)
            out.append(time.perf_counter() - t)
    return out[0], out[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--repeats", type=int, default=6, help="epochs timed on the cached path (a third as many uncached)")
    ap.add_argument("--data", type=Path, default=data_dir() / "5-celebrity-faces")
    args = ap.parse_args()
    passive_openmp()

    print(f"cores: {os.cpu_count()}  threads: {args.threads}  load average: {os.getloadavg()[0]:.1f}")
    cached, uncached, n = epoch_times(args.data, args.threads, args.repeats)
    print(f"epoch over {n} faces: trunk cache {cached:.3f} s, no cache {uncached:.3f} s, ratio {uncached / cached:.1f}x")
    first, warm = end_to_end(args.data, args.threads, args.epochs)
    print(f"finetune.py end to end, facenet, {args.epochs} epochs: first run {first:.1f} s (empty caches, detection included), "
          f"rerun {warm:.1f} s (warm caches)")
    print(f"load average after: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()

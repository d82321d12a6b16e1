"""A backbone cut in two for finetuning on a CPU: a frozen trunk and a trainable tail.

The trunk's output for a crop never changes while training, so it is computed once per augmentation view
and cached (in memory, and on disk as `.npz` keyed by crop hash and trunk-weights hash, so a rerun skips
it): each epoch runs only the tail, a few percent of Inception-ResNet-v1's compute for the default cut.
facenet is split at the first `--unfreeze` block (other tail blocks stay frozen in eval mode); sface has
nothing to unfreeze: the trunk is the whole network and the tail the identity. Views are (crop, flipped
crop): the one augmentation that keeps a plausible face of the same person, for one more trunk pass.
"""
from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import Sequence

import numpy as np
from tqdm import tqdm

from facecore.atomic import atomic_write
from recognizer.cache import crop_hash, default_trunk_cache_dir, entry_checksum, make_private_dirs
from recognizer.embedding.backbones import l2_normalize

__all__ = ["DEFAULT_UNFREEZE", "FACENET_BLOCKS", "N_VIEWS", "TRAINABLE_BLOCKS", "SplitNet", "TrunkCache",
           "parse_unfreeze"]

log = logging.getLogger(__name__)

# InceptionResnetV1's children in forward order (logits excluded: it is the pretraining head).
FACENET_BLOCKS = ("conv2d_1a", "conv2d_2a", "conv2d_2b", "maxpool_3a", "conv2d_3b", "conv2d_4a", "conv2d_4b", "repeat_1",
                  "mixed_6a", "repeat_2", "mixed_7a", "repeat_3", "block8", "avgpool_1a", "dropout", "last_linear",
                  "last_bn")
TRAINABLE_BLOCKS = tuple(b for b in FACENET_BLOCKS if b not in ("maxpool_3a", "avgpool_1a", "dropout"))
DEFAULT_UNFREEZE = ("block8", "last_linear", "last_bn")
N_VIEWS = 2  # the crop and its mirror image


def parse_unfreeze(spec: str | Sequence[str] | None) -> tuple[str, ...]:
    """`"repeat_3,block8"` -> the blocks in forward order. `last_linear` and `last_bn` always train:
    they map the pooled features to the embedding and must follow any block that changes."""
    if spec is None:
        return DEFAULT_UNFREEZE
    names = [s.strip() for s in (spec.split(",") if isinstance(spec, str) else spec) if s.strip()]
    bad = [n for n in names if n not in TRAINABLE_BLOCKS]
    if bad:
        raise ValueError(f"cannot unfreeze {bad}: choose among {', '.join(TRAINABLE_BLOCKS)}")
    wanted = set(names) | {"last_linear", "last_bn"}
    return tuple(b for b in FACENET_BLOCKS if b in wanted)


def _make_tail(net, blocks: Sequence[str], trainable: Sequence[str]):
    import torch  # heavy, and not needed to identify on ONNX Runtime
    from torch import nn

    class Tail(nn.Module):
        """InceptionResnetV1's forward from `blocks[0]` on, sharing the network's own modules."""

        def __init__(self) -> None:
            super().__init__()
            self.names = list(blocks)
            self.trainable = set(trainable)
            self.parts = nn.ModuleDict({n: getattr(net, n) for n in blocks})

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            if x.dim() == 4:
                # mkldnn's NCHW kernels are pathological on 3x3 feature maps; channels_last
                # avoids them (figures: benchmarks/results/implementation-choices.md).
                x = x.contiguous(memory_format=torch.channels_last)
            for name in self.names:
                if name == "last_linear":
                    x = x.view(x.shape[0], -1)
                x = self.parts[name](x)
            return x  # raw embedding: the head and the embedder normalise it

        def train(self, mode: bool = True):
            # Frozen blocks stay in eval mode even while training, so their BatchNorm statistics
            # are never updated; dropout follows the training mode. The unfrozen blocks train
            # fully, BatchNorm included (see `recognizer.network.loop.recalibrate_batchnorm`).
            self.training = mode
            for name, module in self.parts.items():
                module.train(mode and (name in self.trainable or name == "dropout"))
            return self

    return Tail()


class SplitNet:
    """`trunk_features(crops)` -> cached features; `tail` (torch module) -> raw embeddings."""

    def __init__(self, backbone: str, embedder, trunk, tail, trainable: Sequence[str], cut: str) -> None:
        self.backbone = backbone
        self.embedder = embedder  # the whole network, for embedding faces the cache has not seen
        self.trunk = trunk
        self.tail = tail
        self.trainable = tuple(trainable)
        self.cut = cut
        self.trunk_key = self._trunk_key()

    @classmethod
    def facenet(cls, embedder, unfreeze: Sequence[str] = DEFAULT_UNFREEZE) -> "SplitNet":
        import torch  # heavy, and not needed to identify on ONNX Runtime
        from torch import nn

        net = embedder.module
        cut = FACENET_BLOCKS.index(unfreeze[0])
        head_blocks, tail_blocks = FACENET_BLOCKS[:cut], FACENET_BLOCKS[cut:]
        for p in net.parameters():
            p.requires_grad_(False)
        for name in unfreeze:
            for p in getattr(net, name).parameters():
                p.requires_grad_(True)
        trunk = nn.Sequential(*[getattr(net, n) for n in head_blocks]).eval()
        tail = _make_tail(net, tail_blocks, unfreeze).to(memory_format=torch.channels_last)
        return cls("facenet", embedder, trunk, tail, unfreeze, unfreeze[0])

    @classmethod
    def sface(cls, embedder) -> "SplitNet":
        from torch import nn  # heavy, and not needed to identify on ONNX Runtime

        return cls("sface", embedder, None, nn.Identity(), (), "none")

    def _trunk_key(self) -> str:
        h = hashlib.sha256(f"{self.backbone}|{self.embedder.crop_size}|{self.cut}|{self.embedder.model_id}".encode())
        if self.trunk is not None:
            # The weights themselves, not just the model id: a trunk is defined by what it computes.
            for name, t in self.trunk.state_dict().items():
                h.update(name.encode())
                h.update(t.detach().cpu().contiguous().numpy().tobytes())
        return h.hexdigest()[:16]

    def run_trunk(self, crops: np.ndarray) -> np.ndarray:
        """float32 trunk output for a batch of uint8 crops (no cache)."""
        if self.trunk is None:
            return self.embedder.embed(crops)
        import torch  # heavy, and not needed to identify on ONNX Runtime

        with torch.inference_mode():
            return self.trunk(self.embedder.standardize(crops)).numpy()

    def embed_features(self, feats: np.ndarray, batch_size: int = 64) -> np.ndarray:
        """Unit embeddings of cached trunk features, with the tail in eval mode."""
        import torch  # heavy, and not needed to identify on ONNX Runtime

        was = self.tail.training
        self.tail.eval()
        try:
            with torch.inference_mode():
                out = [self.tail(torch.from_numpy(feats[i : i + batch_size])).numpy() for i in range(0, len(feats), batch_size)]
        finally:
            self.tail.train(was)
        return l2_normalize(np.concatenate(out)) if out else np.zeros((0, self.embedder.dim), np.float32)


class TrunkCache:
    """Trunk features per (crop content, trunk weights): memory first, then `.npz` files on disk."""

    def __init__(self, net: SplitNet, root: str | Path | None = None, *, batch_size: int = 32) -> None:
        self.net = net
        self.root = (Path(root) if root else default_trunk_cache_dir()) / net.trunk_key
        self.batch_size = batch_size
        self.memory: dict[str, np.ndarray] = {}
        self.hits = self.misses = 0

    def _path(self, digest: str) -> Path:
        return self.root / digest[:2] / f"{digest}.npz"

    def features(self, crops: np.ndarray, *, progress: bool = False) -> np.ndarray:
        """float32 (n, N_VIEWS, ...) trunk features of uint8 crops (n, s, s, 3)."""
        digests = [crop_hash(c) for c in crops]
        todo = [i for i, d in enumerate(digests) if d not in self.memory and not self._load(d)]
        self.hits += len(crops) - len(todo)
        self.misses += len(todo)
        with tqdm(total=len(todo), desc="trunk", unit="face", disable=not progress or not todo, dynamic_ncols=True) as bar:
            for start in range(0, len(todo), self.batch_size):
                ids = todo[start : start + self.batch_size]
                batch = crops[ids]
                views = np.stack([self.net.run_trunk(batch), self.net.run_trunk(np.ascontiguousarray(batch[:, :, ::-1]))], axis=1)
                for i, v in zip(ids, views):
                    self.memory[digests[i]] = v
                    self._save(digests[i], v)
                bar.update(len(ids))
        if not len(crops):
            return np.zeros((0, N_VIEWS), np.float32)
        return np.stack([self.memory[d] for d in digests])

    def _key(self, digest: str) -> str:
        return f"{self.net.trunk_key}-{digest}"

    def _load(self, digest: str) -> bool:
        try:
            with np.load(self._path(digest), allow_pickle=False) as z:
                if "checksum" not in z.files:  # written by an older version: recomputed and rewritten
                    return False
                views, key, checksum = z["views"], str(z["key"]), str(z["checksum"])
        except FileNotFoundError:
            return False
        except Exception as exc:  # damaged entry: recompute and rewrite
            log.warning("ignoring damaged trunk cache entry %s: %s", self._path(digest), exc)
            return False
        if key != self._key(digest) or checksum != entry_checksum(key, {"views": views}):
            log.warning("ignoring trunk cache entry %s: its content does not match its key", self._path(digest))
            return False
        self.memory[digest] = views
        return True

    def _save(self, digest: str, views: np.ndarray) -> None:
        path = self._path(digest)
        try:
            make_private_dirs(path.parent)  # features of face crops: owner only, parents included
            views = np.asarray(views, np.float32)
            key = self._key(digest)
            with atomic_write(path) as fh:
                np.savez(fh, views=views, key=np.array(key), checksum=np.array(entry_checksum(key, {"views": views})))
        except OSError as exc:  # a cache that cannot be written only costs time
            log.warning("could not write trunk cache entry %s: %s", path, exc)

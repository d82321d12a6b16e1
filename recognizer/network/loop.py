"""The training loop shared by both backbones: a tail module and a cosine head on cached features.

AdamW, cosine schedule (the tail at a tenth of the head's rate: it already knows faces), early stopping on
val loss after `patience` epochs, best epoch restored; each step draws one view per face at random.
BatchNorm in unfrozen blocks trains on batch statistics, and after every epoch its running statistics are
recomputed over all training views ("precise BN"): the lagging running average made eval-mode embeddings
collapse (mean cosine 0.9999 with random weights) while training loss fell, and BatchNorm kept in eval mode
leaves that collapse in place (nothing removes the component common to all faces).
"""
from __future__ import annotations

import copy
import logging
import time
from dataclasses import asdict, dataclass, field

import numpy as np

__all__ = ["EpochStats", "TrainResult", "TrainSettings", "evaluate_loss", "recalibrate_batchnorm", "train"]

log = logging.getLogger(__name__)


@dataclass
class TrainSettings:
    epochs: int = 30
    lr: float = 1e-3  # the tail's unfrozen blocks
    head_lr: float = 1e-2
    weight_decay: float = 1e-4
    batch_size: int = 32
    patience: int = 8  # epochs without a better val loss before stopping
    seed: int = 0
    augment: bool = True  # draw the mirrored view half the time

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class EpochStats:
    epoch: int
    train_loss: float
    train_accuracy: float
    val_loss: float | None
    val_accuracy: float | None
    seconds: float

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class TrainResult:
    history: list[EpochStats] = field(default_factory=list)
    best_epoch: int = 0
    stopped_early: bool = False

    @property
    def seconds_per_epoch(self) -> float:
        return float(np.median([e.seconds for e in self.history])) if self.history else 0.0

    def to_dict(self) -> dict:
        return {"history": [e.to_dict() for e in self.history], "best_epoch": self.best_epoch,
                "stopped_early": self.stopped_early, "seconds_per_epoch": round(self.seconds_per_epoch, 4)}


def _batches(n: int, size: int, rng: np.random.Generator) -> list[np.ndarray]:
    # Near-equal batches, none of a single face: BatchNorm cannot train on a batch of one.
    order = rng.permutation(n)
    return np.array_split(order, max(1, int(np.ceil(n / size)))) if n > 1 else [order]


def train(tail, head, x_train: np.ndarray, y_train: np.ndarray, x_val: np.ndarray | None, y_val: np.ndarray | None,
          settings: TrainSettings, *, progress: bool = False) -> TrainResult:
    """Train `tail` (its parameters with requires_grad) and `head` in place on trunk features (n, views, ...)
    and class indices; returns the curves. Without val data the last epoch is kept (no early stopping)."""
    import torch  # heavy and optional: imported only where a network is built or trained
    from torch import nn
    from tqdm import tqdm

    result = TrainResult()
    y_t = torch.as_tensor(np.asarray(y_train, np.int64))
    has_val = x_val is not None and len(x_val) > 0
    params = [{"params": list(head.parameters()), "lr": settings.head_lr}]
    tail_params = [p for p in tail.parameters() if p.requires_grad]
    if tail_params:
        params.append({"params": tail_params, "lr": settings.lr})
    opt = torch.optim.AdamW(params, weight_decay=settings.weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, settings.epochs))
    loss_fn = nn.CrossEntropyLoss()
    rng = np.random.default_rng(settings.seed)
    best_loss, best_state, waited = float("inf"), None, 0

    # fork_rng: the run is repeatable from `seed` and leaves the caller's RNG untouched.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(settings.seed)
        bar = tqdm(range(1, settings.epochs + 1), desc="epochs", unit="epoch", disable=not progress, dynamic_ncols=True)
        for epoch in bar:
            t0 = time.perf_counter()
            tail.train()
            head.train()
            total, correct, seen = 0.0, 0, 0
            for idx in _batches(len(x_train), settings.batch_size, rng):
                views = rng.integers(0, x_train.shape[1], len(idx)) if settings.augment else np.zeros(len(idx), int)
                xb = torch.from_numpy(np.ascontiguousarray(x_train[idx, views]))
                logits = head(tail(xb))
                loss = loss_fn(logits, y_t[idx])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                total += float(loss.detach()) * len(idx)
                correct += int((logits.argmax(1) == y_t[idx]).sum())
                seen += len(idx)
            sched.step()
            recalibrate_batchnorm(tail, x_train)
            val_loss = val_acc = None
            if has_val:
                val_loss, val_acc = evaluate_loss(tail, head, x_val, y_val)
            stats = EpochStats(epoch, total / seen, correct / seen, val_loss, val_acc, time.perf_counter() - t0)
            result.history.append(stats)
            bar.set_postfix(loss=f"{stats.train_loss:.3f}", acc=f"{stats.train_accuracy:.2f}",
                            **({"val_loss": f"{val_loss:.3f}", "val_acc": f"{val_acc:.2f}"} if has_val else {}))
            if not has_val:
                continue
            if val_loss < best_loss - 1e-6:
                best_loss, waited, result.best_epoch = val_loss, 0, epoch
                best_state = (copy.deepcopy(tail.state_dict()), copy.deepcopy(head.state_dict()))
            else:
                waited += 1
                if waited >= settings.patience:
                    result.stopped_early = True
                    log.info("early stop at epoch %d: val loss has not improved since epoch %d", epoch, result.best_epoch)
                    break
        bar.close()
    if best_state is not None:
        tail.load_state_dict(best_state[0])
        head.load_state_dict(best_state[1])
    else:
        result.best_epoch = len(result.history)
    tail.eval()
    head.eval()
    return result


def evaluate_loss(tail, head, x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """(mean cross-entropy, accuracy) on the first view, everything in eval mode."""
    import torch  # heavy and optional: imported only where a network is built or trained
    from torch.nn import functional as F

    tail.eval()
    head.eval()
    with torch.no_grad():
        logits = head(tail(torch.from_numpy(np.ascontiguousarray(x[:, 0]))))
        yt = torch.as_tensor(np.asarray(y, np.int64))
        return float(F.cross_entropy(logits, yt)), float((logits.argmax(1) == yt).float().mean())


def recalibrate_batchnorm(tail, x_train: np.ndarray, batch_size: int = 64) -> None:
    """Replace the running statistics of the BatchNorm layers that train with their exact
    averages over every view of the training features; leaves `tail` in eval mode."""
    import torch  # heavy and optional: imported only where a network is built or trained
    from torch.nn.modules.batchnorm import _BatchNorm

    tail.train()
    layers = [m for m in tail.modules() if isinstance(m, _BatchNorm) and m.training]
    tail.eval()
    if not layers:
        return
    flat = x_train.reshape(-1, *x_train.shape[2:])
    momenta = []
    for m in layers:
        momenta.append(m.momentum)
        m.reset_running_stats()
        m.momentum = None  # cumulative average over the batches below
        m.train()
    try:
        with torch.no_grad():
            for i in range(0, len(flat), batch_size):
                tail(torch.from_numpy(np.ascontiguousarray(flat[i : i + batch_size])))
    finally:
        for m, mom in zip(layers, momenta):
            m.momentum = mom
            m.eval()

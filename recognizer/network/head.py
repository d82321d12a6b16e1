"""The classification head over the user's people, and its scikit-learn-style estimator.

The head is cosine: logits = s * cos(embedding, class weight). It sees the direction of the
embedding only, the same L2-normalised vector the gallery stores and `identify` passes to
`predict_proba`, so training and inference use one representation. The scale `s` is learned
(bounded to [1, 64]) so the probabilities are fitted by the loss instead of fixed by hand.
Class weights start at the mean embedding of each class ("imprinting"): the head starts as a
nearest-class-mean classifier and training only refines it.
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from recognizer.embedding.backbones import l2_normalize
from recognizer.network.loop import TrainSettings, train

__all__ = ["CosineClassifier", "class_means", "make_head"]

MIN_SCALE, MAX_SCALE = 1.0, 64.0


def make_head(dim: int, n_classes: int, scale: float = 16.0, init: np.ndarray | None = None):
    """A torch CosineHead; `init` (n_classes, dim) imprints the class weights."""
    import torch  # heavy and optional: imported only where a network is built or trained
    from torch import nn
    from torch.nn import functional as F

    class CosineHead(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            w = torch.randn(n_classes, dim) * 0.01 if init is None else torch.as_tensor(np.asarray(init, np.float32)).clone()
            self.weight = nn.Parameter(w)
            self.log_scale = nn.Parameter(torch.tensor(math.log(scale), dtype=torch.float32))

        @property
        def scale(self) -> torch.Tensor:
            return self.log_scale.exp().clamp(MIN_SCALE, MAX_SCALE)

        def forward(self, emb: torch.Tensor) -> torch.Tensor:
            # Plain logits: CrossEntropyLoss applies the log-softmax itself.
            return self.scale * F.normalize(emb, dim=1) @ F.normalize(self.weight, dim=1).T

    return CosineHead()


def class_means(x: np.ndarray, y: np.ndarray, n_classes: int) -> np.ndarray:
    x = l2_normalize(x)
    return l2_normalize(np.stack([x[y == c].mean(axis=0) for c in range(n_classes)]))


class CosineClassifier:
    """A classifier over unit embeddings with scikit-learn's interface (`fit`, `predict`,
    `predict_proba`, `classes_`) but not its base classes: identify loads a finetuned model's
    classifier, and scikit-learn (with scipy) would double a fresh identify's start-up. `fit` trains
    the head alone with finetune.py's loop; a head trained jointly with the tail is wrapped with `from_head`."""

    def __init__(self, scale: float = 16.0, epochs: int = 60, lr: float = 1e-2, weight_decay: float = 1e-4, seed: int = 0) -> None:
        self.scale = scale
        self.epochs = epochs
        self.lr = lr
        self.weight_decay = weight_decay
        self.seed = seed

    def fit(self, X: np.ndarray, y: Sequence) -> "CosineClassifier":
        from torch import nn  # torch is imported only where a network is built or trained

        X = l2_normalize(np.asarray(X, np.float32))
        self.classes_, yi = np.unique(np.asarray(y), return_inverse=True)
        head = make_head(X.shape[1], len(self.classes_), self.scale, class_means(X, yi, len(self.classes_)))
        settings = TrainSettings(epochs=self.epochs, head_lr=self.lr, weight_decay=self.weight_decay, seed=self.seed, augment=False)
        self.history_ = train(nn.Identity(), head, X[:, None], yi, None, None, settings).to_dict()
        return self._set(head.weight.detach().cpu().numpy(), head.scale.detach())

    @classmethod
    def from_head(cls, classes: Sequence[str], weight: np.ndarray, scale: float) -> "CosineClassifier":
        clf = cls(scale=float(scale))
        clf.classes_ = np.asarray(list(classes))
        return clf._set(weight, scale)

    def _set(self, weight: np.ndarray, scale) -> "CosineClassifier":
        self.weight_ = l2_normalize(np.asarray(weight, np.float32))
        self.scale_ = float(scale)
        self.n_features_in_ = self.weight_.shape[1]
        return self

    def decision_function(self, X: np.ndarray) -> np.ndarray:
        return self.scale_ * l2_normalize(np.asarray(X, np.float32)) @ self.weight_.T

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        z = self.decision_function(X)
        z = np.exp(z - z.max(axis=1, keepdims=True))
        return z / z.sum(axis=1, keepdims=True)

    def predict(self, X: np.ndarray) -> np.ndarray:
        return self.classes_[np.argmax(self.decision_function(X), axis=1)]

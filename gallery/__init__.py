"""Face gallery: enrolled embeddings with stable ids and per-face metadata.

    g = create_gallery("faces.gallery", model_id="sface-2021dec", dim=128)
    g.add(vectors, [FaceRecord("Ada", "ada.jpg", sha256, box)], model_id="sface-2021dec")
    votes = g.knn_vote(queries, k=5, model_id="sface-2021dec")

The public types are backend-neutral (numpy arrays, dataclasses); the FAISS + SQLite
store in `gallery.faiss_store` is one implementation of `Gallery`.
"""
from __future__ import annotations

import os
from typing import Any

from gallery.base import (FaceRecord, Gallery, Hit, KnnVote, best_candidate, rank_key, refuse_lookalikes,
                          same_looking, validate_name)
from gallery.errors import FaceToolError, GalleryError, InvalidNameError, PersonExists, PersonNotFound


def create_gallery(path: str | os.PathLike[str], model_id: str, dim: int, **opts: Any) -> Gallery:
    """Create a new gallery directory. Options: approx_threshold (faces above which an
    approximate index is used), k_factor (its search breadth: candidates re-ranked exactly
    per result wanted), nprobe (for galleries with the earlier IVF index), lock_timeout (seconds)."""
    from gallery.faiss_store import FaissGallery  # faiss loads only when a gallery is used

    return FaissGallery.create(path, model_id, dim, **opts)


def open_gallery(path: str | os.PathLike[str], model_id: str | None = None, **opts: Any) -> Gallery:
    """Open an existing gallery; with `model_id`, fail unless it was built with that model.
    Options: k_factor, nprobe, lock_timeout (seconds); see create_gallery."""
    from gallery.faiss_store import FaissGallery

    return FaissGallery.open(path, model_id, **opts)


__all__ = ["FaceRecord", "FaceToolError", "Gallery", "GalleryError", "Hit", "InvalidNameError", "KnnVote", "PersonExists",
           "PersonNotFound", "best_candidate", "create_gallery", "open_gallery", "rank_key", "refuse_lookalikes",
           "same_looking", "validate_name"]

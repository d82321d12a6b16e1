"""Face gallery: enrolled embeddings with stable ids and per-face metadata.

    g = create_gallery("faces.gallery", model_id="sface-2021dec", dim=128)
    g.add(vectors, [FaceRecord("Ada", "ada.jpg", sha256, box)], model_id="sface-2021dec")
    votes = g.knn_vote(queries, k=5, model_id="sface-2021dec")

The public types are backend-neutral (numpy arrays, dataclasses). Where a gallery lives
picks its backend: a directory is the FAISS + SQLite store (`gallery.faiss_store`);
"milvus://HOST:PORT/COLLECTION" (a Milvus server) or "milvus-lite:PATH.db" (Milvus Lite,
embedded) is the Milvus store (`gallery.milvus_store`).
"""
from __future__ import annotations

import os
from typing import Any

from facecore.errors import GalleryError
from facecore.extras import require_extra
from gallery.base import FaceRecord, Gallery, Hit, KnnVote
from gallery.faiss_store import FaissGallery
from gallery.milvus_store import MilvusGallery


def is_uri(path: str | os.PathLike[str]) -> bool:
    """Whether `path` names a Milvus gallery rather than a directory."""
    return isinstance(path, str) and path.startswith(("milvus://", "milvus-lite:"))


def create_gallery(path: str | os.PathLike[str], model_id: str, dim: int, **opts: Any) -> Gallery:
    """Create a new gallery. Options for a directory: approx_threshold (faces above which an
    approximate index is used), k_factor (candidates re-ranked exactly per result wanted),
    lock_timeout (seconds). For Milvus: exist_ok (open it if it exists), index ("FLAT", exact, or
    "HNSW"), lock_timeout, hold_s (how long Milvus Lite stays open after the last call),
    search_params."""
    if is_uri(path):
        require_extra("milvus", "a Milvus gallery (--gallery milvus...)")
        return MilvusGallery.create(str(path), model_id, dim, **opts)  # pymilvus loads only here
    return FaissGallery.create(path, model_id, dim, **opts)


def open_gallery(path: str | os.PathLike[str], model_id: str | None = None, **opts: Any) -> Gallery:
    """Open an existing gallery; with `model_id`, fail unless it was built with that model.
    Options: see create_gallery."""
    if is_uri(path):
        require_extra("milvus", "a Milvus gallery (--gallery milvus...)")
        return MilvusGallery.open(str(path), model_id, **opts)
    return FaissGallery.open(path, model_id, **opts)


__all__ = ["FaceRecord", "Gallery", "Hit", "KnnVote", "create_gallery", "is_uri", "open_gallery"]

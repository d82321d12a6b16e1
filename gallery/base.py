"""Backend-neutral gallery interface: records, hits, kNN votes and name rules. Nothing here may
mention FAISS or Milvus: the public types are numpy arrays, dataclasses and plain values only.
"""
from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from facecore.errors import FaceConflict, FaceNotFound, GalleryError, PersonExists, PersonNotFound
from facecore.names import refuse_lookalikes, same_looking, validate_name
from facecore.ranking import best_candidate, rank_key

__all__ = ["FaceRecord", "Gallery", "Hit", "KnnVote", "check_records", "face_key", "first_of_each_photo", "vote"]


@dataclass
class FaceRecord:
    """One enrolled face: who, where it came from, and the gallery id once stored."""

    person: str
    source: str  # file path the face came from
    content_hash: str  # sha256 of the photo file bytes
    box: tuple[float, float, float, float]  # x1, y1, x2, y2
    added_at: float = field(default_factory=time.time)
    id: int = -1  # assigned by the gallery
    chip: str = ""  # sha256 of the face's chip (gallery.chip_store); empty for faces enrolled before chips

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["box"] = list(self.box)
        return d


@dataclass
class Hit:
    """One neighbour of a query."""

    id: int
    person: str
    similarity: float  # cosine similarity, in [-1, 1]
    source: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class KnnVote:
    """Result of a similarity-weighted k-nearest-neighbour vote for one query."""

    scores: dict[str, float]  # per person, weighted vote share over the k neighbours; sums to 1 (empty if no votes)
    similarity: dict[str, float]  # per person, max cosine similarity among the k neighbours
    neighbours: list[Hit]

    def best(self) -> tuple[str | None, float, float]:
        """(person, score, similarity) of the winner (`rank_key`); (None, 0.0, 0.0) when nobody got a vote."""
        person = best_candidate(self.scores, self.similarity)
        if person is None:
            return None, 0.0, 0.0
        return person, self.scores[person], self.similarity.get(person, 0.0)

    def to_dict(self) -> dict[str, Any]:
        return {"scores": dict(self.scores), "similarity": dict(self.similarity),
                "neighbours": [h.to_dict() for h in self.neighbours]}


def vote(hits: Sequence[Hit]) -> KnnVote:
    """The neighbours of one query as a KnnVote.

    Each neighbour votes for its person with weight max(similarity, 0): a close face counts more
    than a far one, and an anti-correlated one is no evidence for its person at all. Shares are
    normalised by the total weight so that scores are comparable across queries and k; when every
    similarity is <= 0 `scores` is empty.
    """
    weights: dict[str, float] = {}
    best_sim: dict[str, float] = {}
    for h in hits:
        weights[h.person] = weights.get(h.person, 0.0) + max(h.similarity, 0.0)
        best_sim[h.person] = max(best_sim.get(h.person, -1.0), h.similarity)
    total = sum(weights.values())
    scores = {p: w / total for p, w in weights.items()} if total > 0 else {}
    return KnnVote(scores=scores, similarity=best_sim, neighbours=list(hits))


def face_key(content_hash: str, box) -> tuple:
    """One face of one photo, whatever gallery or name it is under (boxes come from one detector)."""
    return content_hash, tuple(round(float(v), 1) for v in box)


def first_of_each_photo(rows, stored: set[tuple[str, str]]) -> list[int]:
    """Indices of the `rows` (check_records' tuples) to store: one face per person and photo
    (content hash), none whose (person, hash) is already in `stored`, which is updated."""
    keep = []
    for i, row in enumerate(rows):
        if (row[0], row[2]) not in stored:
            stored.add((row[0], row[2]))
            keep.append(i)
    return keep


def check_records(records: Sequence[FaceRecord]) -> list[tuple[str, str, str, float, float, float, float, float]]:
    """(person, source, content_hash, x1, y1, x2, y2, added_at) per record, names validated;
    GalleryError for a box that is not 4 finite numbers."""
    rows = []
    for r in records:
        person = validate_name(r.person)
        box = tuple(float(b) for b in r.box)
        if len(box) != 4 or not all(np.isfinite(box)):
            raise GalleryError(f"face box {r.box!r} of {r.source!r} must be 4 finite numbers")
        rows.append((person, str(r.source), str(r.content_hash), *box, float(r.added_at)))
    return rows


class Gallery(ABC):
    """Enrolled face embeddings with stable int64 ids and per-face metadata.

    Vectors are 2-d float32 arrays of unit vectors (normalised again defensively). Every call that
    takes vectors takes the `model_id` that produced them and fails if it is not the gallery's:
    embeddings of different models live in unrelated spaces and comparing them gives confident nonsense.
    """

    path: Path
    model_id: str
    dim: int
    metric: str = "cosine"

    def _fail(self, what: str, error: type[GalleryError] = GalleryError, **details: str) -> GalleryError:
        return error(f"{self.path}: {what}", **details)

    def _check_open(self) -> None:
        """GalleryError if the gallery was closed."""

    @staticmethod
    def _check_new(where: object, model_id: str, dim: int) -> None:
        """`create`'s arguments checked: a non-empty model id and a positive dimension."""
        if not isinstance(model_id, str) or not model_id:
            raise GalleryError(f"{where}: model_id must be a non-empty string, got {model_id!r}")
        if not isinstance(dim, (int, np.integer)) or isinstance(dim, bool) or dim <= 0:
            raise GalleryError(f"{where}: dim must be a positive integer, got {dim!r}")

    def _opened_for(self, model_id: str | None, where: object) -> "Gallery":
        """`self`, just opened at `where`; closed and GalleryError when `model_id` is given and
        is not the model whose embeddings it holds."""
        if model_id is not None and model_id != self.model_id:
            self.close()
            raise GalleryError(f"{where}: gallery holds embeddings of model {self.model_id!r}, "
                               f"but model {model_id!r} was asked for")
        return self

    def _check_rename(self, old: str, new: str, count, others, *, merge: bool, allow_similar: bool) -> bool:
        """The rename rule every backend follows; False when there is nothing to do (`old` is
        `new`). `count(name)`: how many faces `name` has; `others()`: every other person's name,
        asked only when a new name must not look like an enrolled one."""
        if count(old) == 0:
            raise self._fail(f"no person named {old!r} in the gallery", PersonNotFound, name=old)
        if old == new:
            return False
        if count(new):
            if not merge:
                raise self._fail(f"cannot rename {old!r} to {new!r}: {new!r} already exists "
                                 "(pass merge=True to merge them)", PersonExists, old=old, new=new)
        elif not allow_similar:
            refuse_lookalikes([new], others())
        return True

    def _check_move(self, faces: Sequence["FaceRecord"], ids: Sequence[int], person: str, held: set[str], others,
                    *, allow_similar: bool) -> list["FaceRecord"]:
        """The move rule every backend follows: the faces of `ids` (FaceNotFound for an unknown one) that
        are not `person`'s already; FaceConflict when `person` has one of their photos (`held`: the
        content hashes enrolled for `person`); a new `person` like an enrolled one unless `allow_similar`."""
        self._check_ids(faces, ids)
        moving = [r for r in faces if r.person != person]
        clash = [r.source for r in moving if r.content_hash in held]
        if clash:
            raise self._fail(f"{person!r} has the photo of face(s) {', '.join(clash)} enrolled already; remove "
                             "the face instead", FaceConflict, person=person, sources=clash)
        if moving and not held and not allow_similar:
            refuse_lookalikes([person], others())
        return moving

    def _check_ids(self, faces: Sequence["FaceRecord"], ids: Sequence[int]) -> None:
        missing = sorted(set(ids) - {r.id for r in faces})
        if missing:
            raise self._fail(f"no enrolled face has id {', '.join(map(str, missing[:10]))}", FaceNotFound, ids=missing)

    def _check_queries(self, queries: np.ndarray, k: int, model_id: str) -> np.ndarray:
        """`search`'s arguments checked: unit float32 queries of this gallery's model, k >= 1."""
        q = self._check_vectors(queries, model_id, "queries")
        if not isinstance(k, (int, np.integer)) or k < 1:
            raise GalleryError(f"k must be a positive integer, got {k!r}")
        return q

    def _check_vectors(self, x: np.ndarray, model_id: str, what: str) -> np.ndarray:
        """Unit float32 copies of `x`; GalleryError for another model's vectors, a wrong shape,
        NaN, infinite or zero rows."""
        self._check_open()
        if model_id != self.model_id:
            raise self._fail(f"{what} come from model {model_id!r} but this gallery holds embeddings of "
                             f"model {self.model_id!r}; re-enrol with {model_id!r} or use another gallery")
        x = np.asarray(x)
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise GalleryError(f"{what} must be a 2-d array (n, {self.dim}); got shape {x.shape}")
        if not (np.issubdtype(x.dtype, np.floating) or np.issubdtype(x.dtype, np.integer)):
            raise GalleryError(f"{what} must be real numbers; got dtype {x.dtype}")
        x = x.astype(np.float32)  # always a copy: callers' arrays are never modified
        bad = ~np.isfinite(x).all(axis=1)
        if bad.any():
            raise GalleryError(f"{what} contain NaN or infinite values in rows {np.flatnonzero(bad)[:10].tolist()}")
        norms = np.linalg.norm(x, axis=1, keepdims=True)
        zero = (norms[:, 0] < 1e-12)
        if zero.any():
            raise GalleryError(f"{what} contain zero vectors in rows {np.flatnonzero(zero)[:10].tolist()}")
        return x / norms

    @abstractmethod
    def add(self, vectors: np.ndarray, records: Sequence[FaceRecord], *, model_id: str) -> list[int]:
        """Store one face per row; returns the new ids (also written into `records`)."""

    @abstractmethod
    def remove_person(self, name: str) -> int:
        """Remove every face of `name`; returns how many. Unknown name -> PersonNotFound."""

    @abstractmethod
    def rename_person(self, old: str, new: str, *, merge: bool = False) -> None:
        """Rename `old` to `new`; onto an enrolled `new` only with merge=True. Unknown `old` -> PersonNotFound."""

    @abstractmethod
    def remove_faces(self, ids: Iterable[int]) -> list[FaceRecord]:
        """Remove the faces of `ids`; returns their records. An unknown id -> FaceNotFound, nothing removed."""

    @abstractmethod
    def move_faces(self, ids: Iterable[int], person: str, *, allow_similar: bool = False) -> list[FaceRecord]:
        """Make the faces of `ids` `person`'s (ids kept); returns the records moved, as they were. An unknown
        id -> FaceNotFound, a photo `person` has already -> FaceConflict; nothing changed then."""

    @abstractmethod
    def set_chips(self, chips: dict[int, str]) -> None:
        """Record the chip of existing faces (id -> chip sha256). Unknown ids -> GalleryError."""

    @abstractmethod
    def people(self) -> dict[str, int]:
        """name -> face count, sorted by name."""

    @abstractmethod
    def records(self, person: str | None = None) -> list[FaceRecord]:
        """Records of one person (or all), ordered by id."""

    @abstractmethod
    def has_content(self, person: str, content_hash: str) -> bool:
        """Whether a photo with this sha256 is already enrolled for `person`."""

    @abstractmethod
    def vectors(self, person: str | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(ids int64 (n,), vectors float32 (n, dim)) ordered by id."""

    @abstractmethod
    def search(self, queries: np.ndarray, k: int = 5, *, model_id: str) -> list[list[Hit]]:
        """Up to k nearest faces per query, most similar first."""

    def knn_vote(self, queries: np.ndarray, k: int = 5, *, model_id: str) -> list[KnnVote]:
        """Similarity-weighted vote of the k nearest faces, per query (see `vote`)."""
        return [vote(hits) for hits in self.search(queries, k, model_id=model_id)]

    def refresh(self) -> bool:
        """Reload if another process changed the gallery; returns whether it did."""
        return False

    def close(self) -> None:
        """Release open files. The object must not be used afterwards."""

    @abstractmethod
    def __len__(self) -> int:
        """Number of faces."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.path)!r}, model_id={getattr(self, 'model_id', None)!r})"

    def __enter__(self) -> Gallery:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

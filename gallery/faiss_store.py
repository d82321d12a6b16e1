"""FAISS + SQLite implementation of `Gallery`: the public operations (the directory format,
loading, locking and crash-safe saving are `gallery._storage`'s)."""
from __future__ import annotations

import logging
import os
import sqlite3
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from gallery import _index
from gallery._storage import DB_NAME, FORMAT_VERSION, META_NAME, SCHEMA, UNIQUE_PHOTO_INDEX, GalleryStore
from facecore.names import refuse_lookalikes, validate_name
from gallery.base import FaceRecord, Hit, check_records, first_of_each_photo
from facecore.errors import GalleryError, PersonNotFound

__all__ = ["FaissGallery"]

logger = logging.getLogger(__name__)


class FaissGallery(GalleryStore):
    """FAISS + SQLite gallery. Use `create_gallery` / `open_gallery` to get one."""

    @classmethod
    def create(cls, path: str | os.PathLike[str], model_id: str, dim: int, *,
               approx_threshold: int = _index.DEFAULT_APPROX_THRESHOLD, **opts: Any) -> FaissGallery:
        path = Path(path)
        cls._check_new(path, model_id, dim)
        if int(approx_threshold) < 1:
            raise GalleryError(f"{path}: approx_threshold must be >= 1, got {approx_threshold!r}")
        if path.exists() and (not path.is_dir() or any(path.iterdir())):
            raise GalleryError(f"{path}: already exists and is not an empty directory; "
                               "open it with open_gallery or choose a new path")
        path.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(path, 0o700)  # mkdir's mode is filtered by the umask; biometric data is owner-only
        self = cls(path, **opts)
        with self._locked():
            db_path = path / DB_NAME
            os.close(os.open(db_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
            self._db = self._connect()
            kv = {"model_id": model_id, "dim": int(dim), "metric": "cosine", "format_version": FORMAT_VERSION,
                  "generation": 0, "next_id": 0, "approx_threshold": int(approx_threshold)}
            with self._write_txn() as db:
                for stmt in SCHEMA.split(";"):
                    if stmt.strip():
                        db.execute(stmt)
                db.execute(UNIQUE_PHOTO_INDEX)
                db.executemany("INSERT INTO kv VALUES (?, ?)", [(k, str(v)) for k, v in kv.items()])
            self._read_kv()
            self._index = _index.build(np.empty((0, self.dim), np.float32), np.empty(0, np.int64),
                                       self.approx_threshold)
            self._publish(self._write_index_tmp(), generation=0)
        logger.info("created gallery %s for model %s (dim %d)", path, model_id, dim)
        return self

    @classmethod
    def open(cls, path: str | os.PathLike[str], model_id: str | None = None, **opts: Any) -> FaissGallery:
        path = Path(path)
        if not path.is_dir():
            raise GalleryError(f"{path}: no gallery here (directory does not exist)")
        if not (path / META_NAME).exists() and not (path / DB_NAME).exists():
            raise GalleryError(f"{path}: not a gallery (no {META_NAME} or {DB_NAME})")
        self = cls(path, **opts)
        with self._locked(write=False):
            self._load()
        return self._opened_for(model_id, path)

    def add(self, vectors: np.ndarray, records: Sequence[FaceRecord], *, model_id: str,
            allow_similar: bool = False) -> list[int]:
        """Store one face per row; returns the ids of the faces stored (also written into their
        records). A photo already stored for the same person is not stored again (its record keeps
        id -1): checked under the lock and enforced by a unique index, so two processes enrolling one
        photo at once store it once. A new name that looks like an enrolled one is refused with
        InvalidNameError unless `allow_similar`."""
        x = self._check_vectors(vectors, model_id, "vectors")
        if len(records) != len(x):
            raise GalleryError(f"got {len(x)} vectors but {len(records)} records")
        rows = [(*row, str(r.chip or "")) for row, r in zip(check_records(records), records)]
        if not rows:
            return []
        with self._change():
            assert self._db is not None and self._index is not None
            db = self._db
            existing = [p for (p,) in db.execute("SELECT DISTINCT person FROM faces")]
            if not allow_similar:
                refuse_lookalikes(sorted({row[0] for row in rows}), existing)
            stored = {(p, h) for p, h in db.execute(
                f"SELECT person, content_hash FROM faces WHERE content_hash IN ({','.join('?' * len(rows))})",
                [row[2] for row in rows])} if len(rows) <= 900 else {
                tuple(r) for r in db.execute("SELECT person, content_hash FROM faces")}
            keep = first_of_each_photo(rows, stored)
            if not keep:
                return []
            x, rows = x[keep], [rows[i] for i in keep]
            first = int(db.execute("SELECT value FROM kv WHERE key = 'next_id'").fetchone()[0])
            ids = np.arange(first, first + len(x), dtype=np.int64)
            index = _index.add(self._index, x, ids, self.approx_threshold, lambda: self._all_vectors(None))
            self._set_index(index)
            tmp = self._write_index_tmp()
            unique_index = db.execute("SELECT 1 FROM sqlite_master WHERE name = 'faces_person_photo'").fetchone()
            legacy_duplicates = not unique_index and db.execute(
                "SELECT 1 FROM faces GROUP BY person, content_hash HAVING count(*) > 1 LIMIT 1").fetchone()

            def apply(db: sqlite3.Connection) -> None:
                if not unique_index and not legacy_duplicates:  # galleries made before the rule
                    db.execute(UNIQUE_PHOTO_INDEX)
                db.executemany("INSERT INTO faces (id, person, source, content_hash, x1, y1, x2, y2, added_at, chip) "
                               "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                               [(int(i), *row) for i, row in zip(ids, rows)])
                db.executemany("INSERT INTO vectors VALUES (?, ?)",
                               [(int(i), v.tobytes()) for i, v in zip(ids, x)])
                db.execute("UPDATE kv SET value = ? WHERE key = 'next_id'", (str(first + len(x)),))

            self._commit(apply, tmp)
        for i, new_id, row in zip(keep, ids, rows):
            records[i].id, records[i].person = int(new_id), row[0]
        logger.info("%s: added %d faces (ids %d..%d)", self.path, len(ids), ids[0], ids[-1])
        return ids.tolist()

    def remove_person(self, name: str) -> int:
        name = validate_name(name)
        with self._change():
            assert self._db is not None and self._index is not None
            ids = np.array([r[0] for r in self._db.execute("SELECT id FROM faces WHERE person = ?", (name,))],
                           dtype=np.int64)
            if len(ids) == 0:
                raise self._fail(f"no person named {name!r} in the gallery", PersonNotFound, name=name)
            index = _index.remove(self._index, ids, self.approx_threshold, lambda: self._all_vectors(None))
            self._set_index(index)
            tmp = self._write_index_tmp()

            def apply(db: sqlite3.Connection) -> None:
                db.execute("DELETE FROM vectors WHERE id IN (SELECT id FROM faces WHERE person = ?)", (name,))
                db.execute("DELETE FROM faces WHERE person = ?", (name,))

            self._commit(apply, tmp)
            # secure_delete already zeroed the rows; VACUUM also drops the freed pages.
            try:
                self._db.execute("VACUUM")
            except sqlite3.Error as e:  # e.g. no room for VACUUM's copy: the removal still stands
                logger.warning("%s: removed %r, but VACUUM failed (%s); freed pages were zeroed "
                               "(secure_delete) and are dropped by the next VACUUM", self.path, name, e)
        logger.info("%s: removed %d faces of %r", self.path, len(ids), name)
        return len(ids)

    def _rows(self, ids: Sequence[int]) -> list[FaceRecord]:
        assert self._db is not None
        out = []
        for s in range(0, len(ids), 900):  # stay under SQLite's bound-parameter limit
            chunk = list(ids[s:s + 900])
            out += [FaceRecord(person=p, source=src, content_hash=h, box=(x1, y1, x2, y2), added_at=t, id=i, chip=c)
                    for i, p, src, h, x1, y1, x2, y2, t, c in self._db.execute(
                        "SELECT id, person, source, content_hash, x1, y1, x2, y2, added_at, chip FROM faces "
                        f"WHERE id IN ({','.join('?' * len(chunk))}) ORDER BY id", chunk)]
        return out

    def remove_faces(self, ids: Iterable[int]) -> list[FaceRecord]:
        wanted = sorted({int(i) for i in ids})
        if not wanted:
            return []
        with self._change():
            assert self._db is not None and self._index is not None
            gone = self._rows(wanted)
            self._check_ids(gone, wanted)
            index = _index.remove(self._index, np.array(wanted, dtype=np.int64), self.approx_threshold,
                                  lambda: self._all_vectors(None))
            self._set_index(index)
            tmp = self._write_index_tmp()

            def apply(db: sqlite3.Connection) -> None:
                db.executemany("DELETE FROM vectors WHERE id = ?", [(i,) for i in wanted])
                db.executemany("DELETE FROM faces WHERE id = ?", [(i,) for i in wanted])

            self._commit(apply, tmp)
            try:
                self._db.execute("VACUUM")
            except sqlite3.Error as e:  # as in remove_person: the removal stands
                logger.warning("%s: removed faces %s, but VACUUM failed (%s)", self.path, wanted, e)
        logger.info("%s: removed faces %s", self.path, wanted)
        return gone

    def move_faces(self, ids: Iterable[int], person: str, *, allow_similar: bool = False) -> list[FaceRecord]:
        person = validate_name(person)
        wanted = sorted({int(i) for i in ids})
        with self._change():
            assert self._db is not None
            held = {h for (h,) in self._db.execute("SELECT content_hash FROM faces WHERE person = ?", (person,))}
            others = lambda: [p for (p,) in self._db.execute("SELECT DISTINCT person FROM faces")]  # noqa: E731
            moving = self._check_move(self._rows(wanted), wanted, person, held, others, allow_similar=allow_similar)
            if moving:
                self._commit(lambda db: db.executemany("UPDATE faces SET person = ? WHERE id = ?",
                                                       [(person, r.id) for r in moving]), None)
        logger.info("%s: moved faces %s to %r", self.path, [r.id for r in moving], person)
        return moving

    def rename_person(self, old: str, new: str, *, merge: bool = False, allow_similar: bool = False) -> None:
        """Rename `old` to `new`. Onto an enrolled `new` only with merge=True (a silent merge of two
        people would be hard to undo); a `new` that looks like another enrolled person is refused
        unless `allow_similar`."""
        old, new = validate_name(old), validate_name(new)
        with self._change():
            assert self._db is not None
            count = lambda n: self._db.execute("SELECT count(*) FROM faces WHERE person = ?", (n,)).fetchone()[0]  # noqa: E731
            others = lambda: [p for (p,) in self._db.execute("SELECT DISTINCT person FROM faces WHERE person != ?", (old,))]  # noqa: E731
            if not self._check_rename(old, new, count, others, merge=merge, allow_similar=allow_similar):
                return
            self._commit(lambda db: db.execute("UPDATE faces SET person = ? WHERE person = ?", (new, old)), None)
        logger.info("%s: renamed %r to %r", self.path, old, new)

    def set_chips(self, chips: dict[int, str]) -> None:
        if not chips:
            return
        with self._change():
            assert self._db is not None
            known = {r[0] for r in self._db.execute("SELECT id FROM faces")}
            missing = sorted(set(chips) - known)
            if missing:
                raise self._fail(f"no faces with ids {missing[:10]}")
            self._commit(lambda db: db.executemany("UPDATE faces SET chip = ? WHERE id = ?",
                                                   [(str(c), int(i)) for i, c in chips.items()]), None)
        logger.info("%s: recorded chips of %d faces", self.path, len(chips))

    def people(self) -> dict[str, int]:
        with self._read() as db:
            rows = db.execute("SELECT person, count(*) FROM faces GROUP BY person").fetchall()
        return dict(sorted(rows))

    def records(self, person: str | None = None) -> list[FaceRecord]:
        sql = "SELECT id, person, source, content_hash, x1, y1, x2, y2, added_at, chip FROM faces"
        args: tuple[str, ...] = ()
        if person is not None:
            sql, args = sql + " WHERE person = ?", (validate_name(person),)
        with self._read() as db:
            rows = db.execute(sql + " ORDER BY id", args).fetchall()
        return [FaceRecord(person=p, source=s, content_hash=h, box=(x1, y1, x2, y2), added_at=t, id=i, chip=c)
                for i, p, s, h, x1, y1, x2, y2, t, c in rows]

    def has_content(self, person: str, content_hash: str) -> bool:
        with self._read() as db:
            return db.execute("SELECT 1 FROM faces WHERE person = ? AND content_hash = ? LIMIT 1",
                              (validate_name(person), content_hash)).fetchone() is not None

    def vectors(self, person: str | None = None) -> tuple[np.ndarray, np.ndarray]:
        person = None if person is None else validate_name(person)
        with self._read():
            return self._all_vectors(person)

    def search(self, queries: np.ndarray, k: int = 5, *, model_id: str) -> list[list[Hit]]:
        q = self._check_queries(queries, k, model_id)
        if len(q) == 0:
            return []
        with self._read() as db:
            assert self._index is not None
            if self._index.ntotal == 0:
                return [[] for _ in range(len(q))]
            sims, ids = _index.search(self._index, q, min(int(k), int(self._index.ntotal)))
            wanted = sorted({int(i) for i in ids.ravel() if i >= 0})
            meta: dict[int, tuple[str, str]] = {}
            for s in range(0, len(wanted), 900):  # stay under SQLite's bound-parameter limit
                chunk = wanted[s:s + 900]
                meta.update((r[0], (r[1], r[2])) for r in db.execute(
                    f"SELECT id, person, source FROM faces WHERE id IN ({','.join('?' * len(chunk))})", chunk))
        return [[Hit(id=int(i), person=meta[int(i)][0], similarity=float(np.clip(s, -1.0, 1.0)),
                     source=meta[int(i)][1]) for s, i in zip(srow, irow) if i >= 0]
                for srow, irow in zip(sims, ids)]

    def __len__(self) -> int:
        with self._read():
            assert self._index is not None
            return int(self._index.ntotal)

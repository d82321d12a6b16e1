"""Gallery stored as a directory: SQLite (source of truth) + a derived FAISS index.

    DIR/meta.sqlite   faces, their vectors, and a kv table (model_id, dim, generation...)
    DIR/index.faiss   FAISS index rebuilt from meta.sqlite whenever it cannot be trusted
    DIR/meta.json     what index.faiss belongs to: generation, sha256, count; written last
    DIR/.lock         inter-process lock taken by every change

A change is saved as: new index to a temp file -> SQLite commit (generation + 1) ->
os.replace(temp, index.faiss) -> meta.json. A crash before the commit leaves the old
state; a crash after it leaves SQLite one generation ahead of meta.json, and the next
load rebuilds the index from SQLite. So a gallery is always either before or after a
change, never in between.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import sqlite3
import threading
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import faiss
import numpy as np
from filelock import FileLock, Timeout

from gallery import _index
from gallery.base import FaceRecord, Gallery, Hit, validate_name
from recognizer.errors import GalleryError

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1
DB_NAME, INDEX_NAME, META_NAME, LOCK_NAME = "meta.sqlite", "index.faiss", "meta.json", ".lock"
TMP_PREFIX = ".tmp-"
DEFAULT_LOCK_TIMEOUT = 120.0

SCHEMA = """
CREATE TABLE kv (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE faces (
    id INTEGER PRIMARY KEY, person TEXT NOT NULL, source TEXT NOT NULL,
    content_hash TEXT NOT NULL, x1 REAL NOT NULL, y1 REAL NOT NULL, x2 REAL NOT NULL,
    y2 REAL NOT NULL, added_at REAL NOT NULL);
-- Vectors live in their own table so that metadata scans (records, people) do not
-- read 2 KB of vector per row.
CREATE TABLE vectors (id INTEGER PRIMARY KEY REFERENCES faces(id), vector BLOB NOT NULL);
CREATE INDEX faces_person ON faces(person, content_hash);
"""


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def _write_json_atomic(path: Path, obj: dict[str, Any]) -> None:
    tmp = path.parent / f"{TMP_PREFIX}{path.name}-{uuid.uuid4().hex}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=2, sort_keys=True)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


class FaissGallery(Gallery):
    """FAISS + SQLite gallery. Use `create_gallery` / `open_gallery` to get one."""

    def __init__(self, path: Path, *, nprobe: int | None = None,
                 lock_timeout: float = DEFAULT_LOCK_TIMEOUT) -> None:
        self.path = Path(path)
        self.nprobe = nprobe
        self._mutex = threading.RLock()
        self._flock = FileLock(str(self.path / LOCK_NAME), timeout=lock_timeout, mode=0o600)
        self._db: sqlite3.Connection | None = None
        self._index: faiss.Index | None = None
        self._generation = -1

    # ---- construction -------------------------------------------------------------

    @classmethod
    def create(cls, path: str | os.PathLike[str], model_id: str, dim: int, *,
               approx_threshold: int = _index.DEFAULT_APPROX_THRESHOLD, **opts: Any) -> FaissGallery:
        path = Path(path)
        if not isinstance(model_id, str) or not model_id:
            raise GalleryError(f"{path}: model_id must be a non-empty string, got {model_id!r}")
        if not isinstance(dim, (int, np.integer)) or isinstance(dim, bool) or dim <= 0:
            raise GalleryError(f"{path}: dim must be a positive integer, got {dim!r}")
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
        with self._locked():
            self._load()
        if model_id is not None and model_id != self.model_id:
            self.close()
            raise GalleryError(f"{path}: gallery holds embeddings of model {self.model_id!r}, "
                               f"but model {model_id!r} was asked for")
        return self

    # ---- loading ------------------------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        # isolation_level=None: transactions are explicit, one per change.
        db = sqlite3.connect(self.path / DB_NAME, isolation_level=None, timeout=60.0,
                             check_same_thread=False)
        # DELETE journal (not WAL): no -wal file keeps old pages after a removal.
        # secure_delete zeroes freed content; temp_store=MEMORY keeps VACUUM's copy off /tmp.
        for pragma in ("journal_mode=DELETE", "secure_delete=ON", "synchronous=FULL",
                       "temp_store=MEMORY", "foreign_keys=ON"):
            db.execute(f"PRAGMA {pragma}")
        return db

    def _fail(self, what: str) -> GalleryError:
        return GalleryError(f"{self.path}: {what}")

    def _read_kv(self) -> dict[str, str]:
        assert self._db is not None
        kv = dict(self._db.execute("SELECT key, value FROM kv").fetchall())
        try:
            self.model_id = kv["model_id"]
            self.dim = int(kv["dim"])
            self.metric = kv["metric"]
            self.approx_threshold = int(kv["approx_threshold"])
            version = int(kv["format_version"])
            int(kv["generation"]), int(kv["next_id"])
        except (KeyError, ValueError) as e:
            raise self._fail(f"{DB_NAME} has a damaged kv table ({e!r})") from None
        if version != FORMAT_VERSION:
            raise self._fail(f"{DB_NAME} has format version {version}, this program reads {FORMAT_VERSION}")
        return kv

    def _load(self) -> None:
        """(Re)load everything from disk. Caller holds the file lock."""
        for stale in self.path.glob(TMP_PREFIX + "*"):
            logger.warning("%s: removing %s left by an interrupted save", self.path, stale.name)
            stale.unlink(missing_ok=True)
        meta_path, db_path, index_path = (self.path / n for n in (META_NAME, DB_NAME, INDEX_NAME))
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
            meta_gen = int(meta["generation"])
            meta_keys = (meta["model_id"], int(meta["dim"]), meta["index_sha256"], int(meta["count"]))
        except FileNotFoundError:
            raise self._fail(f"{META_NAME} is missing (gallery creation was interrupted?)") from None
        except (ValueError, KeyError, TypeError) as e:
            raise self._fail(f"{META_NAME} is damaged or truncated ({e})") from None
        if not db_path.is_file():
            raise self._fail(f"{DB_NAME} is missing")
        try:
            if self._db is None:
                self._db = self._connect()
            kv = self._read_kv()  # first read: SQLite rolls back a hot journal here
            page_size = self._db.execute("PRAGMA page_size").fetchone()[0]
            pages = self._db.execute("PRAGMA page_count").fetchone()[0]
            if db_path.stat().st_size < page_size * pages:
                raise self._fail(f"{DB_NAME} is truncated ({db_path.stat().st_size} bytes, "
                                 f"header says {page_size * pages})")
            if db_path.stat().st_size <= 64 << 20:  # a full check is cheap on small galleries
                check = self._db.execute("PRAGMA quick_check").fetchone()[0]
                if check != "ok":
                    raise self._fail(f"{DB_NAME} is corrupt: {check}")
            db_count = self._db.execute("SELECT count(*) FROM faces").fetchone()[0]
            journal = self.path / (DB_NAME + "-journal")
            if journal.exists():
                # A hot journal was rolled back by the reads above; one that is still here is
                # a stale one from a writer killed before its journal became hot. No writer
                # runs while we hold the lock, and it may hold pages of removed vectors.
                logger.warning("%s: removing stale %s", self.path, journal.name)
                journal.unlink(missing_ok=True)
        except sqlite3.DatabaseError as e:
            raise self._fail(f"{DB_NAME} is not a readable SQLite database ({e})") from None
        db_gen = int(kv["generation"])
        if (meta_keys[0], meta_keys[1]) != (self.model_id, self.dim):
            raise self._fail(f"{META_NAME} (model {meta_keys[0]!r}, dim {meta_keys[1]}) does not belong "
                             f"with {DB_NAME} (model {self.model_id!r}, dim {self.dim})")
        if meta_gen > db_gen:
            raise self._fail(f"{META_NAME} is at generation {meta_gen} but {DB_NAME} only at {db_gen}: "
                             "the database is older than its index (restored from a backup?)")
        if meta_gen < db_gen:
            logger.warning("%s: a save was interrupted after the database commit (generation %d, index %d); "
                           "rebuilding the index from %s", self.path, db_gen, meta_gen, DB_NAME)
            self._rebuild_from_db(db_gen)
            return
        if not index_path.is_file():
            raise self._fail(f"{INDEX_NAME} is missing")
        if _sha256(index_path) != meta_keys[2]:
            raise self._fail(f"{INDEX_NAME} does not match the checksum in {META_NAME} (damaged or truncated)")
        try:
            index = faiss.read_index(str(index_path))
        except RuntimeError as e:
            raise self._fail(f"{INDEX_NAME} cannot be read ({str(e).splitlines()[0]})") from None
        if index.d != self.dim or index.ntotal != db_count or meta_keys[3] != db_count:
            raise self._fail(f"{INDEX_NAME} holds {index.ntotal} vectors of dim {index.d}, "
                             f"{DB_NAME} {db_count} faces of dim {self.dim}")
        self._set_index(index)
        self._generation = db_gen

    def _set_index(self, index: faiss.Index) -> None:
        _index.configure(index, self.nprobe)
        self._index = index

    def _rebuild_from_db(self, generation: int) -> None:
        ids, vecs = self._all_vectors(None)
        self._set_index(_index.build(vecs, ids, self.approx_threshold))
        self._publish(self._write_index_tmp(), generation)

    # ---- saving -------------------------------------------------------------------

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        with self._mutex:
            try:
                self._flock.acquire()
            except Timeout:
                raise self._fail(f"timed out waiting for the lock {self._flock.lock_file} "
                                 "(another process is changing the gallery)") from None
            try:
                yield
            finally:
                self._flock.release()

    @contextlib.contextmanager
    def _write_txn(self) -> Iterator[sqlite3.Connection]:
        assert self._db is not None
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield self._db
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def _write_index_tmp(self) -> tuple[Path, str]:
        tmp = self.path / f"{TMP_PREFIX}{INDEX_NAME}-{uuid.uuid4().hex}"
        faiss.write_index(self._index, str(tmp))
        os.chmod(tmp, 0o600)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        return tmp, _sha256(tmp)

    def _publish(self, new_index: tuple[Path, str] | None, generation: int) -> None:
        """Put the index in place, then meta.json. Runs after the SQLite commit."""
        index_path = self.path / INDEX_NAME
        if new_index is not None:
            os.replace(new_index[0], index_path)
            _fsync_dir(self.path)
            sha = new_index[1]
        else:  # the vectors did not change (rename): the index file stays valid
            sha = json.loads((self.path / META_NAME).read_text(encoding="utf-8"))["index_sha256"]
        assert self._index is not None
        _write_json_atomic(self.path / META_NAME, {
            "format_version": FORMAT_VERSION, "model_id": self.model_id, "dim": self.dim,
            "metric": self.metric, "generation": generation, "index_sha256": sha,
            "count": int(self._index.ntotal), "index_kind": _index.kind(self._index)})
        self._generation = generation

    def _db_generation(self) -> int:
        assert self._db is not None
        return int(self._db.execute("SELECT value FROM kv WHERE key = 'generation'").fetchone()[0])

    @contextlib.contextmanager
    def _change(self) -> Iterator[None]:
        """Lock, catch up with other processes, and undo in-memory edits if the change fails."""
        self._check_open()
        with self._locked():
            if self._db_generation() != self._generation:
                self._load()
            try:
                yield
            except BaseException:
                # The index may have been edited in memory before the failure: reload it.
                with contextlib.suppress(Exception):
                    self._load()
                raise

    def _commit(self, apply_sql: Any, new_index: tuple[Path, str] | None) -> int:
        generation = self._generation + 1
        try:
            with self._write_txn() as db:
                apply_sql(db)
                db.execute("UPDATE kv SET value = ? WHERE key = 'generation'", (str(generation),))
        except BaseException:
            if new_index is not None:
                new_index[0].unlink(missing_ok=True)
            raise
        self._publish(new_index, generation)
        return generation

    # ---- input checks -------------------------------------------------------------

    def _check_open(self) -> None:
        if self._db is None:
            raise self._fail("gallery is closed")

    def _check_vectors(self, x: np.ndarray, model_id: str, what: str) -> np.ndarray:
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

    # ---- changes ------------------------------------------------------------------

    def add(self, vectors: np.ndarray, records: Sequence[FaceRecord], *, model_id: str) -> list[int]:
        x = self._check_vectors(vectors, model_id, "vectors")
        if len(records) != len(x):
            raise GalleryError(f"got {len(x)} vectors but {len(records)} records")
        rows = []
        for r in records:
            person = validate_name(r.person)
            box = tuple(float(b) for b in r.box)
            if len(box) != 4 or not all(np.isfinite(box)):
                raise GalleryError(f"face box {r.box!r} of {r.source!r} must be 4 finite numbers")
            rows.append((person, str(r.source), str(r.content_hash), *box, float(r.added_at)))
        if not rows:
            return []
        with self._change():
            assert self._db is not None and self._index is not None
            first = int(self._db.execute("SELECT value FROM kv WHERE key = 'next_id'").fetchone()[0])
            ids = np.arange(first, first + len(x), dtype=np.int64)
            index = _index.add(self._index, x, ids, self.approx_threshold, lambda: self._all_vectors(None))
            self._set_index(index)
            tmp = self._write_index_tmp()

            def apply(db: sqlite3.Connection) -> None:
                db.executemany("INSERT INTO faces VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                               [(int(i), *row) for i, row in zip(ids, rows)])
                db.executemany("INSERT INTO vectors VALUES (?, ?)",
                               [(int(i), v.tobytes()) for i, v in zip(ids, x)])
                db.execute("UPDATE kv SET value = ? WHERE key = 'next_id'", (str(first + len(x)),))

            self._commit(apply, tmp)
        for r, i, row in zip(records, ids, rows):
            r.id, r.person = int(i), row[0]
        logger.info("%s: added %d faces (ids %d..%d)", self.path, len(ids), ids[0], ids[-1])
        return ids.tolist()

    def remove_person(self, name: str) -> int:
        name = validate_name(name)
        with self._change():
            assert self._db is not None and self._index is not None
            ids = np.array([r[0] for r in self._db.execute("SELECT id FROM faces WHERE person = ?", (name,))],
                           dtype=np.int64)
            if len(ids) == 0:
                raise self._fail(f"no person named {name!r} in the gallery")
            index = _index.remove(self._index, ids, self.approx_threshold, lambda: self._all_vectors(None))
            self._set_index(index)
            tmp = self._write_index_tmp()

            def apply(db: sqlite3.Connection) -> None:
                db.execute("DELETE FROM vectors WHERE id IN (SELECT id FROM faces WHERE person = ?)", (name,))
                db.execute("DELETE FROM faces WHERE person = ?", (name,))

            self._commit(apply, tmp)
            # secure_delete already zeroed the rows; VACUUM also drops the freed pages so the
            # file shrinks and holds no trace of the removed vectors.
            self._db.execute("VACUUM")
        logger.info("%s: removed %d faces of %r", self.path, len(ids), name)
        return len(ids)

    def rename_person(self, old: str, new: str, *, merge: bool = False) -> None:
        """Rename `old` to `new`. If `new` already has faces, the two people are merged
        only when merge=True (fixing a duplicate enrolment); otherwise GalleryError,
        because a silent merge of two different people would be hard to undo."""
        old, new = validate_name(old), validate_name(new)
        with self._change():
            assert self._db is not None
            count = lambda n: self._db.execute("SELECT count(*) FROM faces WHERE person = ?", (n,)).fetchone()[0]  # noqa: E731
            if count(old) == 0:
                raise self._fail(f"no person named {old!r} in the gallery")
            if old == new:
                return
            if count(new) and not merge:
                raise self._fail(f"cannot rename {old!r} to {new!r}: {new!r} already exists "
                                 "(pass merge=True to merge them)")
            self._commit(lambda db: db.execute("UPDATE faces SET person = ? WHERE person = ?", (new, old)), None)
        logger.info("%s: renamed %r to %r", self.path, old, new)

    # ---- reads --------------------------------------------------------------------

    def refresh(self) -> bool:
        self._check_open()
        with self._mutex:
            if self._db_generation() == self._generation:
                return False
            with self._locked():
                self._load()
            return True

    @contextlib.contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        """A read transaction at the generation of the in-memory index.

        The SQLite read lock keeps writers from committing while we read, so the rows
        and the index we answer from belong to the same generation. If another process
        has committed since we loaded, reload first.
        """
        self._check_open()
        assert self._db is not None
        with self._mutex:
            while True:
                self._db.execute("BEGIN")
                try:
                    if self._db_generation() == self._generation:
                        yield self._db
                        return
                finally:
                    self._db.execute("COMMIT")
                self.refresh()

    def people(self) -> dict[str, int]:
        with self._read() as db:
            rows = db.execute("SELECT person, count(*) FROM faces GROUP BY person").fetchall()
        return dict(sorted(rows))

    def records(self, person: str | None = None) -> list[FaceRecord]:
        sql = "SELECT id, person, source, content_hash, x1, y1, x2, y2, added_at FROM faces"
        args: tuple[str, ...] = ()
        if person is not None:
            sql, args = sql + " WHERE person = ?", (validate_name(person),)
        with self._read() as db:
            rows = db.execute(sql + " ORDER BY id", args).fetchall()
        return [FaceRecord(person=p, source=s, content_hash=h, box=(x1, y1, x2, y2), added_at=t, id=i)
                for i, p, s, h, x1, y1, x2, y2, t in rows]

    def has_content(self, person: str, content_hash: str) -> bool:
        with self._read() as db:
            row = db.execute("SELECT 1 FROM faces WHERE person = ? AND content_hash = ? LIMIT 1",
                             (validate_name(person), content_hash)).fetchone()
        return row is not None

    def _all_vectors(self, person: str | None) -> tuple[np.ndarray, np.ndarray]:
        assert self._db is not None
        sql = "SELECT v.id, v.vector FROM vectors v"
        args: tuple[str, ...] = ()
        if person is not None:
            sql, args = sql + " JOIN faces f ON f.id = v.id WHERE f.person = ?", (person,)
        rows = self._db.execute(sql + " ORDER BY v.id", args).fetchall()
        ids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
        vecs = np.frombuffer(b"".join(r[1] for r in rows), dtype=np.float32).reshape(len(rows), self.dim)
        return ids, vecs.copy()

    def vectors(self, person: str | None = None) -> tuple[np.ndarray, np.ndarray]:
        person = None if person is None else validate_name(person)
        with self._read():
            return self._all_vectors(person)

    def search(self, queries: np.ndarray, k: int = 5, *, model_id: str) -> list[list[Hit]]:
        q = self._check_vectors(queries, model_id, "queries")
        if not isinstance(k, (int, np.integer)) or k < 1:
            raise GalleryError(f"k must be a positive integer, got {k!r}")
        if len(q) == 0:
            return []
        with self._read() as db:
            assert self._index is not None
            if self._index.ntotal == 0:
                return [[] for _ in range(len(q))]
            sims, ids = self._index.search(q, min(int(k), int(self._index.ntotal)))
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

    @property
    def generation(self) -> int:
        return self._generation

    @property
    def index_kind(self) -> str:
        assert self._index is not None
        return _index.kind(self._index)

    def close(self) -> None:
        with self._mutex:
            if self._db is not None:
                self._db.close()
                self._db = None
            self._index = None

    def __repr__(self) -> str:
        return f"FaissGallery({str(self.path)!r}, model_id={getattr(self, 'model_id', None)!r})"

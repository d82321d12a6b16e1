"""On-disk gallery: SQLite (source of truth) + a derived FAISS index; load, lock, save.

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
import errno
import json
import logging
import os
import sqlite3
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TYPE_CHECKING

import numpy as np
from filelock import FileLock, Timeout

from gallery import _index
from gallery.base import Gallery

if TYPE_CHECKING:
    import faiss
from facecore.atomic import fsync_dir, sha256_file, write_json_atomic
from facecore.errors import GalleryError

__all__ = ["DB_NAME", "DEFAULT_LOCK_TIMEOUT", "FORMAT_VERSION", "INDEX_NAME", "LOCK_NAME", "META_NAME",
           "READABLE_VERSIONS", "SCHEMA", "TMP_PREFIX", "UNIQUE_PHOTO_INDEX", "GalleryStore"]

logger = logging.getLogger(__name__)

FORMAT_VERSION = 2
# Version 1 had no `chip` column; it is added in place (under the lock) when such a gallery opens.
READABLE_VERSIONS = (1, 2)
DB_NAME, INDEX_NAME, META_NAME, LOCK_NAME = "meta.sqlite", "index.faiss", "meta.json", ".lock"
TMP_PREFIX = ".tmp-"
DEFAULT_LOCK_TIMEOUT = 120.0

SCHEMA = """
CREATE TABLE kv (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE faces (
    id INTEGER PRIMARY KEY, person TEXT NOT NULL, source TEXT NOT NULL,
    content_hash TEXT NOT NULL, x1 REAL NOT NULL, y1 REAL NOT NULL, x2 REAL NOT NULL,
    y2 REAL NOT NULL, added_at REAL NOT NULL, chip TEXT NOT NULL DEFAULT '');
-- Vectors live in their own table so that metadata scans (records, people) do not
-- read 2 KB of vector per row.
CREATE TABLE vectors (id INTEGER PRIMARY KEY REFERENCES faces(id), vector BLOB NOT NULL);
CREATE INDEX faces_person ON faces(person, content_hash);
"""
# One face per photo and person: two processes enrolling the same photo for the same person at
# once store it once. Created with every new gallery, and by the first change to an older one.
UNIQUE_PHOTO_INDEX = "CREATE UNIQUE INDEX IF NOT EXISTS faces_person_photo ON faces(person, content_hash)"


class GalleryStore(Gallery):
    """Loading, locking and crash-safe saving of a gallery directory (no public API)."""

    approx_threshold: int

    def __init__(self, path: Path, *, k_factor: float | None = None,
                 lock_timeout: float = DEFAULT_LOCK_TIMEOUT) -> None:
        self.path = Path(path)
        self.k_factor = k_factor
        self._mutex = threading.RLock()
        self._flock = FileLock(str(self.path / LOCK_NAME), timeout=lock_timeout, mode=0o600)
        self._db: sqlite3.Connection | None = None
        self._index: faiss.Index | None = None
        self._generation = -1

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

    def _read_kv(self) -> dict[str, str]:
        assert self._db is not None
        kv = dict(self._db.execute("SELECT key, value FROM kv").fetchall())
        try:
            self.model_id, self.dim, self.metric = kv["model_id"], int(kv["dim"]), kv["metric"]
            self.approx_threshold = int(kv["approx_threshold"])
            version = int(kv["format_version"])
            int(kv["generation"]), int(kv["next_id"])
        except (KeyError, ValueError) as e:
            raise self._fail(f"{DB_NAME} has a damaged kv table ({e!r})") from None
        if version not in READABLE_VERSIONS:
            raise self._fail(f"{DB_NAME} has format version {version}, this program reads {READABLE_VERSIONS}")
        return kv

    def _upgrade(self, kv: dict[str, str]) -> None:
        """Add version 2's `chip` column to a version-1 database, under the caller's lock; the
        generation does not change (the index and meta.json stay valid)."""
        assert self._db is not None
        if int(kv["format_version"]) == FORMAT_VERSION:
            return
        with self._write_txn() as db:
            cols = {r[1] for r in db.execute("PRAGMA table_info(faces)")}
            if "chip" not in cols:
                db.execute("ALTER TABLE faces ADD COLUMN chip TEXT NOT NULL DEFAULT ''")
            db.execute("UPDATE kv SET value = ? WHERE key = 'format_version'", (str(FORMAT_VERSION),))
        logger.info("%s: upgraded %s from format %s to %d", self.path, DB_NAME, kv["format_version"], FORMAT_VERSION)

    def _load(self) -> None:
        """(Re)load everything from disk. Caller holds the file lock."""
        for stale in self.path.glob(TMP_PREFIX + "*"):
            logger.warning("%s: removing %s left by an interrupted save", self.path, stale.name)
            with contextlib.suppress(OSError):  # read-only: nobody can be saving either
                stale.unlink(missing_ok=True)
        meta_gen, meta_keys = self._read_meta()
        kv, db_count = self._open_db()
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
        self._set_index(self._read_index(meta_keys, db_count))
        self._generation = db_gen

    def _read_meta(self) -> tuple[int, tuple[str, int, str, int]]:
        """meta.json's generation, and its (model id, dim, index sha256, count)."""
        try:
            meta = json.loads((self.path / META_NAME).read_text(encoding="utf-8"))
            return int(meta["generation"]), (meta["model_id"], int(meta["dim"]), meta["index_sha256"], int(meta["count"]))
        except FileNotFoundError:
            raise self._fail(f"{META_NAME} is missing (gallery creation was interrupted?)") from None
        except (ValueError, KeyError, TypeError) as e:
            raise self._fail(f"{META_NAME} is damaged or truncated ({e})") from None

    def _open_db(self) -> tuple[dict[str, str], int]:
        """Open and check the database (rolling back a hot journal, upgrading an older format):
        its key-value table and its count of faces."""
        db_path = self.path / DB_NAME
        if not db_path.is_file():
            raise self._fail(f"{DB_NAME} is missing")
        try:
            if self._db is None:
                self._db = self._connect()
            kv = self._read_kv()  # first read: SQLite rolls back a hot journal here
            self._upgrade(kv)
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
                # A hot journal was rolled back by the reads above; one still here is stale (a writer
                # killed before it became hot), and it may hold pages of removed vectors.
                logger.warning("%s: removing stale %s", self.path, journal.name)
                with contextlib.suppress(OSError):
                    journal.unlink(missing_ok=True)
        except sqlite3.DatabaseError as e:
            raise self._fail(f"{DB_NAME} is not a readable SQLite database ({e})") from None
        return kv, db_count

    def _read_index(self, meta_keys: tuple[str, int, str, int], db_count: int) -> faiss.Index:
        """index.faiss, checked against meta.json's checksum and the database's count."""
        index_path = self.path / INDEX_NAME
        if not index_path.is_file():
            raise self._fail(f"{INDEX_NAME} is missing")
        if sha256_file(index_path) != meta_keys[2]:
            raise self._fail(f"{INDEX_NAME} does not match the checksum in {META_NAME} (damaged or truncated)")
        try:
            index = _index.read_index(str(index_path))
        except RuntimeError as e:
            raise self._fail(f"{INDEX_NAME} cannot be read ({str(e).splitlines()[0]})") from None
        if index.d != self.dim or index.ntotal != db_count or meta_keys[3] != db_count:
            raise self._fail(f"{INDEX_NAME} holds {index.ntotal} vectors of dim {index.d}, "
                             f"{DB_NAME} {db_count} faces of dim {self.dim}")
        return index

    def _set_index(self, index: faiss.Index) -> None:
        _index.configure(index, self.k_factor)
        self._index = index

    def _rebuild_from_db(self, generation: int) -> None:
        ids, vecs = self._all_vectors(None)
        self._set_index(_index.build(vecs, ids, self.approx_threshold))
        try:
            self._publish(self._write_index_tmp(), generation)
        except (OSError, GalleryError) as e:
            # The database is the truth and the rebuilt index is in memory: serve from it, and
            # let the next load write the file (e.g. once the full disk has room again).
            logger.warning("%s: could not write the rebuilt index (%s); using it from memory", self.path, e)
            self._generation = generation

    @contextlib.contextmanager
    def _locked(self, write: bool = True) -> Iterator[None]:
        """The inter-process lock. On a read-only directory nobody can change the gallery, so
        reads go ahead without it and writes fail with one line saying so."""
        with self._mutex:
            try:
                self._flock.acquire()
            except Timeout:
                raise self._fail(f"timed out waiting for the lock {self._flock.lock_file} "
                                 "(another process is changing the gallery)") from None
            except OSError as e:
                if e.errno not in (errno.EROFS, errno.EACCES, errno.EPERM):
                    raise self._fail(f"cannot take the lock {LOCK_NAME} ({e.strerror or e})") from None
                if write:
                    raise self._fail(f"cannot change the gallery: the directory is read-only "
                                     f"({e.strerror or e})") from None
                yield
                return
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
            self._db.execute("COMMIT")
        except BaseException:
            # A failed COMMIT (disk full) can leave the transaction open; never leave it so.
            if self._db.in_transaction:
                self._db.execute("ROLLBACK")
            raise

    def _write_index_tmp(self) -> tuple[Path, str]:
        tmp = self.path / f"{TMP_PREFIX}{INDEX_NAME}-{uuid.uuid4().hex}"
        try:
            # Created 0600 before faiss writes into it: the vectors are never world-readable.
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
            try:
                _index.write_index(self._index, str(tmp))
            except RuntimeError as e:  # faiss reports write errors (disk full) as RuntimeError
                raise OSError(f"faiss could not write {tmp.name}: {str(e).splitlines()[0]}") from None
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
            return tmp, sha256_file(tmp)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise

    def _publish(self, new_index: tuple[Path, str] | None, generation: int) -> None:
        """Put the index in place, then meta.json. Runs after the SQLite commit."""
        index_path = self.path / INDEX_NAME
        if new_index is not None:
            try:
                os.replace(new_index[0], index_path)
            except BaseException:
                new_index[0].unlink(missing_ok=True)
                raise
            fsync_dir(self.path)
            sha = new_index[1]
        else:  # the vectors did not change (rename): the index file stays valid
            sha = json.loads((self.path / META_NAME).read_text(encoding="utf-8"))["index_sha256"]
        assert self._index is not None
        write_json_atomic(self.path / META_NAME, {
            "format_version": FORMAT_VERSION, "model_id": self.model_id, "dim": self.dim,
            "metric": self.metric, "generation": generation, "index_sha256": sha,
            "count": int(self._index.ntotal), "index_kind": _index.kind(self._index)},
            tmp_prefix=f"{TMP_PREFIX}{META_NAME}-", sync_dir=True)
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
            except BaseException as exc:
                # The index may have been edited in memory before the failure: reload it.
                with contextlib.suppress(Exception):
                    self._load()
                if isinstance(exc, (OSError, sqlite3.Error)):  # disk full, I/O error, read-only...
                    raise self._fail(f"could not save the change, nothing was changed ({exc})") from exc
                raise

    def _commit(self, apply_sql: Callable[[sqlite3.Connection], Any], new_index: tuple[Path, str] | None) -> int:
        generation = self._generation + 1
        try:
            with self._write_txn() as db:
                apply_sql(db)
                db.execute("UPDATE kv SET value = ? WHERE key = 'generation'", (str(generation),))
        except BaseException:
            if new_index is not None:
                new_index[0].unlink(missing_ok=True)
            raise
        # Committed: the change is durable from here on, whatever happens to the files below.
        try:
            self._publish(new_index, generation)
        except OSError as e:
            # The database holds the change, one generation ahead of meta.json, so every load
            # (ours included: our generation is left behind) rebuilds the index from it.
            logger.warning("%s: change saved, but the index file could not be updated (%s); "
                           "it will be rebuilt from %s on the next load", self.path, e, DB_NAME)
        return generation

    def _check_open(self) -> None:
        if self._db is None:
            raise self._fail("gallery is closed")

    def refresh(self) -> bool:
        self._check_open()
        with self._mutex:
            if self._db_generation() == self._generation:
                return False
            with self._locked(write=False):
                self._load()
            return True

    @contextlib.contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        """A read transaction at the generation of the in-memory index (SQLite's read lock keeps
        writers from committing meanwhile); reloads first if another process has committed."""
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


"""Milvus implementation of `Gallery`: a Milvus server or cluster, or Milvus Lite (embedded).

    milvus://HOST:PORT/COLLECTION     a Milvus server (standalone or cluster)
    milvus-lite:PATH.db               Milvus Lite, a local data directory (collection "faces")

One collection holds the faces: int64 id (primary key), the unit vector, person, source,
content hash, box, added_at, and a JSON `attrs` field carrying every other `FaceRecord`
field, so fields added to FaceRecord later travel without a schema change. A second
collection COLLECTION__meta holds key/value rows: model id, dimension, format version,
the next id, and the pending-change journal described below.

Milvus has no multi-row transactions and no conditional writes, so the project adds:
  * one writer at a time: every change takes a lock (for Milvus Lite a file lock beside
    the data directory, which also serialises readers, since Milvus Lite lets only one
    process open a data directory at a time; for a server, a lock file on this machine,
    so writers on other machines are NOT excluded: see the README);
  * a journal row written before each multi-row change and cleared after it; whoever takes
    the lock next finishes (remove, rename) or undoes (add) a change a killed writer left
    half done, so a gallery is always before or after a change;
  * ids from a counter kept in the meta collection, reserved before the faces are written,
    so they are never reused, even after a crash.
Search is exact by default (index FLAT, inner product on unit vectors = cosine), so the
kNN vote matches the FAISS backend's; `index="HNSW"` trades exactness for speed.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import numpy as np
from filelock import FileLock, Timeout

from gallery.base import FaceRecord, Gallery, Hit, check_records, refuse_lookalikes, validate_name
from gallery.errors import GalleryError, PersonExists, PersonNotFound

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1
LITE_PREFIX, SERVER_PREFIX = "milvus-lite:", "milvus://"
LITE_COLLECTION = "faces"
CORE_FIELDS = ("person", "source", "content_hash", "box", "added_at", "id")
MAX_VARCHAR = 65_535
WINDOW = 16_384  # the most rows one Milvus query returns
PAGE = 1000  # rows per page of the query iterator and per upsert
DEFAULT_LOCK_TIMEOUT = 120.0
DEFAULT_HOLD_S = 1.0
INDEXES = {"FLAT": {}, "HNSW": {"M": 16, "efConstruction": 200}}


def is_milvus(spec: str | os.PathLike[str]) -> bool:
    return isinstance(spec, str) and spec.startswith((LITE_PREFIX, SERVER_PREFIX))


def parse(spec: str) -> tuple[str, str, str]:
    """("lite", abs path, collection) or ("server", http URI, collection); GalleryError if malformed."""
    if spec.startswith(LITE_PREFIX):
        path = spec[len(LITE_PREFIX):]
        if not path.endswith(".db") or len(path) <= 3:
            raise GalleryError(f"{spec}: a Milvus Lite gallery is milvus-lite:PATH.db (the path must end in .db)")
        return "lite", os.path.abspath(path), LITE_COLLECTION
    parts = urlsplit(spec)
    collection = parts.path.strip("/")
    try:
        port = parts.port
    except ValueError:
        port = None
    if parts.scheme != "milvus" or not parts.hostname or port is None or not collection:
        raise GalleryError(f"{spec}: a Milvus gallery is milvus://HOST:PORT/COLLECTION")
    if not collection.replace("_", "a").isalnum() or collection[0].isdigit():
        raise GalleryError(f"{spec}: collection name {collection!r} must be letters, digits and '_', "
                           "not starting with a digit")
    return "server", f"http://{parts.hostname}:{port}", collection


def _quote(value: str) -> str:
    """A Milvus filter-expression string literal (double-quoted, JSON escapes)."""
    return json.dumps(value, ensure_ascii=False)


class _Connection:
    """A MilvusClient opened on demand and the lock that serialises its users.

    Milvus Lite lets one process open a data directory at a time (it holds an exclusive
    flock until the directory is released), so a process holds it only while it uses it:
    the file lock is taken, the directory opened, and both let go `hold_s` seconds after
    the last operation, when another process waiting for the lock gets its turn. For a
    server the client stays open; the file lock is only taken around changes.
    """

    _shared: dict[str, _Connection] = {}
    _shared_lock = threading.Lock()

    def __init__(self, kind: str, target: str, collection: str, lock_timeout: float, hold_s: float) -> None:
        self.kind, self.target = kind, target
        self.mutex = threading.RLock()
        if kind == "lite":
            lock_path = target + ".lock"
        else:
            lock_dir = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "facetool" / "milvus-locks"
            lock_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
            lock_path = str(lock_dir / (target.split("//", 1)[1].replace(":", "_") + f"_{collection}.lock"))
        # thread_local=False: the idle timer thread releases what an operation's thread took.
        self.flock = FileLock(lock_path, timeout=lock_timeout, mode=0o600, thread_local=False)
        self.hold_s = hold_s
        self.client: Any = None
        self.users = 0
        self.opens = 0  # how many times the client was (re)opened
        self.key = ""
        self._timer: threading.Timer | None = None

    @classmethod
    def get(cls, kind: str, target: str, collection: str, lock_timeout: float, hold_s: float) -> _Connection:
        # Milvus Lite runs one embedded server per data directory per process: every gallery
        # object on the same directory must share it (and its lock).
        key = f"{kind}:{target}:{collection}"
        with cls._shared_lock:
            conn = cls._shared.get(key)
            if conn is None:
                conn = cls._shared[key] = cls(kind, target, collection, lock_timeout, hold_s)
                conn.key = key
            conn.users += 1
            return conn

    def _acquire_flock(self) -> None:
        try:
            self.flock.acquire()
        except Timeout:
            raise GalleryError(
                f"{self.target}: timed out after {self.flock.timeout:.0f} s waiting for {self.flock.lock_file} "
                + ("(Milvus Lite lets one process use a gallery at a time, and another process is using it)"
                   if self.kind == "lite" else "(another process on this machine is changing the gallery)")) from None

    def _open(self) -> None:
        from pymilvus import MilvusClient

        if self.kind == "lite":
            self._acquire_flock()
            try:
                Path(self.target).mkdir(parents=True, exist_ok=True, mode=0o700)
                os.chmod(self.target, 0o700)  # biometric data: owner only, whatever the umask
                self.client = MilvusClient(self.target)
                self.opens += 1
            except BaseException:
                self.flock.release()
                raise
        else:
            self.client = MilvusClient(uri=self.target)
            self.opens += 1

    def _release(self) -> None:
        """Close the client and, for Milvus Lite, the data directory and the lock."""
        if self.client is None:
            return
        try:
            self.client.close()
        finally:
            self.client = None
            if self.kind == "lite":
                from milvus_lite.server_manager import server_manager_instance

                try:
                    server_manager_instance.release_server(self.target)
                finally:
                    self.flock.release()

    def _idle(self) -> None:
        with self.mutex:
            self._timer = None
            self._release()

    @contextlib.contextmanager
    def use(self, *, write: bool) -> Iterator[Any]:
        with self.mutex:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            if self.client is None:
                self._open()
            locked = write and self.kind == "server"
            if locked:
                self._acquire_flock()
            try:
                yield self.client
            finally:
                if locked:
                    self.flock.release()
                if self.kind == "lite" and self.client is not None:
                    if self.hold_s <= 0:
                        self._release()
                    else:
                        self._timer = threading.Timer(self.hold_s, self._idle)
                        self._timer.daemon = True
                        self._timer.start()

    def drop_user(self) -> None:
        with self._shared_lock:
            self.users -= 1
            if self.users > 0:
                return
            del self._shared[self.key]
        with self.mutex:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            self._release()


class MilvusGallery(Gallery):
    """Gallery in a Milvus collection. Use `create_gallery` / `open_gallery` with a milvus URI."""

    def __init__(self, spec: str, *, lock_timeout: float = DEFAULT_LOCK_TIMEOUT, hold_s: float = DEFAULT_HOLD_S,
                 search_params: dict[str, Any] | None = None) -> None:
        self.path = spec  # type: ignore[assignment]  # a URI, shown in every error message
        self.kind, target, self.collection = parse(spec)
        self.meta_collection = self.collection + "__meta"
        self.search_params = dict(search_params or {})
        self._seen_opens = 0
        self._conn: _Connection | None = _Connection.get(self.kind, target, self.collection, lock_timeout, hold_s)

    # ---- plumbing -----------------------------------------------------------------

    def _check_open(self) -> None:
        if self._conn is None:
            raise self._fail("gallery is closed")

    @contextlib.contextmanager
    def _use(self, *, write: bool = False) -> Iterator[Any]:
        self._check_open()
        assert self._conn is not None
        from pymilvus.exceptions import MilvusException

        try:
            with self._conn.use(write=write) as client:
                fresh = self._conn.opens != self._seen_opens
                self._seen_opens = self._conn.opens
                exists = (fresh or write) and client.has_collection(self.meta_collection)
                if fresh and exists:  # Milvus Lite opens its collections released
                    client.load_collection(self.meta_collection)
                    client.load_collection(self.collection)
                # Writers on a server, and whoever opens Milvus Lite (which excludes every other
                # process), first repair what a killed writer left.
                if exists and (write or self.kind == "lite"):
                    self._recover(client)
                yield client
        except MilvusException as e:
            raise self._fail(f"Milvus refused the operation ({e.message})") from e
        except (OSError, ConnectionError) as e:
            raise self._fail(f"could not reach Milvus ({e})") from e

    def _meta(self, client: Any) -> dict[str, str]:
        rows = client.query(self.meta_collection, filter='key != ""', output_fields=["key", "value"])
        return {r["key"]: r["value"] for r in rows}

    def _set_meta(self, client: Any, kv: dict[str, str]) -> None:
        client.upsert(self.meta_collection, [{"key": k, "value": v, "v": [1.0, 0.0]} for k, v in kv.items()])

    def _load_meta(self, client: Any) -> None:
        if not client.has_collection(self.collection) or not client.has_collection(self.meta_collection):
            raise self._fail("no gallery here (no such collection)")
        kv = self._meta(client)
        try:
            version = int(kv["format_version"])
            self.model_id, self.dim = kv["model_id"], int(kv["dim"])
            int(kv["next_id"])
        except (KeyError, ValueError) as e:
            raise self._fail(f"{self.meta_collection} is damaged ({e!r})") from None
        if version != FORMAT_VERSION:
            raise self._fail(f"format version {version}, this program reads {FORMAT_VERSION}")

    def _scan(self, client: Any, flt: str, fields: list[str]) -> list[dict[str, Any]]:
        """Every row matching `flt`, ordered by id. Milvus caps one query's result window at
        16,384 rows; beyond that the rows come from a query iterator, page by page."""
        out = list(client.query(self.collection, filter=flt, output_fields=fields, limit=WINDOW))
        if len(out) < WINDOW:
            return sorted(out, key=lambda r: r["id"])
        out = []
        it = client.query_iterator(self.collection, batch_size=PAGE, filter=flt, output_fields=fields)
        try:
            while batch := it.next():
                out.extend(batch)
        finally:
            it.close()
        out.sort(key=lambda r: r["id"])
        return out

    # ---- the pending-change journal -----------------------------------------------

    def _begin(self, client: Any, change: dict[str, Any], **kv: str) -> None:
        self._set_meta(client, {"pending": json.dumps(change), **kv})

    def _end(self, client: Any) -> None:
        self._set_meta(client, {"pending": ""})
        if self.kind == "lite":
            # Milvus Lite searches rows still in its memory table by brute force in Python (0.5 s
            # per query at 2,000 faces against 0.04 s once flushed to a segment), and a flush
            # also moves them from its write-ahead log into fsynced segment files. A server
            # flushes on its own schedule and rate-limits explicit flushes.
            client.flush(self.collection)

    def _recover(self, client: Any) -> None:
        """Finish or undo a change a killed writer left half done. Caller holds the write lock."""
        pending = self._meta(client).get("pending", "")
        if not pending:
            return
        change = json.loads(pending)
        logger.warning("%s: a change was interrupted (%s); %s", self.path, change["op"],
                       "undoing it" if change["op"] == "add" else "finishing it")
        if change["op"] == "add":
            client.delete(self.collection, filter=f"id >= {int(change['first'])} and id < {int(change['end'])}")
        elif change["op"] == "remove":
            client.delete(self.collection, filter=f"person == {_quote(change['name'])}")
        elif change["op"] == "rename":
            self._apply_rename(client, change["old"], change["new"])
        self._end(client)

    # ---- construction -------------------------------------------------------------

    @classmethod
    def create(cls, spec: str, model_id: str, dim: int, *, index: str = "FLAT", exist_ok: bool = False,
               **opts: Any) -> MilvusGallery:
        """A new gallery; with exist_ok, an existing one is opened instead (it must hold
        `model_id`'s embeddings)."""
        from pymilvus import DataType

        if not isinstance(model_id, str) or not model_id:
            raise GalleryError(f"{spec}: model_id must be a non-empty string, got {model_id!r}")
        if not isinstance(dim, (int, np.integer)) or isinstance(dim, bool) or dim <= 0:
            raise GalleryError(f"{spec}: dim must be a positive integer, got {dim!r}")
        if index not in INDEXES:
            raise GalleryError(f"{spec}: index must be one of {sorted(INDEXES)}, got {index!r}")
        self = cls(spec, **opts)
        with self._use() as client:
            if client.has_collection(self.collection) or client.has_collection(self.meta_collection):
                self.close()
                if exist_ok:
                    return cls.open(spec, model_id, **opts)
                raise GalleryError(f"{spec}: already exists; open it with open_gallery or choose a new name")
            meta = client.create_schema(auto_id=False, enable_dynamic_field=False)
            meta.add_field("key", DataType.VARCHAR, is_primary=True, max_length=64)
            meta.add_field("value", DataType.VARCHAR, max_length=MAX_VARCHAR)
            meta.add_field("v", DataType.FLOAT_VECTOR, dim=2)  # Milvus wants a vector in every collection
            params = client.prepare_index_params()
            params.add_index("v", index_type="FLAT", metric_type="IP")
            client.create_collection(self.meta_collection, schema=meta, index_params=params,
                                     consistency_level="Strong")
            faces = client.create_schema(auto_id=False, enable_dynamic_field=False)
            faces.add_field("id", DataType.INT64, is_primary=True)
            faces.add_field("vector", DataType.FLOAT_VECTOR, dim=int(dim))
            faces.add_field("person", DataType.VARCHAR, max_length=512)
            faces.add_field("source", DataType.VARCHAR, max_length=MAX_VARCHAR)
            faces.add_field("content_hash", DataType.VARCHAR, max_length=128)
            for b in ("x1", "y1", "x2", "y2", "added_at"):
                faces.add_field(b, DataType.DOUBLE)
            faces.add_field("attrs", DataType.JSON)
            params = client.prepare_index_params()
            params.add_index("vector", index_type=index, metric_type="IP", params=INDEXES[index])
            client.create_collection(self.collection, schema=faces, index_params=params, consistency_level="Strong")
            # Written last: a gallery whose creation was interrupted has no format_version and
            # is reported as damaged rather than used half made.
            self._set_meta(client, {"model_id": model_id, "dim": str(int(dim)), "next_id": "0", "pending": "",
                                    "index": index, "format_version": str(FORMAT_VERSION)})
            self._load_meta(client)
        logger.info("created Milvus gallery %s for model %s (dim %d)", spec, model_id, dim)
        return self

    @classmethod
    def open(cls, spec: str, model_id: str | None = None, **opts: Any) -> MilvusGallery:
        kind, target, _ = parse(spec)
        if kind == "lite" and not os.path.isdir(target):
            raise GalleryError(f"{spec}: no gallery here ({target} does not exist)")
        self = cls(spec, **opts)
        try:
            with self._use() as client:
                self._load_meta(client)
        except BaseException:
            self.close()
            raise
        if model_id is not None and model_id != self.model_id:
            self.close()
            raise GalleryError(f"{spec}: gallery holds embeddings of model {self.model_id!r}, "
                               f"but model {model_id!r} was asked for")
        return self

    # ---- changes ------------------------------------------------------------------

    def add(self, vectors: np.ndarray, records: Sequence[FaceRecord], *, model_id: str,
            allow_similar: bool = False) -> list[int]:
        """As the FAISS gallery's `add`: a photo already stored for the same person is not stored
        again (its record keeps id -1), checked under the write lock; a new name that looks like
        an enrolled one is refused unless `allow_similar`."""
        x = self._check_vectors(vectors, model_id, "vectors")
        if len(records) != len(x):
            raise GalleryError(f"got {len(x)} vectors but {len(records)} records")
        rows = check_records(records)
        if not rows:
            return []
        extra = [f.name for f in dataclasses.fields(FaceRecord) if f.name not in CORE_FIELDS]
        with self._use(write=True) as client:
            people = {r["person"] for r in self._scan(client, "id >= 0", ["person"])}
            if not allow_similar:
                refuse_lookalikes(sorted({row[0] for row in rows}), people)
            hashes = sorted({row[2] for row in rows})
            stored = {(r["person"], r["content_hash"]) for r in self._scan(
                client, f"content_hash in [{', '.join(map(_quote, hashes))}]", ["person", "content_hash"])}
            keep = []
            for i, row in enumerate(rows):
                if (row[0], row[2]) not in stored:
                    stored.add((row[0], row[2]))
                    keep.append(i)
            if not keep:
                return []
            x, rows, kept = x[keep], [rows[i] for i in keep], [records[i] for i in keep]
            first = int(self._meta(client)["next_id"])
            ids = list(range(first, first + len(x)))
            # Ids are reserved together with the journal entry, before any face is written.
            self._begin(client, {"op": "add", "first": first, "end": first + len(x)}, next_id=str(first + len(x)))
            client.insert(self.collection, [
                {"id": i, "vector": v.tolist(), "person": row[0], "source": row[1], "content_hash": row[2],
                 "x1": row[3], "y1": row[4], "x2": row[5], "y2": row[6], "added_at": row[7],
                 "attrs": {name: getattr(r, name) for name in extra}}
                for i, v, row, r in zip(ids, x, rows, kept)])
            self._end(client)
        for r, i, row in zip(kept, ids, rows):
            r.id, r.person = int(i), row[0]
        logger.info("%s: added %d faces (ids %d..%d)", self.path, len(ids), ids[0], ids[-1])
        return ids

    def remove_person(self, name: str) -> int:
        name = validate_name(name)
        with self._use(write=True) as client:
            n = len(self._scan(client, f"person == {_quote(name)}", ["id"]))
            if n == 0:
                raise self._fail(f"no person named {name!r} in the gallery", PersonNotFound, name=name)
            self._begin(client, {"op": "remove", "name": name})
            client.delete(self.collection, filter=f"person == {_quote(name)}")
            self._end(client)
        logger.info("%s: removed %d faces of %r", self.path, n, name)
        return n

    def _apply_rename(self, client: Any, old: str, new: str) -> None:
        rows = self._scan(client, f"person == {_quote(old)}", ["*"])
        for s in range(0, len(rows), PAGE):
            client.upsert(self.collection, [{**r, "person": new} for r in rows[s:s + PAGE]])

    def rename_person(self, old: str, new: str, *, merge: bool = False, allow_similar: bool = False) -> None:
        """Rename `old` to `new`; if `new` exists this is a merge, allowed only with merge=True.
        A `new` that looks like another enrolled person is refused unless `allow_similar`."""
        old, new = validate_name(old), validate_name(new)
        with self._use(write=True) as client:
            count = lambda n: len(client.query(self.collection, filter=f"person == {_quote(n)}",  # noqa: E731
                                               output_fields=["id"], limit=1))
            if count(old) == 0:
                raise self._fail(f"no person named {old!r} in the gallery", PersonNotFound, name=old)
            if old == new:
                return
            if count(new) and not merge:
                raise self._fail(f"cannot rename {old!r} to {new!r}: {new!r} already exists "
                                 "(pass merge=True to merge them)", PersonExists, old=old, new=new)
            if not count(new) and not allow_similar:
                others = {r["person"] for r in self._scan(client, f"person != {_quote(old)}", ["person"])}
                refuse_lookalikes([new], others)
            self._begin(client, {"op": "rename", "old": old, "new": new})
            self._apply_rename(client, old, new)
            self._end(client)
        logger.info("%s: renamed %r to %r", self.path, old, new)

    def set_chips(self, chips: dict[int, str]) -> None:
        """Record the chip (sha256 of the face's chip file) of existing faces, id -> chip; unknown
        ids -> GalleryError. Idempotent, so a run stopped half way is simply run again."""
        ids = sorted({int(i) for i in chips})
        if not ids:
            return
        with self._use(write=True) as client:
            rows = self._scan(client, f"id in [{', '.join(map(str, ids))}]", ["*"])
            missing = sorted(set(ids) - {int(r["id"]) for r in rows})
            if missing:
                raise self._fail(f"no faces with ids {missing[:10]}")
            for s in range(0, len(rows), PAGE):
                client.upsert(self.collection, [{**r, "attrs": {**(r.get("attrs") or {}), "chip": str(chips[r["id"]])}}
                                                for r in rows[s:s + PAGE]])
            if self.kind == "lite":
                client.flush(self.collection)

    # ---- reads --------------------------------------------------------------------

    def _records_from(self, rows: list[dict[str, Any]]) -> list[FaceRecord]:
        known = {f.name for f in dataclasses.fields(FaceRecord)}
        return [FaceRecord(person=r["person"], source=r["source"], content_hash=r["content_hash"],
                           box=(r["x1"], r["y1"], r["x2"], r["y2"]), added_at=r["added_at"], id=int(r["id"]),
                           **{k: v for k, v in (r.get("attrs") or {}).items() if k in known and k not in CORE_FIELDS})
                for r in rows]

    def people(self) -> dict[str, int]:
        with self._use() as client:
            rows = self._scan(client, "id >= 0", ["person"])
        counts: dict[str, int] = {}
        for r in rows:
            counts[r["person"]] = counts.get(r["person"], 0) + 1
        return dict(sorted(counts.items()))

    def records(self, person: str | None = None) -> list[FaceRecord]:
        flt = "id >= 0" if person is None else f"person == {_quote(validate_name(person))}"
        fields = ["id", "person", "source", "content_hash", "x1", "y1", "x2", "y2", "added_at", "attrs"]
        with self._use() as client:
            return self._records_from(self._scan(client, flt, fields))

    def has_content(self, person: str, content_hash: str) -> bool:
        flt = f"person == {_quote(validate_name(person))} and content_hash == {_quote(str(content_hash))}"
        with self._use() as client:
            return bool(client.query(self.collection, filter=flt, output_fields=["id"], limit=1))

    def vectors(self, person: str | None = None) -> tuple[np.ndarray, np.ndarray]:
        flt = "id >= 0" if person is None else f"person == {_quote(validate_name(person))}"
        with self._use() as client:
            rows = self._scan(client, flt, ["id", "vector"])
        ids = np.array([r["id"] for r in rows], dtype=np.int64)
        vecs = np.array([r["vector"] for r in rows], dtype=np.float32).reshape(len(rows), self.dim)
        return ids, vecs

    def search(self, queries: np.ndarray, k: int = 5, *, model_id: str) -> list[list[Hit]]:
        q = self._check_vectors(queries, model_id, "queries")
        if not isinstance(k, (int, np.integer)) or k < 1:
            raise GalleryError(f"k must be a positive integer, got {k!r}")
        if len(q) == 0:
            return []
        with self._use() as client:
            res = client.search(self.collection, data=[v.tolist() for v in q], limit=int(k),
                                output_fields=["person", "source"],
                                search_params={"metric_type": "IP", "params": self.search_params})
        # Ties in similarity are broken by id, as FAISS's exact search does.
        return [sorted((Hit(id=int(h["id"]), person=h["entity"]["person"],
                            similarity=float(np.clip(h["distance"], -1.0, 1.0)), source=h["entity"]["source"])
                        for h in row), key=lambda h: (-h.similarity, h.id))
                for row in res]

    def __len__(self) -> int:
        with self._use() as client:
            return int(client.query(self.collection, filter="", output_fields=["count(*)"])[0]["count(*)"])

    def close(self) -> None:
        if self._conn is not None:
            conn, self._conn = self._conn, None
            conn.drop_user()

    def __repr__(self) -> str:
        return f"MilvusGallery({self.path!r}, model_id={getattr(self, 'model_id', None)!r})"

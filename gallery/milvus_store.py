"""Milvus implementation of `Gallery`: a Milvus server or cluster, or Milvus Lite (embedded).

    milvus://HOST:PORT/COLLECTION     a Milvus server (standalone or cluster)
    milvus-lite:PATH.db               Milvus Lite, a local data directory (collection "faces")

One collection holds the faces (int64 id, unit vector, person, source, content hash, box,
added_at, and a JSON `attrs` field carrying every other `FaceRecord` field, so fields added later
need no schema change); COLLECTION__meta holds key/value rows: model id, dimension, format
version, the next id (Milvus Lite), one summary row per person (its face count) and one record
per change under way.

Milvus has no multi-row transactions and no conditional writes, so the project adds:
  * writers that cannot collide on a server, on any number of machines: a face's id comes from
    (person, photo) (`content_id`) and is upserted, so two writers never take one id and a rerun
    stores the same row again; each person's count in the summary is recounted (Strong) after a
    change until it agrees (`_settle`). A file lock on this machine (keyed by the server's one
    spelling of its address) only keeps this machine's writers from doing the work twice.
    Milvus Lite lets one process open a data directory at a time: its file lock serialises
    everyone, and its ids come from a counter reserved before the faces are written;
  * a record row written before each change and deleted after it; whoever opens the gallery next,
    a reader too, recounts its people and finishes a removal or rename a killed writer left half
    done (an add's stored faces stay: a rerun adds what is missing and truly reports the rest as
    enrolled);
  * reads that cost one search: identify's people and counts come from the summary, not a scan,
    and searches read at "Session" consistency (`READ_LEVEL`), not "Strong";
  * for Milvus Lite, a ledger (PATH.db.changes, fsynced, written before the change) of what each
    removal, rename and chip change must leave, checked on every open. Milvus Lite 3.2.2 sometimes
    reopens after a SIGKILL replaying a log it had already flushed, so rows a completed delete
    removed can be seen again; the ledger tells which rows are stale, so they are deleted again,
    and a gallery still wrong after that, or wrong in a way no recorded change explains, is
    refused as damaged rather than served.
Search is exact by default (FLAT, inner product on unit vectors = cosine), so the kNN vote
matches the FAISS backend's; `index="HNSW"` trades exactness for speed.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import hashlib
import os
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import numpy as np
from filelock import FileLock, Timeout

from facecore.atomic import fsync_dir, write_json_atomic
from facecore.names import refuse_lookalikes, validate_name
from gallery.base import FaceRecord, Gallery, Hit, check_records, first_of_each_photo
from facecore.errors import GalleryError, PersonNotFound

__all__ = ["CORE_FIELDS", "DEFAULT_HOLD_S", "DEFAULT_LOCK_TIMEOUT", "FORMAT_VERSION", "ID_BITS", "INDEXES",
           "INUSE_SUFFIX", "LEDGER_SUFFIX", "LITE_COLLECTION", "MAX_VARCHAR", "PAGE", "READ_LEVEL", "STALE_S",
           "SUMMARY_PREFIX", "TOKEN_ENV", "WINDOW", "WRITER_PREFIX", "MilvusGallery", "canonical", "content_id", "parse"]

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1
LITE_PREFIX, SERVER_PREFIX = "milvus-lite:", "milvus://"
TOKEN_ENV = "MILVUS_TOKEN"  # a server's credentials ("USER:PASSWORD" or an API key), never in a URI or file
LITE_COLLECTION = "faces"
CORE_FIELDS = ("person", "source", "content_hash", "box", "added_at", "id")
MAX_VARCHAR = 65_535
WINDOW = 16_384  # the most rows one Milvus query returns
PAGE = 1000  # rows per page of the query iterator and per upsert
DEFAULT_LOCK_TIMEOUT = 120.0
DEFAULT_HOLD_S = 1.0
INDEXES = {"FLAT": {}, "HNSW": {"M": 16, "efConstruction": 200}}
LEDGER_SUFFIX = ".changes"  # Milvus Lite: what recent changes must leave, beside PATH.db
INUSE_SUFFIX = ".inuse"  # Milvus Lite: exists while a process has the data directory open
SUMMARY_PREFIX = "n:"  # meta rows: one per person, its name and face count (see `_settle`)
WRITER_PREFIX = "w:"  # meta rows: one per change under way (see `_recover`)
STALE_S = 60.0  # a server's change record older than this is a killed writer's, finished by whoever opens
# Reads that need not see other processes' latest writes (a search, the people summary): "Session"
# sees this process's own writes at once and others' within Milvus's bounded staleness, without
# waiting for every write everywhere as "Strong" does (~0.2 s a read on a server). Writers read
# "Strong" where they must see every write before theirs (duplicates, ids, counts).
READ_LEVEL = "Session"
ID_BITS = 53  # a server gallery's ids, from (person, photo): exact in JSON numbers (JavaScript's doubles)


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
    if parts.username is not None or parts.password is not None:
        raise GalleryError(f"milvus://...@{parts.hostname}:{port}/{collection}: credentials do not go in the "
                           f"gallery URI (it is stored in model.json); set {TOKEN_ENV}=USER:PASSWORD instead")
    host = parts.hostname.lower()
    # One server, one name: the lock file, the chip folder and model.json must not depend on the spelling.
    host = "127.0.0.1" if host == "localhost" else host
    return "server", f"http://{host}:{port}", collection


def canonical(spec: str) -> str:
    """The one spelling of a Milvus gallery URI (what model.json records): an absolute Milvus Lite
    path; a server's host as `parse` names it. GalleryError if malformed."""
    kind, target, collection = parse(spec)
    return LITE_PREFIX + target if kind == "lite" else f"{SERVER_PREFIX}{target.split('//', 1)[1]}/{collection}"


def _summary_key(person: str) -> str:
    return SUMMARY_PREFIX + hashlib.sha256(person.encode("utf-8")).hexdigest()[:40]


def _names_of(change: dict[str, Any]) -> list[str]:
    """The people a recorded change touches."""
    return list(change.get("names", ())) + [change[k] for k in ("name", "old", "new") if k in change]


def content_id(person: str, content_hash: str, attempt: int = 0) -> int:
    """A server gallery's id for a face: the same on every machine for the same person and photo, so
    writers need no shared counter (`attempt` > 0: the next candidates, if one is taken)."""
    digest = hashlib.sha256(f"{person}\0{content_hash}".encode("utf-8")).digest()
    return (int.from_bytes(digest[:8], "big") + attempt) % (1 << ID_BITS)


def _quote(value: str) -> str:
    """A Milvus filter-expression string literal (double-quoted, JSON escapes)."""
    return json.dumps(value, ensure_ascii=False)


def _id_filter(ids: Iterable[int]) -> str:
    return f"id in [{', '.join(map(str, ids))}]"


def _pages(items: Sequence[Any]) -> Iterator[Sequence[Any]]:
    return (items[s:s + PAGE] for s in range(0, len(items), PAGE))


def _by_id(rows: Iterable[dict[str, Any]]) -> dict[int, list[dict[str, Any]]]:
    """Every version of each id a query read."""
    versions: dict[int, list[dict[str, Any]]] = {}
    for r in rows:
        versions.setdefault(int(r["id"]), []).append(r)
    return versions


class _Connection:
    """A MilvusClient opened on demand and the lock that serialises its users.

    Milvus Lite lets one process open a data directory at a time, so a process holds it (and the
    file lock) only while it uses it, letting both go `hold_s` seconds after the last operation.
    For a server the client stays open; the file lock is only taken around changes.
    """

    _shared: dict[str, _Connection] = {}
    _shared_lock = threading.Lock()

    def __init__(self, kind: str, target: str, collection: str, lock_timeout: float, hold_s: float) -> None:
        self.kind, self.target, self.collection = kind, target, collection
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
        # Milvus Lite: whether the last holder of the data directory died holding it (its in-use
        # marker was still there when this process opened it), and the ids the ledger says are removed.
        self.crashed = False
        self.removed: frozenset[int] = frozenset()

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
        from pymilvus import MilvusClient  # optional and heavy: only a Milvus gallery loads it

        if self.kind == "lite":
            self._acquire_flock()
            try:
                if not os.path.isdir(self.target):  # made here: an existing one is left as it is (a read changes nothing)
                    Path(self.target).mkdir(parents=True, exist_ok=True, mode=0o700)
                    os.chmod(self.target, 0o700)  # biometric data: owner only, whatever the umask
                marker = Path(self.target + INUSE_SUFFIX)
                self.crashed = marker.exists()
                if not self.crashed:
                    marker.touch(mode=0o600)
                    fsync_dir(marker.parent)
                self.client = MilvusClient(self.target)
                self.opens += 1
            except BaseException:
                self.flock.release()
                raise
        else:
            try:
                self.client = MilvusClient(uri=self.target, token=os.environ.get(TOKEN_ENV, ""))
            except Exception as e:  # pymilvus raises its own types and grpc's: one line, whatever it was
                detail = getattr(e, "message", None) or str(e) or type(e).__name__
                raise GalleryError(f"milvus://{self.target.split('//', 1)[1]}/{self.collection}: cannot use the "
                                   f"Milvus server ({detail}); is it running and reachable from here? (credentials, "
                                   f"if it needs them, are taken from ${TOKEN_ENV})") from None
            self.opens += 1

    def _release(self) -> None:
        if self.client is None:
            return
        try:
            self.client.close()
        finally:
            self.client = None
            if self.kind == "lite":
                from milvus_lite.server_manager import server_manager_instance  # optional: Milvus Lite

                try:
                    server_manager_instance.release_server(self.target)
                    # Only a holder that let the data directory go cleanly removes the marker.
                    Path(self.target + INUSE_SUFFIX).unlink(missing_ok=True)
                finally:
                    self.flock.release()

    def _idle(self) -> None:
        with self.mutex:
            self._timer = None
            self._release()

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    @contextlib.contextmanager
    def use(self, *, write: bool) -> Iterator[Any]:
        with self.mutex:
            self._cancel_timer()
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
            self._cancel_timer()
            self._release()


def _check_lite_dir(spec: str, *, creating: bool) -> None:
    """GalleryError, before anything is created or changed, when a Milvus Lite path is an existing directory that
    is not a Milvus Lite data directory (a user's own folder): opening it would create Milvus's files in it. An
    empty directory may become a new gallery (made owner-only)."""
    kind, target, _ = parse(spec)
    if kind != "lite" or not os.path.exists(target):
        return
    if not os.path.isdir(target):
        raise GalleryError(f"{spec}: {target} is a file, not a Milvus Lite gallery; it was left as it is")
    entries = set(os.listdir(target))
    if {"collections", "databases"} <= entries and all(os.path.isdir(os.path.join(target, e)) for e in ("collections", "databases")):
        return
    if creating and not entries:
        os.chmod(target, 0o700)  # biometric data: owner only
        return
    raise GalleryError(f"{spec}: {target} is an existing directory that is not a Milvus Lite gallery (no collections/ "
                       "and databases/ in it); it was left as it is: name a new path ending in .db")


def _ledger_ids(led: dict[str, Any]) -> set[int]:
    """Every face id the ledger names."""
    return set(led["removed"]) | set(led["person"]) | set(led["chip"])


def _ledger_row(i: int, row: dict[str, Any], led: dict[str, Any]) -> dict[str, Any]:
    """A copy of face `i`'s row with the person and chip the ledger records for it."""
    row = dict(row)
    if i in led["person"]:
        row["person"] = led["person"][i]
    if i in led["chip"]:
        row["attrs"] = {**(row.get("attrs") or {}), "chip": led["chip"][i]}
    return row


def _stale_versions(versions: dict[int, list[dict[str, Any]]], led: dict[str, Any], removed: set[int],
                    bad: set[int], keep: dict[int, dict[str, Any]]) -> None:
    """Add to `bad` the ids of `versions` removed, read twice or read other than the ledger says,
    and to `keep` the row to write back for each."""
    for i, vs in versions.items():
        if i in removed:
            bad.add(i)
            continue
        want = [v for v in vs if v["person"] == led["person"].get(i, v["person"])
                and (v.get("attrs") or {}).get("chip") == led["chip"].get(i, (v.get("attrs") or {}).get("chip"))]
        if len(vs) > 1 or not want:
            bad.add(i)
        if i in bad:
            keep[i] = _ledger_row(i, (want or vs)[0], led)


class MilvusGallery(Gallery):
    """Gallery in a Milvus collection. Use `create_gallery` / `open_gallery` with a milvus URI."""

    def __init__(self, spec: str, *, lock_timeout: float = DEFAULT_LOCK_TIMEOUT, hold_s: float = DEFAULT_HOLD_S,
                 search_params: dict[str, Any] | None = None) -> None:
        self.path = spec  # type: ignore[assignment]  # a URI, shown in every error message
        self.kind, target, self.collection = parse(spec)
        self.meta_collection = self.collection + "__meta"
        self.search_params = dict(search_params or {})
        self._seen_opens = 0
        self._opened_meta: dict[str, str] | None = None  # the meta read on opening, for `_load_meta`
        self._conn: _Connection | None = _Connection.get(self.kind, target, self.collection, lock_timeout, hold_s)

    # ---- plumbing -----------------------------------------------------------------

    def _check_open(self) -> None:
        if self._conn is None:
            raise self._fail("gallery is closed")

    @contextlib.contextmanager
    def _use(self, *, write: bool = False) -> Iterator[Any]:
        self._check_open()
        assert self._conn is not None
        from pymilvus.exceptions import MilvusException  # optional and heavy: only for Milvus

        try:
            with self._conn.use(write=write) as client:
                fresh = self._conn.opens != self._seen_opens
                self._seen_opens = self._conn.opens
                exists = (fresh or write) and client.has_collection(self.meta_collection)
                if fresh and exists:  # Milvus Lite opens its collections released
                    self._load_collections(client)
                # Writers, and every process when it opens the gallery (readers too), first settle
                # what a killed writer left (`_recover`).
                if exists:
                    self._recover(client, fresh)
                if fresh and exists and self.kind == "lite":
                    self._heal(client, self._conn.crashed)
                yield client
        except MilvusException as e:
            raise self._fail(f"Milvus refused the operation ({e.message})") from e
        except (OSError, ConnectionError) as e:
            raise self._fail(f"could not reach Milvus ({e})") from e

    def _load_collections(self, client: Any) -> None:
        from pymilvus.exceptions import MilvusException  # optional and heavy: only for Milvus

        try:
            client.load_collection(self.meta_collection)
            client.load_collection(self.collection)
        except MilvusException:
            if not (self.kind == "lite" and self._conn is not None and self._conn.crashed):
                raise
            # Milvus Lite writes each segment's index file in place, so a kill can leave one torn
            # ("No data left in file"). They hold nothing but a copy of the segment's vectors
            # (rebuilt from them when missing), so after a crash they are dropped and rebuilt.
            torn = sorted(Path(self._conn.target, "collections").glob("*/partitions/*/indexes/*.idx"))
            logger.warning("%s: Milvus Lite could not load its indexes after a crash; rebuilding %d index "
                           "files from the stored vectors", self.path, len(torn))
            for f in torn:
                f.unlink()
            client.load_collection(self.meta_collection)
            client.load_collection(self.collection)

    def _meta(self, client: Any) -> dict[str, str]:
        rows = client.query(self.meta_collection, filter=f'key != "" and not (key like "{SUMMARY_PREFIX}%")',
                            output_fields=["key", "value"], limit=WINDOW, consistency_level="Strong")
        kv = {r["key"]: r["value"] for r in rows}
        # Two values under one key: a stale version Milvus Lite let reappear after a crash. Which is
        # current cannot be told (an old journal entry or id counter would undo or reuse), so refuse.
        torn = sorted({r["key"] for r in rows if r["value"] != kv[r["key"]]})
        if torn:
            raise self._fail(f"{self.meta_collection} is damaged: keys {torn} have two values (Milvus Lite after "
                             "a crash); restore the gallery from a backup")
        return kv

    def _set_meta(self, client: Any, kv: dict[str, str]) -> None:
        client.upsert(self.meta_collection, [{"key": k, "value": v, "v": [1.0, 0.0]} for k, v in kv.items()])

    def _load_meta(self, client: Any) -> None:
        if not client.has_collection(self.collection) or not client.has_collection(self.meta_collection):
            raise self._fail("no gallery here (no such collection)")
        kv, self._opened_meta = self._opened_meta or self._meta(client), None
        try:
            version = int(kv["format_version"])
            self.model_id, self.dim = kv["model_id"], int(kv["dim"])
            int(kv["next_id"])
        except (KeyError, ValueError) as e:
            raise self._fail(f"{self.meta_collection} is damaged ({e!r})") from None
        if version != FORMAT_VERSION:
            raise self._fail(f"format version {version}, this program reads {FORMAT_VERSION}")
        if "summary" not in kv:
            self._rebuild_summary(client)

    def _count(self, client: Any, flt: str = "", *, strong: bool = True) -> int:
        return int(client.query(self.collection, filter=flt, output_fields=["count(*)"],
                                consistency_level="Strong" if strong else READ_LEVEL)[0]["count(*)"])

    def _scan(self, client: Any, flt: str, fields: list[str], level: str = "Strong") -> list[dict[str, Any]]:
        """Every row matching `flt`, ordered by id (past Milvus's 16,384-row window, by a query iterator)."""
        out = list(client.query(self.collection, filter=flt, output_fields=fields, limit=WINDOW,
                                consistency_level=level))
        if len(out) < WINDOW:
            return sorted(out, key=lambda r: r["id"])
        out = []
        it = client.query_iterator(self.collection, batch_size=PAGE, filter=flt, output_fields=fields,
                                   consistency_level=level)
        try:
            while batch := it.next():
                out.extend(batch)
        finally:
            it.close()
        out.sort(key=lambda r: r["id"])
        return out

    # ---- the people summary and the writers' change records ------------------------
    #
    # identify needs the people and their face counts (the unknown threshold, the vote's columns)
    # for every photo: a scan of the person field would cost seconds at 10^5 faces, so writers keep
    # one summary row per person in the meta collection ("n:<hash of the name>" -> name, faces).
    # A writer recounts the people it changed (a query of their rows, Strong: it must read its own
    # write and every other writer's before it) and writes the counts, until a recount agrees:
    # whoever writes a person's row last then wrote a count that includes every change finished
    # before it, so writers on several machines need no lock between them.
    #
    # Each change is recorded first ("w:<uuid>" -> the change) and the record deleted after the
    # summary is settled. Whoever opens the gallery next (a reader too) settles the people of a
    # record left behind by a killed writer and finishes its removal or rename: faces an add got
    # stored stay stored (an add is idempotent: rerunning it stores what is missing, and says
    # "duplicate" only for faces that are there).

    def _summary(self, client: Any, *, strong: bool = False) -> dict[str, int]:
        rows = client.query(self.meta_collection, filter=f'key like "{SUMMARY_PREFIX}%"', output_fields=["value"],
                            limit=WINDOW, consistency_level="Strong" if strong else READ_LEVEL)
        out: dict[str, int] = {}
        for r in rows:
            v = json.loads(r["value"])
            if int(v["faces"]) > 0:
                out[str(v["person"])] = int(v["faces"])
        return dict(sorted(out.items()))

    def _settle(self, client: Any, names: Iterable[str]) -> None:
        """Write each person's face count into the summary until a recount agrees with it (one query
        of their rows' person field and one upsert per round, however many people)."""
        names = sorted(set(names))
        written: dict[str, int] | None = None
        for _ in range(10):
            counts = {n: 0 for n in names}
            for chunk in _pages(names):
                counts.update(Counter(r["person"] for r in self._scan(
                    client, f"person in [{', '.join(map(_quote, chunk))}]", ["person"])))
            if counts == written:
                return
            for chunk in _pages(names):
                self._set_meta(client, {_summary_key(n): json.dumps({"person": n, "faces": counts[n]}) for n in chunk})
            written = counts

    def _rebuild_summary(self, client: Any) -> None:
        """A gallery made before the summary existed: count everyone once (one scan)."""
        counts = Counter(r["person"] for r in self._scan(client, "id >= 0", ["person"]))
        # and everyone the summary still names: a person with no face left (a row of the summary that came
        # back after a crash, or a removal the kill cut short) is counted to 0 and so leaves it
        self._settle(client, set(counts) | set(self._summary(client, strong=True)))
        self._set_meta(client, {"summary": "1"})
        logger.info("%s: wrote the people summary (%d people)", self.path, len(counts))

    def _begin(self, client: Any, change: dict[str, Any], **kv: str) -> str:
        key = WRITER_PREFIX + uuid.uuid4().hex
        self._set_meta(client, {key: json.dumps({**change, "at": time.time()}), **kv})
        return key

    def _end(self, client: Any, key: str, names: Iterable[str]) -> None:
        self._settle(client, names)
        client.delete(self.meta_collection, filter=f"key == {_quote(key)}")
        if self.kind == "lite":
            # Milvus Lite searches rows still in its memory table by brute force in Python, ten times
            # slower than flushed (benchmarks/results/implementation-choices.md), and a flush moves them
            # into fsynced segment files. A server flushes on its own schedule and rate-limits flushes.
            client.flush(self.collection)

    def _recover(self, client: Any, opening: bool = False) -> None:
        """Settle and finish what killed writers left (see above). On a server another writer may still
        be running a change: its add is only recounted (harmless), its removal or rename finished once
        the record is older than STALE_S."""
        # One Strong read of the meta rows (~0.2 s on a server) serves this and, on opening, `_load_meta`.
        kv = self._meta(client)
        self._opened_meta = kv if opening else None
        legacy = kv.get("pending", "")
        if legacy:  # written by the version before the change records (one writer at a time)
            self._apply(client, json.loads(legacy))
            self._set_meta(client, {"pending": ""})
            self._rebuild_summary(client)
        now = time.time()
        records = {k: json.loads(v) for k, v in kv.items() if k.startswith(WRITER_PREFIX)}
        for key, change in sorted(records.items(), key=lambda kv: kv[1].get("at", 0)):
            if change["op"] != "add" and self.kind == "server" and now - float(change.get("at", 0)) < STALE_S:
                self._settle(client, _names_of(change))  # its writer may be at work: only recount
                continue
            logger.warning("%s: a change was interrupted (%s of %s); %s", self.path, change["op"],
                           ", ".join(map(repr, _names_of(change))),
                           "recounting its people" if change["op"] == "add" else "finishing it")
            self._apply(client, change)
            if self.kind == "lite" or now - float(change.get("at", 0)) >= STALE_S:
                self._end(client, key, _names_of(change))
            else:
                self._settle(client, _names_of(change))

    def _apply(self, client: Any, change: dict[str, Any]) -> None:
        """Finish a recorded removal or rename (an add needs nothing: what it stored stays)."""
        if change["op"] == "remove":
            self._note(removed=[r["id"] for r in self._scan(client, f"person == {_quote(change['name'])}", ["id"])])
            client.delete(self.collection, filter=f"person == {_quote(change['name'])}")
        elif change["op"] == "rename":
            self._apply_rename(client, change["old"], change["new"])
        elif change["op"] == "remove faces":
            self._note(removed=[int(i) for i in change["ids"]])
            client.delete(self.collection, filter=_id_filter(change["ids"]))
        elif change["op"] == "move faces":
            self._apply_move(client, [int(i) for i in change["ids"]], change["person"])

    # ---- the Milvus Lite ledger -----------------------------------------------------

    def _ledger_path(self) -> Path | None:
        return Path(self._conn.target + LEDGER_SUFFIX) if self.kind == "lite" and self._conn is not None else None

    def _ledger(self) -> dict[str, Any]:
        """{"removed": [ids], "person": {id: name}, "chip": {id: chip}}: what recent changes must
        leave. Read under the lock (Milvus Lite holds it while the data directory is open)."""
        path = self._ledger_path()
        if path is None or not path.exists():
            return {"removed": [], "person": {}, "chip": {}}
        try:
            led = json.loads(path.read_text(encoding="utf-8"))
            return {"removed": [int(i) for i in led["removed"]],
                    "person": {int(k): str(v) for k, v in led["person"].items()},
                    "chip": {int(k): str(v) for k, v in led["chip"].items()}}
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
            raise self._fail(f"{path} is damaged ({e!r}); it lists the faces recent changes removed or "
                             "renamed, so the gallery cannot be checked without it") from None

    def _save_ledger(self, led: dict[str, Any]) -> None:
        path = self._ledger_path()
        assert path is not None and self._conn is not None
        if not _ledger_ids(led):
            path.unlink(missing_ok=True)
        else:
            write_json_atomic(path, {"removed": sorted(set(led["removed"])),
                                     "person": {str(k): v for k, v in sorted(led["person"].items())},
                                     "chip": {str(k): v for k, v in sorted(led["chip"].items())}}, sync_dir=True)
        self._conn.removed = frozenset(led["removed"])

    def _note(self, *, removed: Sequence[int] | range = (), person: dict[int, str] | None = None,
              chip: dict[int, str] | None = None) -> None:
        """Record, durably and before Milvus is asked, what a change must leave (Milvus Lite only)."""
        if self.kind != "lite":
            return
        led = self._ledger()
        gone = {int(i) for i in removed}
        led["removed"] = sorted(set(led["removed"]) | gone)
        led["person"] = {k: v for k, v in {**led["person"], **(person or {})}.items() if k not in gone}
        led["chip"] = {k: v for k, v in {**led["chip"], **(chip or {})}.items() if k not in gone}
        self._save_ledger(led)

    def _stale(self, client: Any, led: dict[str, Any]) -> tuple[list[int], list[dict[str, Any]]]:
        """Ids of the ledger that some read path shows otherwise, and the rows to write back for
        those that stay (one version each, with the ledger's fields)."""
        ids = sorted(_ledger_ids(led))
        bad: set[int] = set()
        keep: dict[int, dict[str, Any]] = {}
        dim = int(self._meta(client)["dim"])  # _heal runs before the open has read the meta
        probe = [[1.0] + [0.0] * (dim - 1)]
        for chunk in _pages(ids):
            self._stale_chunk(client, chunk, led, probe, bad, keep)
        return sorted(bad), [keep[i] for i in sorted(keep) if i in bad]

    def _stale_chunk(self, client: Any, chunk: list[int], led: dict[str, Any], probe: list[list[float]],
                     bad: set[int], keep: dict[int, dict[str, Any]]) -> None:
        removed = set(led["removed"])
        flt = _id_filter(chunk)
        rows = list(client.query(self.collection, filter=flt, output_fields=["*"], limit=WINDOW))
        count = self._count(client, flt)
        hits = client.search(self.collection, data=probe, filter=flt, limit=min(2 * len(chunk), WINDOW),
                             output_fields=["person"], search_params={"metric_type": "IP", "params": {}})[0]
        versions = _by_id(rows)
        if count != len(rows):  # count(*) sees rows the query does not: which, only a rewrite can tell
            bad.update(i for i in chunk if i in removed or i in versions)
        for h in hits:
            i = int(h["id"])
            if i in removed or (i in led["person"] and h["entity"]["person"] != led["person"][i]):
                bad.add(i)
        _stale_versions(versions, led, removed, bad, keep)

    def _heal(self, client: Any, crashed: bool) -> None:
        """On opening Milvus Lite (under its lock): make every read path agree with the ledger and,
        after a crash, with each other (then at the cost of one scan of the whole gallery)."""
        led = self._ledger()
        self._conn.removed = frozenset(led["removed"])  # type: ignore[union-attr]
        if not crashed and not _ledger_ids(led):
            return  # the usual open: nothing recorded, nothing to check
        for attempt in range(2):
            bad, rows = self._unhealed(client, led, crashed)
            if not bad:
                break
            if attempt:
                raise self._fail(f"Milvus Lite's data is damaged: after a crash, faces {bad[:20]} still read "
                                 "differently by count, query, vector read or search after being rewritten; "
                                 "restore the gallery from a backup or re-enrol")
            logger.warning("%s: Milvus Lite reads %d faces other than its completed changes left them (after a "
                           "crash); deleting them again and writing back the ones that stay", self.path, len(bad))
            self._rewrite(client, bad, rows)
        if crashed:  # the summary's rows may have come back stale too: count everyone again (one more scan)
            self._rebuild_summary(client)
        if not crashed:  # (the loop above ends with nothing bad, or raises)
            # The last holder closed cleanly (everything flushed) and every read agrees: done with the ledger.
            client.flush(self.collection)
            self._save_ledger({"removed": [], "person": {}, "chip": {}})

    def _unhealed(self, client: Any, led: dict[str, Any], crashed: bool) -> tuple[list[int], list[dict[str, Any]]]:
        """The ids `_heal` must delete and the rows it must write back."""
        bad, rows = self._stale(client, led)
        if not crashed:
            return bad, rows
        more, more_rows = self._disagreeing(client, led)
        rows += [r for r in more_rows if int(r["id"]) not in set(bad)]  # the ledger's version first
        bad = sorted(set(bad) | set(more))
        if not bad and led["removed"] and self._count(client) != len(self._scan(client, "id >= 0", ["id"])):
            bad = list(led["removed"])  # count(*) still counts some: delete them all again
        return bad, rows

    def _rewrite(self, client: Any, bad: list[int], rows: list[dict[str, Any]]) -> None:
        for chunk in _pages(bad):
            client.delete(self.collection, filter=_id_filter(chunk))
        for chunk in _pages(rows):
            client.insert(self.collection, chunk)
        client.flush(self.collection)

    def _disagreeing(self, client: Any, led: dict[str, Any]) -> tuple[list[int], list[dict[str, Any]]]:
        """After a crash: ids the field query, the vector read and count(*) disagree on, and the rows
        to write back. A replayed insert reads one face twice: identical copies are written back
        once; anything else the ledger cannot explain is damage."""
        fields = [int(r["id"]) for r in self._scan(client, "id >= 0", ["id", "person"])]
        vecs = [int(r["id"]) for r in self._scan(client, "id >= 0", ["id", "vector"])]
        count = self._count(client)
        odd = set(fields) ^ set(vecs)
        for seen in (fields, vecs):
            if len(set(seen)) != len(seen):
                odd |= {i for i, n in zip(*np.unique(seen, return_counts=True)) if n > 1}
        known = _ledger_ids(led)
        unknown = sorted(odd - known)
        rows: list[dict[str, Any]] = []
        for chunk in _pages(unknown):
            versions = _by_id(client.query(self.collection, filter=_id_filter(chunk), output_fields=["*"], limit=WINDOW))
            for i in chunk:
                vs = versions.get(i, [])
                if not vs or any(v != vs[0] for v in vs[1:]):
                    raise self._fail(
                        f"Milvus Lite's data is damaged after a crash: face {i} reads as {len(vs)} different "
                        f"rows (count(*) {count}, field query {len(fields)} rows, vector read {len(vecs)} rows) "
                        "and no recorded change explains it; restore the gallery from a backup or re-enrol")
                rows.append(vs[0])
        if not odd and count != len(fields) and not led["removed"]:
            raise self._fail(f"Milvus Lite's data is damaged after a crash: count(*) {count} but queries return "
                             f"{len(fields)} rows, and no recorded removal explains it; restore the gallery from "
                             "a backup or re-enrol")
        return sorted(odd), rows

    # ---- construction -------------------------------------------------------------

    @classmethod
    def create(cls, spec: str, model_id: str, dim: int, *, index: str = "FLAT", exist_ok: bool = False,
               **opts: Any) -> MilvusGallery:
        """A new gallery; with exist_ok, an existing one of `model_id` is opened instead."""
        from pymilvus import DataType  # optional and heavy: only a Milvus gallery loads it

        cls._check_new(spec, model_id, dim)
        _check_lite_dir(spec, creating=True)
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
                                     consistency_level="Bounded")  # each call names its own level
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
            client.create_collection(self.collection, schema=faces, index_params=params, consistency_level="Bounded")
            # Written last: a gallery whose creation was interrupted has no format_version and
            # is reported as damaged rather than used half made.
            self._set_meta(client, {"model_id": model_id, "dim": str(int(dim)), "next_id": "0", "summary": "1",
                                    "index": index, "format_version": str(FORMAT_VERSION)})
            self._load_meta(client)
        logger.info("created Milvus gallery %s for model %s (dim %d)", spec, model_id, dim)
        return self

    @classmethod
    def open(cls, spec: str, model_id: str | None = None, **opts: Any) -> MilvusGallery:
        kind, target, _ = parse(spec)
        if kind == "lite" and not os.path.isdir(target):
            raise GalleryError(f"{spec}: no gallery here ({target} does not exist)")
        _check_lite_dir(spec, creating=False)
        self = cls(spec, **opts)
        try:
            with self._use() as client:
                self._load_meta(client)
        except BaseException:
            self.close()
            raise
        return self._opened_for(model_id, spec)

    # ---- changes ------------------------------------------------------------------

    def add(self, vectors: np.ndarray, records: Sequence[FaceRecord], *, model_id: str,
            allow_similar: bool = False) -> list[int]:
        """As `FaissGallery.add` (one face per person and photo, checked under the write lock)."""
        x = self._check_vectors(vectors, model_id, "vectors")
        if len(records) != len(x):
            raise GalleryError(f"got {len(x)} vectors but {len(records)} records")
        rows = check_records(records)
        if not rows:
            return []
        extra = [f.name for f in dataclasses.fields(FaceRecord) if f.name not in CORE_FIELDS]
        with self._use(write=True) as client:
            if not allow_similar:
                refuse_lookalikes(sorted({row[0] for row in rows}), self._summary(client, strong=True))
            hashes = sorted({row[2] for row in rows})
            stored = {(r["person"], r["content_hash"]) for r in self._scan(
                client, f"content_hash in [{', '.join(map(_quote, hashes))}]", ["person", "content_hash"])}
            keep = first_of_each_photo(rows, stored)
            if not keep:
                return []
            x, rows, kept = x[keep], [rows[i] for i in keep], [records[i] for i in keep]
            names = sorted({row[0] for row in rows})
            if self.kind == "lite":  # one process at a time (the file lock): a counter, reserved first
                first = int(self._meta(client)["next_id"])
                ids = list(range(first, first + len(x)))
                key = self._begin(client, {"op": "add", "names": names}, next_id=str(first + len(x)))
            else:  # any number of writers on any number of machines: ids from the faces themselves
                ids = self._content_ids(client, rows)
                key = self._begin(client, {"op": "add", "names": names})
            # On a server an upsert: a rerun (or another machine) storing the same face writes the same row.
            (client.insert if self.kind == "lite" else client.upsert)(self.collection, [
                {"id": i, "vector": v.tolist(), "person": row[0], "source": row[1], "content_hash": row[2],
                 "x1": row[3], "y1": row[4], "x2": row[5], "y2": row[6], "added_at": row[7],
                 "attrs": {name: getattr(r, name) for name in extra}}
                for i, v, row, r in zip(ids, x, rows, kept)])
            self._end(client, key, names)
        for r, i, row in zip(kept, ids, rows):
            r.id, r.person = int(i), row[0]
        logger.info("%s: added %d faces (ids %d..%d)", self.path, len(ids), ids[0], ids[-1])
        return ids

    def remove_person(self, name: str) -> int:
        name = validate_name(name)
        with self._use(write=True) as client:
            ids = [r["id"] for r in self._scan(client, f"person == {_quote(name)}", ["id"])]
            n = len(ids)
            if n == 0:
                raise self._fail(f"no person named {name!r} in the gallery", PersonNotFound, name=name)
            self._note(removed=ids)
            key = self._begin(client, {"op": "remove", "name": name})
            client.delete(self.collection, filter=f"person == {_quote(name)}")
            self._end(client, key, [name])
        logger.info("%s: removed %d faces of %r", self.path, n, name)
        return n

    def remove_faces(self, ids: Iterable[int]) -> list[FaceRecord]:
        wanted = sorted({int(i) for i in ids})
        if not wanted:
            return []
        with self._use(write=True) as client:
            gone = self._records(client, _id_filter(wanted), "Strong")
            self._check_ids(gone, wanted)
            self._note(removed=wanted)
            names = sorted({r.person for r in gone})
            key = self._begin(client, {"op": "remove faces", "ids": wanted, "names": names})
            client.delete(self.collection, filter=_id_filter(wanted))
            self._end(client, key, names)
        logger.info("%s: removed faces %s", self.path, wanted)
        return gone

    def _apply_move(self, client: Any, ids: list[int], person: str) -> None:
        rows = self._scan(client, _id_filter(ids), ["*"])
        self._note(person={r["id"]: person for r in rows})
        for chunk in _pages(rows):
            client.upsert(self.collection, [{**r, "person": person} for r in chunk])

    def move_faces(self, ids: Iterable[int], person: str, *, allow_similar: bool = False) -> list[FaceRecord]:
        person = validate_name(person)
        wanted = sorted({int(i) for i in ids})
        with self._use(write=True) as client:
            held = {r["content_hash"] for r in self._scan(client, f"person == {_quote(person)}", ["content_hash"])}
            faces = self._records(client, _id_filter(wanted), "Strong")
            others = lambda: set(self._summary(client, strong=True))  # noqa: E731
            moving = self._check_move(faces, wanted, person, held, others, allow_similar=allow_similar)
            if moving:
                ids = [r.id for r in moving]
                names = sorted({r.person for r in moving} | {person})
                key = self._begin(client, {"op": "move faces", "ids": ids, "person": person, "names": names})
                self._apply_move(client, ids, person)
                self._end(client, key, names)
        logger.info("%s: moved faces %s to %r", self.path, [r.id for r in moving], person)
        return moving

    def _content_ids(self, client: Any, rows: list[tuple]) -> list[int]:
        """`content_id` of each (person, photo) row, the next candidate where an id holds another face."""
        ids = [content_id(row[0], row[2]) for row in rows]
        for attempt in range(1, 64):
            held = {int(r["id"]): (r["person"], r["content_hash"]) for r in client.query(
                self.collection, filter=_id_filter(ids), output_fields=["id", "person", "content_hash"],
                limit=WINDOW, consistency_level="Strong")}
            clash = [j for j, (i, row) in enumerate(zip(ids, rows)) if held.get(i, (row[0], row[2])) != (row[0], row[2])]
            clash += [j for j, i in enumerate(ids) if ids.index(i) != j]  # two new faces, one id
            if not clash:
                return ids
            for j in clash:
                ids[j] = content_id(rows[j][0], rows[j][2], attempt)
        raise self._fail("could not find free ids for the new faces")

    def _apply_rename(self, client: Any, old: str, new: str) -> None:
        rows = self._scan(client, f"person == {_quote(old)}", ["*"])
        self._note(person={r["id"]: new for r in rows})
        for chunk in _pages(rows):
            client.upsert(self.collection, [{**r, "person": new} for r in chunk])

    def rename_person(self, old: str, new: str, *, merge: bool = False, allow_similar: bool = False) -> None:
        """As `FaissGallery.rename_person`."""
        old, new = validate_name(old), validate_name(new)
        with self._use(write=True) as client:
            count = lambda n: len(client.query(self.collection, filter=f"person == {_quote(n)}",  # noqa: E731
                                               output_fields=["id"], limit=1, consistency_level="Strong"))
            others = lambda: set(self._summary(client, strong=True)) - {old}  # noqa: E731
            if not self._check_rename(old, new, count, others, merge=merge, allow_similar=allow_similar):
                return
            key = self._begin(client, {"op": "rename", "old": old, "new": new})
            self._apply_rename(client, old, new)
            self._end(client, key, [old, new])
        logger.info("%s: renamed %r to %r", self.path, old, new)

    def set_chips(self, chips: dict[int, str]) -> None:
        """As `Gallery.set_chips`; idempotent, so a run stopped half way is simply run again."""
        ids = sorted({int(i) for i in chips})
        if not ids:
            return
        with self._use(write=True) as client:
            rows = self._scan(client, _id_filter(ids), ["*"])
            missing = sorted(set(ids) - {int(r["id"]) for r in rows})
            if missing:
                raise self._fail(f"no faces with ids {missing[:10]}")
            self._note(chip={r["id"]: str(chips[r["id"]]) for r in rows})
            for chunk in _pages(rows):
                client.upsert(self.collection, [{**r, "attrs": {**(r.get("attrs") or {}), "chip": str(chips[r["id"]])}}
                                                for r in chunk])
            if self.kind == "lite":
                client.flush(self.collection)

    # ---- reads --------------------------------------------------------------------

    def people(self) -> dict[str, int]:
        """From the summary writers keep (`_settle`): one small query, however many faces there are."""
        with self._use() as client:
            return self._summary(client)

    def records(self, person: str | None = None) -> list[FaceRecord]:
        flt = "id >= 0" if person is None else f"person == {_quote(validate_name(person))}"
        with self._use() as client:
            return self._records(client, flt, READ_LEVEL)

    def _records(self, client: Any, flt: str, level: str) -> list[FaceRecord]:
        rows = self._scan(client, flt, ["id", "person", "source", "content_hash", "x1", "y1", "x2", "y2", "added_at", "attrs"],
                          level)
        known = {f.name for f in dataclasses.fields(FaceRecord)}
        return [FaceRecord(person=r["person"], source=r["source"], content_hash=r["content_hash"],
                           box=(r["x1"], r["y1"], r["x2"], r["y2"]), added_at=r["added_at"], id=int(r["id"]),
                           **{k: v for k, v in (r.get("attrs") or {}).items() if k in known and k not in CORE_FIELDS})
                for r in rows]

    def has_content(self, person: str, content_hash: str) -> bool:
        flt = f"person == {_quote(validate_name(person))} and content_hash == {_quote(str(content_hash))}"
        with self._use() as client:
            return bool(client.query(self.collection, filter=flt, output_fields=["id"], limit=1,
                                     consistency_level=READ_LEVEL))

    def vectors(self, person: str | None = None) -> tuple[np.ndarray, np.ndarray]:
        flt = "id >= 0" if person is None else f"person == {_quote(validate_name(person))}"
        with self._use() as client:
            rows = self._scan(client, flt, ["id", "vector"], READ_LEVEL)
        ids = np.array([r["id"] for r in rows], dtype=np.int64)
        vecs = np.array([r["vector"] for r in rows], dtype=np.float32).reshape(len(rows), self.dim)
        return ids, vecs

    def search(self, queries: np.ndarray, k: int = 5, *, model_id: str) -> list[list[Hit]]:
        q = self._check_queries(queries, k, model_id)
        if len(q) == 0:
            return []
        with self._use() as client:
            res = client.search(self.collection, data=[v.tolist() for v in q], limit=int(k),
                                output_fields=["person", "source"],
                                search_params={"metric_type": "IP", "params": self.search_params},
                                consistency_level=READ_LEVEL)
        # Ties in similarity are broken by id, as FAISS's exact search does. A face the ledger
        # says was removed is never answered, whatever Milvus Lite's search path returns.
        removed = self._conn.removed if self._conn is not None else frozenset()
        return [sorted((Hit(id=int(h["id"]), person=h["entity"]["person"],
                            similarity=float(np.clip(h["distance"], -1.0, 1.0)), source=h["entity"]["source"])
                        for h in row if int(h["id"]) not in removed), key=lambda h: (-h.similarity, h.id))
                for row in res]

    def __len__(self) -> int:
        with self._use() as client:
            return self._count(client, strong=False)

    def close(self) -> None:
        if self._conn is not None:
            conn, self._conn = self._conn, None
            conn.drop_user()

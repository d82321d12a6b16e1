"""The face-data store registry: every place a model directory keeps something of a person.

A store answers `held`, `forget` and `rename`; `remove_person` and `rename_person` walk the registry in
order. Stores of a higher layer are "module:attr" strings in `_REGISTRY`, resolved when a removal runs
(so this core imports no feature module, and removal reaches a store its process never imported).
The order is the one removal needs: the gallery in use goes after every other store of faces (a failure
part way leaves the person enrolled, so the removal can simply be run again), then the chips (their bytes
read first: the trunk cache is keyed by their crops) and, once the locks are released, the caches.
"""
from __future__ import annotations

import contextlib
import importlib
import json
import logging
import os
import re
from collections.abc import Callable
from contextlib import AbstractContextManager, ExitStack
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

from facecore.atomic import write_json_atomic
from facecore.errors import FaceNotFound, GalleryError, ModelError, PersonNotFound
from gallery import open_gallery
from gallery.base import face_key
from recognizer.cache import CropCache, forget_photos
from recognizer.modeldir.directory import ModelDir

__all__ = ["Change", "FaceStore", "Removal", "held", "register", "registered", "remove_faces", "remove_person", "rename_person",
           "unregister"]

log = logging.getLogger(__name__)


@dataclass
class Removal:
    """One person's removal as it walks the stores: what the stores before found and removed, for those after."""

    model: ModelDir
    person: str
    gallery: Any  # the gallery in use (the current view's)
    live: str | None  # its directory's name here; None: the gallery is elsewhere (Milvus)
    gallery_uri: str | None = None
    cache_root: Path | None = None
    records: list = field(default_factory=list)  # the person's faces in the gallery in use, read first
    other: list = field(default_factory=list)  # their faces removed from the directory's other galleries
    other_still: set[str] = field(default_factory=set)  # chips the faces left in those galleries name
    cand_n: int = 0  # faces removed from the pending candidate, and their chips
    cand_chips: set[str] = field(default_factory=set)
    cand_keep: set[str] | None = field(default_factory=set)  # chips the candidate still names; None: damaged
    paths: set[str] = field(default_factory=set)  # the person's photo paths (sources, training files)
    removed: int = 0  # faces removed from the gallery in use
    rest: list | None = None  # the gallery in use's faces after the removal
    chip_bytes: list[bytes] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)
    ids: frozenset[int] | None = None  # one face or a few of the person's (`remove_faces`); None: the whole person

    @classmethod
    def of(cls, model: ModelDir, person: str, gallery, live: str | None, gallery_uri: str | None = None,
           cache_root: Path | None = None) -> "Removal":
        records = gallery.records(person) if person in gallery.people() else []
        return cls(model, person, gallery, live, gallery_uri, cache_root, records, paths={r.source for r in records})

    @classmethod
    def of_faces(cls, model: ModelDir, ids: set[int], gallery, live: str | None, gallery_uri: str | None = None,
                 cache_root: Path | None = None) -> "Removal":
        """The removal of the faces `ids` (one person's; FaceNotFound for an id not in the gallery in use)."""
        every = gallery.records()
        records = [r for r in every if r.id in ids]
        missing = sorted(set(ids) - {r.id for r in records})
        if missing:
            raise FaceNotFound(f"no enrolled face has id {', '.join(map(str, missing))}", ids=missing)
        people = sorted({r.person for r in records})
        if len(people) != 1:
            raise ValueError(f"faces {sorted(ids)} are of {len(people)} people; remove one person's faces at a time")
        paths = {r.source for r in records} - {r.source for r in every if r.id not in ids}  # a shared photo stays
        return cls(model, people[0], gallery, live, gallery_uri, cache_root, records, paths=paths, ids=frozenset(ids))

    own = property(lambda self: self.gallery_uri is None)
    whole = property(lambda self: self.ids is None)
    keys = property(lambda self: {face_key(r.content_hash, r.box) for r in self.records})
    faces = property(lambda self: self.records + self.other)

    faces_removed = property(lambda self: self.removed or self.cand_n or len(self.other))

    def others(self) -> list:  # everyone else's faces in the gallery in use (the person's other faces too, per face)
        return [r for r in self.gallery.records() if (r.person != self.person if self.whole else r.id not in self.ids)]

    def still_hashes(self) -> set[str]:
        rest = self.rest if self.rest is not None else self.gallery.records()
        return {r.content_hash for r in rest}

    def mentions(self, text: str) -> bool:
        """Whether `text` names the person or one of their photos (known, or in a folder named after them)."""
        if not self.whole:
            return text in self.paths
        return text == self.person or text in self.paths or (os.sep in text and Path(text).parent.name == self.person)

    def redacted(self, text: str) -> str:
        """`text` with the person's name (a whole removal) and their photos' paths, where it names them among
        other words (a report's note listing people), replaced by "(removed)"."""
        for needle in sorted(self.paths, key=len, reverse=True) + ([self.person] if self.whole else []):
            # not part of a longer word or path: "home" in "/home/u/x.jpg" is someone else's photo's folder
            text = re.sub(rf"(?<![\w/\\.-]){re.escape(needle)}(?![\w/\\-]|\.[\w/\\])", "(removed)", text)
        return text

    def needles(self) -> list[bytes]:
        return ([self.person.encode()] if self.whole else []) + [p.encode() for p in self.paths]


@dataclass
class Change:
    """One rename as it walks the stores."""

    model: ModelDir
    view: Any  # the current view (config, gallery, classifier)
    merge: bool = False
    allow_similar: bool = False
    save_config: Callable[[Any], None] | None = None


class FaceStore(Protocol):
    name: str

    def held(self, ctx: Removal) -> list[str]: ...  # what it holds of `ctx.person`, one line each

    def forget(self, ctx: Removal) -> None: ...  # adding to `ctx` what later stores need

    def forget_faces(self, ctx: Removal) -> None: ...  # `forget` for the faces `ctx.ids` only: the person stays

    def rename(self, ctx: Change, old: str, new: str) -> None: ...


def _resolve(spec: str) -> Any:
    module, _, attr = spec.partition(":")
    return getattr(importlib.import_module(module), attr)


def _files_mentioning(paths, needles: list[bytes]) -> list[str]:
    hits = []
    for p in paths:
        with contextlib.suppress(OSError):
            blob = Path(p).read_bytes()
            hits += [f"{p.name} mentions {n.decode(errors='replace')!r}" for n in needles if n and n in blob]
    return hits


def _tree(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file()] if root.is_dir() else []


class _Store:
    """A store that keeps nothing to forget or rename unless it says otherwise."""

    def forget(self, ctx):
        pass

    def forget_faces(self, ctx):
        pass

    def rename(self, ctx, old, new):
        pass


class _Candidate(_Store):
    """A pending candidate: its gallery holds a copy of every face. Candidates are built from the model
    directory's own gallery, so a model whose gallery is in Milvus has none to reach."""

    name = "candidate"

    def held(self, ctx):
        if not ctx.whole:  # the person stays: their faces' photos (content hashes) are what must go
            still = {r.content_hash for r in ctx.others()}
            return _files_mentioning([ctx.model.candidate_file], [r.content_hash.encode() for r in ctx.faces
                                                                  if r.content_hash not in still])
        return _files_mentioning([ctx.model.candidate_file], [ctx.person.encode()])

    def forget(self, ctx):
        if ctx.own:
            ctx.cand_n, ctx.cand_chips = _resolve("recognizer.training.candidate:remove_person")(ctx.model.root, ctx.person)
            ctx.cand_keep = _resolve("recognizer.training.candidate:pending_chips")(ctx.model.root)

    def forget_faces(self, ctx):
        if ctx.own:
            ctx.cand_n, ctx.cand_chips = _resolve("recognizer.training.candidate:remove_faces")(
                ctx.model.root, ctx.person, ctx.keys)
            ctx.cand_keep = _resolve("recognizer.training.candidate:pending_chips")(ctx.model.root)

    # no rename: a candidate's switch carries renames made since it was built over


class _OtherGalleries(_Store):
    """Every gallery directory of the model but the one in use: a candidate's, an old one left by a commit
    killed after model.json was switched, or a re-embed being built outside the writer lock (which removal
    cannot tell from a leftover, and deleting would break). Removing the person from each, under its own
    lock, is right for all three. One that cannot be opened is reported, not skipped silently."""

    name = "other galleries"

    def held(self, ctx):
        out = []
        for p in ctx.model.gallery_dirs(but=ctx.live):
            with contextlib.suppress(GalleryError), open_gallery(p) as g:
                n = len(self._faces(ctx, g)) if ctx.person in g.people() else 0
                if n:
                    out.append(f"{n} faces in {p.name}")
        return out

    @staticmethod
    def _faces(ctx, g) -> list:
        mine = g.records(ctx.person)
        return mine if ctx.whole else [r for r in mine if face_key(r.content_hash, r.box) in ctx.keys]

    def forget_faces(self, ctx):
        for p in ctx.model.gallery_dirs(but=ctx.live):
            try:
                with open_gallery(p) as g:
                    if ctx.person in g.people():
                        ctx.other += g.remove_faces([r.id for r in self._faces(ctx, g)])
                    ctx.other_still |= {r.chip for r in g.records() if r.chip}
            except GalleryError as exc:
                log.warning("%s; it may still hold a removed face of %s", exc, ctx.person)

    def forget(self, ctx):
        for p in ctx.model.gallery_dirs(but=ctx.live):
            try:
                with open_gallery(p) as g:
                    if ctx.person in g.people():
                        records = g.records(ctx.person)
                        g.remove_person(ctx.person)
                        ctx.other += records
                    ctx.other_still |= {r.chip for r in g.records() if r.chip}
            except PersonNotFound:
                pass  # removed meanwhile by the build it belongs to
            except GalleryError as exc:
                log.warning("%s; it may still hold faces of %s", exc, ctx.person)
        ctx.paths |= {r.source for r in ctx.other}
        if ctx.other:
            log.info("removed %d faces of %s from galleries no model.json names", len(ctx.other), ctx.person)

    # no rename: builds carry renames over when they commit


class _ClusteringRuns(_Store):
    """Saved clustering runs: scrubbed before the gallery in use may say PersonNotFound, since a run can
    outlive the person's removal by an older version, and naming them again is how it is reached."""

    name = "clustering runs"

    def lock(self, model: ModelDir) -> AbstractContextManager[None]:
        # the runs' lock before the writer lock, as enrolling a cluster takes them
        return _resolve("recognizer.clustering.runs:runs_lock_if_any")(model.root)

    def held(self, ctx):  # their name, photo paths and their faces' photo hashes
        hashes = sorted({r.content_hash.encode() for r in ctx.faces if r.content_hash})
        return _files_mentioning(_tree(ctx.model.runs), ctx.needles() + hashes)

    def forget(self, ctx):
        _resolve("recognizer.clustering.runs:forget_person")(ctx.model.root, ctx.person,
                                                               {(r.content_hash, r.box) for r in ctx.faces})

    def forget_faces(self, ctx):
        _resolve("recognizer.clustering.runs:forget_faces")(ctx.model.root, {(r.content_hash, r.box) for r in ctx.faces})

    def rename(self, ctx, old, new):
        _resolve("recognizer.clustering.runs:rename_person")(ctx.model.root, old, new)


class _Split(_Store):
    """split.json (a finetune's train/val photo paths and labels): the person's photos leave both lists."""

    name = "split file"

    def held(self, ctx):
        raw = _read_json(ctx.model.split)
        sets = [raw.get(k) or {} for k in ("train", "val")] if isinstance(raw, dict) else []
        return [f"{ctx.model.split.name}: {path}" for s in sets for path, label in zip(s.get("paths", []), s.get("labels", []))
                if (ctx.whole and label == ctx.person) or ctx.mentions(path)]

    def forget(self, ctx):
        raw = _read_json(ctx.model.split)
        if not isinstance(raw, dict):
            return
        out = dict(raw)
        for k in ("train", "val"):
            s = raw.get(k)
            if not isinstance(s, dict) or not isinstance(s.get("paths"), list) or not isinstance(s.get("labels"), list):
                continue
            keep = list(zip(s["paths"], s["labels"]))
            if ctx.whole:  # every training photo of theirs is theirs (one face's removal names its photo only)
                ctx.paths |= {p for p, lab in keep if lab == ctx.person and isinstance(p, str)}
            keep = [(p, lab) for p, lab in keep
                    if not (ctx.whole and lab == ctx.person) and not (isinstance(p, str) and ctx.mentions(p))]
            out[k] = {**s, "paths": [p for p, _ in keep], "labels": [lab for _, lab in keep]}
        if out != raw:
            write_json_atomic(ctx.model.split, out)

    forget_faces = forget  # `ctx.mentions` names only the faces' photos then

    # no rename: labels are the training photos' folder names, which a rename does not move


class _Reports(_Store):
    """report.json and candidate-report.json: every mention of the person or their photos leaves them."""

    name = "reports"

    def held(self, ctx):
        reports = ((p, _read_json(p)) for p in (ctx.model.report, ctx.model.candidate_report))
        return [f"{p.name} mentions them" for p, raw in reports
                if raw is not None and _scrubbed(raw, ctx.mentions, ctx.redacted) != raw]

    def forget(self, ctx):
        for path in (ctx.model.report, ctx.model.candidate_report):
            raw = _read_json(path)
            if raw is not None and (out := _scrubbed(raw, ctx.mentions, ctx.redacted)) != raw:
                write_json_atomic(path, out)

    forget_faces = forget  # `ctx.mentions` names only the faces' photos then

    # no rename: a report describes the training as it was; removal still finds the old name


class _Versions(_Store):
    """versions/: replaced model.json files, with no faces (a rollback re-embeds the faces enrolled now); their
    class names are the classifier's, which cannot forget a class without retraining."""

    name = "kept versions"

    def held(self, ctx):
        if not ctx.whole:  # they stay enrolled: their class stays
            return []
        # a class renamed to them names them (as written, or JSON-escaped)
        return _files_mentioning(sorted(ctx.model.versions.glob("v*.json")),
                                 sorted({ctx.person.encode(), json.dumps(ctx.person)[1:-1].encode()}))


class _GalleryInUse(_Store):
    name = "gallery in use"

    def held(self, ctx):
        if not ctx.whole:
            return [f"face {r.id} in the gallery in use" for r in ctx.gallery.records() if r.id in ctx.ids]
        people = ctx.gallery.people()
        return [f"{people[ctx.person]} faces in the gallery in use"] if ctx.person in people else []

    def forget(self, ctx):
        if ctx.records or not (ctx.cand_n or ctx.other):  # PersonNotFound when no one of that name is anywhere
            ctx.removed = ctx.gallery.remove_person(ctx.person)
        ctx.rest = ctx.gallery.records()

    def forget_faces(self, ctx):
        ctx.removed = len(ctx.gallery.remove_faces(ctx.ids))
        ctx.rest = ctx.gallery.records()

    def rename(self, ctx, old, new):
        ctx.view.gallery.rename_person(old, new, merge=ctx.merge, allow_similar=ctx.allow_similar)


class _Chips(_Store):
    """The chips the removed faces named, unless a face left anywhere still names one."""

    name = "chips"

    def _gone(self, ctx) -> set[str]:
        return {r.chip for r in ctx.faces if r.chip} | ctx.cand_chips

    def held(self, ctx):
        still = {r.chip for r in ctx.others() if r.chip} | (ctx.cand_keep or set()) | ctx.other_still
        return [f"chip {c[:12]} in {s.root.name}" for s in ctx.model.chip_stores() for c in self._gone(ctx) - still if c in s]

    def forget(self, ctx):
        still_chips = {r.chip for r in ctx.rest if r.chip} | (ctx.cand_keep if ctx.cand_keep is not None else set())
        store = ctx.model.chips(ctx.gallery_uri)
        gone = self._gone(ctx) - still_chips
        for c in gone:
            with contextlib.suppress(GalleryError):
                ctx.chip_bytes.append(store.get(c))
        store.delete(gone)
        if ctx.cand_keep is not None:  # None: a damaged candidate.json might name any chip
            store.sweep(still_chips)  # and chips left by enrolments killed before their commit
        if not ctx.own and ctx.other:
            # The gallery in use is elsewhere (Milvus) and keeps its chips apart, while the model
            # directory's own galleries keep theirs in its own chip store: the faces removed
            # from those take their chips with them, unless another face there still names one.
            local = ctx.model.chips()
            local_gone = {r.chip for r in ctx.other if r.chip} - ctx.other_still
            for c in local_gone:
                with contextlib.suppress(GalleryError):
                    ctx.chip_bytes.append(local.get(c))
            local.delete(local_gone)

    forget_faces = forget

    # no rename: chips are named by their bytes


class _SharedGalleryChips(_Store):
    """The chips the removed faces named in the other model directories sharing the gallery in use (a Milvus
    gallery, `modeldir.shared`), each under its own writer lock once this one's is released (one lock at a time:
    two removals through two directories never wait on each other), unless a face left still names one."""

    name = "shared gallery's chips"
    after_locks = True

    def _dirs(self, ctx) -> list[Path]:
        return [] if ctx.own else _resolve("recognizer.modeldir.shared:sharing")(ctx.gallery_uri, ctx.model.root)

    def _gone(self, ctx, still: set[str]) -> set[str]:
        return {r.chip for r in ctx.records if r.chip} - still

    def held(self, ctx):
        still = {r.chip for r in ctx.others() if r.chip}
        return [f"chip {c[:12]} in {d}" for d in self._dirs(ctx) for c in self._gone(ctx, still)
                if c in ModelDir(d).chips(ctx.gallery_uri)]

    def forget(self, ctx):
        for d in self._dirs(ctx):
            try:
                with ModelDir(d).writer_lock():  # none of its enrolments is half way
                    still = {r.chip for r in ctx.gallery.records() if r.chip}
                    n = ModelDir(d).chips(ctx.gallery_uri).delete(self._gone(ctx, still))
            except (GalleryError, ModelError, OSError) as exc:
                log.warning("%s: its chips of %s's faces could not be deleted (%s); remove them again through it",
                            d, ctx.person, exc)
                continue
            if n:
                log.info("%s: deleted %d chips of %s's faces from the shared gallery's chips", d, n, ctx.person)

    forget_faces = forget  # `ctx.records` are then the faces removed, and `still` keeps the person's others

    # no rename: chips are named by their bytes


class _Caches(_Store):
    """The crop and trunk caches of the person's photos, once the locks are released. A group photo that
    still holds someone else's enrolled face stays cached."""

    name = "crop and trunk caches"
    after_locks = True

    def _photos(self, ctx) -> set[str]:
        return {r.content_hash for r in ctx.faces} - ctx.still_hashes()

    def held(self, ctx):
        crops = CropCache(ctx.cache_root)
        photos = {r.content_hash for r in ctx.faces} - {r.content_hash for r in ctx.others()}
        return [f"cached crops of photo {h[:12]}" for h in sorted(photos) if crops.crops_of(h)]

    def forget(self, ctx):
        ctx.counts = forget_photos(self._photos(ctx), ctx.cache_root, chips=ctx.chip_bytes)

    forget_faces = forget

    # no rename: keyed by photo content, not by name


class _ClassNames(_Store):
    """model.json's class names: a renamed person's class answers with the new name. A class cannot be
    forgotten without retraining: with no faces in the gallery it is masked until the next finetune."""

    name = "classifier names"

    def held(self, ctx):
        names = ctx.model.config().class_names if ctx.whole else {}
        return [f"class {c!r} answers {n!r} (masked while they have no faces)" for c, n in names.items() if n == ctx.person]

    def rename(self, ctx, old, new):
        st = ctx.view
        if st.classifier is None or old == new:
            return
        names = {c: st.config.class_names.get(c, c) for c in map(str, st.classifier.classes_)}
        renamed = {c: (new if n == old else n) for c, n in names.items()}
        if renamed != names:
            ctx.save_config(replace(st.config, class_names={c: n for c, n in renamed.items() if n != c}))


_LIVE = _GalleryInUse()
# The stores, in walking order; a feature's store goes before the gallery in use (`register` at run time).
_REGISTRY: list[FaceStore | str] = [
    _Candidate(), _OtherGalleries(), _ClusteringRuns(), _Split(), _Reports(), _Versions(),
    _LIVE, _ClassNames(), _Chips(), _SharedGalleryChips(), _Caches(),
]


def register(store: FaceStore | str, *, before: str = _LIVE.name) -> None:
    """Add a store (or "module:attr" naming one), walked before the store named `before`."""
    names = [s if isinstance(s, str) else s.name for s in _REGISTRY]
    _REGISTRY.insert(names.index(before), store)


def unregister(store: FaceStore | str) -> None:
    _REGISTRY.remove(store)


def registered() -> list[FaceStore]:
    return [_resolve(s) if isinstance(s, str) else s for s in _REGISTRY]


def held(ctx: Removal) -> dict[str, list[str]]:
    """What each store still holds of `ctx.person` (stores holding nothing left out)."""
    return {s.name: h for s in registered() if (h := s.held(ctx))}


def remove_person(model: ModelDir, person: str, writing: Callable[[], AbstractContextManager[Any]], *,
                  gallery_uri: str | None, cache_root: Path | None) -> Removal:
    """Walk the stores to forget `person`, under the stores' own locks and the writer lock (`writing()`, which
    yields the current view), then the `after_locks` ones. PersonNotFound when no one of that name is anywhere."""
    return _walk(model, writing, gallery_uri,
                 lambda st, live: Removal.of(model, person, st.gallery, live, gallery_uri, cache_root))


def remove_faces(model: ModelDir, ids: set[int], writing: Callable[[], AbstractContextManager[Any]], *,
                 gallery_uri: str | None, cache_root: Path | None) -> Removal:
    """`remove_person` for a few faces of one person (ids of the gallery in use; FaceNotFound): each store's
    `forget_faces` takes out those faces and what was made of their photos; the person stays enrolled."""
    lacking = [s.name for s in registered() if not callable(getattr(s, "forget_faces", None))]
    if lacking:  # a store that cannot forget one face would keep it: refused before anything changes
        raise ModelError(f"the face-data stores {', '.join(lacking)} cannot forget one face; remove the whole person")
    ids = {int(i) for i in ids}
    return _walk(model, writing, gallery_uri,
                 lambda st, live: Removal.of_faces(model, ids, st.gallery, live, gallery_uri, cache_root))


def _walk(model: ModelDir, writing, gallery_uri: str | None, make: Callable[[Any, str | None], Removal]) -> Removal:
    """Walk the stores with the removal `make(view, live)` builds under the locks, then the `after_locks` ones."""
    stores = registered()
    with _store_locks(stores, model), writing() as st:
        ctx = make(st, st.config.gallery if gallery_uri is None else None)
        forget = "forget" if ctx.whole else "forget_faces"
        for s in stores:
            if not getattr(s, "after_locks", False):
                getattr(s, forget)(ctx)
    for s in stores:
        if getattr(s, "after_locks", False):
            getattr(s, forget)(ctx)
    return ctx


def rename_person(model: ModelDir, old: str, new: str, writing: Callable[[], AbstractContextManager[Any]], *,
                  merge: bool = False, allow_similar: bool = False, save_config: Callable[[Any], None]) -> None:
    """Walk the stores to call `old` `new`: the gallery in use first (its errors before anything changes)."""
    stores = registered()
    with _store_locks(stores, model), writing() as st:
        ctx = Change(model, st, merge, allow_similar, save_config)
        for s in [s for s in stores if s is _LIVE] + [s for s in stores if s is not _LIVE]:
            s.rename(ctx, old, new)


@contextlib.contextmanager
def _store_locks(stores: list, model: ModelDir):
    with ExitStack() as locks:  # taken before the writer lock, as the stores' writers take them
        for s in stores:
            if hasattr(s, "lock"):
                locks.enter_context(s.lock(model))
        yield


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        log.warning("%s cannot be read (%s); it may still name a removed person", path, exc)
        return None


def _about(value: Any, mentions: Callable[[str], bool]) -> bool:
    """A string naming the person or a photo, or a record naming one at its top."""
    if isinstance(value, str):
        return mentions(value)
    if isinstance(value, dict):
        return any(isinstance(v, str) and mentions(v) for v in value.values())
    return False


def _scrubbed(obj: Any, mentions: Callable[[str], bool], redact: Callable[[str], str] | None = None) -> Any:
    """JSON data without the keys, values, list items and records that `mentions`; with `redact`, the other
    strings with what names them among other words taken out (a note listing several people)."""
    if isinstance(obj, dict):
        return {k: _scrubbed(v, mentions, redact) for k, v in obj.items() if not mentions(k) and not _about(v, mentions)}
    if isinstance(obj, list):
        return [_scrubbed(v, mentions, redact) for v in obj if not _about(v, mentions)]
    if isinstance(obj, str) and redact is not None:
        return redact(obj)
    return obj


"""Export a model's enrolled faces to one portable file, and import such a file into a model.

The archive is a plain tar file (no pickle, nothing executable):

    facetool-export.json   format, version, backbone, model id, dim, one entry per face
                           (person, source, photo sha256, box, time added, chip id, vector row)
                           and the sha256 of every other member
    vectors.npy            float32 (n, dim), read with allow_pickle=False
    chips/<sha256>.chip    the faces' chips (named by their own sha256)

Importing checks the whole archive first: a truncated or altered one is refused, naming the member at fault,
and nothing changes. An archive is untrusted input: its size, member count and every member's name, type and
size are checked from the tar headers before any member is read (`_headers`); then checksums, every manifest
field (`_face_error` names the entry and the field), every chip's header (`chip_format.check_chip`, under the one
decode rule) and the names; a change the gallery still refuses takes its new chips back (`ChipStore.adding`). Faces keep their vectors in a model of the same model id; another model re-embeds them
from their chips. A person already enrolled in the target is skipped and reported as a clash, not merged.
"""
from __future__ import annotations

import hashlib
import io
import json
import logging
import math
import re
import tarfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from facecore.errors import ArchiveError, InvalidNameError, ModelError
from facecore.names import refuse_lookalikes, validate_name
from facecore.outputs import check_output, output_file, special_file
from gallery import FaceRecord
from recognizer.chip_format import check_chip
from recognizer.chips import chip_vectors

__all__ = ["FORMAT", "MANIFEST", "MAX_ARCHIVE_BYTES", "MAX_CHIP_BYTES", "MAX_FACES", "MAX_MANIFEST_BYTES", "MAX_MEMBERS",
           "MAX_VECTORS_BYTES", "VECTORS", "VERSION", "ImportReport", "export_model", "import_archive", "read_archive"]

log = logging.getLogger(__name__)

FORMAT = "facetool-export"
VERSION = 1
MANIFEST = "facetool-export.json"
VECTORS = "vectors.npy"
_CHIP_MEMBER = re.compile(r"chips/([0-9a-f]{64})\.chip")
# Limits read from the tar headers before any member is read (an archive is untrusted input).
MAX_ARCHIVE_BYTES = 1 << 30  # the file; its members' sizes must also add up to no more than it holds
MAX_FACES = 50_000
MAX_MEMBERS = MAX_FACES + 2  # a chip per face, the manifest, the vectors
MAX_CHIP_BYTES = 1 << 20  # a chip is ~70 KB
MAX_VECTORS_BYTES = 128 << 20  # MAX_FACES vectors of dim 512 are 100 MB
MAX_MANIFEST_BYTES = 64 << 20  # ~300 bytes per face


@dataclass
class ImportReport:
    archive: str
    added: dict[str, int] = field(default_factory=dict)  # person -> faces imported
    clashes: list[str] = field(default_factory=list)  # people skipped: already enrolled in the target
    reembedded: int = 0  # faces embedded from their chips (another model id)
    reused_vectors: int = 0

    def to_dict(self) -> dict:
        return {"archive": self.archive, "added": self.added, "faces": sum(self.added.values()),
                "clashes": self.clashes, "reembedded": self.reembedded, "reused_vectors": self.reused_vectors}


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def export_model(rec, path: str | Path) -> dict:
    """Write `rec`'s enrolled faces to `path` by the outputs rule (facecore.outputs: atomically, never inside the
    model directory nor over a file that is not an earlier output of the tool); returns a summary."""
    out = check_output(path, [rec.dir], what="export archive")  # before anything is read
    st = rec._cur
    records = st.gallery.records()
    ids, vecs = st.gallery.vectors()
    row = {int(i): k for k, i in enumerate(ids)}
    store = rec.chips
    members: dict[str, bytes] = {}
    faces = []
    missing = []
    for r in records:
        if r.chip and r.chip in store:
            members[f"chips/{r.chip}.chip"] = store.get(r.chip)
        else:
            missing.append(r)
        faces.append({"person": r.person, "source": r.source, "content_hash": r.content_hash, "box": list(r.box),
                      "added_at": r.added_at, "chip": r.chip if r.chip and r.chip in store else "", "row": row[r.id]})
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(vecs, np.float32), allow_pickle=False)
    members[VECTORS] = buf.getvalue()
    manifest = {"format": FORMAT, "version": VERSION, "backbone": st.config.backbone, "weights": st.config.weights,
                "model_id": st.config.model_id, "dim": st.config.dim, "faces": faces,
                "members": {name: _sha(data) for name, data in members.items()}}
    with output_file(out, [rec.dir], what="export archive") as tmp, open(tmp, "wb") as fh, \
            tarfile.open(fileobj=fh, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in [(MANIFEST, json.dumps(manifest, indent=1, sort_keys=True).encode())] + sorted(members.items()):
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), 0o600, int(time.time())
            tar.addfile(info, io.BytesIO(data))
    if missing:
        log.warning("%d faces have no chip (enrolled before chips were kept): they import only into a model "
                    "with the same model id", len(missing))
    return {"archive": str(path), "faces": len(faces), "people": st.gallery.people(), "chips": len(members) - 1,
            "without_chip": len(missing), "model_id": st.config.model_id}


def _fail(path: Path, what: str) -> ArchiveError:
    return ArchiveError(f"{path}: {what}; nothing was imported")


def _open_tar(path: Path) -> tuple[tarfile.TarFile, int]:
    """The archive opened as a plain tar (a compressed one is refused: nothing can expand), and its size."""
    if (special := special_file(path)) is not None:  # before any open: a FIFO's open blocks
        raise _fail(path, special)
    try:
        size = path.stat().st_size
        if size > MAX_ARCHIVE_BYTES:
            raise _fail(path, f"is {size} bytes, over the archive limit of {MAX_ARCHIVE_BYTES} bytes")
        return tarfile.open(path, mode="r:"), size
    except FileNotFoundError:
        raise _fail(path, "no such file") from None
    except (tarfile.TarError, OSError) as exc:
        raise _fail(path, f"not a facetool export archive ({exc})") from None


def _member_limit(name: str) -> int | None:
    """The most bytes member `name` may hold; None for a name an export never writes."""
    if name == MANIFEST:
        return MAX_MANIFEST_BYTES
    if name == VECTORS:
        return MAX_VECTORS_BYTES
    return MAX_CHIP_BYTES if _CHIP_MEMBER.fullmatch(name) else None


def _check_header(path: Path, m: tarfile.TarInfo, seen: set[str]) -> None:
    """Member `m`, from its header alone: an expected name, a plain file (not sparse: holes would expand), within
    its limit, not seen before."""
    limit = _member_limit(m.name)
    if limit is None:
        raise _fail(path, f"unexpected member {m.name!r}")
    if not m.isfile() or m.issparse():
        raise _fail(path, f"member {m.name!r} is not a plain file")
    if not 0 <= m.size <= limit:
        raise _fail(path, f"member {m.name!r} is {m.size} bytes (limit {limit})")
    if m.name in seen:
        raise _fail(path, f"member {m.name!r} appears twice")


def _headers(path: Path, tar: tarfile.TarFile, file_size: int) -> list[tarfile.TarInfo]:
    """Every member's header, checked before any member is read: at most MAX_MEMBERS of them, each by
    `_check_header`, their sizes adding up to no more than the file holds (a plain tar stores every byte)."""
    members: list[tarfile.TarInfo] = []
    seen: set[str] = set()
    total = 0
    for m in tar:  # headers only: tarfile seeks past each member's data
        if len(members) >= MAX_MEMBERS:
            raise _fail(path, f"holds more than {MAX_MEMBERS} members (the limit: {MAX_FACES} faces' chips, "
                              f"{MANIFEST} and {VECTORS})")
        _check_header(path, m, seen)
        total += m.size
        if total > file_size:
            raise _fail(path, f"its members declare over {total} bytes, more than the file's {file_size} bytes hold")
        members.append(m)
        seen.add(m.name)
    return members


def _read_members(path: Path) -> dict[str, bytes]:
    """Every member of the archive by name, all headers checked by `_headers` first."""
    data: dict[str, bytes] = {}
    tar, size = _open_tar(path)
    with tar:
        try:
            for m in _headers(path, tar, size):
                f = tar.extractfile(m)
                blob = f.read(m.size) if f else b""
                if len(blob) != m.size:
                    raise _fail(path, f"member {m.name!r} is truncated")
                data[m.name] = blob
        except (tarfile.TarError, OSError, EOFError, ValueError, OverflowError) as exc:
            raise _fail(path, f"truncated or damaged ({exc})") from None
    return data


def _read_manifest(path: Path, data: dict[str, bytes]) -> tuple[dict, dict, list, int]:
    """(manifest, the members it lists with their sha256, its faces, dim), taken out of `data`; every field
    but the faces' checked (those by `_check_faces`)."""
    if MANIFEST not in data:
        raise _fail(path, f"{MANIFEST} is missing (truncated, or not a facetool export)")
    try:
        manifest = json.loads(data.pop(MANIFEST))
    except ValueError as exc:
        raise _fail(path, f"{MANIFEST} is not JSON ({exc})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise _fail(path, f"{MANIFEST} is not a facetool export manifest")
    version, dim, members, faces = (manifest.get(k) for k in ("version", "dim", "members", "faces"))
    if not _is_int(version) or version < 1:
        raise _fail(path, f"{MANIFEST}: version {version!r} is not an export version")
    if version > VERSION:
        raise _fail(path, f"written by a newer facetool (export version {version} > {VERSION})")
    if not _is_int(dim) or not 0 < dim <= 4096:
        raise _fail(path, f"{MANIFEST}: dim {dim!r} is not an embedding size (1..4096)")
    for key in ("model_id", "backbone"):
        if not isinstance(manifest.get(key), str) or not manifest[key]:
            raise _fail(path, f"{MANIFEST}: {key} {manifest.get(key)!r} is not a name")
    if not isinstance(members, dict) or not all(isinstance(v, str) for v in members.values()):
        raise _fail(path, f"{MANIFEST}: members is not a table of member names and their sha256")
    if not isinstance(faces, list) or len(faces) > MAX_FACES:
        raise _fail(path, f"{MANIFEST}: faces is not a list of at most {MAX_FACES} face entries")
    return manifest, members, faces, dim


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _check_members(path: Path, listed: dict, data: dict[str, bytes]) -> None:
    """The members are exactly those the manifest lists, each matching its checksum."""
    if set(listed) != set(data):
        gone = sorted(set(listed) - set(data))
        raise _fail(path, f"members missing (truncated?): {gone[:5]}" if gone else f"members not in the manifest: {sorted(set(data) - set(listed))[:5]}")
    for name, blob in data.items():
        if _sha(blob) != listed[name]:
            raise _fail(path, f"member {name!r} does not match its checksum (altered or damaged)")


def _read_vectors(path: Path, blob: bytes, n_faces: int, dim: int) -> np.ndarray:
    try:
        vectors = np.load(io.BytesIO(blob), allow_pickle=False)
    except (ValueError, EOFError, OSError) as exc:
        raise _fail(path, f"{VECTORS} is damaged ({exc})") from None
    if vectors.dtype != np.float32 or vectors.ndim != 2 or vectors.shape[1] != dim or len(vectors) != n_faces:
        raise _fail(path, f"{VECTORS} holds {vectors.shape} {vectors.dtype}, the manifest {n_faces} faces of dim {dim}")
    bad = ~np.isfinite(vectors).all(axis=1) | ~(np.abs(vectors).max(axis=1, initial=0.0) > 0)
    if bad.any():
        raise _fail(path, f"{VECTORS}: rows {np.flatnonzero(bad)[:10].tolist()} are NaN, infinite or zero, not embeddings")
    return vectors


def _face_error(f, n_vectors: int, chips: dict[str, bytes]) -> str | None:
    """What is wrong with face entry `f` of the manifest, or None: each field is checked, and named."""
    if not isinstance(f, dict):
        return "is not an object"
    for key in ("person", "source", "content_hash"):
        if not isinstance(f.get(key), str):
            return f"{key} {f.get(key)!r} is not a string"
    row, box, added_at, chip = f.get("row"), f.get("box"), f.get("added_at"), f.get("chip", "")
    if not _is_int(row) or not 0 <= row < n_vectors:
        return f"row {row!r} is not a row of {VECTORS} (0..{n_vectors - 1})"
    if not isinstance(box, list) or len(box) != 4 or not all(map(_is_number, box)):
        return f"box {str(box)[:80]} is not 4 finite numbers"
    if not _is_number(added_at) or added_at < 0:
        return f"added_at {str(added_at)[:80]!r} is not a time (seconds since 1970)"
    if not isinstance(chip, str) or (chip and not re.fullmatch(r"[0-9a-f]{64}", chip)):
        return f"chip {str(chip)[:80]!r} is not a chip id (64 hex digits)"
    if chip and chip not in chips:
        return f"names chip {chip[:12]}..., which is not in the archive"
    try:
        validate_name(f["person"])
    except InvalidNameError as exc:
        return f"person: {exc}"
    return None


def _check_faces(path: Path, faces: list, n_vectors: int, chips: dict[str, bytes]) -> None:
    """Each face entry has its fields, a row of the vectors, and its chip in the archive."""
    for i, f in enumerate(faces):
        why = _face_error(f, n_vectors, chips)
        if why:
            raise _fail(path, f"face entry {i} of {MANIFEST}: {why}")


def read_archive(path: str | Path) -> tuple[dict, np.ndarray, dict[str, bytes]]:
    """(manifest, vectors, chips by id), every member and field checked; ArchiveError naming the problem."""
    path = Path(path)
    data = _read_members(path)
    manifest, listed, faces, dim = _read_manifest(path, data)
    _check_members(path, listed, data)
    vectors = _read_vectors(path, data.pop(VECTORS), len(faces), dim)
    chips = {_CHIP_MEMBER.fullmatch(n).group(1): b for n, b in data.items()}
    for name, blob in data.items():
        try:
            check_chip(blob, f"member {name!r}")
        except ModelError as exc:
            raise _fail(path, str(exc)) from None
    _check_faces(path, faces, len(vectors), chips)
    return manifest, vectors, chips


def _records(take: list, shas: list[str]) -> list[FaceRecord]:
    return [FaceRecord(f["person"], f["source"], f["content_hash"], tuple(float(v) for v in f["box"]),
                       added_at=float(f["added_at"]), chip=sha) for f, sha in zip(take, shas)]


def _take(path, manifest: dict, st) -> tuple[list, list[str]]:
    """(the faces to import, the people skipped as clashes): every refusal that depends on the target model
    (look-alike names, faces another model cannot embed) raised here, before anything is written."""
    faces = manifest["faces"]
    present = set(st.gallery.people())
    take = [f for f in faces if f["person"] not in present]
    try:
        refuse_lookalikes(sorted({f["person"] for f in take}), present)
    except InvalidNameError as exc:
        raise ArchiveError(f"{path}: {exc}; nothing was imported") from None
    no_chip = [f for f in take if not f.get("chip")]
    if no_chip and manifest["model_id"] != st.config.model_id:
        raise ArchiveError(f"{path}: {len(no_chip)} faces have no chip (e.g. {no_chip[0]['person']}, "
                           f"{no_chip[0]['source']}) and the archive's model {manifest['model_id']} is not "
                           f"this model's ({st.config.model_id}), so they cannot be embedded; nothing was imported")
    return take, sorted({f["person"] for f in faces} & present)


def import_archive(rec, path: str | Path) -> ImportReport:
    """Merge the archive at `path` into the model `rec` has open (see the module's docstring). Everything is checked
    before anything is written, and a change refused even so (by the gallery, under its lock) takes the chips it
    stored back with it: a refused import leaves the model as it was, chips included."""
    manifest, vectors, chips = read_archive(path)
    report = ImportReport(str(path))
    for f in manifest["faces"]:
        f["person"] = validate_name(f["person"])
    with rec._writing() as st:
        take, report.clashes = _take(path, manifest, st)
        if not take:
            return report
        if manifest["model_id"] == st.config.model_id:
            vecs = vectors[[int(f["row"]) for f in take]]
            report.reused_vectors = len(take)
        else:
            # Re-embedding from chips: where the one rebuild-from-chips (recognizer/modeldir/rebuild.py) belongs.
            try:
                vecs = chip_vectors([chips[f["chip"]] for f in take], st.embedder)
            except ModelError as exc:
                raise ArchiveError(f"{path}: {exc}; nothing was imported") from None
            report.reembedded = len(take)
        with_chip = [f for f in take if f.get("chip")]
        with rec.chips.adding([chips[f["chip"]] for f in with_chip]) as shas:
            by_face = {id(f): sha for f, sha in zip(with_chip, shas)}
            st.gallery.add(vecs, _records(take, [by_face.get(id(f), "") for f in take]), model_id=st.config.model_id)
        for f in take:
            report.added[f["person"]] = report.added.get(f["person"], 0) + 1
    return report

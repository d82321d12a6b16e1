"""Export a model's enrolled faces to one portable file, and import such a file into a model.

The archive is a plain tar file (no pickle, nothing executable):

    facetool-export.json   format, version, backbone, model id, dim, one entry per face
                           (person, source, photo sha256, box, time added, chip id, vector row)
                           and the sha256 of every other member
    vectors.npy            float32 (n, dim), read with allow_pickle=False
    chips/<sha256>.chip    the faces' chips (named by their own sha256)

Importing checks the whole archive first: a truncated or altered one is refused, naming the member at fault,
and nothing changes. Faces keep their vectors in a model of the same model id; another model re-embeds them
from their chips. A person already enrolled in the target is skipped and reported as a clash, not merged.
"""
from __future__ import annotations

import hashlib
import io
import json
import logging
import re
import tarfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from facecore.errors import ArchiveError
from facecore.outputs import check_output, output_file, special_file
from facecore.names import validate_name
from gallery import FaceRecord
from recognizer.chips import chip_vectors

__all__ = ["FORMAT", "MANIFEST", "VECTORS", "VERSION", "ImportReport", "export_model", "import_archive", "read_archive"]

log = logging.getLogger(__name__)

FORMAT = "facetool-export"
VERSION = 1
MANIFEST = "facetool-export.json"
VECTORS = "vectors.npy"
_CHIP_MEMBER = re.compile(r"chips/([0-9a-f]{64})\.chip")
MAX_MEMBER_BYTES = 64 << 20  # a chip is ~70 KB; vectors of 100k faces at dim 512 are 200 MB: refuse beyond
MAX_MANIFEST_BYTES = 256 << 20


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


def _open_tar(path: Path) -> tarfile.TarFile:
    if (special := special_file(path)) is not None:  # before any open: a FIFO's open blocks
        raise _fail(path, special)
    try:
        return tarfile.open(path, mode="r:")
    except FileNotFoundError:
        raise _fail(path, "no such file") from None
    except (tarfile.TarError, OSError) as exc:
        raise _fail(path, f"not a facetool export archive ({exc})") from None


def _read_member(path: Path, tar: tarfile.TarFile, m: tarfile.TarInfo, data: dict[str, bytes]) -> bytes:
    """The bytes of member `m`, once it is known to be an expected plain file, within its limit and new."""
    if not m.isfile():
        raise _fail(path, f"member {m.name!r} is not a plain file")
    limit = MAX_MANIFEST_BYTES if m.name == MANIFEST else MAX_MEMBER_BYTES
    if m.name != MANIFEST and m.name != VECTORS and not _CHIP_MEMBER.fullmatch(m.name):
        raise _fail(path, f"unexpected member {m.name!r}")
    if m.size > limit:
        raise _fail(path, f"member {m.name!r} is {m.size} bytes (limit {limit})")
    if m.name in data:
        raise _fail(path, f"member {m.name!r} appears twice")
    f = tar.extractfile(m)
    blob = f.read() if f else b""
    if len(blob) != m.size:
        raise _fail(path, f"member {m.name!r} is truncated")
    return blob


def _read_members(path: Path) -> dict[str, bytes]:
    """Every member of the archive by name, each checked by `_read_member`."""
    data: dict[str, bytes] = {}
    with _open_tar(path) as tar:
        try:
            for m in tar:
                data[m.name] = _read_member(path, tar, m, data)
        except (tarfile.TarError, OSError, EOFError) as exc:
            raise _fail(path, f"truncated or damaged ({exc})") from None
    return data


def _read_manifest(path: Path, data: dict[str, bytes]) -> tuple[dict, dict, list, int]:
    """(manifest, the members it lists with their sha256, its faces, dim), taken out of `data`."""
    if MANIFEST not in data:
        raise _fail(path, f"{MANIFEST} is missing (truncated, or not a facetool export)")
    try:
        manifest = json.loads(data.pop(MANIFEST))
        if manifest.get("format") != FORMAT:
            raise _fail(path, f"{MANIFEST} is not a facetool export manifest")
        if int(manifest["version"]) > VERSION:
            raise _fail(path, f"written by a newer facetool (export version {manifest['version']} > {VERSION})")
        return manifest, dict(manifest["members"]), list(manifest["faces"]), int(manifest["dim"])
    except ArchiveError:
        raise
    except (ValueError, KeyError, TypeError) as exc:
        raise _fail(path, f"{MANIFEST} is damaged ({exc!r})") from None


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
    except ValueError as exc:
        raise _fail(path, f"{VECTORS} is damaged ({exc})") from None
    if vectors.dtype != np.float32 or vectors.ndim != 2 or vectors.shape[1] != dim or len(vectors) != n_faces:
        raise _fail(path, f"{VECTORS} holds {vectors.shape} {vectors.dtype}, the manifest {n_faces} faces of dim {dim}")
    return vectors


def _check_faces(path: Path, faces: list, n_vectors: int, chips: dict[str, bytes]) -> None:
    """Each face entry has its fields, a row of the vectors, and its chip in the archive."""
    for i, f in enumerate(faces):
        try:
            ok = (isinstance(f["person"], str) and 0 <= int(f["row"]) < n_vectors and len(f["box"]) == 4
                  and isinstance(f["source"], str) and isinstance(f["content_hash"], str))
        except (KeyError, TypeError, ValueError):
            ok = False
        if not ok:
            raise _fail(path, f"face entry {i} of {MANIFEST} is damaged")
        if f.get("chip") and f["chip"] not in chips:
            raise _fail(path, f"face entry {i} names chip {f['chip'][:12]}..., which is not in the archive")


def read_archive(path: str | Path) -> tuple[dict, np.ndarray, dict[str, bytes]]:
    """(manifest, vectors, chips by id), every member checked; ArchiveError naming the problem."""
    path = Path(path)
    data = _read_members(path)
    manifest, listed, faces, dim = _read_manifest(path, data)
    _check_members(path, listed, data)
    vectors = _read_vectors(path, data.pop(VECTORS), len(faces), dim)
    chips = {_CHIP_MEMBER.fullmatch(n).group(1): b for n, b in data.items()}
    _check_faces(path, faces, len(vectors), chips)
    return manifest, vectors, chips


def import_archive(rec, path: str | Path) -> ImportReport:
    """Merge the archive at `path` into the model `rec` has open (see the module's docstring)."""
    manifest, vectors, chips = read_archive(path)
    report = ImportReport(str(path))
    faces = manifest["faces"]
    for f in faces:
        f["person"] = validate_name(f["person"])
    with rec._writing() as st:
        present = set(st.gallery.people())
        report.clashes = sorted({f["person"] for f in faces} & present)
        take = [f for f in faces if f["person"] not in present]
        same = manifest["model_id"] == st.config.model_id
        if not same:
            no_chip = [f for f in take if not f.get("chip")]
            if no_chip:
                raise ArchiveError(f"{path}: {len(no_chip)} faces have no chip (e.g. {no_chip[0]['person']}, "
                                   f"{no_chip[0]['source']}) and the archive's model {manifest['model_id']} is not "
                                   f"this model's ({st.config.model_id}), so they cannot be embedded; nothing was imported")
        if take:
            if same:
                vecs = vectors[[int(f["row"]) for f in take]]
                report.reused_vectors = len(take)
            else:
                # Re-embedding from chips: where the one rebuild-from-chips (recognizer/modeldir/rebuild.py) belongs.
                vecs = chip_vectors([chips[f["chip"]] for f in take], st.embedder)
                report.reembedded = len(take)
            store = rec.chips
            records = []
            for f in take:
                sha = store.put(chips[f["chip"]]) if f.get("chip") else ""
                records.append(FaceRecord(f["person"], str(f["source"]), str(f["content_hash"]),
                                          tuple(float(v) for v in f["box"]), added_at=float(f["added_at"]), chip=sha))
            st.gallery.add(vecs, records, model_id=st.config.model_id)
            for f in take:
                report.added[f["person"]] = report.added.get(f["person"], 0) + 1
    return report

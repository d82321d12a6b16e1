"""Issue 25: one rule for every decode, every archive and every upload, checked on hostile inputs.

Decodes: a chip that is a decompression bomb is refused from its header (`recognizer.image.check_decode`), in a
chip read and in an archive; a video frame goes under the same memory budget. Archives: sizes and member counts
from the tar headers before any member is read; every manifest field checked with an error naming it; a refused
import leaves the model byte for byte as it was, chips included. Uploads: chunked bodies count against the
in-flight cap as they arrive.
"""
from __future__ import annotations

import asyncio
import gzip
import io
import json
import os
import struct
import subprocess
import sys
import tarfile
import zlib
from pathlib import Path

import numpy as np
import pytest

from reliability_util import face_image, one_person_model

def bomb_png(side: int = 16000) -> bytes:
    """A valid 1-bit grey PNG of side x side pixels, all black: ~30 KB on disk, 768 MB as the BGR an
    OpenCV decode makes of it."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)

    row = b"\x00" * (1 + (side + 7) // 8)
    comp = zlib.compressobj(9)
    idat = b"".join(comp.compress(row) for _ in range(side)) + comp.flush()
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0))
            + chunk(b"IDAT", idat) + chunk(b"IEND", b""))


def peak_mb_of(code: str, *args: str) -> tuple[float, float, str]:
    """(peak RSS before, peak RSS after `code` ran, its output) in a fresh interpreter running the code this
    process imported; `code` sees `args` as sys.argv[1:]."""
    prog = ("import resource, sys\n"
            "import recognizer.archive, recognizer.chip_format\n"
            "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024\n"
            "try:\n" + "".join(f"    {line}\n" for line in code.splitlines()) +
            "except Exception as exc:\n    print('ERROR', type(exc).__name__, exc)\n"
            "print('PEAK', before, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)\n")
    import recognizer

    here = str(Path(recognizer.__file__).resolve().parent.parent)  # the code under test, in the child too
    env = dict(os.environ, PYTHONPATH=here)
    out = subprocess.run([sys.executable, "-c", prog, *args], capture_output=True, text=True, cwd=here, env=env,
                         timeout=600)
    text = out.stdout + out.stderr
    peak = [line.split() for line in text.splitlines() if line.startswith("PEAK")]
    assert peak, text
    return float(peak[-1][1]), float(peak[-1][2]), text


# ---- decodes ---------------------------------------------------------------------------------------------


def test_a_chip_that_is_a_decompression_bomb_is_refused_from_its_header(tmp_path):
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(bomb_png())
    before, after, out = peak_mb_of("from pathlib import Path\n"
                                    "recognizer.chip_format.chip_crops(Path(sys.argv[1]).read_bytes(), ['sface112'])",
                                    str(bomb))
    assert "ERROR ModelError" in out and "over the limit of 43520 pixels" in out, out
    assert after - before < 48, f"reading a 16000x16000 chip took {after - before:.0f} MB"


def test_a_chip_with_a_compressed_metadata_bomb_is_refused_cheaply():
    """A chip-sized PNG whose iCCP and zTXt chunks inflate to 64 MB each: refused without inflating them."""
    import resource

    from facecore.errors import ModelError
    from recognizer.chip_format import check_chip, chip_crops

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)

    inflating = zlib.compress(b"\x00" * (64 << 20), 9)
    rows = zlib.compress(b"".join(b"\x00" + b"\x00" * 272 * 3 for _ in range(160)))
    for kind, body in ((b"iCCP", b"icc\x00\x00" + inflating), (b"zTXt", b"Comment\x00\x00" + inflating)):
        png = (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 272, 160, 8, 2, 0, 0, 0))
               + chunk(kind, body) + chunk(b"IDAT", rows) + chunk(b"IEND", b""))
        assert len(png) < (1 << 20)  # within an archive's chip limit
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        for read in (lambda: check_chip(png, "c"), lambda: chip_crops(png, ["sface112"], "c")):
            try:
                read()
            except ModelError as exc:
                assert "not a face chip" in str(exc)
        assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - before < 48, kind


def test_chip_crops_read_a_real_chip_exactly(data):
    """The chip decoder (PIL now, under the decode rule) gives the very pixels OpenCV's PNG decoder gives."""
    import cv2

    from recognizer.chip_format import HEIGHT, LAYOUT, WIDTH, chip_crops

    canvas = np.random.default_rng(0).integers(0, 256, (HEIGHT, WIDTH, 3), dtype=np.uint8)
    ok, buf = cv2.imencode(".png", canvas[:, :, ::-1])
    crops = chip_crops(buf.tobytes(), list(LAYOUT))
    for kind, (x, y, s) in LAYOUT.items():
        assert np.array_equal(crops[kind], canvas[y : y + s, x : x + s])


def test_video_frames_are_decoded_under_the_photo_memory_budget(tmp_path):
    import cv2

    from facecore.errors import VideoError
    from recognizer.video.reader import VideoLimits, VideoReader

    path = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 5, (640, 480))
    for i in range(3):
        writer.write(np.full((480, 640, 3), 40 * i, np.uint8))
    writer.release()
    with VideoReader(path, limits=VideoLimits(memory_budget=4 << 20)) as reader:  # 640x480 fits 4 MB
        assert len(list(reader.frames())) == 3
    with pytest.raises(VideoError) as err:
        VideoReader(path, limits=VideoLimits(memory_budget=2 << 20))  # a frame takes 3 MB
    assert err.value.too_large and "memory budget" in err.value.reason and "640x480" in err.value.reason


# ---- archives: from the headers ----------------------------------------------------------------------------


def test_sparse_members_are_refused_from_their_headers_before_any_is_read(tmp_path):
    """12 sparse members declaring 64 MB each in a ~10 KB tar: refused without reading (or expanding) one."""
    src = tmp_path / "src"
    (src / "chips").mkdir(parents=True)
    for i in range(12):
        with open(src / "chips" / f"{i:064x}.chip", "wb") as fh:
            fh.truncate(64 << 20)
    tar_path = tmp_path / "sparse.tar"
    names = sorted(str(p.relative_to(src)) for p in (src / "chips").iterdir())
    subprocess.run(["tar", "-cSf", str(tar_path), "-C", str(src), *names], check=True)  # GNU tar: sparse members
    assert tar_path.stat().st_size < 100_000
    with tarfile.open(tar_path) as tar:
        first = tar.next()
        assert first.issparse() and first.size == 64 << 20
    before, after, out = peak_mb_of("recognizer.archive.read_archive(sys.argv[1])", str(tar_path))
    assert "ERROR ArchiveError" in out and "nothing was imported" in out, out
    assert after - before < 48, f"refusing a sparse archive took {after - before:.0f} MB"


def _tar(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def test_too_many_members_negative_sizes_and_compressed_archives_are_refused(tmp_path):
    from facecore.errors import ArchiveError
    from recognizer.archive import MAX_MEMBERS, read_archive

    many = tmp_path / "many.tar"
    many.write_bytes(_tar({f"chips/{i:064x}.chip": b"" for i in range(MAX_MEMBERS + 1)}))
    with pytest.raises(ArchiveError, match=f"more than {MAX_MEMBERS} members"):
        read_archive(many)
    # A header declaring more than the file holds (a chip of 900 KB in a file of 10 KB).
    short = bytearray(_tar({"chips/" + "a" * 64 + ".chip": b"x" * (900 << 10)}))[: 10 << 10]
    truncated = tmp_path / "short.tar"
    truncated.write_bytes(bytes(short))
    with pytest.raises(ArchiveError, match="more than the file's 10240 bytes hold"):
        read_archive(truncated)
    # A header whose size field is base-256 negative.
    blob = bytearray(_tar({"vectors.npy": b"x" * 10}))
    assert blob[:11] == b"vectors.npy"  # a short name: no PAX header before it
    blob[124:136] = b"\xff" * 12
    blob[148:156] = b"        "
    blob[148:155] = b"%06o\x00" % sum(blob[:512])
    assert tarfile.TarInfo.frombuf(bytes(blob[:512]), "utf-8", "surrogateescape").size < 0
    negative = tmp_path / "negative.tar"
    negative.write_bytes(bytes(blob))
    with pytest.raises(ArchiveError, match="member 'vectors.npy' is -1 bytes"):
        read_archive(negative)
    zipped = tmp_path / "zipped.tar"
    zipped.write_bytes(gzip.compress(_tar({"facetool-export.json": b"{}"})))
    with pytest.raises(ArchiveError, match="not a facetool export archive"):
        read_archive(zipped)


# ---- archives: fields, and a refused import changes nothing -------------------------------------------------


@pytest.fixture
def model_and_archive(tmp_path, data, detector, sface):
    """A one-person model ("paul") and its export."""
    from recognizer.archive import export_model

    rec = one_person_model(tmp_path, face_image(data), detector, sface)
    path = tmp_path / "paul.tar"
    export_model(rec, path)
    yield rec, path
    rec.close()


def rewritten(path: Path, out: Path, edit) -> Path:
    """The archive at `path` with `edit(manifest, vectors, chips)` applied, its chip re-encoded (same pixels, new
    bytes: a chip the model does not hold yet) and every checksum recomputed: only the edit is wrong with it."""
    import hashlib

    import cv2

    with tarfile.open(path) as tar:
        members = {m.name: tar.extractfile(m).read() for m in tar}
    manifest = json.loads(members.pop("facetool-export.json"))
    vectors = np.load(io.BytesIO(members.pop("vectors.npy")), allow_pickle=False)
    chips = {}
    for name, blob in members.items():
        img = cv2.imdecode(np.frombuffer(blob, np.uint8), cv2.IMREAD_COLOR)
        chips[name[len("chips/"):-len(".chip")]] = cv2.imencode(".png", img, [cv2.IMWRITE_PNG_COMPRESSION, 1])[1].tobytes()
    for f in manifest["faces"]:
        if f["chip"]:
            f["chip"] = hashlib.sha256(chips[f["chip"]]).hexdigest()
    chips = {hashlib.sha256(b).hexdigest(): b for b in chips.values()}
    manifest["faces"][0]["person"] = "ann"  # not a clash with paul
    edit(manifest, vectors, chips)
    buf = io.BytesIO()
    np.save(buf, vectors, allow_pickle=False)
    members = {"vectors.npy": buf.getvalue(), **{f"chips/{k}.chip": v for k, v in chips.items()}}
    manifest["members"] = {k: hashlib.sha256(v).hexdigest() for k, v in members.items()}
    out.write_bytes(_tar({"facetool-export.json": json.dumps(manifest).encode(), **members}))
    return out


def files_of(model: Path) -> dict[str, bytes]:
    return {str(p.relative_to(model)): p.read_bytes() for p in sorted(model.rglob("*")) if p.is_file() and p.name != ".lock"}


def _set(key, value):
    def edit(manifest, vectors, chips):
        manifest["faces"][0][key] = value
    return edit


def _nan(manifest, vectors, chips):
    vectors[0, :] = np.nan


def _bomb(manifest, vectors, chips):
    import hashlib

    bomb = bomb_png()
    chips.clear()
    chips[hashlib.sha256(bomb).hexdigest()] = bomb
    manifest["faces"][0]["chip"] = hashlib.sha256(bomb).hexdigest()


CASES = {
    "chip bomb": (_bomb, "not a face chip: member 'chips/"),
    "look-alike name": (_set("person", "p\u0430ul"), "looks the same as 'paul'"),  # Cyrillic a
    "NaN vector": (_nan, "NaN, infinite or zero"),
    "box of letters": (_set("box", ["a", "b", "c", "d"]), "face entry 0 of facetool-export.json: box"),
    "added_at a word": (_set("added_at", "yesterday"), "face entry 0 of facetool-export.json: added_at 'yesterday'"),
    "row a bool": (_set("row", True), "row True is not a row"),
    "source a number": (_set("source", 7), "source 7 is not a string"),
}


def test_a_refused_import_names_the_field_and_leaves_the_model_byte_identical(tmp_path, model_and_archive):
    from facecore.errors import ArchiveError
    from recognizer.archive import import_archive

    rec, archive = model_and_archive
    good = rewritten(archive, tmp_path / "good.tar", lambda *a: None)
    before = files_of(rec.dir)
    assert len([p for p in before if p.startswith("chips/")]) == 1
    for case, (edit, message) in CASES.items():
        bad = rewritten(archive, tmp_path / f"{case}.tar", edit)
        with pytest.raises(ArchiveError) as err:
            import_archive(rec, bad)
        assert message in str(err.value) and "nothing was imported" in str(err.value), (case, str(err.value))
        assert files_of(rec.dir) == before, f"{case}: the refused import changed the model"
    # The same archive without the fault imports, with its new chip.
    assert import_archive(rec, good).added == {"ann": 1}
    assert len([p for p in files_of(rec.dir) if p.startswith("chips/")]) == 2


def test_a_refused_gallery_add_takes_its_new_chips_back(tmp_path):
    """The chips of a change the gallery refuses under its lock go again, and the folders made for them."""
    from gallery.chip_store import ChipStore

    store = ChipStore(tmp_path / "chips")
    kept = store.put(b"kept")
    with pytest.raises(RuntimeError):
        with store.adding([b"kept", b"new one"]):
            raise RuntimeError("the gallery refused the add")
    assert store.ids() == {kept} and len(list((tmp_path / "chips").iterdir())) == 1
    with store.adding([b"new one"]) as ids:
        pass
    assert store.ids() == {kept, *ids}


def test_a_damaged_archive_field_is_a_4xx_over_http(tmp_path, model_and_archive):
    from starlette.testclient import TestClient

    from web.app import create_app
    from web.settings import Settings

    rec, archive = model_and_archive
    with TestClient(create_app(rec, Settings(token="t0ken-0123456789")), raise_server_exceptions=False,
                    base_url="http://127.0.0.1") as client:
        for case in ("NaN vector", "box of letters", "added_at a word", "chip bomb"):
            bad = rewritten(archive, tmp_path / f"{case}.tar", CASES[case][0])
            res = client.post("/import", files={"file": ("faces.tar", bad.read_bytes())},
                              headers={"Authorization": "Bearer t0ken-0123456789"})
            assert res.status_code == 400 and "faces.tar" in res.json()["error"], (case, res.status_code, res.text)
            assert str(tmp_path) not in res.text


# ---- uploads -----------------------------------------------------------------------------------------------


def test_chunked_uploads_count_against_the_in_flight_cap_as_they_arrive():
    """Two chunked uploads of 600 KB under a 1 MB cap: the second is cut off with 503 once the two pass it."""
    from web.guard import GuardSettings, RequestGuard

    async def app(scope, receive, send):
        while (await receive()).get("more_body"):
            await asyncio.sleep(0)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    guard = RequestGuard(app, GuardSettings(max_upload_disk=1 << 20))
    scope = {"type": "http", "method": "POST", "path": "/identify",
             "headers": [(b"host", b"127.0.0.1"), (b"transfer-encoding", b"chunked")]}
    first_sent = asyncio.Event()

    async def upload(wait_for=None, hold=None):
        chunks = [b"x" * (100 << 10)] * 6
        answers = []

        async def receive():
            if not chunks:
                if hold is not None:
                    await hold.wait()
                return {"type": "http.request", "body": b"", "more_body": False}
            body = chunks.pop()
            if not chunks and wait_for is None:
                first_sent.set()
            return {"type": "http.request", "body": body, "more_body": True}

        async def send(message):
            answers.append(message)

        if wait_for is not None:
            await wait_for.wait()
        await guard(dict(scope), receive, send)
        return next(m["status"] for m in answers if m["type"] == "http.response.start")

    async def both():
        release = asyncio.Event()
        first = asyncio.create_task(upload(hold=release))
        second = await upload(wait_for=first_sent)
        release.set()
        return await first, second

    first, second = asyncio.run(both())
    assert (first, second) == (200, 503)
    assert guard.upload_bytes == 0 and guard.uploads == 0

"""Bad input: every file ends in a result or a typed error naming it, in bounded time and memory.

Each case goes through every entry point: load_photo, Detector.detect, FacePipeline.analyze,
Recognizer.identify and Recognizer.enroll, then enroll.py and identify.py (click's CliRunner).
Generated cases (random bytes, truncated and bit-flipped files of five formats) use hypothesis;
HYPOTHESIS_PROFILE=long runs many more of them.
"""
from __future__ import annotations

import json
import os
import random
from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image

from recognizer.cli import enroll
from recognizer.cli import identify
from facecore.errors import ImageError
from recognizer.image import load_photo
from reliability_util import (
    bounded,
    crowd_image,
    encode,
    face_image,
    huge_header,
    noise_image,
    outcome,
)

FORMATS = {"JPEG": ".jpg", "PNG": ".png", "WEBP": ".webp", "GIF": ".gif", "TIFF": ".tiff"}
COUNTS = {"cases": 0, "calls": 0}


@pytest.fixture(scope="module", autouse=True)
def report_counts():
    yield
    print(f"\nbad input: {COUNTS['cases']} cases tried, {COUNTS['calls']} entry-point calls; "
          "each ended in a result or a typed error naming the input")

# expectation per case: "error", "none" (read, no face), "face" (>= 1 face), "crowd" (>= 30), "any"
ERROR, NONE, FACE, CROWD, ANY = "error", "none", "face", "crowd", "any"


@pytest.fixture(scope="module")
def face(data):
    return face_image(data)


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """A fresh crop cache for this module, shared by the library calls and the CLIs (FACETOOL_CACHE).

    Every case is decoded and detected by Detector.detect and by FacePipeline.analyze, which
    fills the cache; Recognizer.identify/enroll and the CLIs still read (and hash) the file but
    skip detection for photos that decoded before. A file that fails to decode is never cached,
    so every error case goes through the decoder at every entry point.
    """
    from recognizer.cache import CropCache

    return CropCache(tmp_path_factory.mktemp("facetool") / "crops")


@pytest.fixture
def cli_cache(cache, monkeypatch, detector, sface):
    """The CLIs use this module's crop cache, and the session's detector and embedder instead of
    building MTCNN and SFace again on each of their ~70 runs (the CLI code is otherwise as is)."""
    monkeypatch.setenv("FACETOOL_CACHE", str(cache.root.parent))

    def make_detector(settings):
        assert settings == detector.settings
        return detector

    monkeypatch.setattr("recognizer.view.Detector", make_detector)
    monkeypatch.setattr("recognizer.view.make_embedder", lambda backbone, *a, **kw: sface if backbone == "sface" else None)


@pytest.fixture(scope="module")
def pipeline(detector, sface, cache):
    from recognizer.pipeline import FacePipeline

    return FacePipeline(detector, sface, cache)


@pytest.fixture(scope="module")
def model(tmp_path_factory, face, cache):
    """An sface model with one person enrolled."""
    from recognizer.recognizer import Recognizer

    root = tmp_path_factory.mktemp("bad-input-model")
    enrolled = root / "paul.jpg"
    enrolled.write_bytes(encode(face, "JPEG", quality=92))
    rec = Recognizer.open(root / "model", backbone="sface", create=True, cache=cache)
    assert rec.enroll("paul", [enrolled]).added == 1
    return rec


def _write(path: Path, content: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    return path


def build_cases(root: Path, face: Image.Image, detector) -> dict[str, tuple[Path, str]]:
    """{case: (path, expectation)} written under `root`."""
    rnd = random.Random(7)
    jpeg = encode(face, "JPEG", quality=90)
    cases: dict[str, tuple[Path, str]] = {}

    def add(name: str, content: bytes | None, expect: str) -> Path:
        path = root / name
        if content is not None:
            _write(path, content)
        cases[name] = (path, expect)
        return path

    add("random bytes.jpg", bytes(rnd.getrandbits(8) for _ in range(3000)), ERROR)
    add("empty.jpg", b"", ERROR)
    add("missing.jpg", None, ERROR)
    (root / "a folder.jpg").mkdir()
    cases["a folder.jpg"] = (root / "a folder.jpg", ERROR)
    add("truncated half.jpg", jpeg[: len(jpeg) // 2], ANY)
    add("text.png", b"not an image at all\n" * 50, ERROR)
    for fmt, suffix in FORMATS.items():
        add(f"1x1{suffix}", encode(Image.new("RGB", (1, 1), (200, 10, 10)), fmt), NONE)
    add("tiny 15x15.png", encode(face.resize((15, 15)), "PNG"), NONE)
    for fmt, suffix in (("PNG", ".png"), ("JPEG", ".jpg"), ("GIF", ".gif"), ("BMP", ".bmp")):
        add(f"20000x20000 header only{suffix}", huge_header(fmt), ERROR)
    add("no face noise.png", encode(noise_image((200, 150)), "PNG"), NONE)
    add("no face grey.jpg", encode(Image.new("RGB", (400, 300), (128, 128, 128)), "JPEG"), NONE)
    box = detector.detect(face)[0].box
    add("crowd 36 faces.jpg", encode(crowd_image(face, box), "JPEG", quality=92), CROWD)
    frames = [face.rotate(a) for a in (0, 8, 16)]
    add("animated.gif", encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=80, loop=0), FACE)
    add("animated.webp", encode(frames[0], "WEBP", save_all=True, append_images=frames[1:], duration=80), FACE)
    add("multipage.tiff", encode(frames[0], "TIFF", save_all=True, append_images=frames[1:]), FACE)
    add("cmyk.jpg", encode(face.convert("CMYK"), "JPEG", quality=92), FACE)
    add("cmyk.tiff", encode(face.convert("CMYK"), "TIFF"), FACE)
    import numpy as np

    grey16 = Image.fromarray(np.asarray(face.convert("L"), np.uint16) * 257)
    add("grey 16-bit.png", encode(grey16, "PNG"), FACE)
    add("grey 16-bit.tiff", encode(grey16, "TIFF"), FACE)
    import cv2

    ok, rgb48 = cv2.imencode(".png", np.asarray(face)[:, :, ::-1].astype(np.uint16) * 257)
    assert ok
    add("rgb 48-bit.png", rgb48.tobytes(), FACE)
    add("png named.jpg", encode(face, "PNG"), FACE)
    unicode_path = add("dossier été 李小龙/ phöto — ü ✓ .jpg", jpeg, FACE)
    link = root / "link to photo.jpg"
    link.symlink_to(unicode_path)
    cases[link.name] = (link, FACE)
    dangling = root / "dangling link.jpg"
    dangling.symlink_to(root / "nowhere.jpg")
    cases[dangling.name] = (dangling, ERROR)
    loop = root / "link loop.jpg"
    loop.symlink_to(loop)
    cases[loop.name] = (loop, ERROR)
    add("unreadable.jpg", jpeg, ERROR)
    return cases


@pytest.fixture(scope="module")
def cases(tmp_path_factory, face, detector):
    return build_cases(tmp_path_factory.mktemp("bad input ünï"), face, detector)


@pytest.fixture
def unreadable(cases, monkeypatch):
    """Make "unreadable.jpg" unreadable: chmod 000, or, as root (where permission bits do not stop
    reads, as in CI), make every read of that path fail the way the OS would."""
    path = cases["unreadable.jpg"][0]
    if os.geteuid() != 0:
        path.chmod(0)
        yield path
        path.chmod(0o600)
        return
    real_read_bytes, target = Path.read_bytes, os.path.realpath(path)

    def read_bytes(self):  # recognizer.image.read_bytes reads every photo through this
        if os.path.realpath(self) == target:
            raise PermissionError(13, "Permission denied", str(self))
        return real_read_bytes(self)

    monkeypatch.setattr(Path, "read_bytes", read_bytes)
    yield path


def check_library(name: str, path: Path, expect: str, pipeline, model) -> list[str]:
    """Run one case through every library entry point; returns the outcomes seen."""
    seen = []
    src = str(path)
    kind, photo = outcome(f"{name}: load_photo", lambda: load_photo(path), src)
    seen.append(kind)
    if expect == ERROR:
        assert kind == "error", f"{name}: expected an error, got {photo}"
        assert isinstance(photo, ImageError)
    elif expect != ANY:
        assert kind == "ok", f"{name}: {photo}"
        assert photo.image.mode == "RGB"

    def check_faces(kind, n, what):
        if expect == ERROR or (expect == ANY and kind == "error"):
            assert kind == "error", f"{what}: expected an error"
            return
        assert kind == "ok", what
        if expect == NONE:
            assert n == 0, f"{what}: {n} faces in a photo without one"
        elif expect == FACE:
            assert n >= 1, f"{what}: no face found"
        elif expect == CROWD:
            assert n >= 30, f"{what}: only {n} faces"

    kind, faces = outcome(f"{name}: Detector.detect", lambda: pipeline.detector.detect(path), src)
    check_faces(kind, len(faces) if kind == "ok" else 0, f"{name}: Detector.detect")
    kind, res = outcome(f"{name}: FacePipeline.analyze", lambda: pipeline.analyze(path), src)
    check_faces(kind, len(res.faces) if kind == "ok" else 0, f"{name}: FacePipeline.analyze")
    if kind == "ok":
        assert res.embeddings.shape == (len(res.faces), pipeline.embedder.dim)
    kind, ident = outcome(f"{name}: Recognizer.identify", lambda: model.identify(path), src)
    check_faces(kind, len(ident.faces) if kind == "ok" else 0, f"{name}: Recognizer.identify")
    kind, report = outcome(f"{name}: Recognizer.enroll", lambda: model.enroll("bad input", [path]), src)
    assert kind == "ok", f"{name}: Recognizer.enroll raised {report} instead of reporting the file"
    (file,) = report.files
    assert file.file == src
    # "low quality": a face found but under the quality floor (recognizer.quality), reported, not enrolled
    want = {ERROR: {"unreadable"}, NONE: {"no face"}, FACE: {"added", "several faces", "duplicate", "low quality"},
            CROWD: {"several faces", "duplicate", "low quality"},
            ANY: {"unreadable", "no face", "added", "several faces", "duplicate", "low quality"}}
    assert file.status in want[expect], f"{name}: Recognizer.enroll says {file}"
    if file.status == "unreadable":
        assert file.detail, f"{name}: no reason given"
    COUNTS["calls"] += 5
    return seen


def invoke(cmd, args: list) -> "click.testing.Result":  # noqa: F821
    with bounded(f"{cmd.__name__} {args[-1]}"):
        result = CliRunner().invoke(cmd.main, [str(a) for a in args])
    out = result.output
    assert "Traceback" not in out, out
    # CliRunner catches exceptions: only a deliberate exit is acceptable.
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    return result


def check_clis(name: str, path: Path, expect: str, model) -> None:
    src = str(path)
    res = invoke(identify, ["--model", model.dir, "--json", path])
    if res.exit_code == 0:
        (entry,) = json.loads(res.stdout)
        assert entry["photo"] == src
        assert (expect == ERROR) == ("error" in entry) or expect == ANY, f"{name}: identify.py {entry}"
        if expect == CROWD:
            assert len(entry["faces"]) >= 30
    else:
        assert expect in (ERROR, ANY), f"{name}: identify.py failed: {res.output}"
        assert src in res.output or path.name in res.output, f"{name}: identify.py does not name the file: {res.output}"
    # enroll.py takes a folder: put the case alone in one (a link keeps unreadable/dangling cases as they are).
    folder = path.parent / f"enroll-{abs(hash(name))}"
    folder.mkdir(exist_ok=True)
    entry = folder / path.name
    if not entry.is_symlink():
        entry.symlink_to(path)
    res = invoke(enroll, ["--model", model.dir, "--name", "bad input", "--json", folder])
    if res.stdout.startswith("{"):
        report = json.loads(res.stdout)
        (file,) = report["files"]
        assert file["file"] == str(entry)
        if expect == ERROR:
            assert file["status"] == "unreadable" and file["detail"], f"{name}: enroll.py {file}"
        # no face enrolled (unreadable, no face): exit 1, naming the file (issue 27)
        assert res.exit_code == (1 if report["failed"] else 0), res.output
        assert not report["failed"] or str(entry) in res.stderr, res.output
    else:
        # list_images skips what is not a file (a folder, a dangling link): "no image files found".
        assert expect in (ERROR, ANY), f"{name}: enroll.py failed: {res.output}"
        assert str(folder) in res.output or src in res.output, res.output
    COUNTS["calls"] += 2


def test_every_bad_file_gets_a_result_or_a_typed_error(cases, unreadable, pipeline, model):
    for name, (path, expect) in cases.items():
        check_library(name, path, expect, pipeline, model)
        COUNTS["cases"] += 1
    print(f"bad input: {len(cases)} fixed cases through 5 library entry points")


def test_every_bad_file_through_the_clis(cases, unreadable, model, cli_cache):
    for name, (path, expect) in cases.items():
        check_clis(name, path, expect, model)
    print(f"bad input: {len(cases)} fixed cases through enroll.py and identify.py")


def test_huge_header_is_refused_before_decoding(tmp_path):
    for fmt in ("PNG", "JPEG", "GIF", "BMP"):
        path = _write(tmp_path / f"huge.{fmt.lower()}", huge_header(fmt))
        with bounded(f"huge {fmt}", seconds=5, memory_mb=50):
            with pytest.raises(ImageError, match="pixels") as err:
                load_photo(path)
        assert str(path) in str(err.value)


# ---- generated cases --------------------------------------------------------------------


@pytest.fixture(scope="module")
def encoded(face):
    small = face.resize((120, 150))
    return {fmt: encode(small, fmt) for fmt in FORMATS}


@pytest.fixture(scope="module")
def gen_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("generated")


@given(blob=st.binary(max_size=5000), suffix=st.sampled_from([".jpg", ".png", ".gif", ".webp", ".tiff", ".bin"]))
def test_random_bytes(blob, suffix, gen_dir, pipeline):
    path = _write(gen_dir / f"random{suffix}", blob)
    outcome("random bytes", lambda: load_photo(blob), "<bytes>")
    outcome(f"random bytes in {path.name}", lambda: pipeline.analyze(path), str(path))
    COUNTS["cases"] += 1


@st.composite
def damaged(draw, encoded):
    fmt = draw(st.sampled_from(sorted(FORMATS)))
    data = bytearray(encoded[fmt])
    how = draw(st.sampled_from(["truncate", "flip", "both"]))
    if how in ("truncate", "both"):
        data = data[: draw(st.integers(1, len(data) - 1))]
    if how in ("flip", "both"):
        for pos in draw(st.lists(st.integers(0, len(data) - 1), min_size=1, max_size=12)):
            data[pos] ^= 1 << draw(st.integers(0, 7))
    return fmt, how, bytes(data)


@given(d=st.data())
def test_truncated_and_bit_flipped_files(d, encoded, gen_dir, pipeline, model):
    fmt, how, blob = d.draw(damaged(encoded))
    path = _write(gen_dir / f"damaged {how}{FORMATS[fmt]}", blob)
    kind, res = outcome(f"{how} {fmt}", lambda: pipeline.analyze(path), str(path))
    if kind == "ok":
        assert res.embeddings.shape[0] == len(res.faces)
    outcome(f"{how} {fmt}: identify", lambda: model.identify(path), str(path))
    COUNTS["cases"] += 1



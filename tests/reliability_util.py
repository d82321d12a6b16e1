"""Helpers shared by the tests: time and memory bounds, generated photo files, CLI runs in this
process, small training folders.

Photos are made in temporary directories by re-encoding a shared sample photo with PIL; nothing
is copied into the repository.
"""
from __future__ import annotations

import contextlib
import io
import resource
import signal
import struct
import time
import zlib
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
from PIL import Image

from facecore.errors import FaceToolError

FACE_PHOTO = "facenet-pytorch-test-images/people/paul_rudd/1.jpg"
# Small on purpose: every case runs MTCNN several times on a shared 2-core machine.
FACE_SIZE = (200, 250)
# Per call. Generous: the CI machine is shared, and a hang is what this catches, not slowness.
TIME_LIMIT_S = 60.0
MEMORY_LIMIT_MB = 768.0


def maxrss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


@contextlib.contextmanager
def bounded(what: str, seconds: float = TIME_LIMIT_S, memory_mb: float = MEMORY_LIMIT_MB) -> Iterator[None]:
    """Fail if the block runs past `seconds` (interrupted by SIGALRM) or raises the process's peak
    RSS by more than `memory_mb`. The peak is a high-water mark, so this bounds the growth above
    the earlier peak: enough to catch a decompression bomb or a runaway allocation."""

    def on_alarm(signum, frame):
        raise TimeoutError(f"{what}: still running after {seconds:.0f} s")

    old = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    rss0, t0 = maxrss_mb(), time.monotonic()
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
    grew = maxrss_mb() - rss0
    assert grew < memory_mb, f"{what}: peak RSS grew by {grew:.0f} MB (limit {memory_mb:.0f} MB)"
    assert time.monotonic() - t0 < seconds


def outcome(what: str, fn: Callable[[], object], names: str, **limits) -> tuple[str, object]:
    """("ok", result) or ("error", exc) for a typed error whose message names `names`.
    Anything else (an untyped exception, a hang, a memory blow-up) fails the test."""
    with bounded(what, **limits):
        try:
            return "ok", fn()
        except FaceToolError as exc:
            assert names in str(exc), f"{what}: error does not name {names!r}: {exc}"
            return "error", exc


def encode(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def face_image(data: Path, size: tuple[int, int] = FACE_SIZE) -> Image.Image:
    with Image.open(data / FACE_PHOTO) as im:
        return im.convert("RGB").resize(size, Image.BILINEAR)


def one_person_model(root: Path, face: Image.Image, detector, sface):
    """A new sface model under `root` with one person, "paul", enrolled from `face`, built with the
    session's detector and SFace (Recognizer.open's checks are the same)."""
    import pytest

    import recognizer.recognizer as rr

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr("recognizer.view.Detector", lambda settings: detector)
        mp.setattr("recognizer.view.make_embedder", lambda backbone, *a, **kw: sface)
        rec = rr.Recognizer.open(root / "model", backbone="sface", create=True, cache=None)
    photo = root / "paul.jpg"
    photo.write_bytes(encode(face, "JPEG", quality=92))
    assert rec.enroll("paul", [photo]).added == 1
    return rec


def noise_image(size=(320, 240), seed=0) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))


def crowd_image(face: Image.Image, face_box, n: int = 6, width: int = 40) -> Image.Image:
    """n x n copies of one face (with some margin), as one photo: n*n detectable faces."""
    x1, y1, x2, y2 = (int(v) for v in face_box)
    w, h = x2 - x1, y2 - y1
    crop = face.crop((max(x1 - w // 4, 0), max(y1 - h // 4, 0), x2 + w // 4, y2 + h // 4))
    crop = crop.resize((width, round(width * crop.height / crop.width)), Image.BILINEAR)
    tile = Image.new("RGB", (crop.width * n, crop.height * n))
    for i in range(n):
        for j in range(n):
            tile.paste(crop, (i * crop.width, j * crop.height))
    return tile


def huge_header(fmt: str, width: int = 20000, height: int = 20000) -> bytes:
    """A tiny real file whose header claims width x height (data of a 16x16 image behind it)."""
    small = Image.new("RGB", (16, 16), (120, 90, 60))
    if fmt == "PNG":
        png = bytearray(encode(small, "PNG"))
        ihdr = struct.pack(">II", width, height) + bytes(png[24:29])
        png[16:29] = ihdr
        png[29:33] = struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))
        return bytes(png)
    if fmt == "JPEG":
        jpg = bytearray(encode(small, "JPEG"))
        sof = jpg.find(b"\xff\xc0")
        jpg[sof + 5 : sof + 9] = struct.pack(">HH", height, width)
        return bytes(jpg)
    if fmt == "GIF":
        gif = bytearray(encode(small, "GIF"))
        gif[6:10] = struct.pack("<HH", width, height)
        return bytes(gif)
    if fmt == "BMP":
        bmp = bytearray(encode(small, "BMP"))
        bmp[18:26] = struct.pack("<ii", width, height)
        return bytes(bmp)
    raise ValueError(fmt)


def files_outside(root: Path, inside: Path) -> dict[str, tuple[int, int]]:
    """{relative path: (size, mtime_ns)} of every file and link under `root`, except under `inside`."""
    out = {}
    for p in root.rglob("*"):
        if p == inside or inside in p.parents:
            continue
        st = p.lstat()
        out[str(p.relative_to(root))] = (st.st_size, st.st_mtime_ns)
    return out


class ForkServer:
    """Client of tests/forkserver.py: start enroll.py / identify.py runs in forked children."""

    def __init__(self) -> None:
        import subprocess
        import sys

        here = Path(__file__).resolve().parent
        self.proc = subprocess.Popen([sys.executable, str(here / "forkserver.py")], cwd=here.parent,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1)
        self.exits: dict[int, int] = {}
        line = self.proc.stdout.readline().strip()
        assert line == "ready", f"fork server did not start: {line!r}"

    def _read(self) -> str:
        line = self.proc.stdout.readline()
        assert line, "fork server died"
        parts = line.split()
        if parts[0] == "exit":
            self.exits[int(parts[1])] = int(parts[2])
        return line

    def start(self, tool: str, runs: list[list], out: Path, until: Path | None = None) -> int:
        import json

        job = {"tool": tool, "runs": [[str(a) for a in r] for r in runs], "out": str(out),
               "until": str(until) if until else None}
        self.proc.stdin.write(json.dumps(job) + "\n")
        self.proc.stdin.flush()
        while True:
            parts = self._read().split()
            if parts[0] == "pid":
                return int(parts[1])

    def wait(self, pid: int) -> int:
        """The child's exit code (negative: killed by that signal)."""
        with bounded(f"waiting for child {pid}", seconds=300):
            while pid not in self.exits:
                self._read()
        return self.exits.pop(pid)

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=60)


def json_reports(text: str) -> list[dict]:
    """The complete JSON objects printed one after another; a cut-off last one is not included."""
    import json

    dec, out, i = json.JSONDecoder(), [], 0
    while True:
        while i < len(text) and text[i].isspace():
            i += 1
        if i >= len(text):
            return out
        try:
            obj, i = dec.raw_decode(text, i)
        except json.JSONDecodeError:
            return out
        out.append(obj)


ENROLLED = ("added", "several faces")


def check_reported(model: Path, reports: dict[str, dict]) -> set[str]:
    """The model loads, and holds every reported enrolment exactly; returns the people in it."""
    from recognizer.recognizer import Recognizer

    rec = Recognizer.open(model)
    people = rec.gallery.people()
    for name, rep in reports.items():
        want = sorted(f["file"] for f in rep["files"] if f["status"] in ENROLLED)
        got = sorted(r.source for r in rec.gallery.records(name))
        assert got == want, f"{model}: reported enrolment of {name} is {got}, not {want}"
        assert people.get(name, 0) == rep["added"]
    assert len(rec.gallery) == sum(people.values())
    rec.gallery.close()
    return set(people)


# ---- CLIs in this process, small training folders ---------------------------------------------

CELEB = "5-celebrity-faces"


def run(cli, *args) -> tuple[int, str]:
    """(exit code, output) of the click command `cli.main` run here with `args`."""
    from click.testing import CliRunner

    res = CliRunner().invoke(cli.main, [str(a) for a in args], catch_exceptions=False)
    return res.exit_code, res.output


def run_json(cli, *args) -> dict:
    """The --json report of a run that must succeed."""
    import json

    code, out = run(cli, *args, "--json")
    assert code == 0, out
    return json.loads(out)


def celeb_split(root: Path, data: Path, people) -> Path:
    """`root` with train/<person>/ of 6 photos and val/<person>/ of 2 for each of `people` (symlinks
    into the shared photos)."""
    for person in people:
        for split, n in (("train", 6), ("val", 2)):
            (root / split / person).mkdir(parents=True)
            for p in sorted((data / CELEB / split / person).iterdir())[:n]:
                (root / split / person / p.name).symlink_to(p)
    return root

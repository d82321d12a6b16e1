#!/usr/bin/env python3
"""Peak memory of serve.py and identify.py on the costliest images one can make small.

    benchmarks/hostile_memory.py [--server/--no-server] [--cli/--no-cli] [--archives/--no-archives]

Images (made in a temporary folder, each a few KB to a few MB): palette GIFs, 16-bit grey and
RGBA PNGs, progressive and baseline JPEGs, at the pixel limit and just under the memory budget.
Server: serve.py on 127.0.0.1 with its defaults (10 MB uploads, 60 Mpx, 96 MB per photo); each
image is posted to /identify, 4 at a time, twice over. The peak is the kernel's high-water mark
(VmHWM) of the server process; the reference is its RSS after one normal photo, measured in the
same run. CLI: identify.py on a folder of the images; its peak is its process's VmHWM, against
identify.py on one normal photo in the same run.

Archives and chunked uploads (issue 25): a ~10 KB tar of 12 sparse members of 64 MB each, and an export whose
chip is a 16000x16000 PNG with valid checksums, imported by `enroll.py --import` (peak against importing the
model's own good export) and posted to POST /import (server peak against its RSS after a normal photo); and 8
chunked uploads of 40 MB at once to /identify, whose peak of upload bytes held by the server (its deleted
temporary files, sampled every 20 ms) is set against the 256 MB in-flight cap. Budget: a refused archive may add
nothing beyond its upload; each peak must stay within its budget + 48 MB.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import struct
import subprocess
import sys
import tarfile
import zlib
import tempfile
import threading
import time
from pathlib import Path

import click

ROOT = Path(__file__).resolve().parent.parent


# Run as a script, this file's folder is on the path: the load test's loader is shared.
from load_test import _serving  # noqa: E402


def status_mb(pid: int, field: str) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise KeyError(field)


def make_images(folder: Path, kind: str) -> list[Path]:
    """kind 'server': at most 60 Mpx; 'cli': at most 150 Mpx (the tools' pixel limits)."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    side = 7740 if kind == "server" else 12000
    fit = 4800 if kind == "server" else 9700  # RGB PNG whose decode just fits the budget
    out = []

    def save(img, name, **kw):
        p = folder / name
        img.save(p, **kw)
        out.append(p)

    save(Image.new("P", (side, side), 3), "palette.gif")
    save(Image.new("I;16", (side, side), 40000), "grey16.png")
    save(Image.new("RGBA", (side, side), (10, 20, 30, 128)), "rgba.png")
    rgb = Image.new("RGB", (side, side), (120, 100, 90))
    save(rgb, "progressive.jpg", quality=50, progressive=True)
    save(rgb, "baseline.jpg", quality=50)
    del rgb
    save(Image.new("RGB", (fit, fit), (120, 100, 90)), "just-fits.png")
    return out


def post_all(url: str, images: list[Path], parallel: int = 4, rounds: int = 2) -> dict[str, int]:
    import httpx

    statuses: dict[str, int] = {}
    jobs = [p for _ in range(rounds) for p in images]
    lock = threading.Lock()

    def worker():
        with httpx.Client(timeout=300) as http:
            while True:
                with lock:
                    if not jobs:
                        return
                    p = jobs.pop()
                res = http.post(url + "/identify", files={"file": (p.name, p.read_bytes())})
                with lock:
                    statuses[p.name] = res.status_code

    threads = [threading.Thread(target=worker) for _ in range(parallel)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return statuses


# The CLI's own peak (the script at the repository's root, as a user runs it): VmHWM of its process as it exits (the kernel's high-water mark of this
# program alone; ru_maxrss of a child also counts the parent's pages it shared before exec).
_CLI = ("import atexit, runpy, sys\n"
        "def peak():\n"
        "    for line in open('/proc/self/status'):\n"
        "        if line.startswith('VmHWM:'):\n"
        "            sys.stderr.write('PEAK_KB %s\\n' % line.split()[1])\n"
        "atexit.register(peak)\n"
        "sys.argv = ['identify.py'] + sys.argv[1:]\n"
        "runpy.run_path('identify.py', run_name='__main__')\n")


def run_cli(args: list[str]) -> tuple[int, float, str]:
    res = subprocess.run([sys.executable, "-c", _CLI, *args], cwd=ROOT, capture_output=True, text=True)
    out = res.stdout + res.stderr
    peak = max(int(line.split()[1]) for line in res.stderr.splitlines() if line.startswith("PEAK_KB")) / 1024
    return res.returncode, peak, out


def bomb_png(side: int = 16000) -> bytes:
    """A valid 1-bit grey PNG of side x side pixels (~30 KB; 768 MB as the BGR OpenCV made of it)."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)

    row = b"\x00" * (1 + (side + 7) // 8)
    comp = zlib.compressobj(9)
    idat = b"".join(comp.compress(row) for _ in range(side)) + comp.flush()
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0))
            + chunk(b"IDAT", idat) + chunk(b"IEND", b""))


def make_archives(folder: Path, good: Path) -> list[Path]:
    """sparse.tar (12 sparse members of 64 MB) and chip-bomb.tar (`good` with its first chip a 16000x16000 PNG
    named by its own sha256, every checksum valid, the person renamed so that it is no clash)."""
    folder.mkdir(parents=True, exist_ok=True)
    src = folder / "sparse-src"
    (src / "chips").mkdir(parents=True)
    for i in range(12):
        with open(src / "chips" / f"{i:064x}.chip", "wb") as fh:
            fh.truncate(64 << 20)
    sparse = folder / "sparse.tar"
    subprocess.run(["tar", "-cSf", str(sparse), "-C", str(src), *sorted(f"chips/{p.name}" for p in (src / "chips").iterdir())],
                   check=True)
    with tarfile.open(good) as tar:
        members = {m.name: tar.extractfile(m).read() for m in tar}
    manifest = json.loads(members.pop("facetool-export.json"))
    bomb = bomb_png()
    sha = hashlib.sha256(bomb).hexdigest()
    members = {k: v for k, v in members.items() if not k.startswith("chips/")}
    members[f"chips/{sha}.chip"] = bomb
    for f in manifest["faces"]:
        f["chip"], f["person"] = sha, "chip bomb"
    manifest["members"] = {k: hashlib.sha256(v).hexdigest() for k, v in members.items()}
    bombed = folder / "chip-bomb.tar"
    with tarfile.open(bombed, "w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in [("facetool-export.json", json.dumps(manifest).encode()), *members.items()]:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return [sparse, bombed]


def held_upload_mb(pid: int) -> float:
    """MB of the deleted files the process holds open: multipart parts spooled to temporary files."""
    total = 0
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            if os.readlink(fd).endswith("(deleted)"):
                total += fd.stat().st_size
        except OSError:
            pass
    return total / 2**20


def chunked_uploads(url: str, pid: int, n: int = 8, mb: int = 40) -> tuple[dict[int, int], float]:
    """`n` chunked multipart uploads of `mb` MB (an MP4's first bytes: the video limit) to /identify at once;
    (answers by status, peak MB of uploads the server held on disk)."""
    import httpx

    boundary = "hostileboundary"
    head = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"v.mp4\"\r\n"
            f"Content-Type: application/octet-stream\r\n\r\n").encode()
    video = b"\x00\x00\x00\x18ftypmp42" + b"\x00" * 500

    def body():
        yield head + video
        for _ in range(mb):
            yield b"\x00" * (1 << 20)
            time.sleep(0.01)
        yield f"\r\n--{boundary}--\r\n".encode()

    statuses: dict[int, int] = {}
    lock = threading.Lock()
    peak = 0.0
    done = threading.Event()

    def one():
        try:
            res = httpx.post(url + "/identify", content=body(), timeout=300,
                             headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
            code = res.status_code
        except httpx.HTTPError:
            code = 0  # cut off mid-body
        with lock:
            statuses[code] = statuses.get(code, 0) + 1

    def sample():
        nonlocal peak
        while not done.is_set():
            peak = max(peak, held_upload_mb(pid))
            time.sleep(0.02)

    sampler = threading.Thread(target=sample)
    sampler.start()
    threads = [threading.Thread(target=one) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    done.set()
    sampler.join()
    return statuses, peak


_ENROLL = _CLI.replace("identify.py", "enroll.py")


def run_enroll(args: list[str]) -> tuple[int, float, str]:
    res = subprocess.run([sys.executable, "-c", _ENROLL, *args], cwd=ROOT, capture_output=True, text=True)
    out = res.stdout + res.stderr
    peak = max(int(line.split()[1]) for line in res.stderr.splitlines() if line.startswith("PEAK_KB")) / 1024
    return res.returncode, peak, out


def archive_server(srv, archives: list[Path], token: str) -> None:
    import httpx

    normal = Path(srv.normal)
    assert httpx.post(srv.url + "/identify", files={"file": (normal.name, normal.read_bytes())}, timeout=300).status_code == 200
    ref = status_mb(srv.proc.pid, "VmRSS")
    for p in archives:
        res = httpx.post(srv.url + "/import", files={"file": (p.name, p.read_bytes())}, timeout=300,
                         headers={"Authorization": f"Bearer {token}"})
        print(f"server: POST /import {p.name} ({p.stat().st_size / 1024:.0f} KB): {res.status_code} "
              f"{res.json().get('error', '')[:150]}")
    peak = status_mb(srv.proc.pid, "VmHWM")
    print(f"server: RSS after a normal photo {ref:.0f} MB; peak through the archives {peak:.0f} MB "
          f"(+{peak - ref:.0f} MB; budget: a refused archive adds nothing beyond its upload, + 48 MB)")
    statuses, held = chunked_uploads(srv.url, srv.proc.pid)
    print(f"server: 8 chunked uploads of 40 MB at once to /identify: answers {statuses}; peak of upload bytes "
          f"held {held:.0f} MB (cap 256 MB, + 48 MB); peak RSS {status_mb(srv.proc.pid, 'VmHWM'):.0f} MB")


def archive_cli(model: Path, tmp: Path, archives: list[Path], good: Path) -> None:
    code, full, out = run_enroll(["--model", str(tmp / "fresh"), "--import", str(good)])
    assert code == 0, out
    junk = tmp / "not-a-tar.tar"
    junk.write_bytes(b"not a tar" * 100)
    code, ref, out = run_enroll(["--model", str(model), "--import", str(junk)])
    assert code != 0, out
    print(f"cli: enroll.py --import of the model's own export peaks at {full:.0f} MB; of a file that is no tar "
          f"(refused before any model is opened, as a hostile archive should be) at {ref:.0f} MB: the reference")
    for p in archives:
        code, peak, out = run_enroll(["--model", str(model), "--import", str(p)])
        why = next((line for line in out.splitlines() if "nothing was imported" in line), out.strip()[-150:])
        print(f"cli: enroll.py --import {p.name} ({p.stat().st_size / 1024:.0f} KB): exit {code}, peak {peak:.0f} MB "
              f"({peak - ref:+.0f} MB; budget + 48 MB): {why[len(str(tmp)) + 1:][:150] if why.startswith(str(tmp)) else why[:150]}")


@click.command()
@click.option("--server/--no-server", default=True)
@click.option("--cli/--no-cli", default=True)
@click.option("--archives/--no-archives", default=True, help="the archive and chunked-upload cases (issue 25)")
def main(server: bool, cli: bool, archives: bool) -> None:
    from recognizer.cli._options import passive_openmp
    from recognizer.sample_data import data_dir

    passive_openmp()  # for build_model's enrolments here and the server process, which inherits it
    serving = _serving()
    FR, Server, build_model = serving.FR, serving.Server, serving.build_model

    people = data_dir() / FR / "people"
    normal = people / "barack_obama" / "examples__obama.jpg"
    with tempfile.TemporaryDirectory(prefix="facetool-hostile-") as tmp:
        tmp = Path(tmp)
        model = build_model(tmp / "model", {"barack_obama": people / "barack_obama"})
        if server:
            images = make_images(tmp / "server", "server")
            sizes = ", ".join(f"{p.name} {p.stat().st_size / 1024:.0f} KB" for p in images)
            srv = Server(model, log=tmp / "server.log").wait()
            try:
                import httpx

                assert httpx.post(srv.url + "/identify", files={"file": (normal.name, normal.read_bytes())}, timeout=300).status_code == 200
                ref = status_mb(srv.proc.pid, "VmRSS")
                t0 = time.perf_counter()
                statuses = post_all(srv.url, images)
                took = time.perf_counter() - t0
                peak, after = status_mb(srv.proc.pid, "VmHWM"), status_mb(srv.proc.pid, "VmRSS")
            finally:
                srv.stop()
            print(f"server: images {sizes}")
            print(f"server: answers {statuses} in {took:.1f} s (4 at a time, 2 rounds)")
            print(f"server: RSS after a normal photo {ref:.0f} MB; peak through the hostile run {peak:.0f} MB "
                  f"({peak / ref:.2f}x); RSS after it {after:.0f} MB ({after / ref:.2f}x)")
        if cli:
            images = make_images(tmp / "cli", "cli")
            code, ref, _ = run_cli(["--model", str(model), str(normal), "--no-cache"])
            assert code == 0
            code, peak, out = run_cli(["--model", str(model), str(tmp / "cli"), "--no-cache"])
            print(f"cli: identify.py on one normal photo peaks at {ref:.0f} MB; on the folder of {len(images)} hostile "
                  f"images at {peak:.0f} MB ({peak / ref:.2f}x), exit {code}")
            for line in out.splitlines():
                if line.startswith(str(tmp)):
                    print("  " + line[len(str(tmp)) + 1:][:160])
        if archives:
            hostile_archives(model, tmp, normal, server, cli)


def hostile_archives(model: Path, tmp: Path, normal: Path, server: bool, cli: bool) -> None:
    import secrets

    serving = _serving()
    good = tmp / "good.tar"
    code, _, out = run_enroll(["--model", str(model), "--export", str(good)])
    assert code == 0, out
    archives = make_archives(tmp / "archives", good)
    if server:
        token = secrets.token_urlsafe(16)
        srv = serving.Server(model, env={"FACETOOL_TOKEN": token}, log=tmp / "server-archives.log").wait()
        srv.normal = normal
        try:
            archive_server(srv, archives, token)
        finally:
            srv.stop()
    if cli:
        archive_cli(model, tmp, archives, good)


if __name__ == "__main__":
    main()

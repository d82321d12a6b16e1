#!/usr/bin/env python3
"""Peak memory of serve.py and identify.py on the costliest images one can make small.

    benchmarks/hostile_memory.py [--server/--no-server] [--cli/--no-cli]

Images (made in a temporary folder, each a few KB to a few MB): palette GIFs, 16-bit grey and
RGBA PNGs, progressive and baseline JPEGs, at the pixel limit and just under the memory budget.
Server: serve.py on 127.0.0.1 with its defaults (10 MB uploads, 60 Mpx, 96 MB per photo); each
image is posted to /identify, 4 at a time, twice over. The peak is the kernel's high-water mark
(VmHWM) of the server process; the reference is its RSS after one normal photo, measured in the
same run. CLI: identify.py on a folder of the images; its peak is its process's VmHWM, against
identify.py on one normal photo in the same run.
"""
from __future__ import annotations

import subprocess
import sys
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


# The CLI's own peak: VmHWM of its process as it exits (the kernel's high-water mark of this
# program alone; ru_maxrss of a child also counts the parent's pages it shared before exec).
_CLI = ("import atexit, runpy, sys\n"
        "def peak():\n"
        "    for line in open('/proc/self/status'):\n"
        "        if line.startswith('VmHWM:'):\n"
        "            sys.stderr.write('PEAK_KB %s\\n' % line.split()[1])\n"
        "atexit.register(peak)\n"
        "sys.argv = ['identify'] + sys.argv[1:]\n"
        "runpy.run_module('recognizer.cli.identify', run_name='__main__')\n")


def run_cli(args: list[str]) -> tuple[int, float, str]:
    res = subprocess.run([sys.executable, "-c", _CLI, *args], cwd=ROOT, capture_output=True, text=True)
    out = res.stdout + res.stderr
    peak = max(int(line.split()[1]) for line in res.stderr.splitlines() if line.startswith("PEAK_KB")) / 1024
    return res.returncode, peak, out


@click.command()
@click.option("--server/--no-server", default=True)
@click.option("--cli/--no-cli", default=True)
def main(server: bool, cli: bool) -> None:
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


if __name__ == "__main__":
    main()

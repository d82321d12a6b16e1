"""Detection, embedding and identification speed on this machine, with the ceiling they work against.

    .venv/bin/python benchmarks/speed.py [--repeats N] [--skip identify,startup] [--answers FILE] [--engines]
                                         [--face-recognition PATH]

In one run it measures:
1. the float32 matrix-multiply rate of this machine (torch, 2048x2048), and from it the embedding
   ceiling: that rate divided by the FLOPs of one 160x160 face through Inception-ResNet-v1
   (counted with torch.utils.flop_counter); embedding faces/s are printed as a fraction of it;
2. embedding faces/s per backbone at batch 1, 8 and 32 (facenet once per engine: ONNX Runtime
   and torch);
3. detection ms per photo at 640x480 and 1920x1080 (a six-face group photo, resized);
4. identify s/photo end to end (decode, detect, crop, embed, search) over 5-celebrity-faces/val,
   models loaded once, no crop cache: an sface model enrolled from train, and a facenet model
   with random weights (the speed of Inception-ResNet-v1 does not depend on its weights);
5. start-up: wall time, CPU time and peak RSS of a fresh `identify.py` on one photo and
   `enroll.py` on a five-photo folder (sface, and facenet with random weights and its cached ONNX
   export), next to face_recognition's CLI when installed (see FR_PEOPLE for the recipe), and
   serve.py's RSS after warm-up and after 100 identifies.

Timings are medians of repeated runs; the load average is printed before and after, since other
processes on the machine slow everything down.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from recognizer.cli._options import passive_openmp
from recognizer.sample_data import data_dir

PHOTO = "facenet-pytorch-test-images/group/multiface__6_faces_unnamed.jpg"
CELEB = "5-celebrity-faces"


def time_it(fn, repeats: int, warmup: int = 1) -> list[float]:
    for _ in range(warmup):  # first calls allocate and pick kernels
        fn()
    out = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return out


def load() -> str:
    return "load average %.2f %.2f %.2f" % os.getloadavg()


def matmul_rate(repeats: int) -> float:
    """float32 FLOP/s of a 2048x2048 matrix product, the best this torch does on this machine."""
    import torch

    n = 2048
    a, b = torch.randn(n, n), torch.randn(n, n)
    t = statistics.median(time_it(lambda: torch.mm(a, b), max(5, repeats), warmup=2))
    return 2 * n**3 / t


def facenet_flops_per_face() -> int:
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from recognizer.embedding.weights import build_inception_resnet

    module, _ = build_inception_resnet("random", None, download=False, seed=0)
    module.eval()
    counter = FlopCounterMode(display=False)
    with counter, torch.inference_mode():
        module(torch.zeros(1, 3, 160, 160))
    return int(counter.get_total_flops())


def bench_detection(repeats: int) -> dict:
    """Our detector against facenet-pytorch's own MTCNN (default settings, keep_all), the set-up
    before the speed work, on the same photo in the same run: the ratio holds when other
    processes slow the machine down, the absolute figures do not."""
    from facenet_pytorch import MTCNN

    from recognizer.detection.mtcnn import Detector

    photo = Image.open(data_dir() / PHOTO).convert("RGB")
    det = Detector()
    stock = MTCNN(keep_all=True, device="cpu")
    print(f"\ndetection (MTCNN), one photo at a time, median of {repeats}; facenet-pytorch's MTCNN for reference")
    print(f"{'size':>10} {'faces':>6} {'median ms':>10} {'min ms':>8} {'cpu ms':>7} {'stock faces':>12} {'stock ms':>9} {'speed-up':>9}")
    out = {}
    for size in [(640, 480), (1920, 1080)]:
        img = photo.resize(size, Image.BILINEAR)
        faces = det.detect(img)
        boxes, _ = stock.detect(img)
        ours, theirs, cpu = [], [], 0.0
        # Interleaved, so that both see the same machine.
        for _ in range(repeats):
            c0 = time.process_time()
            ours += time_it(lambda img=img: det.detect(img), 1, warmup=0)
            # CPU seconds of all this process's threads: less sensitive to other processes than wall time.
            cpu += (time.process_time() - c0) / repeats
            theirs += time_it(lambda img=img: stock.detect(img), 1, warmup=0)
        med, ref = statistics.median(ours), statistics.median(theirs)
        out[size] = med
        n_ref = 0 if boxes is None else len(boxes)
        print(f"{size[0]}x{size[1]:<5} {len(faces):>6} {med * 1e3:>10.1f} {min(ours) * 1e3:>8.1f} {cpu * 1e3:>7.1f} "
              f"{n_ref:>12} {ref * 1e3:>9.1f} {ref / med:>8.2f}x")
    return out


def embedders(name: str) -> list:
    """The embedders to time for a backbone: for facenet, one per engine this version offers."""
    import inspect

    from recognizer.embedding.backbones import FacenetEmbedder, make_embedder

    if name == "facenet" and "engine" in inspect.signature(FacenetEmbedder).parameters:
        return [FacenetEmbedder("random", engine=e) for e in ("onnxruntime", "torch")]
    return [make_embedder(name, "random" if name == "facenet" else None)]


def bench_embedding(repeats: int, backbones: list[str], ceiling: float) -> None:
    from recognizer.detection.mtcnn import Detector

    img = Image.open(data_dir() / PHOTO).convert("RGB")
    face = Detector().detect(img)[0]
    print(f"\nembedding (ceiling for facenet: {ceiling:.1f} faces/s)")
    print(f"{'backbone':>9} {'engine':>12} {'batch':>6} {'faces/s':>9} {'ms/face':>8} {'of ceiling':>11}")
    for name in backbones:
        for emb in embedders(name):
            one = emb.crop(img, face)
            emb.embed(np.stack([one] * 2))  # engines that export or compile do it on first use
            engine = getattr(emb, "engine", "torch" if name == "facenet" else "opencv")
            for batch in (1, 8, 32):
                crops = np.stack([one] * batch)
                emb.batch_size = batch
                # Enough faces per timing that a batch-1 run is not all noise.
                rounds = max(1, 32 // batch)
                t = statistics.median(time_it(lambda: [emb.embed(crops) for _ in range(rounds)], repeats)) / rounds
                frac = f"{batch / t / ceiling:>10.2f}" if name == "facenet" else f"{'':>10}"
                print(f"{name:>9} {engine:>12} {batch:>6} {batch / t:>9.1f} {t / batch * 1e3:>8.1f} {frac:>11}")


def bench_engines(repeats: int, ceiling: float) -> None:
    """Inception-ResNet-v1 run four ways: the measurement FacenetEmbedder's default engine was chosen by."""
    import torch

    from recognizer.embedding.backbones import FacenetEmbedder, _export_onnx
    from recognizer.onnx_session import cpu_session

    emb = FacenetEmbedder("random", engine="torch")
    module = emb.module
    x = torch.randn(32, 3, 160, 160)
    with torch.no_grad():
        ref = module(x).numpy()
    session = cpu_session(_export_onnx(module), emb.threads)
    cl = x.contiguous(memory_format=torch.channels_last)

    def eager(inp, fn=module):
        with torch.no_grad():  # not inference_mode: torch.compile refuses inference tensors
            return fn(inp).numpy()

    ways = {
        "torch NCHW": lambda b: eager(x[:b]),
        "torch NHWC": lambda b: eager(cl[:b]),
        "onnxruntime": lambda b: session.run(None, {"x": x[:b].numpy()})[0],
    }
    try:
        compiled = torch.compile(module)
        ways["torch.compile"] = lambda b: eager(cl[:b], compiled)
    except Exception as exc:  # no compiler on this machine
        print(f"torch.compile unavailable: {exc}")
    print(f"\nfacenet engines (ceiling {ceiling:.1f} faces/s)")
    print(f"{'engine':>14} {'batch':>6} {'faces/s':>9} {'of ceiling':>11} {'max |diff|':>11}")
    for name, fn in ways.items():
        try:
            diff = float(np.abs(fn(32) - ref).max())
        except Exception as exc:
            print(f"{name:>14} failed: {type(exc).__name__}: {str(exc)[:120]}")
            continue
        for batch in (8, 32):
            t = statistics.median(time_it(lambda: fn(batch), repeats))
            print(f"{name:>14} {batch:>6} {batch / t:>9.1f} {batch / t / ceiling:>11.2f} {diff:>11.1e}")


def bench_identify(repeats: int, answers_file: str | None) -> None:
    from recognizer.image import list_images
    from recognizer.recognizer import Recognizer

    root = data_dir() / CELEB
    val = sorted(p for d in sorted((root / "val").iterdir()) for p in list_images(d))
    print(f"\nidentify over {CELEB}/val ({len(val)} photos), models loaded, no crop cache")
    print(f"{'backbone':>16} {'s/photo':>8} {'min':>7} {'photos/s':>9} {'correct':>8}")
    answers = {}
    with tempfile.TemporaryDirectory() as tmp:
        for backbone, weights in [("sface", None), ("facenet", "random")]:
            model = Path(tmp) / backbone
            rec = Recognizer.open(model, backbone=backbone, weights=weights, create=True, cache=None)
            for person in sorted((root / "train").iterdir()):
                rec.enroll(person.name, list_images(person))
            results: list = []
            t = time_it(lambda: results.__setitem__(slice(None), list(rec.identify_many(val))), repeats)
            names = [r.faces[0].name if r.faces else None for r in results]
            correct = sum(n == Path(r.photo).parent.name for n, r in zip(names, results))
            label = f"{backbone}" + (f" ({weights})" if weights else "")
            med = statistics.median(t) / len(val)
            print(f"{label:>16} {med:>8.3f} {min(t) / len(val):>7.3f} {1 / med:>9.1f} {correct:>5}/{len(val)}")
            answers[label] = {Path(r.photo).relative_to(root).as_posix(): n for n, r in zip(names, results)}
    if answers_file:
        Path(answers_file).write_text(json.dumps(answers, indent=1, sort_keys=True) + "\n")
        print(f"answers written to {answers_file}")


# face_recognition's CLI, measured beside ours when installed. Recipe (its dlib needs no compiler
# this way; face_recognition's own pins would pull a source build of dlib):
#   python3 -m venv /tmp/frvenv
#   /tmp/frvenv/bin/pip install dlib-bin face_recognition_models numpy pillow click
#   /tmp/frvenv/bin/pip install --no-deps face_recognition
# then pass --face-recognition /tmp/frvenv/bin/face_recognition (found on PATH otherwise).
FR_PEOPLE = ["alex_lacamoire", "barack_obama", "joe_biden", "kit_harington", "rose_leslie"]


def bench_startup(repeats: int, fr_cli: str | None) -> None:
    """One photo (and a five-photo enroll) in a fresh process, as a user runs the CLIs once:
    wall time and peak RSS, median of `repeats`, next to face_recognition's CLI measured in the
    same run; then the server's RSS after warm-up and after 100 identifies."""
    import shutil
    import subprocess

    from load_test import _serving  # benchmarks/load_test.py: tests/serving.py's helpers

    Server = _serving().Server

    data = data_dir() / "face_recognition-examples"
    photo = data_dir() / PHOTO
    py = sys.executable
    root = Path(__file__).resolve().parent.parent
    fr_cli = fr_cli or shutil.which("face_recognition")
    print(f"\nstart-up: one photo in a fresh process ({photo.name}), median of {repeats}; crop cache off")
    # CPU seconds (user + system, all threads) next to the wall time: on a loaded machine the wall
    # time mostly measures the other processes, the CPU time much less so.
    print(f"{'command':>34} {'wall s':>7} {'min s':>6} {'cpu s':>6} {'peak MB':>8} {'wall vs fr':>11} {'MB vs fr':>9}")
    rows = {}
    with tempfile.TemporaryDirectory(prefix="facetool-startup-") as tmp:
        tmp = Path(tmp)
        five = tmp / "five"  # one photo of each of five people: the enroll folder and fr's known people
        five.mkdir()
        for name in FR_PEOPLE:  # each one's smallest photo (face_recognition's HOG slows down with size)
            src = min(sorted((data / "people" / name).iterdir()), key=lambda p: np.prod(Image.open(p).size))
            (five / f"{name}{src.suffix}").symlink_to(src)
        for backbone in ("sface", "facenet"):
            model = tmp / backbone
            extra = ["--weights", "random"] if backbone == "facenet" else []
            for name in FR_PEOPLE:  # the model, and (facenet) its cached ONNX export, made first
                subprocess.run([py, str(root / "enroll.py"), "--model", str(model), "--name", name, str(data / "people" / name),
                                "--backbone", backbone, *extra, "--no-cache"], check=True, capture_output=True)
            label = f"{backbone}" + (" (random)" if extra else "")
            rows[f"identify.py {label}"] = [measure([py, str(root / "identify.py"), "--model", str(model), str(photo), "--no-cache"])
                                            for _ in range(repeats)]
            rows[f"enroll.py 5 photos {label}"] = [
                measure([py, str(root / "enroll.py"), "--model", str(model), "--name", f"bench{i}", str(five), "--no-cache"])
                for i in range(repeats)
            ]
        ref = None
        if fr_cli:
            rows["face_recognition CLI (5 known)"] = [measure([fr_cli, str(five), str(photo)]) for _ in range(repeats)]
            ref = rows["face_recognition CLI (5 known)"]
        print_startup_rows(rows, ref)
        if not fr_cli:
            print("face_recognition's CLI not installed: see the recipe in benchmarks/speed.py")
        bench_server_rss(Server(tmp / "sface", log=tmp / "server.log"), photo)


def print_startup_rows(rows: dict[str, list], ref: list | None) -> None:
    """One line per command: median wall time, fastest, CPU time, peak RSS, and both against `ref`."""
    for label, runs in rows.items():
        wall = statistics.median(r[0] for r in runs)
        mb = statistics.median(r[1] for r in runs)
        vs = ""
        if ref:
            vs = f"{wall / statistics.median(r[0] for r in ref):>10.2f}x {mb / statistics.median(r[1] for r in ref):>8.2f}x"
        cpu = statistics.median(r[2] for r in runs)
        print(f"{label:>34} {wall:>7.2f} {min(r[0] for r in runs):>6.2f} {cpu:>6.2f} {mb:>8.0f} {vs}")


def bench_server_rss(server, photo: Path) -> None:
    """serve.py's RSS after warm-up (one identify) and after 100 more identifies of `photo`."""
    import httpx

    try:
        server.wait()
        body = photo.read_bytes()

        def identify() -> None:
            r = httpx.post(server.url + "/identify", files={"file": (photo.name, body, "image/jpeg")}, timeout=120)
            r.raise_for_status()

        identify()
        warm = rss_mb(server.proc.pid)
        for _ in range(100):
            identify()
        after = rss_mb(server.proc.pid)
    finally:
        server.stop()
    print(f"serve.py (sface) RSS: {warm:.0f} MB after warm-up (one identify), {after:.0f} MB after 100 more identifies")


# Runs a command and prints its wall time, peak RSS and CPU time. A small launcher, not this
# process: a child forked from a process holding torch and a network starts with that process's
# RSS as its peak (ru_maxrss counts the forked image before exec).
_LAUNCHER = """
import json, resource, subprocess, sys, time
t = time.perf_counter()
rc = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL).returncode
wall = time.perf_counter() - t
u = resource.getrusage(resource.RUSAGE_CHILDREN)
print(json.dumps([rc, wall, u.ru_maxrss / 1024, u.ru_utime + u.ru_stime]))
"""


def measure(cmd: list[str]) -> tuple[float, float, float]:
    """(wall seconds, peak RSS MB, CPU seconds of all its threads) of one fresh process."""
    import subprocess

    proc = subprocess.run([sys.executable, "-c", _LAUNCHER, *cmd], capture_output=True, text=True)
    if proc.returncode != 0 or not proc.stdout.strip():
        raise RuntimeError(f"{' '.join(cmd)}: launcher failed: {proc.stderr[-2000:]}")
    rc, wall, mb, cpu = json.loads(proc.stdout.strip().splitlines()[-1])
    if rc != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({rc}): {proc.stderr[-2000:]}")
    return wall, mb, cpu  # ru_maxrss: KB on Linux


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--backbones", default="facenet,sface")
    ap.add_argument("--skip", default="", help="comma-separated parts to skip: embedding, detection, identify, startup")
    ap.add_argument("--face-recognition", help="face_recognition's CLI, timed beside ours (default: on PATH)")
    ap.add_argument("--engines", action="store_true", help="also time facenet in torch NCHW/NHWC, torch.compile and ONNX Runtime")
    ap.add_argument("--answers", help="write the identify answers (photo -> name) to this JSON file")
    args = ap.parse_args()
    passive_openmp()
    skip = set(filter(None, args.skip.split(",")))
    logging.basicConfig(level=logging.WARNING)

    import torch

    print(f"cores: {os.cpu_count()}  torch threads: {torch.get_num_threads()}  torch {torch.__version__}  {load()}")
    rate = matmul_rate(args.repeats)
    flops = facenet_flops_per_face()
    ceiling = rate / flops
    print(f"matmul 2048x2048 float32: {rate / 1e9:.1f} GFLOP/s")
    print(f"Inception-ResNet-v1, one 160x160 face: {flops / 1e9:.3f} GFLOP -> ceiling {ceiling:.1f} faces/s")
    if "embedding" not in skip:
        bench_embedding(args.repeats, args.backbones.split(","), ceiling)
    if args.engines:
        bench_engines(args.repeats, ceiling)
    if "detection" not in skip:
        bench_detection(4 * args.repeats)
    if "identify" not in skip:
        bench_identify(max(1, args.repeats // 2), args.answers)
    if "startup" not in skip:
        bench_startup(args.repeats, args.face_recognition)
    print(f"\n{load()}")


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Load test of serve.py: concurrent clients posting photos to identify and to enroll.

    benchmarks/load_test.py [--seconds 60] [--clients 8] [--enroll-every 4]

Builds a temporary sface model (Obama and Biden), starts serve.py on a free 127.0.0.1 port and
runs the clients against it. Every `--enroll-every`th request of a client enrolls a photo under a
new name, so enrolls run concurrently with identifies. It fails (exit 1) on any error response
and when GET /people at the end does not hold every enrolment that was reported done.
Only loopback traffic.
"""
from __future__ import annotations

import importlib.util
import random
import secrets
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import click

ROOT = Path(__file__).resolve().parent.parent


def _serving():
    """tests/serving.py, the test suite's helpers that build a model and run serve.py on loopback."""
    spec = importlib.util.spec_from_file_location("serving", ROOT / "tests" / "serving.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@dataclass
class Sample:
    op: str
    seconds: float
    ok: bool
    detail: str = ""


def percentile(values: list[float], q: float) -> float:
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1]


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--seconds", default=60.0, show_default=True, type=click.FloatRange(min=1), help="How long the clients keep sending.")
@click.option("--clients", default=8, show_default=True, type=click.IntRange(min=1), help="Concurrent clients.")
@click.option("--enroll-every", default=4, show_default=True, type=click.IntRange(min=0), help="Every Nth request of a client is an enroll (0: none).")
@click.option("--seed", default=0, show_default=True, help="Random seed for the choice of photos.")
def main(seconds: float, clients: int, enroll_every: int, seed: int) -> None:
    import httpx

    from recognizer.cli._options import passive_openmp
    from recognizer.sample_data import data_dir

    passive_openmp()  # for build_model's enrolments here and the server process, which inherits it
    serving = _serving()
    FR, Server, build_model = serving.FR, serving.Server, serving.build_model

    data = data_dir() / FR
    people = data / "people"
    identify_photos = sorted((data / "group").glob("*.jpg")) + sorted(people.glob("*/*.jpg"))
    enroll_photos = sorted((people / "barack_obama").glob("examples__obama*.jpg")) + sorted((people / "kit_harington").glob("*.jp*g"))
    token = secrets.token_urlsafe(16)

    with tempfile.TemporaryDirectory(prefix="facetool-load-") as tmp:
        t0 = time.perf_counter()
        model = build_model(Path(tmp) / "model", {"barack_obama": people / "barack_obama", "joe_biden": people / "joe_biden"})
        server = Server(model, env={"FACETOOL_TOKEN": token}, log=Path(tmp) / "server.log")
        try:
            server.wait()
            print(f"model built and server up in {time.perf_counter() - t0:.1f} s; "
                  f"{clients} clients for {seconds:g} s against {server.url}", file=sys.stderr)
            samples: list[Sample] = []
            reported: dict[str, int] = {}
            lock = threading.Lock()
            deadline = time.monotonic() + seconds

            def client(k: int) -> None:
                rng = random.Random(seed * 1000 + k)
                with httpx.Client(base_url=server.url, timeout=300) as http:
                    i = 0
                    while time.monotonic() < deadline:
                        i += 1
                        enroll = enroll_every > 0 and i % enroll_every == 0
                        photo = rng.choice(enroll_photos if enroll else identify_photos)
                        files = {"file": (photo.name, photo.read_bytes(), "image/jpeg")}
                        name = f"load-{k}-{i}"
                        start = time.perf_counter()
                        try:
                            if enroll:
                                res = http.post(f"/people/{name}/photos", files=files, headers={"Authorization": f"Bearer {token}"})
                            else:
                                res = http.post("/identify", files=files)
                            ok = res.status_code == 200
                            detail = "" if ok else f"{res.status_code} {res.text[:200]}"
                        except httpx.HTTPError as exc:
                            ok, detail, res = False, f"{type(exc).__name__}: {exc}", None
                        elapsed = time.perf_counter() - start
                        with lock:
                            samples.append(Sample("enroll" if enroll else "identify", elapsed, ok, detail))
                            if enroll and ok:
                                reported[name] = res.json()["added"]

            t_start = time.perf_counter()
            threads = [threading.Thread(target=client, args=(k,)) for k in range(clients)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            wall = time.perf_counter() - t_start
            found = httpx.get(server.url + "/people", timeout=60).json()["people"]
        finally:
            server.stop()

    errors = [s for s in samples if not s.ok]
    lost = {n: (c, found.get(n, 0)) for n, c in reported.items() if found.get(n, 0) != c}
    extra = {n: c for n, c in found.items() if n.startswith("load-") and n not in reported}
    print(f"{len(samples)} requests in {wall:.1f} s: {len(samples) / wall:.2f} requests/s, {len(errors)} errors")
    for op in ("identify", "enroll", "all"):
        times = sorted(s.seconds for s in samples if s.ok and (op == "all" or s.op == op))
        if times:
            print(f"  {op:8s} n={len(times):4d}  p50 {1000 * percentile(times, 50):7.0f} ms  "
                  f"p95 {1000 * percentile(times, 95):7.0f} ms  max {1000 * times[-1]:7.0f} ms")
    print(f"enrolments reported done: {sum(reported.values())}; found by GET /people: "
          f"{sum(found.get(n, 0) for n in reported)}; lost: {len(lost)}; unexpected: {len(extra)}")
    for s in errors[:10]:
        print(f"  error ({s.op}): {s.detail}")
    for n, (want, got) in list(lost.items())[:10]:
        print(f"  lost: {n} reported {want}, found {got}")
    if errors or lost or extra:
        raise SystemExit(1)


if __name__ == "__main__":
    main()

"""The server identifies photos side by side (one per core), with the command line's answers, while
changes stay one at a time on the model thread (issue 31).

A real sface model (Obama and Biden) served by uvicorn on a loopback port from a thread of this
process (tests/serving.py's ThreadServer), real photos. `Recognizer.identify` and `enroll` are
wrapped to see how many run at once; the wrappers call the real methods.
"""
from __future__ import annotations

import json
import os
import threading
from pathlib import Path

import httpx
import pytest

from serving import FR, ThreadServer, build_model

TOKEN = "concurrency-token-0123456789"


@pytest.fixture(scope="module")
def model(tmp_path_factory, data) -> Path:
    people = data / FR / "people"
    return build_model(tmp_path_factory.mktemp("concurrency") / "model",
                       {"barack_obama": people / "barack_obama", "joe_biden": people / "joe_biden"})


@pytest.fixture(scope="module")
def url(model):
    from web.settings import Settings

    server = ThreadServer(model, Settings(token=TOKEN)).wait()
    try:
        yield server.url
    finally:
        server.stop()


class Overlap:
    """Wraps a method: counts the calls running at once (the most seen in `peak`); with `meet`, each
    call first waits until that many calls are running, so calls that cannot overlap time out."""

    def __init__(self, fn, meet: int | None = None) -> None:
        self.fn, self.active, self.peak = fn, 0, 0
        self.lock = threading.Lock()
        self.barrier = threading.Barrier(meet, timeout=30) if meet else None

    def __call__(self, *args, **kw):
        with self.lock:
            self.active += 1
            self.peak = max(self.peak, self.active)
        try:
            if self.barrier is not None:
                self.barrier.wait()
            return self.fn(*args, **kw)
        finally:
            with self.lock:
                self.active -= 1


def post_all(url: str, requests: list[tuple[str, Path]]) -> list[httpx.Response]:
    """Each (path, photo) posted at the same time from its own thread; the responses in order."""
    out: list = [None] * len(requests)

    def send(i: int, path: str, photo: Path) -> None:
        with httpx.Client(base_url=url, timeout=120, headers={"Authorization": f"Bearer {TOKEN}"}) as http:
            out[i] = http.post(path, files={"file": (photo.name, photo.read_bytes(), "image/jpeg")})

    threads = [threading.Thread(target=send, args=(i, *r)) for i, r in enumerate(requests)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return out


def group_photos(data) -> list[Path]:
    return sorted((data / FR / "group").glob("*.jpg"))[:4]


@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="one core: one identify worker")
def test_identifies_run_side_by_side(url, data, monkeypatch):
    from recognizer.recognizer import Recognizer

    # Two identifies must be inside Recognizer.identify together before either goes on: with one
    # model thread the first waits for a second that is queued behind it, and times out (a 500).
    spy = Overlap(Recognizer.identify, meet=2)
    monkeypatch.setattr(Recognizer, "identify", lambda self, *a, **kw: spy(self, *a, **kw))
    photos = group_photos(data)[:2]
    res = post_all(url, [("/identify", p) for p in photos])
    assert [r.status_code for r in res] == [200, 200], [r.text[:300] for r in res]
    assert spy.peak == 2
    assert [r.json()["photo"] for r in res] == [p.name for p in photos]


def test_concurrent_identifies_give_the_command_lines_answers(url, data, model):
    from click.testing import CliRunner

    from recognizer.cli import identify

    photos = group_photos(data)
    res = post_all(url, [("/identify", p) for p in photos * 2])
    assert all(r.status_code == 200 for r in res), [r.text[:300] for r in res]
    cli = CliRunner().invoke(identify.main, ["--model", str(model), *map(str, photos), "--json"], catch_exceptions=False)
    expected = json.loads(cli.output)
    assert sum(len(e["faces"]) for e in expected) >= 4
    for i, r in enumerate(res):
        # Equal, not close: the same numbers however many photos were in flight.
        assert r.json()["faces"] == expected[i % len(photos)]["faces"], photos[i % len(photos)].name


def test_enrolments_stay_one_at_a_time(url, data, monkeypatch):
    from recognizer.recognizer import Recognizer

    spy = Overlap(Recognizer.enroll)
    order: list[str] = []
    lock = threading.Lock()

    def enroll(self, name, *a, **kw):
        with lock:
            order.append(name)
        return spy(self, name, *a, **kw)

    monkeypatch.setattr(Recognizer, "enroll", enroll)
    obama = sorted((data / FR / "people" / "barack_obama").glob("*.jpg"))
    names = [f"conc-{i}" for i in range(3)]
    res = post_all(url, [(f"/people/{n}/photos", p) for n, p in zip(names, obama)] + [("/identify", obama[0])] * 2)
    assert all(r.status_code == 200 for r in res), [r.text[:300] for r in res]
    assert spy.peak == 1
    assert sorted(order) == names
    people = httpx.get(url + "/people", timeout=60).json()["people"]
    assert all(people.get(n) == 1 for n in names), people


def test_model_workers_setting():
    from web.settings import Settings

    assert Settings().identify_workers() == (os.cpu_count() or 1)
    assert Settings(model_workers=3).identify_workers() == 3
    with pytest.raises(ValueError, match="model_workers -1"):
        Settings(model_workers=-1).identify_workers()

"""The HTTP API under bad input: every upload gets a 2xx result or a 4xx JSON error, never a 500.

In-process (starlette's TestClient) on a real model, with the same generated files as
tests/test_bad_input.py, plus hypothesis-generated damaged and random uploads and person names.
"""
from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from reliability_util import bounded, encode, face_image, files_outside, one_person_model
from test_bad_input import FORMATS, build_cases, damaged
from test_reliability_names import names

TOKEN = "test-token-0123456789"
COUNTS = {"uploads": 0, "names": 0}


@pytest.fixture(scope="module")
def world(tmp_path_factory, data, detector, sface):
    from starlette.testclient import TestClient

    from web.app import create_app
    from web.settings import Settings

    root = tmp_path_factory.mktemp("http world")
    face = face_image(data)
    rec = one_person_model(root, face, detector, sface)
    cases = build_cases(root / "cases", face, detector)
    with TestClient(create_app(rec, Settings(token=TOKEN)), raise_server_exceptions=False, base_url="http://127.0.0.1") as client:
        yield root, rec, client, cases, face
    print(f"\nhttp: {COUNTS['uploads']} bad uploads and {COUNTS['names']} names, every answer 2xx or 4xx JSON, no 500")


def check_answer(res, what: str) -> None:
    assert res.status_code < 500, f"{what}: {res.status_code} {res.text[:300]}"
    assert "Traceback" not in res.text and 'File "' not in res.text, res.text[:300]
    if res.status_code >= 400:
        body = res.json()
        assert set(body) == {"error"} and body["error"], body


def post_identify(client, name: str, blob: bytes):
    with bounded(f"POST /identify {name}"):
        return client.post("/identify", files={"file": (name, blob)})


def test_every_bad_file_posted_to_identify_and_enroll(world):
    _, rec, client, cases, _ = world
    for name, (path, expect) in cases.items():
        if not path.is_file() or name == "unreadable.jpg":
            continue  # nothing to upload: a missing file, a folder, a dangling link
        blob = path.read_bytes()
        res = post_identify(client, name, blob)
        check_answer(res, name)
        if expect == "error":
            assert 400 <= res.status_code < 500, f"{name}: {res.status_code} {res.text[:200]}"
        elif expect in ("face", "crowd"):
            assert res.status_code == 200 and len(res.json()["faces"]) >= (30 if expect == "crowd" else 1), name
        with bounded(f"POST /people/x/photos {name}"):
            res = client.post("/people/bad%20input/photos", files={"file": (name, blob)},
                              headers={"Authorization": f"Bearer {TOKEN}"})
        check_answer(res, f"enroll {name}")
        COUNTS["uploads"] += 2
    for body in (b"", b"x" * 100):
        check_answer(client.post("/identify", content=body, headers={"content-type": "image/jpeg"}), "raw body")


@given(d=st.data())
def test_damaged_uploads(world, d):
    _, _, client, _, face = world
    encoded = {fmt: encode(face.resize((120, 150)), fmt) for fmt in FORMATS}
    fmt, how, blob = d.draw(damaged(encoded))
    check_answer(post_identify(client, f"damaged.{fmt.lower()}", blob), f"{how} {fmt}")
    COUNTS["uploads"] += 1


@given(blob=st.binary(max_size=3000))
def test_random_uploads(world, blob):
    check_answer(post_identify(world[2], "random.jpg", blob), "random bytes")
    COUNTS["uploads"] += 1


@given(name=names)
def test_names_through_the_api_stay_inside_the_model_directory(world, name):
    from urllib.parse import quote

    root, rec, client, _, face = world
    before = files_outside(root, rec.dir)
    with bounded(f"enroll {name!r}"):
        res = client.post(f"/people/{quote(name, safe='')}/photos", files={"file": ("p.jpg", encode(face, "JPEG"))},
                          headers={"Authorization": f"Bearer {TOKEN}"})
    check_answer(res, f"name {name!r}")
    assert files_outside(root, rec.dir) == before
    COUNTS["names"] += 1

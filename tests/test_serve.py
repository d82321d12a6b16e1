"""serve.py end to end: real server processes on 127.0.0.1, real photos, real sface model.

Three servers share one model directory, which also shows that each sees the others' changes:
  `server`  serve.py --token TOKEN                      (changes allowed with the token)
  `guarded` FACETOOL_TOKEN=... serve.py --protect-reads
  `open_`   no token (changes refused); uvicorn in a thread of this process, to spare a third
            process start-up, which costs ~10 s of importing torch on a busy 2-core machine
"""
from __future__ import annotations

import io
import json
import logging
import re
import threading
from pathlib import Path

import httpx
import pytest
from PIL import Image

from serving import FR, ROOT, Server, ThreadServer, build_model

TOKEN = "correct-horse-battery-staple"
READ_TOKEN = "another-token-for-reads"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
MAX_PIXELS = 4_000_000  # every sample photo is under 3.4 Mpx
MAX_UPLOAD_MB = 2
TWO_PEOPLE = "barack_obama+joe_biden__two_people.jpg"


@pytest.fixture(scope="module")
def model(tmp_path_factory, data) -> Path:
    people = data / FR / "people"
    return build_model(tmp_path_factory.mktemp("serve") / "model",
                       {"barack_obama": people / "barack_obama", "joe_biden": people / "joe_biden"})


@pytest.fixture(scope="module")
def servers(model, tmp_path_factory):
    logs = tmp_path_factory.mktemp("logs")
    limits = ["--max-pixels", str(MAX_PIXELS), "--max-upload-mb", str(MAX_UPLOAD_MB)]
    # Started together so that their (CPU-bound) start-ups overlap.
    started = {
        "server": Server(model, "--token", TOKEN, *limits, log=logs / "server.log"),
        "guarded": Server(model, "--protect-reads", *limits, env={"FACETOOL_TOKEN": READ_TOKEN}, log=logs / "guarded.log"),
    }
    from web.settings import Settings

    started["open_"] = ThreadServer(model, Settings(max_pixels=MAX_PIXELS, max_upload_bytes=MAX_UPLOAD_MB * 2**20))
    try:
        yield {k: s.wait() for k, s in started.items()}
    finally:
        for s in started.values():
            s.stop()


@pytest.fixture(scope="module")
def server(servers) -> httpx.Client:
    with httpx.Client(base_url=servers["server"].url, timeout=120) as c:
        yield c


@pytest.fixture(scope="module")
def guarded(servers) -> httpx.Client:
    with httpx.Client(base_url=servers["guarded"].url, timeout=120) as c:
        yield c


@pytest.fixture(scope="module")
def open_(servers) -> httpx.Client:
    with httpx.Client(base_url=servers["open_"].url, timeout=120) as c:
        yield c


def upload(path: Path, name: str | None = None) -> dict:
    return {"file": (name or path.name, path.read_bytes(), "application/octet-stream")}


def error_of(res: httpx.Response, status: int) -> str:
    assert res.status_code == status, (res.status_code, res.text)
    body = res.json()
    assert set(body) == {"error"} and body["error"], body
    assert "Traceback" not in res.text
    return body["error"]


def png_bytes(size: tuple[int, int], colour=(200, 180, 160)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, colour).save(buf, format="PNG")
    return buf.getvalue()


# ---- reads ---------------------------------------------------------------------------------

def test_health_page_and_docs(server):
    assert server.get("/health").json() == {"status": "ok", "backbone": "sface"}
    page = server.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "default-src 'none'" in page.headers["content-security-policy"]
    # No CDN, no other site: every src/href of the page is local.
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", page.text, re.I)
    assert "@import" not in page.text and "http://" not in page.text and "https://" not in page.text
    assert page.text == (ROOT / "web" / "index.html").read_text(encoding="utf-8")
    spec = server.get("/openapi.json").json()
    assert {"/identify", "/people", "/people/{name}/photos", "/people/{name}", "/health"} <= set(spec["paths"])
    assert "multipart/form-data" in spec["paths"]["/identify"]["post"]["requestBody"]["content"]
    docs = server.get("/docs")
    assert docs.status_code == 200 and "swagger-ui-bundle.js" in docs.text
    # offline (issue 28): every script, style and icon of /docs is the server's own
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", docs.text, re.I), docs.text
    for asset in re.findall(r"""(?:src|href)\s*=\s*["']([^"']+)""", docs.text):
        assert server.get(asset).status_code == 200, asset
    assert server.get("/docs/assets/index.html").status_code == 404
    assert server.get("/redoc").status_code == 404  # ReDoc only comes from a CDN: not offered


def test_identify_matches_identify_cli(server, data, model):
    from click.testing import CliRunner

    from recognizer.cli import identify

    photo = data / FR / "group" / TWO_PEOPLE
    res = server.post("/identify", files=upload(photo))
    assert res.status_code == 200, res.text
    got = res.json()
    assert got["photo"] == TWO_PEOPLE
    assert sorted(f["name"] for f in got["faces"]) == ["barack_obama", "joe_biden"]
    cli = CliRunner().invoke(identify.main, ["--model", str(model), str(photo), "--json"], catch_exceptions=False)
    (expected,) = json.loads(cli.output)
    assert [f["name"] for f in got["faces"]] == [f["name"] for f in expected["faces"]]
    # The same photo gives the same numbers through the server as through the CLI
    # (tests/test_determinism.py): the whole answer is equal, not close.
    assert got["faces"] == expected["faces"]


def test_identify_annotated_png(server, data):
    photo = data / FR / "group" / TWO_PEOPLE
    res = server.post("/identify", params={"annotate": 1}, files=upload(photo))
    assert res.status_code == 200 and res.headers["content-type"] == "image/png"
    img = Image.open(io.BytesIO(res.content)).convert("RGB")
    assert img.size == Image.open(photo).size
    from recognizer.drawing import KNOWN

    # Two known faces boxed in green: their outlines alone are hundreds of pixels of exactly that colour.
    import numpy as np

    green = int((np.asarray(img) == KNOWN).all(axis=2).sum())
    assert green > 500, green


def test_strangers_are_unknown_and_threshold_is_checked(server, data):
    res = server.post("/identify", files=upload(data / FR / "group/kit_harington+rose_leslie__kit_with_rose.jpg"))
    faces = res.json()["faces"]
    assert len(faces) == 2 and all(f["name"] is None for f in faces)
    assert "threshold" in error_of(server.post("/identify", params={"threshold": 2}, files=upload(data / FR / "group" / TWO_PEOPLE)), 422)


# ---- changes -------------------------------------------------------------------------------

def test_enroll_rename_remove_seen_by_every_server(server, guarded, open_, data, model):
    kit = data / FR / "people/kit_harington"
    garbage = b"\xff\xd8\xff\xe0" + b"not really a jpeg" * 10
    files = [("file", (p.name, p.read_bytes(), "image/jpeg")) for p in sorted(kit.glob("knn_train__*"))]
    files.append(("file", ("broken.jpg", garbage, "image/jpeg")))
    res = server.post("/people/Kit H/photos", files=files, headers=AUTH)
    assert res.status_code == 200, res.text
    report = res.json()
    assert report["name"] == "Kit H" and report["added"] == 2 and report["enrolled"] == 2
    assert [(f["file"], f["status"]) for f in report["files"]] == [
        ("knn_train__john1.jpeg", "added"), ("knn_train__john2.jpeg", "added"), ("broken.jpg", "unreadable")]
    assert "facetool-upload" not in res.text and "/tmp" not in res.text  # no temporary paths leak out
    # The gallery remembers the uploaded names, not the deleted temporary files.
    from gallery import open_gallery

    with open_gallery(model / "gallery") as g:
        assert sorted(r.source for r in g.records("Kit H")) == ["knn_train__john1.jpeg", "knn_train__john2.jpeg"]

    again = server.post("/people/Kit H/photos", files=files[:1], headers=AUTH).json()
    assert again["added"] == 0 and again["files"][0]["status"] == "duplicate"

    # The other server processes see the change without a restart.
    assert open_.get("/people").json()["people"]["Kit H"] == 2
    test_photo = upload(kit / "knn_test__johnsnow_test1.jpg")
    assert [f["name"] for f in guarded.post("/identify", files=test_photo, headers={"Authorization": f"Bearer {READ_TOKEN}"}).json()["faces"]] == ["Kit H"]

    res = server.patch("/people/Kit H", json={"name": "Kit Harington"}, headers=AUTH)
    assert res.json() == {"renamed": "Kit H", "to": "Kit Harington"}
    assert "already enrolled" in error_of(server.patch("/people/Kit Harington", json={"name": "joe_biden"}, headers=AUTH), 409)
    assert [f["name"] for f in open_.post("/identify", files=test_photo).json()["faces"]] == ["Kit Harington"]

    res = server.delete("/people/Kit Harington", headers=AUTH)
    assert res.json() == {"removed": "Kit Harington", "faces": 2}
    assert "Kit Harington" not in server.get("/people").json()["people"]
    assert "Kit Harington" in error_of(server.delete("/people/Kit Harington", headers=AUTH), 404)
    assert "nobody" in error_of(server.patch("/people/nobody", json={"name": "x"}, headers=AUTH), 404)


def test_changes_by_another_process_are_seen(server, model, data):
    build_model(model, {"rose": data / FR / "people/rose_leslie"})  # enroll.py in this (other) process
    try:
        assert server.get("/people").json()["people"]["rose"] == 2
    finally:
        assert server.delete("/people/rose", headers=AUTH).status_code == 200


def test_concurrent_enrolls_and_identifies_lose_nothing(server, data):
    photos = sorted((data / FR / "people/barack_obama").glob("examples__obama-*p.jpg"))[:3]
    group = data / FR / "group" / TWO_PEOPLE
    results: dict[str, httpx.Response] = {}

    def enroll(i: int) -> None:
        with httpx.Client(base_url=server.base_url, timeout=120) as c:
            results[f"enroll{i}"] = c.post(f"/people/concurrent-{i}/photos", files=upload(photos[i]), headers=AUTH)

    def identify(i: int) -> None:
        with httpx.Client(base_url=server.base_url, timeout=120) as c:
            results[f"identify{i}"] = c.post("/identify", files=upload(group))

    threads = [threading.Thread(target=f, args=(i,)) for i in range(3) for f in (enroll, identify)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(r.status_code == 200 for r in results.values()), {k: r.text for k, r in results.items() if r.status_code != 200}
    assert all(results[f"enroll{i}"].json()["added"] == 1 for i in range(3))
    people = server.get("/people").json()["people"]
    assert all(people.get(f"concurrent-{i}") == 1 for i in range(3)), people
    for i in range(3):
        server.delete(f"/people/concurrent-{i}", headers=AUTH)


# ---- tokens --------------------------------------------------------------------------------

def test_changes_refused_without_a_configured_token(open_, data):
    photo = upload(data / FR / "people/joe_biden/examples__biden.jpg")
    for res in (open_.post("/people/x/photos", files=photo),
                open_.post("/people/x/photos", files=photo, headers={"Authorization": "Bearer anything"}),
                open_.delete("/people/joe_biden", headers=AUTH),
                open_.patch("/people/joe_biden", json={"name": "Joe"}, headers=AUTH)):
        assert "without a token" in error_of(res, 403)
    assert open_.get("/people").json()["people"]["joe_biden"] == 2  # nothing changed


def test_token_checks(server, data):
    photo = upload(data / FR / "people/joe_biden/examples__biden.jpg")
    assert "bearer token is required" in error_of(server.delete("/people/joe_biden"), 401)
    assert "bearer token is required" in error_of(server.delete("/people/joe_biden", headers={"Authorization": f"Basic {TOKEN}"}), 401)
    assert error_of(server.delete("/people/joe_biden", headers={"Authorization": "Bearer wrong"}), 401) == "wrong token"
    assert error_of(server.post("/people/x/photos", files=photo, headers={"Authorization": f"Bearer {TOKEN}x"}), 401) == "wrong token"
    assert error_of(server.patch("/people/joe_biden", json={"name": "J"}, headers={"Authorization": f"Bearer {READ_TOKEN}"}), 401) == "wrong token"
    assert server.get("/people").json()["people"]["joe_biden"] == 2


def test_protect_reads(guarded, data):
    photo = upload(data / FR / "people/joe_biden/examples__biden.jpg")
    read = {"Authorization": f"Bearer {READ_TOKEN}"}
    error_of(guarded.get("/people"), 401)
    error_of(guarded.get("/people", headers=AUTH), 401)  # another server's token
    error_of(guarded.post("/identify", files=photo), 401)
    assert guarded.get("/people", headers=read).json()["people"]["joe_biden"] == 2
    assert guarded.get("/health").status_code == 200 and guarded.get("/").status_code == 200
    # FACETOOL_TOKEN also authorises changes.
    assert "no person" in error_of(guarded.delete("/people/nobody", headers=read), 404)


# ---- limits --------------------------------------------------------------------------------

def test_upload_size_limit(server):
    big = b"\xff\xd8\xff" + bytes(MAX_UPLOAD_MB * 2**20)
    assert "upload limit" in error_of(server.post("/identify", files={"file": ("big.jpg", big)}), 413)

    # No Content-Length (chunked): cut off while reading, not after.
    def chunks():
        yield b"--b\r\nContent-Disposition: form-data; name=\"file\"; filename=\"big.jpg\"\r\n\r\n\xff\xd8\xff"
        for _ in range(MAX_UPLOAD_MB * 4 + 4):
            yield bytes(2**18)

    res = server.post("/identify", content=chunks(), headers={"Content-Type": "multipart/form-data; boundary=b"})
    assert "upload limit" in error_of(res, 413)


def test_content_is_sniffed_not_named(server, data, tmp_path):
    text = {"file": ("photo.jpg", b"just some text, not a photo", "image/jpeg")}
    assert "not an image" in error_of(server.post("/identify", files=text), 415)
    assert "not an image" in error_of(server.post("/people/joe_biden/photos", files=text, headers=AUTH), 415)
    # A PNG named .txt is still a PNG (a face-less one).
    res = server.post("/identify", files={"file": ("notes.txt", png_bytes((64, 48)), "text/plain")})
    assert res.status_code == 200 and res.json() == {"photo": "notes.txt", "faces": []}
    webp = io.BytesIO()
    Image.open(data / FR / "people/joe_biden/examples__biden.jpg").save(webp, format="WEBP")
    res = server.post("/identify", files={"file": ("biden", webp.getvalue())})
    assert [f["name"] for f in res.json()["faces"]] == ["joe_biden"]


def test_damaged_image_is_400(server):
    garbage = {"file": ("broken.jpg", b"\xff\xd8\xff\xe0" + b"\x00garbage" * 100)}
    assert "broken.jpg" in error_of(server.post("/identify", files=garbage), 400)
    truncated = {"file": ("cut.png", png_bytes((300, 200))[:60])}
    assert "cut.png" in error_of(server.post("/identify", files=truncated), 400)


def test_too_many_pixels(server):
    huge = png_bytes((2500, 2000))  # 5 Mpx of one colour: a small file
    assert len(huge) < 2**20
    assert f"{MAX_PIXELS}" in error_of(server.post("/identify", files={"file": ("huge.png", huge)}), 413)
    res = server.post("/people/joe_biden/photos", files={"file": ("huge.png", huge)}, headers=AUTH)
    assert "2500x2000" in error_of(res, 413)


def test_bad_names_and_requests(server, data):
    photo = upload(data / FR / "people/joe_biden/examples__biden.jpg")
    for bad in ("a..b", ".hidden", "a%07b", "x" * 101, "%20%20"):
        assert "name" in error_of(server.post(f"/people/{bad}/photos", files=photo, headers=AUTH), 422), bad
    assert "path separator" in error_of(server.post("/people/a%2Fb/photos", files=photo, headers=AUTH), 422)
    assert "'..'" in error_of(server.patch("/people/joe_biden", json={"name": "up.."}, headers=AUTH), 422)
    assert "JSON body" in error_of(server.patch("/people/joe_biden", json={"nom": "x"}, headers=AUTH), 422)
    assert "JSON body" in error_of(server.patch("/people/joe_biden", content=b"{not json", headers=AUTH), 422)
    assert "'file'" in error_of(server.post("/identify", files={"photo": ("a.jpg", b"\xff\xd8\xff")}), 422)
    assert "'file'" in error_of(server.post("/identify", data={"file": "text"}), 422)
    assert "multipart" in error_of(server.post("/identify", content=b"\xff\xd8\xff"), 422)
    assert error_of(server.get("/no/such/page"), 404) == "Not Found"
    assert server.get("/people").json()["people"] == {"barack_obama": 10, "joe_biden": 2}  # partial_face2: low quality


# ---- the catch-all handler, in process: it needs a failure no real request can cause --------

class _BrokenRecognizer:
    """A recognizer whose model crashes with an internal error."""

    class config:
        backbone = "sface"

    max_pixels = 150_000_000
    memory_budget = 384 * 2**20

    def people(self):
        raise RuntimeError("secret internal detail /srv/model")

    def close(self):
        pass

    def identify(self, *a, **kw):
        raise RuntimeError("secret internal detail /srv/model")


@pytest.mark.filterwarnings("ignore:Using `httpx` with `starlette.testclient`")
def test_unexpected_errors_are_logged_not_shown(caplog):
    from starlette.testclient import TestClient

    from web.app import create_app
    from web.settings import Settings

    app = create_app(_BrokenRecognizer(), Settings())
    with caplog.at_level(logging.ERROR), TestClient(app, raise_server_exceptions=False, base_url="http://127.0.0.1") as client:
        for res in (client.get("/people"), client.post("/identify", files={"file": ("a.png", png_bytes((8, 8)))})):
            assert res.status_code == 500
            assert res.json() == {"error": "internal server error; the details are in the server log"}
            assert "secret" not in res.text
    assert "secret internal detail" in caplog.text and "Traceback" in caplog.text


def test_help_is_fast_and_imports_no_model():
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-X", "importtime", str(ROOT / "serve.py"), "--help"], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0 and "--protect-reads" in out.stdout and "FACETOOL_TOKEN" in out.stdout
    assert "torch" not in out.stderr and "fastapi" not in out.stderr and "uvicorn" not in out.stderr


def test_protect_reads_without_a_token_is_refused(tmp_path):
    import subprocess
    import sys

    env = {k: v for k, v in __import__("os").environ.items() if k != "FACETOOL_TOKEN"}
    out = subprocess.run([sys.executable, str(ROOT / "serve.py"), "--model", str(tmp_path), "--protect-reads"],
                         capture_output=True, text=True, cwd=ROOT, env=env)
    assert out.returncode == 2 and "--protect-reads needs a token" in out.stderr


def test_unknown_faces_routes(server, guarded, open_, data):
    """The panel's API: clustering and thumbnails (face pixels) need the token, runs are reads, bad references are 404."""
    photos = [data / FR / "group" / TWO_PEOPLE, data / FR / "group/kit_harington+rose_leslie__kit_with_rose.jpg"]
    files = [("file", (p.name, p.read_bytes(), "application/octet-stream")) for p in photos]
    assert "token" in error_of(server.post("/clusters", files=files), 401)
    assert "without a token" in error_of(open_.post("/clusters", files=files), 403)
    error_of(guarded.get("/clusters"), 401)
    res = server.post("/clusters", files=files, headers=AUTH)
    assert res.status_code == 200, res.text
    run = res.json()
    assert [len(p["known"]) for p in run["photos"]] == [2, 0]  # Obama and Biden are set aside
    assert [p["photo"] for p in run["photos"]] == [p.name for p in photos]  # upload names, no server paths
    assert len(run["faces"]) == 2 and [c["size"] for c in run["clusters"]] == [1, 1]  # Kit, Rose: two people
    assert run["id"] in [r["run"] for r in server.get("/clusters").json()["runs"]]
    assert server.get(f"/clusters/{run['id']}").json()["clusters"] == run["clusters"]
    error_of(server.get(f"/clusters/{run['id']}/faces/0.png"), 401)  # face pixels: never without the token
    png = server.get(f"/clusters/{run['id']}/faces/0.png", headers=AUTH)
    assert png.status_code == 200 and png.headers["content-type"] == "image/png" and png.content.startswith(b"\x89PNG")
    error_of(server.get(f"/clusters/{run['id']}/faces/7.png", headers=AUTH), 404)
    error_of(server.get("/clusters/20000101-000000"), 404)
    error_of(server.post(f"/clusters/{run['id']}/1/enroll", json={"name": "X"}), 401)
    error_of(server.post(f"/clusters/{run['id']}/1/enroll", json={"nom": "X"}, headers=AUTH), 422)
    error_of(server.post(f"/clusters/{run['id']}/1/enroll", json={"name": "X", "exclude": ["a"]}, headers=AUTH), 422)
    error_of(server.post(f"/clusters/{run['id']}/9/enroll", json={"name": "X"}, headers=AUTH), 404)
    assert server.post(f"/clusters/{run['id']}/1/dismiss", headers=AUTH).status_code == 200
    assert "already dismissed" in error_of(server.post(f"/clusters/{run['id']}/1/dismiss", headers=AUTH), 409)
    assert server.post(f"/clusters/{run['id']}/2/dismiss", headers=AUTH).status_code == 200
    error_of(server.get(f"/clusters/{run['id']}"), 404)  # nothing left open: the run and its crops are gone


def test_removal_through_the_server_reaches_the_runs(server, data):
    """DELETE /people/X after enrolling a cluster as X: the run keeps none of X's faces, and says so."""
    photo = data / FR / "group/kit_harington+rose_leslie__kit_with_rose.jpg"
    res = server.post("/clusters", files=[("file", (photo.name, photo.read_bytes(), "application/octet-stream"))], headers=AUTH)
    assert res.status_code == 200, res.text
    run = res.json()
    assert [c["size"] for c in run["clusters"]] == [1, 1]
    face = run["clusters"][0]["faces"][0]
    before = server.get(f"/clusters/{run['id']}/faces/{face}.png", headers=AUTH)
    assert before.status_code == 200
    res = server.post(f"/clusters/{run['id']}/1/enroll", json={"name": "Sven Testperson"}, headers=AUTH)
    assert res.status_code == 200 and res.json()["added"] == 1, res.text
    assert server.delete("/people/Sven Testperson", headers=AUTH).json() == {"removed": "Sven Testperson", "faces": 1}
    after = server.get(f"/clusters/{run['id']}").json()
    assert after["clusters"][0]["status"] == "person removed" and "Sven" not in str(after)
    assert after["clusters"][1]["status"] == "open"
    assert "was removed" in error_of(server.get(f"/clusters/{run['id']}/faces/{face}.png", headers=AUTH), 404)
    assert server.post(f"/clusters/{run['id']}/2/dismiss", headers=AUTH).status_code == 200
    error_of(server.get(f"/clusters/{run['id']}"), 404)

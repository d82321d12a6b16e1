"""Every route of the server declares its access rule as a dependency, and it is checked first.

The routes are read from the app itself, so a route added without a token dependency fails here.
In-process (starlette's TestClient) on a real one-person model.
"""
from __future__ import annotations

import re

import pytest

from reliability_util import encode, face_image, one_person_model

TOKEN = "route-token-0123456789"
# Reachable without a token whatever the settings: the page and the liveness check.
OPEN = {("GET", "/"), ("GET", "/health")}


@pytest.fixture
def photo(data) -> bytes:
    return encode(face_image(data), "JPEG", quality=92)


@pytest.fixture
def client_for(tmp_path_factory, data, detector, sface):
    """A TestClient of a new app over a new one-person model (the app closes its model on exit)."""
    from starlette.testclient import TestClient

    from web.app import create_app
    from web.settings import Settings

    def make(**settings):
        rec = one_person_model(tmp_path_factory.mktemp("routes"), face_image(data), detector, sface)
        return TestClient(create_app(rec, Settings(**settings)), raise_server_exceptions=False, base_url="http://127.0.0.1")

    return make


def routes() -> list[tuple[str, str]]:
    """(method, path) of every route of the module-level routers the app is made of, with path
    parameters filled with a value that does not validate as an `int`."""
    import web.app
    import web.clusters

    out = []
    for route in web.app.router.routes + web.clusters.router.routes:
        for method in sorted(route.methods - {"HEAD"}):
            out.append((method, re.sub(r"\{[^}]+\}", "abc", route.path)))
    return out


def test_every_route_but_the_page_and_health_needs_the_token_before_anything_is_validated(client_for, photo):
    with client_for(token=TOKEN, protect_reads=True) as client:
        seen = routes()
        assert len(seen) >= 15 and ("POST", "/identify") in seen and ("POST", "/clusters/abc/abc/enroll") in seen
        for method, path in seen:
            if (method, path) in OPEN:
                continue
            for headers in ({}, {"Authorization": "Bearer wrong"}):
                res = client.request(method, path + "?threshold=abc&fps=abc", headers=headers,
                                     files={"file": ("a.jpg", photo)} if method == "POST" else None)
                assert res.status_code == 401, (method, path, headers, res.status_code, res.text)
                assert res.headers["www-authenticate"].startswith("Bearer")
        # With the token the same malformed value is the client's error (422), named.
        res = client.post("/identify?threshold=abc", headers={"Authorization": f"Bearer {TOKEN}"},
                          files={"file": ("a.jpg", photo)})
        assert res.status_code == 422 and "threshold" in res.json()["error"]
        res = client.post("/identify", headers={"Authorization": f"Bearer {TOKEN}"}, files={"file": ("a.jpg", photo)})
        assert res.status_code == 200 and [f["name"] for f in res.json()["faces"]] == ["paul"]


def test_reads_are_open_and_changes_need_the_token_without_protect_reads(client_for, photo):
    with client_for(token=TOKEN) as client:
        assert client.get("/people").json()["people"] == {"paul": 1}
        res = client.post("/identify", files={"file": ("a.jpg", photo)})
        assert res.status_code == 200 and [f["name"] for f in res.json()["faces"]] == ["paul"]
        assert client.get("/clusters").status_code == 200
        for method, path in (("POST", "/people/ann/photos"), ("DELETE", "/people/paul"), ("PATCH", "/people/paul"),
                             ("GET", "/export"), ("POST", "/import"), ("POST", "/clusters"),
                             ("POST", "/clusters/abc/1/enroll"), ("POST", "/clusters/abc/1/dismiss")):
            assert client.request(method, path).status_code == 401, (method, path)
        assert client.get("/people").json()["people"] == {"paul": 1}
    # Without a token configured, changes are refused outright (403), reads still answer.
    with client_for() as client:
        assert client.delete("/people/paul").status_code == 403
        assert client.get("/people").json()["people"] == {"paul": 1}


def test_every_route_answering_face_pixels_needs_the_token_even_with_reads_open(client_for):
    """SECURITY.md, "Reads": face pixels (thumbnails, chips, exports) never go without the token; the routes are
    found by what they answer (an image or an archive), so a new one is held to the rule too."""
    import web.app
    import web.clusters

    faces = []
    for route in web.app.router.routes + web.clusters.router.routes:
        kinds = {k for r in (getattr(route, "responses", None) or {}).values() for k in r.get("content", {})}
        if "GET" in route.methods and any(k.startswith("image/") or k == "application/x-tar" for k in kinds):
            faces.append(re.sub(r"\{[^}]+\}", "0", route.path))
    assert "/clusters/0/faces/0.png" in faces and "/export" in faces
    with client_for(token=TOKEN) as client:
        for path in faces:
            res = client.get(path)
            assert res.status_code == 401, (path, res.status_code, res.text)

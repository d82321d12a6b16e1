"""The server under hostile clients (issue 15, findings 2 and 3): foreign Host names (DNS
rebinding), headers and bodies that never finish, bodies shorter or longer than announced, and
more unfinished uploads than the server holds at once. Real HTTP on 127.0.0.1, short timeouts.
"""
from __future__ import annotations

import socket
import threading
import time

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from reliability_util import face_image, one_person_model
from serving import free_port

TIMEOUT = 1.0  # the server's header and body timeouts here
MAX_UPLOADS = 4


@pytest.fixture(scope="module")
def server(tmp_path_factory, data, detector, sface):
    import uvicorn

    from web.app import create_app
    from web.guard import GuardSettings, protocol_with
    from web.settings import Settings

    root = tmp_path_factory.mktemp("hostile server")
    face = face_image(data)
    rec = one_person_model(root, face, detector, sface)
    photo = root / "paul.jpg"
    guard = GuardSettings(allowed_hosts=("faces.example",), header_timeout=TIMEOUT, body_timeout=TIMEOUT,
                          max_uploads=MAX_UPLOADS)
    port = free_port()
    app = create_app(rec, Settings(guard=guard))
    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error",
                                       http=protocol_with(guard.header_timeout)))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    while not srv.started:
        time.sleep(0.05)
    yield port, photo.read_bytes()
    srv.should_exit = True
    thread.join(timeout=30)


def raw(port: int, data: bytes, wait: float = 10.0) -> tuple[bytes, float]:
    """Send `data`, then read until the server closes or answers; (response, seconds)."""
    t0 = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=wait) as s:
        s.sendall(data)
        out = b""
        try:
            while chunk := s.recv(65536):
                out += chunk
                if b"\r\n\r\n" in out and b'"}' in out:
                    break
        except socket.timeout:
            pass
    return out, time.monotonic() - t0


def multipart(blob: bytes, boundary: str = "b0undary") -> tuple[bytes, str]:
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"p.jpg\"\r\n"
            "Content-Type: image/jpeg\r\n\r\n").encode() + blob + f"\r\n--{boundary}--\r\n".encode()
    return body, f"multipart/form-data; boundary={boundary}"


def post(port: int, body: bytes, ctype: str, length: int | None = None, host: str = "127.0.0.1") -> bytes:
    n = len(body) if length is None else length
    return (f"POST /identify HTTP/1.1\r\nHost: {host}\r\nContent-Type: {ctype}\r\n"
            f"Content-Length: {n}\r\n\r\n").encode() + body


# ---- finding 2: only our own host names are answered --------------------------------------


def test_foreign_host_names_are_refused(server):
    port, _ = server
    url = f"http://127.0.0.1:{port}/people"
    assert httpx.get(url, headers={"Host": "evil.example"}).status_code == 421
    assert httpx.get(url, headers={"Host": f"evil.example:{port}"}).status_code == 421
    for ok in (f"127.0.0.1:{port}", "localhost", f"[::1]:{port}", "faces.example", "10.1.2.3:8000"):
        res = httpx.get(url, headers={"Host": ok})
        assert res.status_code == 200 and "paul" in res.json()["people"], (ok, res.status_code)


@given(name=st.from_regex(r"[a-z][a-z0-9-]{0,20}(\.[a-z][a-z0-9-]{0,10}){0,3}", fullmatch=True), port=st.integers(1, 65535))
def test_generated_host_names(server, name, port):
    allowed = name in ("localhost", "faces.example")
    res = httpx.get(f"http://127.0.0.1:{server[0]}/people", headers={"Host": f"{name}:{port}"})
    assert res.status_code == (200 if allowed else 421), (name, res.status_code)


# ---- finding 3: requests that never finish ----------------------------------------------


def test_body_shorter_than_announced_is_a_400_within_the_timeout(server):
    port, photo = server
    body, ctype = multipart(photo)
    out, took = raw(port, post(port, body[:500], ctype, length=len(body)))
    assert out.startswith(b"HTTP/1.1 400") and b"announced" in out, out[:300]
    assert took < TIMEOUT + 3, took


def test_content_length_smaller_than_the_body_is_a_400(server):
    port, photo = server
    body, ctype = multipart(photo)
    out, _ = raw(port, post(port, body, ctype, length=len(body) - 100))
    assert out.startswith(b"HTTP/1.1 400") and b"cut" in out, out[:300]


def test_headers_that_never_finish_are_cut_off(server):
    out, took = raw(server[0], b"POST /identify HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Len")
    assert out == b"" and took < TIMEOUT + 3, (out, took)


def test_unfinished_uploads_are_capped_and_released(server):
    port, photo = server
    body, ctype = multipart(photo)
    socks = []
    try:
        for _ in range(MAX_UPLOADS):
            s = socket.create_connection(("127.0.0.1", port), timeout=10)
            s.sendall(post(port, body[:100], ctype, length=len(body)))
            socks.append(s)
        time.sleep(0.2)
        out, took = raw(port, post(port, body, ctype))
        assert out.startswith(b"HTTP/1.1 503") and b"retry-after" in out.lower(), out[:300]
        assert took < 1.0
        for s in socks:  # each held upload is answered and let go
            assert s.recv(65536).startswith(b"HTTP/1.1 400")
    finally:
        for s in socks:
            s.close()
    res = httpx.post(f"http://127.0.0.1:{port}/identify", files={"file": ("p.jpg", photo)}, timeout=60)
    assert res.status_code == 200 and res.json()["faces"][0]["name"] == "paul"


@given(cut=st.floats(0, 1), extra=st.integers(-50, 50))
def test_generated_short_and_long_bodies_get_an_answer(server, cut, extra):
    """Any mix of a cut body and a wrong Content-Length: a 4xx JSON answer (or a whole result)
    within the timeout, never a hang or a 500."""
    port, photo = server
    body, ctype = multipart(photo[:2000])
    sent = body[: int(len(body) * cut)]
    out, took = raw(port, post(port, sent, ctype, length=max(len(sent) + extra, 0)))
    assert took < TIMEOUT + 5, took
    status = int(out.split(b" ", 2)[1]) if out.startswith(b"HTTP/1.1 ") else 0
    assert 200 <= status < 500, out[:300]

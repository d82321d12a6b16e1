"""What the server does before the app sees a request: which Host names it answers, how long a
client may take to send its headers and body, and how many uploads (and bytes of them) it holds
at once.

- Host allow-list: a web page the user visits can point a name it controls at 127.0.0.1 (DNS
  rebinding) and then read the API as if same-origin; such a request carries that name in
  `Host`. Only localhost, IP literals (a rebinding needs a name) and the names given with
  `--allowed-host` (and `--host`) are answered; anything else gets 421.
  Starlette's TrustedHostMiddleware does the same job by other rules, so it is not used: it
  answers 400 "Invalid host header" as plain text (not our JSON 421 saying how to allow a name),
  has no rule for "any IP literal" (only exact names and `*.domain` patterns), does not strip a
  trailing dot (`localhost.` is localhost), and redirects to `www.` names it was given.
- Timeouts: headers must arrive within `header_timeout` seconds of the connection opening (or
  of the previous response), and the body must keep coming: no gap longer than `body_timeout`
  seconds. A body that stops short of its Content-Length gets a 400 saying how much came.
- Uploads in flight: at most `max_uploads` request bodies are being received at once, and at
  most `max_upload_disk` bytes of them are held at once, since multipart parts over 1 MB spool
  to temporary files; over either, 503 with Retry-After. An upload with a Content-Length holds
  its announced size from the start (refused before any of its body is read); a chunked one
  holds the bytes received so far, counted as they arrive, and is cut off with the 503 as soon
  as they would take the total over the cap.
"""
from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
from dataclasses import dataclass

import h11
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.protocols.http.h11_impl import H11Protocol

__all__ = ["LOCAL_NAMES", "GuardSettings", "RequestGuard", "TimedH11Protocol", "host_allowed", "host_name", "protocol_with"]

log = logging.getLogger(__name__)

LOCAL_NAMES = ("localhost", "127.0.0.1", "::1")
_BUSY = "the server is receiving too many uploads at once; try again shortly"


@dataclass(frozen=True)
class GuardSettings:
    allowed_hosts: tuple[str, ...] = ()  # names besides localhost and IP literals
    header_timeout: float = 10.0
    body_timeout: float = 10.0
    max_uploads: int = 32
    max_upload_disk: int = 256 * 1024 * 1024


def host_name(header: str) -> str:
    """The name of a Host header value, without port or IPv6 brackets, lower-case."""
    h = header.strip().lower()
    if h.startswith("["):
        return h[1:].split("]", 1)[0]
    if h.count(":") == 1:
        h = h.split(":", 1)[0]
    return h.rstrip(".")


def host_allowed(header: str | None, allowed: tuple[str, ...]) -> bool:
    if not header:
        return False
    name = host_name(header)
    if name in LOCAL_NAMES or name in {host_name(a) for a in allowed}:
        return True
    try:
        ipaddress.ip_address(name)
        return True
    except ValueError:
        return False


class _Refused(Exception):
    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.headers = status, message, headers or {}


async def _answer(send: Send, status: int, message: str, headers: dict[str, str] | None = None) -> None:
    body = json.dumps({"error": message}).encode()
    hdrs = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
            (b"connection", b"close")]
    hdrs += [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": hdrs})
    await send({"type": "http.response.body", "body": body})


class RequestGuard:
    """ASGI middleware enforcing `GuardSettings` (see the module docstring)."""

    def __init__(self, app: ASGIApp, settings: GuardSettings) -> None:
        self.app = app
        self.settings = settings
        self.uploads = 0
        self.upload_bytes = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k: v for k, v in scope.get("headers", [])}
        host = headers.get(b"host", b"").decode("latin-1")
        if not host_allowed(host, self.settings.allowed_hosts):
            log.warning("refused a request for Host %r (not an allowed host)", host[:100])
            await _answer(send, 421, f"this server does not answer for the host name {host[:100]!r}; "
                                     "start it with --allowed-host NAME to allow it")
            return
        try:
            declared = int(headers.get(b"content-length", b"0") or 0)
        except ValueError:
            declared = 0
        has_body = declared > 0 or b"chunked" in headers.get(b"transfer-encoding", b"").lower()
        if not has_body:
            await self.app(scope, receive, send)
            return
        s = self.settings
        if not await self._admit(send, declared):
            return
        self.uploads += 1
        held = declared
        self.upload_bytes += held
        ctype = headers.get(b"content-type", b"").decode("latin-1")
        boundary = _boundary(ctype)
        tail = b""
        received = 0
        refused: _Refused | None = None
        started = False

        async def guarded_receive() -> Message:
            nonlocal received, tail, held, refused
            try:
                message = await asyncio.wait_for(receive(), s.body_timeout)
            except asyncio.TimeoutError:
                if declared:
                    refused = _Refused(400, f"the request body stopped after {received} of the {declared} bytes "
                                            f"its Content-Length announced (nothing more for {s.body_timeout:g} s)")
                else:
                    refused = _Refused(408, f"the request body stopped coming (nothing for {s.body_timeout:g} s)")
                raise refused from None
            if message["type"] == "http.request":
                chunk = message.get("body", b"")
                received += len(chunk)
                if not declared and received > held:  # chunked: count what came, against the same cap
                    self.upload_bytes += received - held
                    held = received
                    refused = self._over_cap(received)
                    if refused:
                        raise refused
                if boundary:
                    tail = (tail + chunk)[-(len(boundary) + 64):]
                    if not message.get("more_body", False) and b"--" + boundary + b"--" not in tail:
                        refused = _Refused(400, "the multipart body ends before its closing boundary: it was cut "
                                                "short (a Content-Length smaller than the body?)")
                        raise refused
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if refused is not None:
                return  # the app's answer to an interrupted read is replaced below
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, guarded_receive, guarded_send)
        except Exception:
            if refused is None:
                raise
        finally:
            self.uploads -= 1
            self.upload_bytes -= held
        if refused is not None and not started:
            await _answer(send, refused.status, refused.message, refused.headers)


    async def _admit(self, send: Send, declared: int) -> bool:
        """Whether one more upload (of `declared` bytes; 0 when chunked) may start; else answers 503."""
        s = self.settings
        if self.uploads >= s.max_uploads or self.upload_bytes + declared > s.max_upload_disk:
            log.warning("refused an upload: %d uploads (%d bytes) in flight", self.uploads, self.upload_bytes)
            await _answer(send, 503, _BUSY, {"Retry-After": "2"})
            return False
        return True

    def _over_cap(self, received: int) -> _Refused | None:
        """The 503 for a chunked upload whose bytes so far (counted in) take the uploads in flight over the cap."""
        if self.upload_bytes <= self.settings.max_upload_disk:
            return None
        log.warning("refused a chunked upload at %d bytes: %d bytes of uploads in flight", received, self.upload_bytes)
        return _Refused(503, _BUSY, {"Retry-After": "2"})


def _boundary(content_type: str) -> bytes | None:
    if not content_type.lower().startswith("multipart/form-data"):
        return None
    for part in content_type.split(";")[1:]:
        key, _, value = part.strip().partition("=")
        if key.lower() == "boundary" and value:
            return value.strip('"').encode("latin-1")
    return None


class TimedH11Protocol(H11Protocol):
    """uvicorn's HTTP/1.1 protocol with a deadline for a request's headers: a client that opens a
    connection and sends its headers slowly (or never) is disconnected after `header_timeout`
    seconds. Set the class attribute, or make a subclass, before handing it to uvicorn."""

    header_timeout = GuardSettings.header_timeout

    def connection_made(self, transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_header_timer()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._arm_header_timer()

    def _arm_header_timer(self) -> None:
        timer = getattr(self, "_header_timer", None)
        if timer is not None:
            timer.cancel()
        self._header_timer = self.loop.call_later(self.header_timeout, self._headers_overdue)

    def _headers_overdue(self) -> None:
        # IDLE: the client has not finished sending a request's headers since the timer started.
        if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
            log.info("closing a connection whose request headers did not arrive within %g s", self.header_timeout)
            self.transport.close()

    def connection_lost(self, exc) -> None:  # type: ignore[override]
        timer = getattr(self, "_header_timer", None)
        if timer is not None:
            timer.cancel()
        super().connection_lost(exc)


def protocol_with(header_timeout: float) -> type[TimedH11Protocol]:
    return type("HeaderTimedH11Protocol", (TimedH11Protocol,), {"header_timeout": float(header_timeout)})

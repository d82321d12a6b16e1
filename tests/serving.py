"""Helpers for tests and benchmarks that run `serve.py` for real, as a subprocess on 127.0.0.1."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
FR = "face_recognition-examples"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def build_model(model: Path, people: dict[str, Path]) -> Path:
    """Enroll each person's folder with enroll.py (sface), in this process: the backbones load once."""
    from click.testing import CliRunner

    from recognizer.cli import enroll

    for i, (name, folder) in enumerate(people.items()):
        args = ["--model", str(model), "--name", name, str(folder), "--json"] + (["--backbone", "sface"] if i == 0 else [])
        res = CliRunner().invoke(enroll.main, args, catch_exceptions=False)
        assert res.exit_code == 0, res.output
        assert json.loads(res.output)["added"] > 0, res.output
    return model


class Server:
    """`serve.py --model MODEL ARGS...` on a free loopback port; `start()` returns once /health answers."""

    def __init__(self, model: Path, *args: str, env: dict[str, str] | None = None, log: Path | None = None) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log or Path(os.devnull)
        cmd = [sys.executable, str(ROOT / "serve.py"), "--model", str(model), "--port", str(self.port), *args]
        full_env = {k: v for k, v in os.environ.items() if k != "FACETOOL_TOKEN"}
        full_env.update(env or {})
        self._log_file = open(self.log, "wb")
        self.proc = subprocess.Popen(cmd, cwd=ROOT, env=full_env, stdout=self._log_file, stderr=subprocess.STDOUT)

    def wait(self, timeout: float = 180.0) -> "Server":
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"serve.py exited with {self.proc.returncode}: {self.output()}")
            try:
                if httpx.get(self.url + "/health", timeout=2).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"serve.py did not answer /health within {timeout} s: {self.output()}")

    def output(self) -> str:
        self._log_file.flush()
        try:
            return self.log.read_text(errors="replace")[-4000:]
        except OSError:
            return ""

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log_file.close()


class ThreadServer:
    """The app served by uvicorn on a loopback port from a thread of this process.

    Still real HTTP, but it reuses the modules this process has already imported, which saves
    the ten seconds a new process spends importing torch when the CPUs are busy.
    """

    def __init__(self, model: Path, settings=None) -> None:
        import uvicorn

        from recognizer.recognizer import Recognizer
        from web.app import create_app
        from web.settings import Settings

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        app = create_app(Recognizer.open(model), settings or Settings())
        from web.guard import protocol_with

        guard = (settings or Settings()).guard
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning",
                                                    http=protocol_with(guard.header_timeout)))
        self.thread = threading.Thread(target=self.server.run, name=f"uvicorn-{self.port}", daemon=True)

    def wait(self, timeout: float = 60.0) -> "ThreadServer":
        self.thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"uvicorn did not start on port {self.port}")
            time.sleep(0.05)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)

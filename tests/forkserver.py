"""A warm process that forks children running enroll.py / identify.py, for tests that start many.

Importing torch, OpenCV and FAISS takes seconds per process on a loaded 2-core machine; a fork
takes milliseconds. This process only imports (it never runs torch or OpenCV work, and never
opens a model directory), so a child starts with no thread pools and no open gallery files, like
a fresh `enroll.py`, and then runs the tools' own `main` functions.

Protocol, one JSON object per line: on stdin a job {"tool": "enroll"|"identify"|"finetune", "runs": [[args...]],
"until": path or null, "out": path}; on stdout "pid N" when its child started, and "exit N CODE"
when a child ended (CODE -9 for SIGKILL). A child writes the tools' stdout to `out` and their
stderr to `out` + ".err"; its exit code is 0 when every run exited 0.
"""
from __future__ import annotations

import json
import os
import select
import sys

import click
import cv2  # noqa: F401
import faiss  # noqa: F401

try:  # the [train] extra: absent from the core install, where the forked runs do not need it
    import facenet_pytorch  # noqa: F401
    import torch  # noqa: F401
except ImportError:
    pass

import gallery.faiss_store  # noqa: F401
import recognizer.training.run  # noqa: F401
import recognizer.recognizer  # noqa: F401
from recognizer.cli import enroll, finetune, identify


def run_child(job: dict) -> int:
    out = os.open(job["out"], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    err = os.open(job["out"] + ".err", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.dup2(out, 1)
    os.dup2(err, 2)
    tool = {"enroll": enroll, "identify": identify, "finetune": finetune}[job["tool"]]
    failures = 0
    runs = 0
    while True:
        for args in job["runs"]:
            runs += 1
            try:
                tool.main(args, standalone_mode=False)
            except click.ClickException as exc:
                exc.show()
                failures += 1
            except SystemExit as exc:
                failures += exc.code != 0
            except BaseException as exc:  # a bug: report it loudly
                print(f"UNEXPECTED {type(exc).__name__}: {exc}", file=sys.stderr)
                failures += 1
            sys.stdout.flush()
            sys.stderr.flush()
        if not job.get("until") or os.path.exists(job["until"]):
            break
    print(f"runs {runs} failures {failures}", file=sys.stderr)
    sys.stderr.flush()
    return 0 if failures == 0 else 1


def main() -> None:
    print("ready", flush=True)
    children: set[int] = set()
    stdin_open = True
    while stdin_open or children:
        if stdin_open and select.select([sys.stdin], [], [], 0.02)[0]:
            line = sys.stdin.readline()
            if not line:
                stdin_open = False
                continue
            job = json.loads(line)
            sys.stdout.flush()
            pid = os.fork()
            if pid == 0:
                code = 1
                try:
                    code = run_child(job)
                finally:
                    os._exit(code)
            children.add(pid)
            print(f"pid {pid}", flush=True)
        elif not stdin_open:
            select.select([], [], [], 0.02)
        for pid in list(children):
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                children.discard(pid)
                code = -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)
                print(f"exit {pid} {code}", flush=True)


if __name__ == "__main__":
    main()

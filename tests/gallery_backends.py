"""The gallery backends the contract tests run against, and where each keeps a test gallery.

FAISS and Milvus Lite always; a real Milvus server too when FACETOOL_TEST_MILVUS=milvus://HOST:PORT
names one (.ci/milvus-netns.sh starts the embedded server in a loopback-only network namespace and
sets it). Each test gets its own collection on that server.
"""
from __future__ import annotations

import importlib.util
import os
import uuid
from pathlib import Path

import pytest

__all__ = ["BACKENDS", "MILVUS_LITE", "MILVUS_SERVER", "SERVER_ENV", "gallery_spec", "server_uri"]

MILVUS_LITE = "milvus-lite"
MILVUS_SERVER = "milvus-server"
SERVER_ENV = "FACETOOL_TEST_MILVUS"


def server_uri() -> str | None:
    """milvus://HOST:PORT of the test server, or None."""
    uri = os.environ.get(SERVER_ENV, "").strip().rstrip("/")
    return uri or None


def _missing() -> list[str]:
    return [m for m in ("pymilvus", "milvus_lite") if importlib.util.find_spec(m) is None]


def _milvus_lite_param() -> object:
    if _missing():  # requirements.txt installs both; only a platform without their wheels lacks them
        return pytest.param(MILVUS_LITE, marks=pytest.mark.skip(
            reason=f"{' and '.join(_missing())} not installed (no wheel for this platform?)"))
    return MILVUS_LITE


def _milvus_server_param() -> object:
    if server_uri() is None:
        return pytest.param(MILVUS_SERVER, marks=pytest.mark.skip(
            reason=f"no Milvus server: set {SERVER_ENV}=milvus://HOST:PORT (.ci/milvus-netns.sh starts one)"))
    if importlib.util.find_spec("pymilvus") is None:
        return pytest.param(MILVUS_SERVER, marks=pytest.mark.skip(reason="pymilvus not installed"))
    return MILVUS_SERVER


BACKENDS = ["faiss", _milvus_lite_param(), _milvus_server_param()]


def gallery_spec(backend: str, tmp_path: Path, name: str = "g") -> str | Path:
    """What create_gallery/open_gallery take for a gallery of this backend under tmp_path (on the
    server: a collection of its own)."""
    if backend == MILVUS_LITE:
        return f"milvus-lite:{tmp_path / name}.db"
    if backend == MILVUS_SERVER:
        return f"{server_uri()}/t_{uuid.uuid4().hex[:12]}_{name}"
    return tmp_path / name

"""The gallery backends the contract tests run against, and where each keeps a test gallery."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

MILVUS_LITE = "milvus-lite"


def _milvus_lite_param() -> object:
    missing = [m for m in ("pymilvus", "milvus_lite") if importlib.util.find_spec(m) is None]
    if missing:  # requirements.txt installs both; only a platform without their wheels lacks them
        return pytest.param(MILVUS_LITE, marks=pytest.mark.skip(
            reason=f"{' and '.join(missing)} not installed (no wheel for this platform?)"))
    return MILVUS_LITE


BACKENDS = ["faiss", _milvus_lite_param()]


def gallery_spec(backend: str, tmp_path: Path, name: str = "g") -> str | Path:
    """What create_gallery/open_gallery take for a gallery of this backend under tmp_path."""
    if backend == MILVUS_LITE:
        return f"milvus-lite:{tmp_path / name}.db"
    return tmp_path / name

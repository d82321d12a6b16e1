"""Shared fixtures. Models are built once per session: MTCNN and the backbones take seconds."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from recognizer.data import data_dir  # noqa: E402

DATA = data_dir()


def pytest_configure(config):
    # Keep test runs from writing into the user's real caches.
    os.environ.setdefault("FACETOOL_CACHE", str(ROOT / ".cache" / "test-facetool"))


@pytest.fixture(scope="session")
def data() -> Path:
    if not (DATA / "5-celebrity-faces").is_dir():
        pytest.fail(f"sample photos not found under {DATA}; set FACES_DATA to the shared data folder")
    return DATA


@pytest.fixture(scope="session")
def detector():
    from recognizer.detect import Detector

    return Detector()


@pytest.fixture(scope="session")
def sface():
    from recognizer.embed import SFaceEmbedder

    return SFaceEmbedder()


@pytest.fixture(scope="session")
def crop_cache():
    """The same cache the CLIs use under test (FACETOOL_CACHE), so each photo is detected once."""
    from recognizer.cache import CropCache

    return CropCache()


@pytest.fixture(scope="session")
def sface_pipeline(detector, sface, crop_cache):
    from recognizer.pipeline import FacePipeline

    return FacePipeline(detector, sface, crop_cache)

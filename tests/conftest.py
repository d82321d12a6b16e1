"""Shared fixtures. Models are built once per session: MTCNN and the backbones take seconds."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

from recognizer.sample_data import data_dir

ROOT = Path(__file__).resolve().parent.parent

# `make test` runs few generated examples, derandomized so CI is reproducible;
# HYPOTHESIS_PROFILE=long runs many more, with fresh random examples each time.
_HEALTH = [HealthCheck.too_slow, HealthCheck.function_scoped_fixture, HealthCheck.data_too_large]
settings.register_profile("default", max_examples=25, deadline=None, derandomize=True, database=None,
                          suppress_health_check=_HEALTH, print_blob=True)
settings.register_profile("long", max_examples=500, deadline=None, database=None,
                          suppress_health_check=_HEALTH, print_blob=True)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))

DATA = data_dir()


def pytest_configure(config):
    # Keep test runs from writing into the user's real caches.
    os.environ.setdefault("FACETOOL_CACHE", str(ROOT / ".cache" / "test-facetool"))
    # finetune.py calibrates new embeddings on a stranger cohort; the real one (2,675 photos) is
    # for benchmarks/calibrate_fpir.py, a small folder of people keeps the suite fast.
    os.environ.setdefault("FACETOOL_COHORT", str(DATA / "deepface-test-dataset" / "people"))
    # As the command-line tools do (recognizer.cli._options.passive_openmp, which says why), before
    # any test imports torch; the servers and CLI processes the suite starts inherit it.
    from recognizer.cli._options import passive_openmp

    passive_openmp()


@pytest.fixture(scope="session", autouse=True)
def one_torch_thread():
    # The suite starts servers and CLI processes beside itself; with two threads each on two
    # cores, OpenMP's spinning threads made MTCNN up to 20x slower. One thread per process is
    # steady and costs little here. The core install has no torch: nothing to set there.
    try:
        import torch
    except ImportError:
        yield
        return

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def data() -> Path:
    if not (DATA / "5-celebrity-faces").is_dir():
        pytest.fail(f"sample photos not found under {DATA}; set FACES_DATA to the shared data folder")
    return DATA


@pytest.fixture(scope="session")
def detector():
    from recognizer.detection.mtcnn import Detector

    return Detector()


@pytest.fixture(scope="session")
def sface():
    from recognizer.embedding.backbones import SFaceEmbedder

    return SFaceEmbedder()


@pytest.fixture(scope="session")
def facenet_random():
    """Inception-ResNet-v1 with seeded random weights: the VGGFace2 file cannot be had here."""
    from recognizer.embedding.backbones import FacenetEmbedder

    return FacenetEmbedder("random", batch_size=8)


@pytest.fixture(scope="session")
def crop_cache():
    """The same cache the CLIs use under test (FACETOOL_CACHE), so each photo is detected once."""
    from recognizer.cache import CropCache

    return CropCache()


@pytest.fixture(scope="session")
def sface_pipeline(detector, sface, crop_cache):
    from recognizer.pipeline import FacePipeline

    return FacePipeline(detector, sface, crop_cache)


# ---- reliability tests: processes ---------------------------------------------------------

PEOPLE = ["alex_lacamoire", "joe_biden", "kit_harington", "lin_manuel_miranda", "rose_leslie"]


@pytest.fixture(scope="session")
def folders(data, sface_pipeline):
    """Five people's folders, with the CLIs' crop cache warmed so a run is mostly saving, not MTCNN."""
    out = [data / "face_recognition-examples/people" / p for p in PEOPLE]
    for _ in sface_pipeline.analyze_many([f for d in out for f in sorted(d.iterdir())]):
        pass
    return out


@pytest.fixture
def fast_open(monkeypatch, detector, sface):
    """Recognizer.open in this process reuses the session's MTCNN and SFace (checks stay the same)."""
    monkeypatch.setattr("recognizer.view.Detector", lambda settings: detector)
    monkeypatch.setattr("recognizer.view.make_embedder", lambda backbone, *a, **kw: sface)


@pytest.fixture(scope="session")
def forkserver():
    """A warm process forking enroll.py / identify.py runs (see tests/forkserver.py)."""
    from reliability_util import ForkServer

    fs = ForkServer()
    yield fs
    fs.close()

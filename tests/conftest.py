"""Shared fixtures. Models are built once per session: MTCNN and the backbones take seconds."""
from __future__ import annotations

import os
from importlib.util import find_spec
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


# Tests that need an extra (issue 26), by node id prefix; they get its marker, and the core-only
# venv (`make test-core`) deselects them with -m "not (train or milvus or ray)". A test marked in its
# own file (@pytest.mark.train) needs no line here. Files that import an extra at the top are not
# even collected where it is missing.
_NEEDS_EXTRA = {
    "train": (
        "tests/test_weights.py", "tests/test_facenet.py", "tests/test_finetune.py", "tests/test_evaluate.py",
        "tests/test_migration.py", "tests/test_model_lifecycle.py", "tests/test_reliability_finetune.py",
        "tests/test_archive.py::test_import_into_another_backbone_reembeds_every_face_from_its_chip",
        "tests/test_build_lease.py::test_reembed_in_another_process_survives_a_commit_meanwhile",
        "tests/test_cluster.py::test_cluster_enrolled_faces_are_reembedded_from_their_chips",
        "tests/test_combine.py::test_combined_is_at_least_the_better_decider_on_celebrity_val",
        "tests/test_detection_recall.py::test_candidate_crops_equal_torch_area_resampling",
        "tests/test_detection_recall.py::test_thread_count_is_set_in_the_detecting_thread_only",
        "tests/test_determinism.py::test_same_photo_same_result_alone_in_a_folder_as_bytes_on_any_thread_count[facenet",
        "tests/test_face_stores.py::test_removal_after_a_finetune_leaves_nothing_of_the_person",
        "tests/test_hardening.py::test_removal_clears_crop_and_trunk_caches_on_every_path",
        "tests/test_hardening.py::test_full_disk_during_finetune_is_one_line_and_keeps_the_old_model",
        "tests/test_reliability_crash.py::test_killed_finetune_leaves_a_model_that_loads_with_every_enrolment",
        "tests/test_reliability_privacy.py::test_model_directory_is_owner_only",
        "tests/test_reliability_privacy.py::test_removing_a_person_leaves_no_trace_in_the_model_directory",
        "tests/test_startup.py::test_enroll_and_identify_with_an_existing_model_import_no_torch[facenet]",
        "tests/test_startup.py::test_onnx_networks_equal_torch_networks_on_the_recall_photos",
    ),
    "milvus": ("tests/test_gallery_crash.py::test_milvus_lite",
               "tests/test_reliability_privacy.py::test_removal_through_a_milvus_gallery"),
    "ray": ("tests/test_bulk.py",),
}
_IMPORTS_EXTRA = {"test_weights.py": "torch"}
collect_ignore = [f for f, module in _IMPORTS_EXTRA.items() if find_spec(module) is None]


def pytest_collection_modifyitems(config, items):
    for item in items:
        node = item.nodeid
        for extra, prefixes in _NEEDS_EXTRA.items():
            # Milvus-backed parametrizations of the gallery contract tests, wherever they are.
            if node.startswith(prefixes) or (extra == "milvus" and "[milvus" in node):
                item.add_marker(getattr(pytest.mark, extra))


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

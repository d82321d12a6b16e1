"""Milvus Lite paths (issue #25, "decide and document"): a `--gallery milvus-lite:PATH.db` that names an existing
directory which is not a Milvus Lite gallery is refused before anything is created or changed in or beside it (a
read never changes a user's directory), and a clean identify.py leaves no in-use marker, so the next open does not
take the after-a-crash path."""
from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from facecore.errors import GalleryError

pytest.importorskip("milvus_lite", reason="Milvus Lite cannot run on this platform")
ROOT = Path(__file__).resolve().parent.parent


def snapshot(parent: Path) -> dict[str, tuple]:
    """Every path under `parent` with its mode and size."""
    return {str(p.relative_to(parent)): (stat.S_IMODE(p.stat().st_mode), p.is_dir() or p.stat().st_size)
            for p in [parent, *parent.rglob("*")]}


@pytest.fixture
def users_folder(tmp_path) -> Path:
    d = tmp_path / "holiday.db"  # a user's folder that happens to end in .db
    d.mkdir()
    (d / "notes.txt").write_text("not faces")
    os.chmod(d, 0o755)
    return d


def test_reading_a_users_directory_changes_nothing(tmp_path, users_folder):
    from gallery import open_gallery

    before = snapshot(tmp_path)
    with pytest.raises(GalleryError, match="not a Milvus Lite gallery") as exc:
        open_gallery(f"milvus-lite:{users_folder}")
    assert str(users_folder) in str(exc.value)
    assert snapshot(tmp_path) == before


def test_creating_a_gallery_in_a_users_directory_is_refused(tmp_path, users_folder):
    from gallery import create_gallery

    before = snapshot(tmp_path)
    with pytest.raises(GalleryError, match="not a Milvus Lite gallery"):
        create_gallery(f"milvus-lite:{users_folder}", model_id="m", dim=4, exist_ok=True)
    assert snapshot(tmp_path) == before


def test_a_clean_identify_leaves_no_in_use_marker(tmp_path, data, fast_open):
    from gallery.milvus_store import INUSE_SUFFIX
    from recognizer.recognizer import Recognizer

    db = tmp_path / "faces.db"
    uri = f"milvus-lite:{db}"
    model = tmp_path / "model"
    with Recognizer.open(model, backbone="sface", create=True, gallery=uri) as rec:
        assert rec.enroll("Kit", sorted((data / "face_recognition-examples/people/kit_harington").iterdir())).added == 3
    marker = Path(str(db) + INUSE_SUFFIX)
    assert not marker.exists()
    photo = data / "face_recognition-examples/people/kit_harington/knn_test__johnsnow_test1.jpg"
    res = subprocess.run([sys.executable, str(ROOT / "identify.py"), "--model", str(model), "--gallery", uri, str(photo)],
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    assert ": Kit" in res.stdout
    assert not marker.exists(), "identify.py exited cleanly but left the in-use marker"

"""Milvus galleries with writers that die or run on several machines, and models that remember their gallery.

Runs on Milvus Lite, and on a real Milvus server when FACETOOL_TEST_MILVUS=milvus://HOST:PORT is set
(.ci/milvus-netns.sh). A "machine" is a process with its own cache directory (so its own lock files)
and its own spelling of the server's address.
"""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

import gallery
from gallery import FaceRecord, create_gallery, open_gallery
from gallery_backends import BACKENDS, MILVUS_SERVER, gallery_spec, server_uri

pytestmark = pytest.mark.milvus

ROOT = Path(__file__).resolve().parents[1]
MODEL = "writers-model"
DIM = 16
FR = "face_recognition-examples/people"


def faces(seed: int, n: int) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((n, DIM)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def recs(person: str, n: int, tag: str = "") -> list[FaceRecord]:
    return [FaceRecord(person, f"{person}/{tag}{j}.jpg", f"h-{person}-{tag}{j}", (0, 0, 1, 1)) for j in range(n)]


# Killed "after Milvus accepted it": the faces are stored, the process dies before it finishes the change.
KILLED_ADD = """
import os, signal, sys
import numpy as np
from gallery import FaceRecord, open_gallery
from gallery.milvus_store import MilvusGallery
MilvusGallery._end = lambda *a, **k: os.kill(os.getpid(), signal.SIGKILL)
x = np.random.default_rng(7).standard_normal((4, {dim})).astype(np.float32)
g = open_gallery({spec!r}, {model!r})
g.add(x, [FaceRecord("Ada", "Ada/%d.jpg" % j, "h-Ada-%d" % j, (0, 0, 1, 1)) for j in range(4)], model_id={model!r})
"""


def other_machine(cache: Path) -> dict[str, str]:
    """The environment of a process on another machine (its own lock files), running the code this test runs."""
    code = str(Path(gallery.__file__).resolve().parents[1])
    return {**os.environ, "XDG_CACHE_HOME": str(cache), "PYTHONPATH": os.pathsep.join([code, os.environ.get("PYTHONPATH", "")])}


@pytest.mark.parametrize("backend", BACKENDS[1:])
def test_an_add_killed_after_milvus_accepted_it_is_kept_and_a_rerun_says_so(tmp_path: Path, backend: str) -> None:
    spec = gallery_spec(backend, tmp_path)
    create_gallery(spec, MODEL, DIM).close()
    run = subprocess.run([sys.executable, "-c", KILLED_ADD.format(spec=str(spec), model=MODEL, dim=DIM)], cwd=tmp_path,
                         env=other_machine(tmp_path / "machine-a"), capture_output=True, text=True, timeout=120)
    assert run.returncode == -signal.SIGKILL, run.stderr
    x = np.random.default_rng(7).standard_normal((4, DIM)).astype(np.float32)
    g = open_gallery(spec, MODEL)  # a reader: what it lists is what is stored
    try:
        assert g.people() == {"Ada": 4} and len(g) == 4 and len(g.records("Ada")) == 4
        # The rerun of the same enrolment: nothing to add, and truly so (the faces are there).
        assert all(g.has_content("Ada", f"h-Ada-{j}") for j in range(4))
        assert g.add(x, recs("Ada", 4), model_id=MODEL) == []
        # The next, unrelated write keeps them.
        g.add(faces(8, 1), recs("Bob", 1), model_id=MODEL)
        assert g.people() == {"Ada": 4, "Bob": 1} and len(g) == 5
        assert g.search(x[:1] / np.linalg.norm(x[:1]), 1, model_id=MODEL)[0][0].person == "Ada"
    finally:
        g.close()
    with open_gallery(spec, MODEL) as again:
        assert again.people() == {"Ada": 4, "Bob": 1}


WRITER = """
import numpy as np
from gallery import FaceRecord, open_gallery
g = open_gallery({spec!r}, {model!r})
for i in range({n}):
    x = np.random.default_rng({seed} * 1000 + i).standard_normal((3, {dim})).astype(np.float32)
    recs = [FaceRecord("{prefix}%d" % i, "s%d.jpg" % j, "h%d-%d" % (i, j), (0, 0, 1, 1)) for j in range(3)]
    # every writer also enrols the same shared person from the same photos
    recs[2] = FaceRecord("shared", "shared%d.jpg" % (i % 4), "shared-h%d" % (i % 4), (0, 0, 1, 1))
    g.add(x, recs, model_id={model!r})
print("done")
"""


def test_writers_on_two_machines_lose_nothing_and_duplicate_nothing(tmp_path: Path) -> None:
    """Two writers, each on its own "machine" (its own lock directory, its own spelling of the
    server's address), adding at once: every face kept once, the counts true."""
    if server_uri() is None:
        pytest.skip("needs a Milvus server: set FACETOOL_TEST_MILVUS=milvus://HOST:PORT (.ci/milvus-netns.sh)")
    spec = str(gallery_spec(MILVUS_SERVER, tmp_path))
    create_gallery(spec, MODEL, DIM).close()
    spellings = [spec.replace("127.0.0.1", "localhost"), spec.replace("localhost", "127.0.0.1")]
    n = 12
    procs = [subprocess.Popen([sys.executable, "-c", WRITER.format(spec=s, model=MODEL, seed=seed, n=n, dim=DIM,
                                                                   prefix=prefix)],
                              cwd=tmp_path, env=other_machine(tmp_path / f"machine-{prefix}"), stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
             for s, seed, prefix in zip(spellings, (1, 2), "ab")]
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [o[1][-2000:] for o in outs]
    with open_gallery(spec, MODEL) as g:
        want = {**{f"{p}{i}": 2 for p in "ab" for i in range(n)}, "shared": 4}
        assert g.people() == dict(sorted(want.items()))
        records = g.records()
        assert len(records) == len(g) == sum(want.values())
        assert len({r.id for r in records}) == len(records)
        assert len({(r.person, r.content_hash) for r in records}) == len(records)
        # each writer's faces are its own vectors, none overwritten by the other's
        ids, vecs = g.vectors()
        by_id = dict(zip(ids.tolist(), vecs))
        for r in records:
            if r.person != "shared":
                prefix, i = r.person[0], int(r.person[1:])
                x = np.random.default_rng((1 if prefix == "a" else 2) * 1000 + i).standard_normal((3, DIM))
                j = int(r.content_hash.rsplit("-", 1)[1])
                np.testing.assert_allclose(by_id[r.id], x[j] / np.linalg.norm(x[j]), atol=1e-5)


def test_one_server_one_lock_whatever_the_spelling() -> None:
    from gallery.milvus_store import canonical, parse

    assert parse("milvus://localhost:19530/faces") == parse("milvus://127.0.0.1:19530/faces")
    assert canonical("milvus://LocalHost:19530/faces") == "milvus://127.0.0.1:19530/faces"


def test_credentials_are_refused_in_the_uri_and_named_in_the_error() -> None:
    from facecore.errors import GalleryError
    from gallery.milvus_store import parse

    with pytest.raises(GalleryError, match="MILVUS_TOKEN"):
        parse("milvus://root:secret@127.0.0.1:19530/faces")


def test_the_model_remembers_its_gallery_and_never_answers_from_an_empty_local_one(tmp_path: Path, data: Path) -> None:
    """--gallery given once (at enrolment) is recorded in model.json; identify without it answers
    from that gallery; a model whose gallery cannot be reached fails with one line."""
    from recognizer.cli import enroll, identify

    model, db = tmp_path / "m", f"milvus-lite:{tmp_path / 'faces.db'}"
    photos = sorted((data / FR / "kit_harington").iterdir())
    res = CliRunner().invoke(enroll.main, ["--model", str(model), "--backbone", "sface", "--name", "Kit",
                                           str(data / FR / "kit_harington"), "--gallery", db, "--json"])
    assert res.exit_code == 0, res.output
    res = CliRunner().invoke(identify.main, ["--model", str(model), str(photos[0]), "--json"])
    assert res.exit_code == 0, res.output
    assert '"Kit"' in res.output  # found in the Milvus gallery, not the empty local one
    res = CliRunner().invoke(identify.main, ["--model", str(model), str(photos[0]), "--gallery",
                                             f"milvus-lite:{tmp_path / 'other.db'}", "--json"])
    assert res.exit_code != 0 and "faces.db" in res.output and "Traceback" not in res.output
    for p in (tmp_path / "faces.db").parent.glob("faces.db*"):  # the gallery gone: a clear error, no answer
        os.rename(p, p.with_name("moved-" + p.name))
    res = CliRunner().invoke(identify.main, ["--model", str(model), str(photos[0]), "--json"])
    assert res.exit_code != 0 and "faces.db" in res.output and '"Kit"' not in res.output
    assert "Traceback" not in res.output and len(res.output.strip().splitlines()) == 1, res.output
    cfg = json.loads((model / "model.json").read_text())
    assert cfg["gallery_uri"] == db
    (model / "model.json").write_text(json.dumps({**cfg, "gallery_uri": "milvus://127.0.0.1:1/faces"}))
    res = CliRunner().invoke(identify.main, ["--model", str(model), str(photos[0]), "--json"])  # no server there
    assert res.exit_code != 0 and "milvus://127.0.0.1:1/faces" in res.output and "MILVUS_TOKEN" in res.output
    assert "Traceback" not in res.output and len(res.output.strip().splitlines()) == 1, res.output


def test_a_build_refuses_a_model_whose_faces_are_in_milvus(tmp_path: Path) -> None:
    """Finetuning and re-embedding start from the model directory's own gallery: for a model whose
    faces are in Milvus they would start from its empty one, so they are refused, naming the gallery."""
    from facecore.errors import ModelError
    from recognizer.modeldir.config import ModelConfig
    from recognizer.modeldir.create import create_model_dir
    from recognizer.modeldir.rebuild import starting_point

    d, uri = tmp_path / "m", f"milvus-lite:{tmp_path / 'faces.db'}"
    assert create_model_dir(d, ModelConfig(backbone="sface", weights=None, model_id="x", dim=DIM, threshold=0.4,
                                           gallery_uri=uri))
    with pytest.raises(ModelError, match=re.escape(uri)):
        starting_point(d)

"""The README's commands (issue 28): the first screen's and the enroll/identify guide's run as written, in a
temporary folder laid out as they assume (photos/ada/, party.jpg ...: links to the sample photos), each exiting
0, leaving nothing behind in the checkout. Every other command of the README is either run here too or listed
below with the test that covers it or why no test can run it here; a new command the README gains without
either fails this test."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
CELEB = "5-celebrity-faces"

# What no test runs as written, by the command's start, and why (or which test covers the same job).
NOT_RUN_HERE = {
    "make demo": "the main job: CI's fresh clone runs it (and tests/test_demo* where present)",
    "make test": "the suite itself",
    "make bench": "a benchmark (figures in benchmarks/results/)",
    "python3 -m venv": "installing: needs the package index",
    ".venv/bin/pip install": "installing: needs the package index (make test-core checks the core install)",
    "export FACETOOL_TOKEN": "server set-up: tests/test_serve.py starts servers with a token",
    ".venv/bin/python serve.py": "a server: tests/test_serve.py and tests/test_web_routes.py",
    "H=": "curl set-up for a running server",
    "curl": "against a running server: the routes are driven by tests/test_serve.py, test_web_routes.py, "
            "test_correcting.py and test_cluster.py",
    ".venv/bin/python benchmarks/": "a benchmark (figures in benchmarks/results/)",
    ".venv/bin/python finetune.py": "training: tests/test_finetune.py, test_model_lifecycle.py (facenet needs the "
                                    "VGGFace2 weights, not to be had offline)",
    ".venv/bin/python evaluate.py": "tests/test_evaluate.py runs the same evaluations",
    "--unknown": "the second line of an evaluate.py command",
    ".venv/bin/python cluster.py": "tests/test_cluster.py",
    ".venv/bin/python enroll.py --model my-model --name \"Grace\" --cluster": "tests/test_cluster.py",
    ".venv/bin/python enroll.py --model my-model --name \"Ada\" --cluster": "tests/test_cluster.py",
    ".venv/bin/python enroll.py --model my-model --discard": "tests/test_cluster.py",
    ".venv/bin/python enroll.py --model my-model --export": "tests/test_archive.py",
    ".venv/bin/python enroll.py --model other-model --import": "tests/test_archive.py",
    ".venv/bin/python enroll.py --model fn-model": "tests/test_archive.py (facenet: random weights there)",
    ".venv/bin/python identify.py --model my-model clip.mp4": "tests/test_video.py",
    ".venv/bin/python identify.py --model my-model --camera": "needs a camera",
    ".venv/bin/python enroll.py   --model my-model --backbone sface --name Ada photos/ada/ --gallery milvus://":
        "a Milvus server: tests/test_milvus_writers.py (CI runs it against one)",
    ".venv/bin/python enroll.py   --model other-model --backbone sface --name Ada photos/ada/ --gallery milvus-lite":
        "tests/test_gallery.py and test_milvus_writers.py",
    ".venv/bin/python identify.py --model my-model photo.jpg": "the Milvus model above: tests/test_milvus_writers.py",
    ".venv/bin/python identify.py --model my-model archive/": "Ray: tests/test_bulk.py",
    ".venv/bin/python enroll.py   --model my-model --name Ada ada-photos.txt --ray": "Ray: tests/test_bulk.py",
    "ray start": "a Ray cluster: tests/test_bulk.py starts one",
    "scp": "copying Ray's token to another machine",
    "RAY_AUTH_MODE=token ray start": "a Ray cluster: tests/test_bulk.py starts one",
    ".venv/bin/python enroll.py --model my-model --backbone sface --name Ada photos/ada/   # a model to serve":
        "the server section's model: the same command as the guide's, run there",
}


def sh_blocks(text: str) -> list[str]:
    return re.findall(r"```(?:sh|bash)\n(.*?)```", text, re.S)


def commands(block: str) -> list[str]:
    return [ln.strip() for ln in block.splitlines() if ln.strip() and not ln.strip().startswith("#")]


def _section(text: str, heading: str) -> str:
    start = text.index(heading)
    nxt = re.search(r"^## ", text[start + len(heading):], re.M)
    return text[start:start + len(heading) + (nxt.start() if nxt else len(text))]


def run_here() -> list[list[str]]:
    """The blocks this test runs as written: the first screen's commands and the enroll/identify guide's."""
    text = README.read_text(encoding="utf-8")
    first = [commands(b) for b in sh_blocks(_section(text, "## Start here"))]
    guide = [commands(b) for b in sh_blocks(_section(text, "## Enroll and identify"))][:1]
    return [c for c in first if not c[0].startswith("make ")] + guide


def _layout(tmp: Path, data: Path) -> None:
    """What the README's commands assume: Ada's and Grace's folders, more photos of Ada, a folder of people,
    a group photo and a folder of photos (links to the sample photos), and `.venv/bin/python` with the
    scripts beside it."""
    train = sorted((data / CELEB / "train" / "madonna").iterdir())
    links = {"photos/ada": data / CELEB / "val" / "madonna", "photos/grace": data / CELEB / "val" / "mindy_kaling",
             "ada1.jpg": train[0], "ada2.jpg": train[1], "people/elton": data / CELEB / "val" / "elton_john",
             "party.jpg": data / "face_recognition-examples/group/barack_obama+joe_biden__two_people.jpg",
             "more-photos/kit_with_rose.jpg": data / "face_recognition-examples/group/kit_harington+rose_leslie__kit_with_rose.jpg"}
    links |= {f"more-of-ada/{p.name}": p for p in train[2:5]} | {f"people/linus/{p.name}": p for p in train[5:8]}
    for name, target in links.items():
        (tmp / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp / name).symlink_to(target)
    (tmp / ".venv/bin").mkdir(parents=True)
    python = tmp / ".venv/bin/python"
    python.write_text(f'#!/bin/sh\nexec "{sys.executable}" "$@"\n')
    python.chmod(0o755)
    for script in ("enroll.py", "identify.py"):
        (tmp / script).symlink_to(ROOT / script)


def _untracked() -> set[str]:
    """Files git does not track in the checkout (ignored ones too), less the test run's own crop cache."""
    out = subprocess.run(["git", "status", "--porcelain", "--untracked-files=all", "--ignored"], cwd=ROOT,
                         capture_output=True, text=True)
    return {ln for ln in out.stdout.splitlines() if ".cache/" not in ln} if out.returncode == 0 else set()


@pytest.mark.parametrize("block", range(len(run_here())), ids=lambda i: ["start-here", "guide"][min(i, 1)])
def test_readme_commands_run_as_written(block, data, tmp_path):
    before = _untracked()
    work = tmp_path / "work"
    work.mkdir()
    _layout(work, data)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "FACETOOL_CACHE": os.environ.get("FACETOOL_CACHE", str(tmp_path / "cache"))}
    for cmd in run_here()[block]:
        got = subprocess.run(["bash", "-c", cmd], cwd=work, env=env, capture_output=True, text=True, timeout=300)
        assert got.returncode == 0, f"README command failed: {cmd}\n{got.stdout[-2000:]}\n{got.stderr[-3000:]}"
    assert (work / "my-model" / "model.json").is_file()
    assert _untracked() == before, "the README's commands left files in the checkout"


def test_guide_commands_do_what_the_readme_says(data, tmp_path):
    """The guide's corrections land where it says: face 9 (Grace's) moves to Ada, face 8 leaves, linus merges
    into Ada, Grace is renamed and elton removed; the identify writes annotated copies."""
    import json

    work = tmp_path / "work"
    work.mkdir()
    _layout(work, data)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    outs = {}
    for cmd in run_here()[-1]:
        got = subprocess.run(["bash", "-c", cmd], cwd=work, env=env, capture_output=True, text=True, timeout=300)
        assert got.returncode == 0, (cmd, got.stderr[-2000:])
        outs[cmd] = got.stdout
    listing = subprocess.run([str(work / ".venv/bin/python"), "enroll.py", "--model", "my-model", "--list", "--json"],
                             cwd=work, env=env, capture_output=True, text=True)
    people = json.loads(listing.stdout)["people"]
    assert set(people) == {"Ada", "Grace Hopper"}, people
    assert people["Ada"] == 5 + 5 + 3 + 1 and people["Grace Hopper"] == 5 - 2  # Ada: photos, files, linus, face 9
    assert sorted(p.name for p in (work / "annotated").rglob("*.png")) == ["kit_with_rose.png", "party.png"]


def test_every_readme_command_is_run_or_accounted_for():
    text = README.read_text(encoding="utf-8")
    run = {c for block in run_here() for c in block}
    missing = [c for b in sh_blocks(text) for c in commands(b)
               if c not in run and not any(c.startswith(k) for k in NOT_RUN_HERE)]
    assert not missing, f"README commands neither run by a test nor accounted for: {missing}"

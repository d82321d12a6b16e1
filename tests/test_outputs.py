"""Issue 25, outputs and special files: every file the tool writes on a user's behalf (annotated
photos and videos, contact sheets, cluster sheets and index, bulk JSON lines, exports) is never an
input nor inside an input folder, is distinct from the run's other outputs, and replaces an
existing file only when that file is provably the tool's own, checked before any byte changes;
a FIFO, device or socket given to any reader is refused by name, never opened.

Each test is a hostile tester's finding on an older commit (or a case next to one).
"""
from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

FR = "face_recognition-examples/people"
VH = "video-hamilton"
CLIP = "short_hamilton_clip.mp4"
VIDEO = ["--seconds", "0.3", "--fps", "2"]  # a few frames: the tests are about where the drawing goes


class Expired(Exception):
    """Not an OSError (TimeoutError is one, and readers catch those)."""


@contextlib.contextmanager
def deadline(seconds: int):
    """Fail (rather than hang) when the body takes longer than `seconds`: an open() of a FIFO blocks."""
    def expired(signum, frame):
        raise Expired(f"still running after {seconds} s")

    old = signal.signal(signal.SIGALRM, expired)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def snapshot(folder: Path) -> dict[str, str]:
    """Every file below `folder` (hidden ones too) and the SHA-256 of its bytes."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def model(tmp_path_factory, data, detector, sface, crop_cache):
    """A model with Obama enrolled (opened in this process with the session's networks)."""
    import recognizer.recognizer as rr

    root = tmp_path_factory.mktemp("outputs")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr("recognizer.view.Detector", lambda settings: detector)
        mp.setattr("recognizer.view.make_embedder", lambda backbone, *a, **kw: sface)
        rec = rr.Recognizer.open(root / "model", backbone="sface", create=True, cache=crop_cache)
        rec.enroll("Obama", sorted((data / FR / "barack_obama").glob("*.jp*g"))[:2])
        rec.close()
    return root / "model"


def run(main, args, cwd: Path | None = None):
    with contextlib.chdir(cwd) if cwd else contextlib.nullcontext():
        res = CliRunner().invoke(main, [str(a) for a in args])
    assert "Traceback" not in res.output, res.output
    return res


def identify(args, cwd: Path | None = None):
    from recognizer.cli import identify as cmd

    return run(cmd.main, args, cwd)


def photos(data: Path, folder: Path, n: int = 2) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for src in sorted((data / FR / "joe_biden").glob("*.jp*g"))[:n]:
        shutil.copy(src, folder / src.name)
        out.append(folder / src.name)
    return out


# ---- annotated videos and contact sheets --------------------------------------------------------


def test_annotate_never_replaces_the_input_video(model, data, fast_open, tmp_path):
    """`identify.py M clip.mp4 --annotate clip.mp4` replaced the video (exit 0): the photo path refused it,
    the video path had no check."""
    clip = tmp_path / "in" / "clip.mp4"
    clip.parent.mkdir()
    shutil.copy(data / VH / CLIP, clip)
    before = snapshot(tmp_path / "in")
    for target in (clip, tmp_path / "in" / ".." / "in" / "clip.mp4"):  # and by another spelling of its path
        res = identify(["--model", model, clip, "--annotate", target, *VIDEO])
        assert res.exit_code != 0 and "is an input" in res.output and "clip.mp4" in res.output, res.output
    assert snapshot(tmp_path / "in") == before


def test_annotate_never_writes_a_video_inside_the_input_folder(model, data, fast_open, tmp_path):
    """With a folder input, `--annotate FOLDER/new.mp4` was written inside the input folder; also given
    relatively, and with the folder's name in another case."""
    folder = tmp_path / "in"
    folder.mkdir()
    shutil.copy(data / VH / CLIP, folder / "clip.mp4")
    before = snapshot(folder)
    for target in (folder / "new.mp4", Path("in/sub/../new.mp4"), tmp_path / "IN" / "new.mp4"):
        res = identify(["--model", model, folder, "--annotate", target, *VIDEO], cwd=tmp_path)
        assert res.exit_code != 0 and "input folder" in res.output, (target, res.output)
    assert snapshot(folder) == before and not (tmp_path / "IN").exists()


def test_contact_sheets_of_same_named_videos_are_kept_apart(model, data, fast_open, tmp_path):
    """`identify.py a/ b/ --annotate out/` with a/clip.mp4 and b/clip.mp4: one clip.tracks.jpg overwrote the other."""
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
        shutil.copy(data / VH / CLIP, tmp_path / folder / "clip.mp4")
    out = tmp_path / "out"
    res = identify(["--model", model, tmp_path / "a", tmp_path / "b", "--annotate", out, *VIDEO])
    assert res.exit_code == 0, res.output
    sheets = sorted(str(p.relative_to(out)) for p in out.rglob("*.tracks.jpg"))
    assert len(sheets) == 2, sheets
    # two files given directly, same name: apart too
    res = identify(["--model", model, tmp_path / "a" / "clip.mp4", tmp_path / "b" / "clip.mp4", "--annotate",
                    tmp_path / "out2", *VIDEO])
    assert res.exit_code == 0, res.output
    assert sorted(p.name for p in (tmp_path / "out2").glob("*.tracks.jpg")) == ["clip-2.tracks.jpg", "clip.tracks.jpg"]


def test_annotate_replaces_only_its_own_earlier_output(model, data, fast_open, tmp_path):
    """An existing file at the --annotate path is replaced only when the tool wrote it (and it is unchanged)."""
    (photo,) = photos(data, tmp_path / "in", 1)
    mine = tmp_path / "mine.png"
    mine.write_bytes(b"the user's own drawing")
    res = identify(["--model", model, photo, "--annotate", mine])
    assert res.exit_code != 0 and "mine.png" in res.output and "not an earlier" in res.output, res.output
    assert mine.read_bytes() == b"the user's own drawing"

    out = tmp_path / "annotated.png"
    for _ in range(2):  # the second run replaces the first run's file: it is the tool's own
        res = identify(["--model", model, photo, "--annotate", out])
        assert res.exit_code == 0, res.output
    drawn = out.read_bytes()
    out.write_bytes(drawn + b"edited")  # changed since: no longer provably the tool's own
    res = identify(["--model", model, photo, "--annotate", out])
    assert res.exit_code != 0 and "annotated.png" in res.output, res.output
    assert out.read_bytes() == drawn + b"edited"


def test_annotate_never_writes_over_an_input_through_a_link(model, data, fast_open, tmp_path):
    (photo,) = photos(data, tmp_path / "in", 1)
    before = snapshot(tmp_path / "in")
    (tmp_path / "sym.png").symlink_to(photo)
    os.link(photo, tmp_path / "hard.png")
    for target in (tmp_path / "sym.png", tmp_path / "hard.png"):
        res = identify(["--model", model, photo, "--annotate", target])
        assert res.exit_code != 0 and target.name in res.output, res.output
    assert snapshot(tmp_path / "in") == before


# ---- cluster sheets -------------------------------------------------------------------------------


def test_cluster_sheets_never_land_among_the_photos_nor_over_a_users_index(model, data, fast_open, tmp_path):
    """`cluster.py --model M DIR --out DIR`: an input photo named cluster-0001.png and the user's index.html
    were overwritten."""
    from recognizer.cli import cluster

    folder = tmp_path / "in"
    photos(data, folder, 3)
    shutil.copy(sorted((data / FR / "joe_biden").glob("*.jp*g"))[0], folder / "cluster-0001.png")
    (folder / "index.html").write_text("<p>my page</p>")
    before = snapshot(folder)
    res = run(cluster.main, ["--model", model, folder, "--out", folder])
    assert res.exit_code != 0 and "input" in res.output, res.output
    assert snapshot(folder) == before

    out = tmp_path / "sheets"
    out.mkdir()
    (out / "index.html").write_text("<p>my page</p>")
    res = run(cluster.main, ["--model", model, folder, "--out", out])
    assert res.exit_code != 0 and "index.html" in res.output, res.output
    assert (out / "index.html").read_text() == "<p>my page</p>" and not list(out.glob("cluster-*.png"))

    for _ in range(2):  # a fresh folder, then the same again: the tool's own files are replaced
        res = run(cluster.main, ["--model", model, folder, "--out", tmp_path / "fresh"])
        assert res.exit_code == 0, res.output
    assert (tmp_path / "fresh" / "index.html").is_file() and list((tmp_path / "fresh").glob("cluster-*.png"))


# ---- bulk JSON lines --------------------------------------------------------------------------------


@pytest.fixture
def no_ray(monkeypatch):
    """analyze_bulk without Ray: the same pipeline in this process (the tests are about the output file)."""
    from recognizer import bulk

    def local(rec, paths, **kw):
        for i, res in enumerate(rec.pipeline.analyze_many(paths, workers=1)):
            yield i, res, None

    monkeypatch.setattr(bulk, "analyze_bulk", local)
    monkeypatch.setattr(bulk, "_analyze", local)  # what identify_bulk/enroll_bulk call: no cluster to look for


def test_bulk_out_that_is_not_the_tools_is_refused_byte_identical(model, data, fast_open, no_ray, tmp_path):
    """`--ray --out notes.txt` (no final newline) was cut to its last newline before being refused; `--out
    blob.bin` (no newline at all) was emptied and overwritten, exit 0; `--out photo.jpg` (an input) truncated
    the photo."""
    import recognizer
    from recognizer import bulk
    from recognizer.image import load_photo

    inputs = photos(data, tmp_path / "in", 2)
    notes = tmp_path / "notes.txt"
    notes.write_bytes(b"first line of my notes\nsecond line, which has no newline at its end")
    blob = tmp_path / "blob.bin"
    blob.write_bytes(bytes(range(1, 10)) * 7)
    with recognizer.open(model) as rec:
        for out in (notes, blob, inputs[0]):
            before = out.read_bytes()
            with pytest.raises(recognizer.FaceToolError, match=str(out.name)):
                bulk.identify_bulk(rec, [tmp_path / "in"], out)
            assert out.read_bytes() == before
    load_photo(inputs[0])  # still decodes


def test_bulk_cli_out_refused_for_identify_and_enroll(model, data, fast_open, no_ray, tmp_path):
    from recognizer.cli import enroll, identify as ident

    folder = tmp_path / "in"
    photos(data, folder, 2)
    notes = tmp_path / "notes.txt"
    notes.write_bytes(b"61 bytes of notes, and the last line has no final newline ...")
    for main, args in ((ident.main, ["--model", model, folder, "--ray", "local", "--out", notes]),
                       (enroll.main, ["--model", model, "--name", "Joe", folder, "--ray", "local", "--out", notes])):
        res = run(main, args)
        assert res.exit_code != 0 and "notes.txt" in res.output, res.output
        assert notes.read_bytes() == b"61 bytes of notes, and the last line has no final newline ..."


def test_bulk_resume_checks_the_whole_file_then_cuts_a_torn_line(model, data, fast_open, no_ray, tmp_path):
    """The tool's own file (its header line first) resumes: a torn last line is cut, the rest is kept."""
    import recognizer
    from recognizer import bulk

    folder = tmp_path / "in"
    photos(data, folder, 2)
    out = tmp_path / "results.jsonl"
    with recognizer.open(model) as rec:
        whole = bulk.identify_bulk(rec, [folder], tmp_path / "whole.jsonl")
        assert whole.processed == 2
        lines = (tmp_path / "whole.jsonl").read_bytes().splitlines(keepends=True)
        assert len(lines) == 3  # the header, then one line per photo
        out.write_bytes(b"".join(lines[:2]) + lines[2][:15])  # killed in the middle of the second photo's line
        again = bulk.identify_bulk(rec, [folder], out)
        assert (again.done_before, again.processed) == (1, 1)
    assert out.read_bytes() == (tmp_path / "whole.jsonl").read_bytes()
    assert [r["photo"] for r in bulk.read_results(out)] == sorted(str(p) for p in folder.iterdir())


# ---- exports --------------------------------------------------------------------------------------


def test_export_never_replaces_a_users_file_nor_writes_into_the_model(model, fast_open, tmp_path):
    import recognizer
    from recognizer import archive

    mine = tmp_path / "faces.tar"
    mine.write_bytes(b"a tar file of my own")
    with recognizer.open(model) as rec:
        with pytest.raises(recognizer.FaceToolError, match="faces.tar"):
            archive.export_model(rec, mine)
        with pytest.raises(recognizer.FaceToolError, match="input folder"):
            archive.export_model(rec, model / "export.tar")
        for _ in range(2):
            archive.export_model(rec, tmp_path / "mine.tar")  # the second replaces the tool's own first
    assert mine.read_bytes() == b"a tar file of my own" and not (model / "export.tar").exists()
    assert archive.read_archive(tmp_path / "mine.tar")


# ---- special files: FIFO, device, socket ----------------------------------------------------------


def test_a_fifo_given_as_a_photo_is_refused_by_name_quickly(model, tmp_path):
    """`identify.py --model M fifo.jpg` hung (killed after 60 s). In a process of its own: a thread blocked
    in the open() of a FIFO cannot be stopped any other way."""
    import recognizer

    env = {**os.environ, "PYTHONPATH": str(Path(recognizer.__file__).resolve().parent.parent)}  # this code
    for name in ("fifo.jpg", "fifo.mp4"):
        fifo = tmp_path / name
        os.mkfifo(fifo)
        res = subprocess.run([sys.executable, "-c", "from recognizer.cli.identify import main; main()", "--model",
                              str(model), str(fifo)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
        assert res.returncode != 0 and name in res.stdout + res.stderr and "FIFO" in res.stdout + res.stderr, res


def test_a_fifo_in_a_folder_is_skipped_and_the_rest_identified(model, data, fast_open, tmp_path):
    folder = tmp_path / "in"
    photos(data, folder, 1)
    os.mkfifo(folder / "pipe.jpg")
    os.mkfifo(folder / "pipe.mp4")
    with deadline(60):
        res = identify(["--model", model, folder])
    assert res.exit_code == 0 and "1 face(s)" in res.output, res.output


def test_every_reader_refuses_special_files_by_name(tmp_path):
    from facecore.errors import FaceToolError
    from recognizer.archive import read_archive
    from recognizer.evaluation.verification import read_pairs
    from recognizer.image import read_bytes
    from recognizer.modeldir.config import load_config
    from recognizer.video.reader import VideoReader, is_video_input

    os.mkfifo(tmp_path / "clip.mp4")
    os.mkfifo(tmp_path / "faces.tar")
    (tmp_path / "m").mkdir()
    os.mkfifo(tmp_path / "m" / "model.json")
    os.mkfifo(tmp_path / "pairs.txt")
    with deadline(30):
        assert not is_video_input(tmp_path / "clip.mp4")
        for read, path in ((read_bytes, tmp_path / "clip.mp4"), (VideoReader, tmp_path / "clip.mp4"),
                           (read_archive, tmp_path / "faces.tar"), (load_config, tmp_path / "m"),
                           (lambda p: read_pairs(p, tmp_path), tmp_path / "pairs.txt"), (read_bytes, Path("/dev/null"))):
            with pytest.raises(FaceToolError) as err:
                read(path)
            assert str(path.name) in str(err.value) and ("FIFO" in str(err.value) or "device" in str(err.value))


# ---- the demo's folder ----------------------------------------------------------------------------


def test_demo_never_deletes_a_folder_that_is_not_an_earlier_demos(data, tmp_path):
    """`demo.py --out DIR` removed DIR whatever it held (shutil.rmtree) before writing the demo there."""
    import recognizer

    code = Path(recognizer.__file__).resolve().parent.parent
    mine = tmp_path / "my-folder"
    mine.mkdir()
    (mine / "notes.txt").write_text("mine")
    res = subprocess.run([sys.executable, str(code / "demo.py"), "--out", str(mine), "--backbone", "sface",
                          "--data", str(data)], cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(code)},
                         capture_output=True, text=True, timeout=60)
    assert res.returncode != 0 and "my-folder" in res.stderr, res.stderr[-2000:]
    assert (mine / "notes.txt").read_text() == "mine"


def test_demo_replaces_an_earlier_demos_folder(data, tmp_path):
    import demo
    from facecore.outputs import output_file

    out = tmp_path / "demo"
    with output_file(out / demo.RESULTS, [data]) as tmp:
        tmp.write_text("[]")
    (out / "model").mkdir()
    demo._clear_previous_demo(out, data)
    assert not out.exists()
    with pytest.raises(Exception, match="input"):
        demo._clear_previous_demo(data / FR, data)  # the sample photos are never the demo's folder


# ---- the ledger that proves a file the tool's own -------------------------------------------------


def test_ledger_survives_a_torn_line_and_a_foreign_one_is_never_written(tmp_path):
    from facecore.outputs import LEDGER, OutputError, is_ours, output_file

    folder = tmp_path / "out"
    for _ in range(2):
        with output_file(folder / "a.txt") as tmp:
            tmp.write_text("first")
    ledger = folder / LEDGER
    with open(ledger, "ab") as fh:
        fh.write(b'{"name": "b.t')  # a kill in the middle of an append
    with output_file(folder / "b.txt") as tmp:
        tmp.write_text("second")
    assert is_ours(folder / "a.txt") and is_ours(folder / "b.txt")
    (folder / "b.txt").write_text("edited by the user")
    assert not is_ours(folder / "b.txt")

    other = tmp_path / "other"
    other.mkdir()
    (other / LEDGER).write_text("my own notes that happen to have this name\n")
    (other / "a.txt").write_text("mine")
    for target in (other / "a.txt", other / "new.txt", other / LEDGER):
        with pytest.raises(OutputError, match=str(other)):
            with output_file(target) as tmp:
                tmp.write_text("x")
    assert snapshot(other) == {LEDGER: hashlib.sha256(b"my own notes that happen to have this name\n").hexdigest(),
                               "a.txt": hashlib.sha256(b"mine").hexdigest()}


def test_evaluation_report_never_lands_in_the_data_it_evaluates(model, data, fast_open, tmp_path):
    """`evaluate.py --out` inside DATA_DIR is refused by name before the evaluation runs."""
    from recognizer.cli import evaluate

    people = tmp_path / "people"
    photos(data, people / "Joe", 2)
    for src in sorted((data / FR / "barack_obama").glob("*.jp*g"))[:3]:
        shutil.copy(src, (people / "Obama").mkdir(exist_ok=True) or people / "Obama" / src.name)
    before = snapshot(people)
    res = run(evaluate.main, ["--model", model, people, "--out", people / "report", "--quiet"])
    assert res.exit_code != 0 and "input folder" in res.output and "report" in res.output, res.output
    assert snapshot(people) == before and not (people / "report").exists()

"""The public API (`import recognizer`): the README's example, run as written, and the facade's promises."""
from __future__ import annotations

import re
from pathlib import Path

import pytest
from PIL import Image

import recognizer

ROOT = Path(__file__).resolve().parent.parent
FR = "face_recognition-examples"


def readme_example() -> str:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("## Use from Python", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_readme_example_runs_as_written(data, fast_open, tmp_path, monkeypatch, capsys):
    # As written: run from a checkout with the sample photos at ../shared/data (a link to them here).
    (tmp_path / "shared").mkdir()
    (tmp_path / "shared" / "data").symlink_to(data)
    (tmp_path / "checkout").mkdir()
    monkeypatch.chdir(tmp_path / "checkout")
    exec(compile(readme_example(), "README.md", "exec"), {})
    out = capsys.readouterr().out.splitlines()
    assert out == ["['Joe Biden', 'Barack Obama']", "{'Barack Obama': 10, 'Joseph Biden': 2}", "no such person: Joe Biden"]
    # The comments in the README say what it prints.
    example = readme_example()
    assert "# ['Joe Biden', 'Barack Obama']" in example and "# {'Barack Obama': 10, 'Joseph Biden': 2}" in example
    assert (tmp_path / "checkout" / "my-model" / "model.json").is_file()


def test_facade_context_manager_errors_and_sources(data, fast_open, tmp_path):
    photos = sorted((data / FR / "people/joe_biden").iterdir())
    with pytest.raises(recognizer.ModelError):
        recognizer.open(tmp_path / "missing")
    with recognizer.create(tmp_path / "m", backbone="sface") as model:
        from_bytes = model.enroll("Biden", photos[0].read_bytes())  # one photo's bytes
        assert from_bytes.added == 1 and from_bytes.files[0].file == "<bytes>"
        again = model.enroll("Biden", photos[0])  # one path: the same file, so a duplicate
        assert again.added == 0 and again.files[0].status == "duplicate"
        from_pil = model.enroll("Obama", Image.open(data / FR / "people/barack_obama/examples__obama.jpg"))  # a PIL image
        assert from_pil.added == 1 and from_pil.files[0].file == "<image>"
        with pytest.raises(recognizer.PersonNotFound) as nf:
            model.rename("Nobody", "Somebody")
        assert nf.value.name == "Nobody" and isinstance(nf.value, recognizer.GalleryError)
        model.enroll("Obama", data / FR / "people/barack_obama")  # a folder
        with pytest.raises(recognizer.PersonExists) as ex:
            model.rename("Obama", "Biden")
        assert (ex.value.old, ex.value.new) == ("Obama", "Biden")
        with pytest.raises(recognizer.InvalidNameError):
            model.remove("../etc")
        results = list(model.identify_many([photos[0], b"not a photo"]))
        assert results[0].faces[0].name == "Biden" and results[1].error
        assert model.remove(" Biden ") == 1  # names are taken as enroll takes them
        assert model.people() == {"Obama": 11}  # obama_partial_face2.jpg: under the quality floor, refused
    with pytest.raises(Exception):
        model.people()  # closed
    with recognizer.open(tmp_path / "m", backbone="sface") as model:
        assert model.people() == {"Obama": 11}
    with pytest.raises(recognizer.ModelError):
        recognizer.open(tmp_path / "m", backbone="facenet")


def test_public_names_are_few_and_load_lazily():
    import subprocess
    import sys

    code = ("import sys, recognizer\n"
            "print(sorted(recognizer.__all__) == sorted(set(recognizer.__all__)), "
            "all(hasattr(recognizer, n) for n in recognizer.__all__) and 'torch' not in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd="/", timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["True", "True"]
    assert len(recognizer.__all__) <= 25


def test_gif_is_enrolled_finetuned_on_and_evaluated_alike(data, fast_open, tmp_path):
    """One list of image suffixes: the files enroll takes from a folder are the ones finetune trains
    on and evaluate scores (a .gif used to be enrolled but skipped by the other two)."""
    from recognizer.evaluation.run import labelled_photos
    from recognizer.training.dataset import list_people

    src = data / FR / "people/joe_biden/examples__biden.jpg"
    person = tmp_path / "photos" / "biden"
    person.mkdir(parents=True)
    Image.open(src).save(person / "biden.gif")  # photos are written under tmp_path, never into the repo
    Image.open(src).save(person / "biden.jfif", format="JPEG")
    (person / "notes.txt").write_text("not a photo")
    folder = [str(p) for p in recognizer.list_images(person)]
    assert [Path(p).name for p in folder] == ["biden.gif", "biden.jfif"]
    assert list_people(tmp_path / "photos").paths == folder  # what finetune trains on (train/<person>/)
    assert labelled_photos(tmp_path / "photos", tmp_path / "m")[0] == folder  # what evaluate scores
    with recognizer.create(tmp_path / "m", backbone="sface") as model:
        report = model.enroll("Biden", person)
        assert {Path(f.file).name: f.status for f in report.files} == {"biden.gif": "added", "biden.jfif": "added"}
        assert model.identify(person / "biden.gif").faces[0].name == "Biden"

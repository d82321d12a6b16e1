"""No person name can make the tool write outside its model directory.

A name is either refused with an InvalidNameError that names it, or stored in its normal form;
either way the files outside the model directory are the same afterwards.
"""
from __future__ import annotations

import json
import os

import pytest
from click.testing import CliRunner
from hypothesis import given
from hypothesis import strategies as st

from recognizer.cli import enroll
from facecore.names import normal_form
from facecore.errors import InvalidNameError
from reliability_util import encode, face_image, files_outside

ADVERSARIAL = [
    "../../escape", "..", "../", "a/b", "/etc/passwd", "C:\\Windows", "a\\..\\b", ".hidden", ".", "~",
    "~/x", "$HOME", "`touch pwned`", "$(touch pwned)", "name\n", "tab\tname", "\x00", "nul\x00byte",
    "\u202eright-to-left", "zero\u200bwidth", "", " ", "\n", "x" * 101, "é" * 100, "李小龙", "José María",
    "O'Brien", 'say "hi"', "%s%n", "-rf", "--list", "a" * 100, "\ud800", "CON", "nul.jpg",
]
names = st.one_of(st.text(max_size=120), st.sampled_from(ADVERSARIAL),
                  st.builds(lambda a, b: f"{a}/{b}", st.text(max_size=10), st.text(max_size=10)),
                  st.builds(lambda a: f"../{a}", st.text(max_size=20)))
COUNTS = {"refused": 0, "stored": 0}


@pytest.fixture(scope="module")
def world(tmp_path_factory, data, detector, sface, crop_cache):
    """A directory with a model in it and a photo beside it; the process works from inside it."""
    import recognizer.recognizer as rr

    root = tmp_path_factory.mktemp("names world")
    photo = root / "photos" / "paul.jpg"
    photo.parent.mkdir()
    photo.write_bytes(encode(face_image(data), "JPEG", quality=92))
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr("recognizer.view.Detector", lambda settings: detector)
        mp.setattr("recognizer.view.make_embedder", lambda backbone, *a, **kw: sface)
        mp.chdir(root)
        rec = rr.Recognizer.open(root / "model", backbone="sface", create=True, cache=crop_cache)
        yield root, rec, photo, mp
    print(f"\nnames: {COUNTS['refused']} refused with InvalidNameError, {COUNTS['stored']} stored; "
          "no file outside the model directory changed")


def check_refusal(exc: Exception, name: str) -> None:
    msg = str(exc)
    named = [repr(name), repr(name.strip()[:40])]
    try:
        named.append(repr(normal_form(name)))  # a look-alike refusal names the name as it would be stored
    except ValueError:  # a lone surrogate has no normal form
        pass
    assert any(n in msg for n in named), f"{msg!r} does not name {name!r}"


@given(name=names)
def test_any_name_through_recognizer_enroll(world, name):
    root, rec, photo, _ = world
    before = files_outside(root, rec.dir)
    try:
        report = rec.enroll(name, [photo])
    except InvalidNameError as exc:
        check_refusal(exc, name)
        COUNTS["refused"] += 1
    else:
        stored = normal_form(name)  # NFC, whitespace runs as one space, trimmed
        assert report.name == stored
        assert rec.gallery.people().get(stored, 0) == 1
        assert {r.person for r in rec.gallery.records(stored)} == {stored}
        COUNTS["stored"] += 1
    assert files_outside(root, rec.dir) == before


# A NUL byte or a lone surrogate cannot be passed on a command line; the library test has them.
@pytest.mark.parametrize("name", [n for n in ADVERSARIAL if "\x00" not in n and "\ud800" not in n])
def test_any_name_through_enroll_cli(world, name):
    root, rec, photo, mp = world
    before = files_outside(root, rec.dir)
    run = CliRunner().invoke
    res = run(enroll.main, ["--model", str(rec.dir), "--name", name, str(photo.parent), "--json"])
    assert "Traceback" not in res.output
    if res.exit_code == 0:
        assert json.loads(res.stdout)["name"] == normal_form(name)
        # And renaming to it / removing it are held to the same rules.
        res2 = run(enroll.main, ["--model", str(rec.dir), "--rename", name, name + " 2", "--json"])
        assert res2.exit_code == 0 or "person name" in res2.output, res2.output
        assert run(enroll.main, ["--model", str(rec.dir), "--remove", name.strip() + (" 2" if res2.exit_code == 0 else ""),
                                 "--json"]).exit_code == 0
    else:
        if name == "":  # click's usage check comes first
            assert res.exit_code == 2 and "--name is required" in res.output, res.output
        else:
            assert "person name" in res.output and res.exit_code == 1, res.output
            assert repr(name) in res.output or repr(name.strip()[:40]) in res.output, res.output
        for args in (["--rename", "paul", name], ["--remove", name]):
            r = run(enroll.main, ["--model", str(rec.dir), *args])
            assert r.exit_code != 0 and "Traceback" not in r.output
    assert files_outside(root, rec.dir) == before
    assert not os.path.exists(root / "pwned")

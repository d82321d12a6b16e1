"""Second hardening round (issue 15): files the tool must never overwrite, look-alike names,
read-only model directories, one photo enrolled twice at once, caches that are checked and
cleared. Each test names the finding it covers; generated cases (hypothesis) extend each class.
"""
from __future__ import annotations

import shutil
import subprocess
import sys
import threading
import unicodedata
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from hypothesis import given
from hypothesis import strategies as st

import enroll
import identify
from facecore.errors import InvalidNameError
from reliability_util import encode, face_image

FR = "face_recognition-examples/people"
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def world(tmp_path_factory, data, detector, sface):
    """A model with two people, and photos in two folders that share file names."""
    import recognizer.recognizer as rr
    from recognizer.cache import CropCache

    root = tmp_path_factory.mktemp("hardening")
    cache = CropCache(root / "cache" / "crops")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(rr, "Detector", lambda settings: detector)
        mp.setattr(rr, "make_embedder", lambda backbone, *a, **kw: sface)
        rec = rr.Recognizer.open(root / "model", backbone="sface", create=True, cache=cache)
        rec.enroll("Obama", sorted((data / FR / "barack_obama").glob("*.jp*g"))[:2])
        rec.enroll("ada", [data / FR / "joe_biden" / "examples__biden.jpg"])
        for folder, person in (("a", "barack_obama"), ("b", "joe_biden")):
            (root / "in" / folder / "sub").mkdir(parents=True)
            src = sorted((data / FR / person).glob("*.jp*g"))[0]
            shutil.copy(src, root / "in" / folder / "x.jpg")
            shutil.copy(src, root / "in" / folder / "sub" / "x.jpg")
        # x.jpg and x.png side by side: both would become x.png
        face = face_image(data)
        (root / "in" / "a" / "x.png").write_bytes(encode(face, "PNG"))
        yield root, rec, mp


def run(cmd, args):
    res = CliRunner().invoke(cmd.main, [str(a) for a in args])
    assert "Traceback" not in res.output, res.output
    return res


# ---- finding 1: --annotate never overwrites an input or another output ---------------------


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_annotate_keeps_same_named_photos_apart(world, fast_open, tmp_path):
    root, rec, _ = world
    before = snapshot(root / "in")
    out = tmp_path / "out"
    res = run(identify, ["--model", rec.dir, root / "in" / "a", root / "in" / "b", "--annotate", out])
    assert res.exit_code == 0, res.output
    written = sorted(str(p.relative_to(out)) for p in out.rglob("*.png"))
    assert len(written) == 5, written  # a/x.jpg, a/x.png, a/sub/x.jpg, b/x.jpg, b/sub/x.jpg
    assert snapshot(root / "in") == before


def test_annotate_refuses_to_write_over_its_inputs(world, fast_open):
    root, rec, _ = world
    before = snapshot(root / "in")
    for args in ([root / "in" / "a", "--annotate", root / "in" / "a"],
                 [root / "in" / "a" / "x.png", "--annotate", root / "in" / "a" / "x.png"],
                 [root / "in", "--annotate", root / "in" / "a" / "annotated"]):
        res = run(identify, ["--model", rec.dir, *args])
        assert res.exit_code != 0 and "input" in res.output, (args, res.output)
    assert snapshot(root / "in") == before


rel_names = st.lists(st.tuples(st.sampled_from(["", "s", "s/t", "S"]), st.sampled_from(["x", "X", "y", "x-2"]),
                               st.sampled_from([".jpg", ".png", ".JPG", ".gif"])), min_size=1, max_size=12, unique=True)


@given(layout=st.lists(rel_names, min_size=1, max_size=3))
def test_annotate_output_paths_are_distinct_and_never_inputs(layout, tmp_path_factory):
    from recognizer.annotate import annotation_paths

    base = tmp_path_factory.mktemp("annot")
    inputs, files = [], []
    for k, names in enumerate(layout):
        folder = base / ("d" if k == 0 else f"e{k}") / "d"  # same folder name for several inputs
        for sub, stem, suffix in names:
            p = folder / sub / f"{stem}{suffix}"
            if any(str(p).lower() == str(f).lower() for f in files):
                continue  # one file on a case-insensitive disk
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_bytes(b"x")
            files.append(p)
        inputs.append(folder)
    targets = annotation_paths(inputs, files, base / "out")
    outs = [str(t).lower() for t in targets.values()]
    assert len(set(outs)) == len(files)
    assert not set(outs) & {str(f).lower() for f in files}


# ---- finding 5: names that look the same are the same name ------------------------------

LOOKALIKES = [
    ("Obama", "\u041ebama"),  # Cyrillic capital O
    ("ada", "Ada"), ("ada", "ADA"),
    ("José", "Jose\u0301"),  # NFC and NFD
    ("madonna", "\uff4d\uff41\uff44\uff4f\uff4e\uff4e\uff41"),  # fullwidth
    ("Ada Lovelace", "Ada\u00a0Lovelace"), ("Ada Lovelace", "Ada  Lovelace"),
    ("ada", "ada\u3164"),  # Hangul filler
]


@pytest.mark.parametrize("first,second", LOOKALIKES)
def test_lookalike_names_are_one_person_or_refused(first, second, tmp_path):
    from gallery import FaceRecord, create_gallery

    g = create_gallery(tmp_path / "g", model_id="m", dim=4)
    g.add(np.eye(4)[:1], [FaceRecord(first, "a.jpg", "h1", (0, 0, 1, 1))], model_id="m")
    try:
        g.add(np.eye(4)[1:2], [FaceRecord(second, "b.jpg", "h2", (0, 0, 1, 1))], model_id="m")
    except InvalidNameError as exc:
        assert repr(first) in str(exc) or "invisible" in str(exc), exc
    assert len(g.people()) == 1, g.people()
    g.close()


def test_rename_to_a_lookalike_and_reserved_names_are_refused(world):
    _, rec, _ = world
    with pytest.raises(InvalidNameError, match="looks the same"):
        rec.gallery.rename_person("ada", "\u041ebama")
    for name in ("unknown", "Unknown", "UNKN\u041eWN", " unknown "):
        with pytest.raises(InvalidNameError, match="unrecognised"):
            rec.gallery.rename_person("ada", name)
    assert set(rec.gallery.people()) == {"Obama", "ada"}


def test_remove_finds_the_name_in_any_normal_form(tmp_path):
    from gallery import FaceRecord, create_gallery

    g = create_gallery(tmp_path / "g", model_id="m", dim=4)
    g.add(np.eye(4)[:1], [FaceRecord("José", "a.jpg", "h1", (0, 0, 1, 1))], model_id="m")
    assert g.remove_person(unicodedata.normalize("NFD", "José")) == 1
    assert g.people() == {}


def test_training_folders_follow_the_name_rules(tmp_path, data):
    from recognizer.training.dataset import list_people
    from facecore.errors import FaceToolError

    src = sorted((data / FR / "kit_harington").iterdir())[0]
    for folder in ("madonna ", "Rose  Leslie"):
        (tmp_path / "t" / folder).mkdir(parents=True)
        shutil.copy(src, tmp_path / "t" / folder / "1.jpg")
    assert sorted(set(list_people(tmp_path / "t").labels)) == ["Rose Leslie", "madonna"]
    (tmp_path / "t" / "MADONNA").mkdir()
    shutil.copy(src, tmp_path / "t" / "MADONNA" / "1.jpg")
    with pytest.raises(FaceToolError, match="looks the same"):
        list_people(tmp_path / "t")


confusable_letters = {"a": "\u0430", "o": "\u043e", "e": "\u0435", "p": "\u0440", "c": "\u0441", "O": "\u041e"}


@st.composite
def disguised(draw):
    """A plain name and a variant that prints the same: case, Cyrillic letters, fullwidth forms,
    NFD, odd spaces."""
    base = draw(st.text(alphabet="abcdeopOAC ", min_size=2, max_size=12).filter(lambda s: s.strip()))
    base = " ".join(base.split())
    out = []
    for ch in base:
        how = draw(st.sampled_from(["same", "case", "cyrillic", "fullwidth", "space"]))
        if how == "case":
            out.append(ch.swapcase())
        elif how == "cyrillic" and ch in confusable_letters:
            out.append(confusable_letters[ch])
        elif how == "fullwidth" and ch.isalpha():
            out.append(chr(ord(ch) + 0xFEE0))
        elif how == "space" and ch == " ":
            out.append(draw(st.sampled_from(["\u00a0", "  ", "\u3000", "\u2009"])))
        else:
            out.append(ch)
    return base, unicodedata.normalize(draw(st.sampled_from(["NFC", "NFD"])), "".join(out))


@given(pair=disguised())
def test_generated_lookalikes_never_become_two_people(pair):
    from facecore.names import refuse_lookalikes, validate_name
    from facecore.names import lookalike_key

    base, variant = pair
    try:
        a, b = validate_name(base), validate_name(variant)
    except InvalidNameError:
        return  # e.g. "unknown" spelt some way
    assert lookalike_key(a) == lookalike_key(b)
    if a != b:
        with pytest.raises(InvalidNameError):
            refuse_lookalikes([b], [a])


# ---- finding 6: read-only model directory, full disk in finetune ------------------------


# Run inside the namespace: the three commands in one process (one start-up, not three).
READ_ONLY_CHECK = """
import json, sys
from click.testing import CliRunner
from recognizer.cli import enroll, identify
model, photo = sys.argv[1:3]
out = {}
for what, cmd, args in (("list", enroll, ["--model", model, "--list", "--json"]),
                        ("identify", identify, ["--model", model, photo, "--no-cache", "--json"]),
                        ("remove", enroll, ["--model", model, "--remove", "Obama"])):
    res = CliRunner().invoke(cmd.main, args)
    out[what] = [res.exit_code, res.output, repr(res.exception) if res.exception and not isinstance(res.exception, SystemExit) else ""]
print("RESULT " + json.dumps(out))
"""


def test_read_only_model_lists_and_identifies(world, data, tmp_path):
    if shutil.which("unshare") is None or subprocess.run(["unshare", "-rm", "true"]).returncode != 0:
        pytest.fail("this test needs unshare(1) with user and mount namespaces")
    _, rec, _ = world
    model = tmp_path / "ro model"
    shutil.copytree(rec.dir, model)
    (model / rec.config.gallery / ".lock").unlink(missing_ok=True)  # a copy has no lock file yet
    photo = data / FR / "barack_obama" / "examples__obama.jpg"
    # A read-only bind mount of the model in a private mount namespace: nothing else sees it.
    script = 'mount --bind "$0" "$0" && mount -o remount,bind,ro "$0" "$0" && exec "$@"'
    proc = subprocess.run(["unshare", "-rm", "sh", "-c", script, str(model), sys.executable, "-c", READ_ONLY_CHECK,
                           str(model), str(photo)], cwd=ROOT, capture_output=True, text=True, timeout=300)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    assert lines, proc.stderr[-2000:]
    import json

    out = json.loads(lines[0][len("RESULT "):])
    assert out["list"][0] == 0 and '"Obama"' in out["list"][1], out["list"]
    assert out["identify"][0] == 0 and '"Obama"' in out["identify"][1], out["identify"]
    code, text, exc = out["remove"]
    assert code != 0 and not exc and "Traceback" not in text, out["remove"]
    assert len(text.strip().splitlines()) == 1 and "read-only" in text.lower(), text


# ---- finding 7: one photo enrolled for one person twice at once is stored once ----------


def test_same_photo_enrolled_twice_at_once_is_stored_once(world, data, fast_open, monkeypatch):
    from recognizer.recognizer import Recognizer

    root, rec, _ = world
    photo = data / FR / "rose_leslie" / sorted(p.name for p in (data / FR / "rose_leslie").iterdir())[0]
    recs = [Recognizer.open(rec.dir, cache=rec.pipeline.cache) for _ in range(2)]
    # Both pass the early duplicate check before either writes: what two servers did.
    barrier = threading.Barrier(2, timeout=60)
    for r in recs:
        real = r.gallery.has_content

        def has_content(person, digest, real=real):
            answer = real(person, digest)
            barrier.wait()
            return answer

        monkeypatch.setattr(r.gallery, "has_content", has_content)
    reports = [None, None]
    threads = [threading.Thread(target=lambda i=i: reports.__setitem__(i, recs[i].enroll("rose", [photo]))) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    statuses = sorted(rep.files[0].status for rep in reports)
    assert statuses == ["added", "duplicate"], statuses
    assert rec.gallery.people()["rose"] == 1
    assert rec.remove("rose") == 1
    for r in recs:
        r.gallery.close()


# ---- finding 8: caches checked against their key, cleared on removal ---------------------


def test_swapped_crop_cache_entry_is_a_miss(world, data, fast_open, tmp_path):
    from recognizer.cache import CropCache
    from recognizer.recognizer import Recognizer

    _, rec, _ = world
    cache = CropCache(tmp_path / "crops")
    r = Recognizer.open(rec.dir, cache=cache)
    obama = data / FR / "barack_obama" / "examples__obama.jpg"
    biden = data / FR / "joe_biden" / "examples__biden.jpg"
    want = [f.name for f in next(r.identify_many([obama])).faces]
    assert want[0] == "Obama" and want != [f.name for f in next(r.identify_many([biden])).faces]
    entries = {p.name.split("-")[0]: p for p in cache.root.rglob("*.npz")}
    from recognizer.image import sha256_bytes

    shutil.copy(entries[sha256_bytes(biden.read_bytes())], entries[sha256_bytes(obama.read_bytes())])
    again = next(r.identify_many([obama]))
    assert [f.name for f in again.faces] == want, again
    assert cache.hits == 0
    r.gallery.close()


@given(where=st.integers(0, 10_000), bit=st.integers(0, 7))
def test_edited_crop_cache_entry_is_a_miss(world, data, where, bit):
    _, rec, _ = world
    cache = rec.pipeline.cache
    photo = data / FR / "barack_obama" / "examples__obama.jpg"
    first = rec.pipeline.detect_and_crop(photo)
    (entry,) = [p for p in cache.root.rglob(f"{first.content_hash}-*.npz")]
    blob = bytearray(entry.read_bytes())
    blob[where % len(blob)] ^= 1 << bit
    entry.write_bytes(bytes(blob))
    got = cache.get(first.content_hash, rec.pipeline.crop_kind)
    if got is not None:  # the flip landed in zip padding or metadata: the arrays are intact
        assert np.array_equal(got[1], first.crops)
    rec.pipeline.detect_and_crop(photo)  # a miss is rebuilt
    assert np.array_equal(cache.get(first.content_hash, rec.pipeline.crop_kind)[1], first.crops)


def test_removal_clears_crop_and_trunk_caches_on_every_path(world, data, fast_open, tmp_path, monkeypatch):
    """enroll.py --remove, with and without --no-cache, and the server's DELETE."""
    from starlette.testclient import TestClient

    from recognizer.cache import CropCache
    from recognizer.recognizer import Recognizer
    from recognizer.training.trunk import SplitNet, TrunkCache
    from web.app import create_app
    from web.settings import Settings

    monkeypatch.setenv("FACETOOL_CACHE", str(tmp_path / "cache"))
    people = {"kit": "kit_harington", "rose": "rose_leslie", "alex": "alex_lacamoire", "lin": "lin_manuel_miranda"}
    model = tmp_path / "m"
    r = Recognizer.open(model, backbone="sface", create=True, cache=CropCache())
    for name, folder in people.items():
        r.enroll(name, sorted((data / FR / folder).iterdir()))
    hashes = {n: {x.content_hash for x in r.gallery.records(n)} for n in people}
    trunk = TrunkCache(SplitNet.sface(r.embedder))
    crops = {n: np.concatenate([CropCache().crops_of(h) for h in hs]) for n, hs in hashes.items()}
    for c in crops.values():
        trunk.features(c)
    r.gallery.close()

    def cached(name: str) -> tuple[int, int]:
        from recognizer.cache import crop_hash

        n_crops = sum(1 for h in hashes[name] for _ in (tmp_path / "cache" / "crops").rglob(f"{h}-*.npz"))
        n_trunk = sum(1 for c in crops[name] for _ in (tmp_path / "cache" / "trunk").rglob(f"{crop_hash(c)}.npz"))
        return n_crops, n_trunk

    assert all(min(cached(n)) > 0 for n in people)
    assert run(enroll, ["--model", model, "--remove", "kit"]).exit_code == 0
    assert run(enroll, ["--model", model, "--remove", "rose", "--no-cache"]).exit_code == 0
    server = Recognizer.open(model, cache=None)  # as serve.py opens it
    with TestClient(create_app(server, Settings(token="t" * 20)), base_url="http://127.0.0.1") as client:
        res = client.delete("/people/alex", headers={"Authorization": "Bearer " + "t" * 20})
        assert res.status_code == 200, res.text
    assert {n: cached(n) for n in people} == {"kit": (0, 0), "rose": (0, 0), "alex": (0, 0), "lin": cached("lin")}
    assert min(cached("lin")) > 0


def test_full_disk_during_finetune_is_one_line_and_keeps_the_old_model(tmp_path, data, monkeypatch):
    import errno

    from recognizer.cli import finetune as finetune_cli
    import recognizer.training.checkpoint as ckpt

    model = tmp_path / "m"
    src = data / "5-celebrity-faces"
    train = tmp_path / "d" / "train"
    for person in sorted((src / "train").iterdir())[:2]:
        shutil.copytree(person, train / person.name)
    args = [str(tmp_path / "d"), "--model", str(model), "--backbone", "sface", "--epochs", "2", "-q",
            "--cache-dir", str(tmp_path / "cache")]
    assert CliRunner().invoke(finetune_cli.main, args).exit_code == 0
    before = snapshot(model)
    real = ckpt.atomic_write

    def full_disk(path, *a, **kw):
        cm = real(path, *a, **kw)

        class Full:
            def __enter__(self):
                self.fh = cm.__enter__()
                return self

            def write(self, b):
                raise OSError(errno.ENOSPC, "No space left on device", str(path))

            def __exit__(self, *exc):
                return cm.__exit__(*exc)

        return Full()

    monkeypatch.setattr(ckpt, "atomic_write", full_disk)
    res = CliRunner().invoke(finetune_cli.main, args)
    assert res.exit_code == 1 and "Traceback" not in res.output, res.output
    assert len(res.output.strip().splitlines()) == 1 and "No space left" in res.output, res.output
    assert snapshot(model) == before  # nothing left behind, nothing changed

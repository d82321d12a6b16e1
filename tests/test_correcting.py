"""Everyday corrections (issue 27, items 1 and 2), on real photos of 5-celebrity-faces:

- one wrongly enrolled face is listed (stable ids, chips as thumbnails, a contact sheet), removed
  from every store of face data, moved to the right person, or two people merged, from Python, the
  CLI and over HTTP, each answering with the threshold for the gallery as it is afterwards;
- people are enrolled the way they hold photos: files and several folders at once, a folder of
  person folders (`--people`), with a summary per person; a person with no face enrolled is an
  error that names each file and why (exit 1, HTTP 422); over HTTP one bad file in a batch is
  reported and the other photos are enrolled.
"""
from __future__ import annotations

import dataclasses
import io
import json
import shutil

import pytest
from click.testing import CliRunner
from PIL import Image

from recognizer.cli import enroll
from recognizer.cli import main as facetool

CELEB = "5-celebrity-faces/train"
TOKEN = "correcting-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def run(cmd, *args):
    res = CliRunner().invoke(cmd, [str(a) for a in args], catch_exceptions=False)
    return res.exit_code, res.output


def ok_json(cmd, *args):
    code, out = run(cmd, *args, "--json")
    assert code == 0, out
    return json.loads(out)


def photos(data, person, n):
    return sorted((data / CELEB / person).iterdir())[:n]


@pytest.fixture(scope="module")
def people_dir(tmp_path_factory, data):
    """A folder of person folders: four photos of Madonna, three of Elton John, two of Mindy Kaling."""
    root = tmp_path_factory.mktemp("people")
    for person, n in (("madonna", 4), ("elton_john", 3), ("mindy_kaling", 2)):
        (root / person).mkdir()
        for p in photos(data, person, n):
            shutil.copy(p, root / person / p.name)
    return root


@pytest.fixture(scope="module")
def base_model(tmp_path_factory, people_dir):
    model = tmp_path_factory.mktemp("correcting") / "model"
    for person in ("elton_john", "madonna", "mindy_kaling"):  # one call each (works on the old code too)
        ok_json(enroll.main, "--model", model, "--backbone", "sface", "--name", person, people_dir / person)
    return model


@pytest.fixture
def model(base_model, tmp_path):
    return shutil.copytree(base_model, tmp_path / "model")


def faces_of(model, person) -> list[dict]:
    return ok_json(facetool, "people", "faces", "--model", model, person)["faces"]


# ---- item 1: one face at a time -------------------------------------------------------------


def test_faces_are_listed_with_stable_ids_and_a_contact_sheet(model, tmp_path):
    listed = ok_json(facetool, "people", "faces", "--model", model, "madonna")
    assert listed["person"] == "madonna" and len(listed["faces"]) == 4
    assert all(f["chip"] and f["photo"].endswith(".jpg") for f in listed["faces"])
    assert listed["threshold"]["people"] == 3
    sheet = tmp_path / "madonna.png"
    code, out = run(facetool, "people", "faces", "--model", model, "madonna", "--sheet", sheet)
    assert code == 0 and f"madonna: 4 faces; contact sheet written to {sheet}" in out
    for f in listed["faces"]:
        assert out.splitlines()[listed["faces"].index(f)].split()[0] == str(f["id"])
    with Image.open(sheet) as im:  # four 96-pixel thumbnails in a row
        assert im.size == (4 * 100 + 4, 104)
    # the ids do not change when someone else is removed
    run(facetool, "people", "remove", "--model", model, "elton_john")
    assert faces_of(model, "madonna") == listed["faces"]
    # enroll.py's flag lists the same
    assert ok_json(enroll.main, "--model", model, "--faces", "madonna")["faces"] == listed["faces"]


def test_remove_one_face_reaches_every_store_and_keeps_the_others(model, tmp_path):
    import recognizer
    from recognizer.cache import CropCache
    from recognizer.modeldir import stores

    before = faces_of(model, "madonna")
    wrong = before[1]
    with recognizer.open(model) as rec:
        record = next(r for r in rec.records("madonna") if r.id == wrong["id"])
        assert record.chip in rec.chips
        ctx = stores.Removal.of_faces(rec.model, {wrong["id"]}, rec.gallery, rec.config.gallery, cache_root=CropCache().root)
        assert set(stores.held(ctx)) >= {"gallery in use", "chips", "crop and trunk caches"}, stores.held(ctx)
    code, out = run(facetool, "people", "remove-face", "--model", model, wrong["id"])
    assert code == 0, out
    assert out.startswith(f"removed face {wrong['id']} of madonna ({wrong['photo']}); 3 faces of madonna left\n")
    assert "unknown threshold" in out and "3 people, 2.7 faces each" in out  # recomputed for 8 faces
    assert faces_of(model, "madonna") == [f for f in before if f["id"] != wrong["id"]]
    with recognizer.open(model) as rec:
        assert record.chip not in rec.chips  # the chip went with the face
        assert stores.held(dataclasses.replace(ctx, gallery=rec.gallery)) == {}  # and nothing of it is held anywhere
        assert rec.people() == {"elton_john": 3, "madonna": 3, "mindy_kaling": 2}
    # a second time: the id is gone, said in one line
    code, out = run(facetool, "people", "remove-face", "--model", model, wrong["id"])
    assert code == 1 and f"no enrolled face has id {wrong['id']}" in out and "Traceback" not in out


def test_removing_one_face_scrubs_its_photo_only_from_split_and_report(model):
    """split.json and report.json lose the removed face's photo; the person's other photos stay."""
    from recognizer.modeldir.directory import ModelDir

    md = ModelDir(model)
    mine, elton = faces_of(model, "madonna"), faces_of(model, "elton_john")
    paths = [mine[0]["photo"], mine[1]["photo"], elton[0]["photo"]]
    labels = ["madonna", "madonna", "elton_john"]
    md.split.write_text(json.dumps({"train": {"paths": paths, "labels": labels}, "val": {"paths": [], "labels": []}}))
    md.report.write_text(json.dumps({"skipped": [{"file": p, "reason": "x"} for p in paths], "classes": ["madonna"]}))
    ok_json(facetool, "people", "remove-face", "--model", model, mine[0]["id"])
    assert json.loads(md.split.read_text())["train"] == {"paths": paths[1:], "labels": labels[1:]}
    assert json.loads(md.report.read_text()) == {"skipped": [{"file": p, "reason": "x"} for p in paths[1:]],
                                                 "classes": ["madonna"]}


def test_removing_a_face_enrolled_from_a_clustering_run_scrubs_it_there(tmp_path, data):
    """A face enrolled by naming a cluster is in the saved run too: removing the face removes it there."""
    import recognizer
    from recognizer.cli import cluster
    from recognizer.clustering import runs
    from recognizer.modeldir import stores

    fr = data / "face_recognition-examples"
    model = tmp_path / "model"
    ok_json(enroll.main, "--model", model, "--backbone", "sface", "--name", "madonna", *photos(data, "madonna", 2))
    rose = sorted((fr / "people/rose_leslie").iterdir())
    meta = ok_json(cluster.main, "--model", model, *rose, fr / "group/kit_harington+rose_leslie__kit_with_rose.jpg",
                   fr / "group/barack_obama+joe_biden__obama_and_biden.jpg", "--out", tmp_path / "sheets")
    first = meta["clusters"][0]
    assert first["size"] == 3 and len(meta["clusters"]) > 1  # Rose; the others keep the run saved
    ok_json(enroll.main, "--model", model, "--name", "Rose Leslie", "--cluster", f"{meta['id']}:{first['id']}")
    face = next(f for f in faces_of(model, "Rose Leslie") if f["photo"] == str(rose[0]))
    with recognizer.open(model) as rec:
        ctx = stores.Removal.of_faces(rec.model, {face["id"]}, rec.gallery, rec.config.gallery)
        assert "clustering runs" in stores.held(ctx)
    assert ok_json(facetool, "people", "remove-face", "--model", model, face["id"])["people"]["Rose Leslie"] == 2
    with recognizer.open(model) as rec:
        assert "clustering runs" not in stores.held(dataclasses.replace(ctx, gallery=rec.gallery))
        run = runs.load_run(rec.dir, meta["id"])
    mine = [i for i, f in enumerate(meta["faces"]) if meta["photos"][f["photo"]]["photo"] == str(rose[0])]
    assert mine and all(run.meta["faces"][i].get("removed") for i in mine)
    assert sum(bool(f.get("removed")) for f in run.meta["faces"]) == len(mine)  # Rose's other faces stay
    assert str(rose[1]) in json.dumps(run.meta)


def test_move_a_face_to_the_right_person_and_merge_two_people(model):
    madonna, elton = faces_of(model, "madonna"), faces_of(model, "elton_john")
    face = madonna[0]
    out = ok_json(facetool, "people", "move-face", "--model", model, face["id"], "elton_john")
    assert out["from"] == "madonna" and out["to"] == "elton_john"
    assert out["people"] == {"elton_john": 4, "madonna": 3, "mindy_kaling": 2}
    assert [f["id"] for f in faces_of(model, "elton_john")] == sorted([f["id"] for f in elton] + [face["id"]])
    # back with enroll.py's flag; the id, the chip and the photo stay the face's
    code, text = run(enroll.main, "--model", model, "--move-face", face["id"], "madonna")
    assert code == 0 and text.startswith(f"moved face {face['id']} ({face['photo']}) from elton_john to madonna\n"), text
    assert faces_of(model, "madonna") == madonna
    # to someone not enrolled yet: a new person
    code, text = run(enroll.main, "--model", model, "--move-face", face["id"], "nobody")
    assert code == 0 and faces_of(model, "nobody")[0]["id"] == face["id"], text
    # merging: in CLI words, never Python's
    code, text = run(facetool, "people", "rename", "--model", model, "nobody", "madonna")
    assert code == 1 and "facetool people merge" in text and "merge=True" not in text
    code, text = run(facetool, "people", "merge", "--model", model, "nobody", "madonna")
    assert code == 0 and text.startswith("merged nobody into madonna (4 faces)\nunknown threshold "), text
    assert faces_of(model, "madonna") == madonna
    code, text = run(facetool, "people", "merge", "--model", model, "madonna", "nobody_at_all")
    assert code == 1 and "nobody_at_all" in text and "Traceback" not in text


def test_moving_a_face_onto_someone_who_has_that_photo_is_refused(model, people_dir):
    photo = sorted((people_dir / "madonna").iterdir())[0]
    assert ok_json(enroll.main, "--model", model, "--name", "elton_john", photo)["added"] == 1
    face = next(f for f in faces_of(model, "madonna") if f["photo"] == str(photo))
    code, text = run(facetool, "people", "move-face", "--model", model, face["id"], "elton_john")
    assert code == 1 and f"facetool people remove-face --model {model} {face['id']}" in text, text
    assert len(faces_of(model, "madonna")) == 4  # nothing changed


# ---- item 2: enrolling the way people hold photos ---------------------------------------------


def test_enroll_files_and_several_folders_in_one_call(tmp_path, data, people_dir):
    model = tmp_path / "model"
    one = photos(data, "jerry_seinfeld", 5)
    out = ok_json(enroll.main, "--model", model, "--backbone", "sface", "--name", "jerry_seinfeld", one[0], one[1],
                  people_dir / "madonna")
    assert out["name"] == "jerry_seinfeld" and out["added"] == 6 and not out["failed"]
    assert {f["file"] for f in out["files"]} == {str(one[0]), str(one[1])} | {str(p) for p in (people_dir / "madonna").iterdir()}
    code, text = run(enroll.main, "--model", model, "--name", "jerry_seinfeld", tmp_path / "typo.jpg")
    assert code == 1 and "typo.jpg: no such file or directory" in text


@pytest.fixture
def with_bad(tmp_path, people_dir):
    """people_dir plus a person whose folder holds only a photo of the sky, a broken JPEG and a text file."""
    root = shutil.copytree(people_dir, tmp_path / "people")
    bad = root / "sky"
    bad.mkdir()
    Image.new("RGB", (300, 200), (120, 170, 230)).save(bad / "sky.jpg")
    (bad / "broken.jpg").write_bytes(next((people_dir / "madonna").iterdir()).read_bytes()[:300])
    (bad / "notes.txt").write_text("not a photo")
    return root


def test_people_dir_enrolls_everyone_and_a_person_without_a_face_exits_1(tmp_path, with_bad):
    model = tmp_path / "model"
    code, text = run(enroll.main, "--model", model, "--backbone", "sface", "--people", with_bad)
    assert code == 1, text
    for line in ("elton_john: added 3 face(s), skipped 0 file(s); 3 enrolled in total",
                 "madonna: added 4 face(s), skipped 0 file(s); 4 enrolled in total",
                 "mindy_kaling: added 2 face(s), skipped 0 file(s); 2 enrolled in total",
                 "sky: added 0 face(s), skipped 2 file(s); 0 enrolled in total"):
        assert line in text, text
    err = next(x for x in text.splitlines() if x.startswith("error: "))
    assert f"{with_bad / 'sky' / 'sky.jpg'} (no face)" in err and f"{with_bad / 'sky' / 'broken.jpg'} (unreadable" in err
    assert ok_json(facetool, "people", "list", "--model", model)["people"] == {"elton_john": 3, "madonna": 4, "mindy_kaling": 2}


def test_enrolling_no_face_is_an_error_naming_each_file(model, with_bad):
    code, text = run(enroll.main, "--model", model, "--name", "sky", with_bad / "sky")
    assert code == 1, text
    err = next(x for x in text.splitlines() if x.startswith("error: "))
    assert err.startswith("error: sky: no face enrolled: ") and f"{with_bad / 'sky' / 'sky.jpg'} (no face)" in err
    assert "sky" not in ok_json(facetool, "people", "list", "--model", model)["people"]
    # photos that are all enrolled already are no error
    code, text = run(enroll.main, "--model", model, "--name", "madonna", with_bad / "madonna")
    assert code == 0 and "madonna: added 0 face(s), skipped 4 file(s)" in text


# ---- over HTTP -------------------------------------------------------------------------------


@pytest.fixture
def client(model):
    from starlette.testclient import TestClient

    import recognizer
    from web.app import create_app
    from web.settings import Settings

    rec = recognizer.open(model)
    with TestClient(create_app(rec, Settings(token=TOKEN)), raise_server_exceptions=False,
                    base_url="http://127.0.0.1") as c:
        yield c


def test_http_lists_removes_and_moves_faces_and_merges_people(client):
    listed = client.get("/people/madonna")
    assert listed.status_code == 200, listed.text
    faces = listed.json()["faces"]
    assert len(faces) == 4 and listed.json()["threshold"]["people"] == 3
    # thumbnails are face images: the token is needed
    assert client.get(f"/faces/{faces[0]['id']}/chip.png").status_code == 401
    png = client.get(f"/faces/{faces[0]['id']}/chip.png", headers=AUTH)
    assert png.status_code == 200 and png.headers["content-type"] == "image/png"
    assert Image.open(io.BytesIO(png.content)).size == (112, 112)
    assert client.delete(f"/faces/{faces[1]['id']}").status_code == 401
    gone = client.delete(f"/faces/{faces[1]['id']}", headers=AUTH)
    assert gone.status_code == 200 and gone.json()["person"] == "madonna"
    assert gone.json()["people"]["madonna"] == 3 and gone.json()["threshold"]["faces_per_person"] == pytest.approx(8 / 3, abs=0.01)
    assert client.delete(f"/faces/{faces[1]['id']}", headers=AUTH).status_code == 404
    assert client.get(f"/faces/{faces[1]['id']}/chip.png", headers=AUTH).status_code == 404
    moved = client.post(f"/faces/{faces[0]['id']}/move", headers=AUTH, json={"name": "elton_john"})
    assert moved.status_code == 200 and moved.json()["from"] == "madonna" and moved.json()["people"]["elton_john"] == 4
    clash = client.patch("/people/madonna", headers=AUTH, json={"name": "elton_john"})
    assert clash.status_code == 409 and "/people/madonna/merge" in clash.json()["error"]
    assert "merge=True" not in clash.text
    merged = client.post("/people/madonna/merge", headers=AUTH, json={"into": "elton_john"})
    assert merged.status_code == 200 and merged.json()["people"] == {"elton_john": 6, "mindy_kaling": 2}
    assert merged.json()["threshold"]["people"] == 2
    assert client.get("/people/madonna").status_code == 404


def test_http_batch_enrols_the_good_photos_and_reports_each_bad_file(client, data, with_bad):
    good = photos(data, "jerry_seinfeld", 2)
    files = [("file", (p.name, p.read_bytes(), "image/jpeg")) for p in good]
    files.append(("file", ("notes.txt", b"not a photo", "text/plain")))
    files.append(("file", ("sky.jpg", (with_bad / "sky" / "sky.jpg").read_bytes(), "image/jpeg")))
    res = client.post("/people/jerry_seinfeld/photos", headers=AUTH, files=files)
    assert res.status_code == 200, res.text
    body = res.json()
    assert body["added"] == 2 and body["enrolled"] == 2
    reasons = {s["file"]: s["reason"] for s in body["skipped"]}
    assert reasons["sky.jpg"] == "no face" and reasons["notes.txt"].startswith("refused: not an image")


def test_http_enrolling_no_face_is_422_naming_each_file(client, with_bad):
    sky = [("file", ("sky.jpg", (with_bad / "sky" / "sky.jpg").read_bytes(), "image/jpeg"))]
    res = client.post("/people/sky/photos", headers=AUTH, files=sky)
    assert res.status_code == 422 and res.json()["error"] == "sky: no face enrolled: sky.jpg (no face)", res.text
    bad = [("file", ("sky.jpg", (with_bad / "sky" / "sky.jpg").read_bytes(), "image/jpeg")),
           ("file", ("notes.txt", b"not a photo", "text/plain"))]
    res = client.post("/people/sky/photos", headers=AUTH, files=bad)
    assert res.status_code == 422, res.text
    assert "sky.jpg (no face)" in res.json()["error"] and "notes.txt (refused: not an image" in res.json()["error"]
    # not one photo among the uploads: the refusal's own answer
    res = client.post("/people/sky/photos", headers=AUTH, files=bad[1:] * 2)
    assert res.status_code == 415 and res.json()["error"].count("notes.txt: not an image") == 2, res.text
    assert "sky" not in client.get("/people").json()["people"]

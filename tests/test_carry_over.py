"""Property tests of the one carry-over (recognizer.modeldir.rebuild.carry_over).

A build (a finetune, or a candidate built beside the model) starts from a snapshot of the enrolled
faces; meanwhile people are enrolled, removed and renamed in any order. Hypothesis drives random
interleavings of those changes, the carry-over brings them into what the build made, and the
result is compared with a plain model of who should be there: each person at the start followed
through the renames (to a new name) and removals (to nobody). Synthetic records and vectors (a
face's vector is filled with its photo's number), so each example takes microseconds; the two ways
callers match faces are both driven: by gallery id (a finetune's commit) and by photo and box (a
switch to a candidate).
"""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from gallery import FaceRecord
from gallery.base import face_key
from recognizer.modeldir.rebuild import carry_over

START_PEOPLE = ("ann", "bob", "cy")
TRAINING_ONLY = "dee"  # a training folder of someone never enrolled
BOX = (1.0, 2.0, 30.0, 40.0)


def vec(photo: int) -> np.ndarray:
    return np.full(4, float(photo), np.float32)


def photo_of(r: FaceRecord) -> int:
    return int(r.content_hash[1:])


def record(person: str, photo: int, face_id: int = -1) -> FaceRecord:
    return FaceRecord(person, f"/photos/{photo}.jpg", f"h{photo:05d}", BOX, added_at=1.0, id=face_id,
                      chip=f"{photo:064x}")


@st.composite
def builds(draw):
    """(start records, training records, ops): the gallery when the build started, the build's own
    faces (some are photos enrolled at the start, of the same person), the changes made since."""
    start = [record(draw(st.sampled_from(START_PEOPLE)), n, face_id=n) for n in range(draw(st.integers(0, 6)))]
    training = []
    for r in start:
        if draw(st.booleans()):  # a training photo that is also enrolled under the same name
            training.append(record(r.person, photo_of(r)))
    for n in range(100, 100 + draw(st.integers(0, 4))):
        training.append(record(draw(st.sampled_from(START_PEOPLE + (TRAINING_ONLY,))), n))
    ops = draw(st.lists(st.tuples(st.sampled_from(("enrol", "remove", "rename")), st.integers(0, 7), st.booleans()),
                        max_size=10))
    return start, training, ops


def apply(start, ops):
    """The gallery after `ops`, and each start person's fate in the model: their name now, or None."""
    current = list(start)
    fate = {r.person: r.person for r in start}
    fresh = iter(f"new{i}" for i in range(100))
    next_photo = 1000
    for op, pick, new_person in ops:
        people = sorted({r.person for r in current})
        if op == "enrol":
            name = next(fresh) if new_person or not people else people[pick % len(people)]
            current.append(record(name, next_photo, face_id=next_photo))
            next_photo += 1
        elif people and op == "remove":
            gone = people[pick % len(people)]
            current = [r for r in current if r.person != gone]
            fate = {p: (None if q == gone else q) for p, q in fate.items()}
        elif people:  # rename to a name no one has had (enroll refuses a rename onto someone else)
            old, new = people[pick % len(people)], next(fresh)
            current = [replace(r, person=new) if r.person == old else r for r in current]
            fate = {p: (new if q == old else q) for p, q in fate.items()}
    return current, fate


def run(start, training, current, by_id: bool):
    """The carry-over as its two callers drive it."""
    if by_id:  # a finetune's commit: the gallery in use is the one it started from
        base = [(r.id, r.person) for r in start]
        built = [(r, vec(photo_of(r))) for r in training]
        return carry_over(Path("m"), base, built, [(r.id, r) for r in current], {r.id: vec(photo_of(r)) for r in start})
    # a switch: the candidate's gallery holds the faces enrolled at its build (covered training
    # photos merged into them) and its training faces; faces are matched by photo and box
    base = [(face_key(r.content_hash, r.box), r.person) for r in start]
    base_keys = {k for k, _ in base}
    cand = start + [r for r in training if face_key(r.content_hash, r.box) not in base_keys]
    reuse = {face_key(r.content_hash, r.box): vec(photo_of(r)) for r in cand}
    built = [(r, vec(photo_of(r))) for r in cand if face_key(r.content_hash, r.box) not in base_keys]
    return carry_over(Path("m"), base, built, [(face_key(r.content_hash, r.box), r) for r in current], reuse)


@settings(max_examples=300, deadline=None)
@given(builds(), st.booleans())
def test_carry_over_matches_the_model_of_who_is_there(build, by_id):
    start, training, ops = build
    current, fate = apply(start, ops)
    out = run(start, training, current, by_id)

    # Every face enrolled now stays as it is; a training face goes to its person's name now, or
    # is left out when they were removed (removal wins over the training folder).
    want = {(r.person, photo_of(r)) for r in current}
    for r in training:
        name = fate.get(r.person, r.person)
        if name is not None:
            want.add((name, photo_of(r)))
    got = [(r.person, photo_of(r)) for r in out.records]
    assert sorted(got) == sorted(want), "each face once, under the right name"
    assert {r.person for r in out.records} == {p for p, _ in want}

    # Only faces enrolled since the start are left to embed; the others keep the build's vector.
    start_photos = {photo_of(r) for r in start} | {photo_of(r) for r in training}
    for r, v in zip(out.records, out.vectors):
        if photo_of(r) in start_photos:
            assert v is not None and np.array_equal(v, vec(photo_of(r)))
        else:
            assert v is None
    assert out.new == sum(1 for r in current if photo_of(r) not in start_photos)

    # What the report says: who was removed and who was renamed since the start.
    gone = {p: q for p, q in fate.items() if q != p}
    assert out.removed() == sorted(p for p, q in gone.items() if q is None)
    assert out.renamed() == {p: q for p, q in gone.items() if q is not None}
    # The records are the gallery's to be: no ids, chips and dates kept.
    assert all(r.id == -1 and r.added_at == 1.0 and r.chip for r in out.records)

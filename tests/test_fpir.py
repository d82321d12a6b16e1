"""The FPIR model (recognizer.fpir) against brute force on synthetic faces, its inversion, and label cleaning.

No cohort photo is read here: the cohort is embedded by benchmarks/calibrate_fpir.py, and the
shipped table is checked on real photos in tests/test_threshold.py.
"""
from __future__ import annotations

import itertools
import json
from math import comb

import numpy as np
import pytest

from recognizer.evaluation.cohort import CohortFaces, clean_labels
from recognizer.fpir import (
    FpirTable,
    _miss_ratio,
    build_table,
    fpir_from_rates,
    genuine_miss_rates,
    stranger_match_rates,
)


def synthetic_cohort(n_people=36, faces=6, dim=64, spread=0.8, seed=0, wolves=4):
    """Unit faces around per-person centres; a few people sit close to a shared point, so that
    some stranger faces look like several people (the heavy tail that real cohorts have)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(n_people, dim))
    hub = rng.normal(size=dim)
    centres[:wolves] = hub + 0.5 * rng.normal(size=(wolves, dim))
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    x = np.repeat(centres, faces, axis=0) + spread * rng.normal(size=(n_people * faces, dim)) / np.sqrt(dim)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    people = np.repeat([f"p{i:02d}" for i in range(n_people)], faces)
    return x.astype(np.float32), people


def test_miss_ratio_equals_counting_subsets():
    for n in range(1, 8):
        for a in range(n + 1):
            for k in range(1, n + 1):
                avoiding = sum(1 for s in itertools.combinations(range(n), k) if all(i >= a for i in s))
                assert _miss_ratio(np.array(n), np.array(a), k) == pytest.approx(avoiding / comb(n, k))


def test_stranger_rates_equal_enumeration_of_every_k_subset():
    x, people = synthetic_cohort(n_people=6, faces=4, dim=8, seed=1)
    thresholds = [0.0, 0.3, 0.6]
    p = stranger_match_rates(x, people, x, people, [1, 2, 3], thresholds)
    names = sorted(set(people))
    for s in range(0, len(x), 5):
        others = [q for q in names if q != people[s]]
        for ki, k in enumerate([1, 2, 3]):
            for ti, t in enumerate(thresholds):
                share = []
                for q in others:
                    idx = np.flatnonzero(people == q)
                    subsets = list(itertools.combinations(idx, k))
                    share.append(np.mean([max(x[s] @ x[j] for j in sub) >= t for sub in subsets]))
                assert p[s, ki, ti] == pytest.approx(np.mean(share), abs=1e-9)


def test_genuine_miss_rates_equal_enumeration():
    x, people = synthetic_cohort(n_people=5, faces=4, dim=8, spread=1.2, seed=2)
    fnir = genuine_miss_rates(x, people, [1, 3], [0.2, 0.5])
    for ki, k in enumerate([1, 3]):
        for ti, t in enumerate([0.2, 0.5]):
            misses = []
            for i in range(len(x)):
                others = [j for j in np.flatnonzero(people == people[i]) if j != i]
                misses.append(np.mean([max(x[i] @ x[j] for j in sub) < t for sub in itertools.combinations(others, k)]))
            assert fnir[ki, ti] == pytest.approx(np.mean(misses), abs=1e-9)


def test_fpir_matches_brute_force_galleries_and_the_plain_formula_overstates_it():
    """Galleries of N people drawn at random (each a random k of their faces) from everyone but the
    stranger: the share of stranger faces whose best match is >= t, counted, equals the model."""
    x, people = synthetic_cohort(seed=3)
    names = np.array(sorted(set(people)))
    idx = {q: np.flatnonzero(people == q) for q in names}
    sim = x @ x.T
    t, k = 0.35, 3
    sizes = [1, 5, 20]
    p = stranger_match_rates(x, people, x, people, [k], [t])[:, 0, 0]
    model = fpir_from_rates(p, sizes)
    rng = np.random.default_rng(4)
    trials = 400
    n_faces = len(idx[names[0]])
    face_of = np.stack([idx[q] for q in names])  # (people, faces)
    for N, predicted in zip(sizes, model):
        hits = 0
        for s in range(len(x)):
            others = np.flatnonzero(names != people[s])
            chosen = others[rng.integers(0, len(others), size=(trials, N))]  # people drawn independently
            pick = np.argsort(rng.random((trials, N, n_faces)), axis=2)[:, :, :k]  # a random k of their faces
            faces = np.take_along_axis(face_of[chosen], pick, axis=2)
            hits += int((sim[s, faces].reshape(trials, -1).max(axis=1) >= t).sum())
        measured = hits / (len(x) * trials)
        se = np.sqrt(predicted * (1 - predicted) / (len(x) * trials)) + 1e-4
        assert abs(measured - predicted) < 4 * se + 0.01 * predicted, (N, measured, predicted)
    plain = 1 - (1 - p.mean()) ** np.array(sizes)
    assert model[0] == pytest.approx(plain[0])
    assert plain[-1] > 1.2 * model[-1]  # strangers are not all alike: the plain formula overstates big galleries


def test_threshold_is_the_smallest_meeting_the_target_and_rises_with_the_gallery():
    x, people = synthetic_cohort(seed=5)
    table = build_table(x, people, model_id="synthetic", backbone="sface")
    previous = -1.0
    for n in (1, 5, 30, 300, 3000):
        t = table.threshold_for(0.01, n, 5)
        assert table.expected_fpir(t, n, 5) <= 0.01 + 1e-9
        assert table.expected_fpir(t - 0.001, n, 5) > 0.01
        assert t >= previous
        previous = t
    # More faces per person: more chances for a stranger to match one of them.
    assert table.threshold_for(0.01, 30, 5) >= table.threshold_for(0.01, 30, 1)
    # Beyond the faces per person the cohort shows, FPIR keeps growing, at most in proportion.
    top = int(table.ks[-1])
    for t in (0.4, 0.5, 0.6):
        f_top, f_more = table.expected_fpir(t, 30, top), table.expected_fpir(t, 30, 3 * top)
        assert f_top <= f_more <= 3 * f_top + 1e-12
    assert table.expected_fnir(0.9, 5) > table.expected_fnir(0.2, 5)
    with pytest.raises(ValueError, match="target FPIR"):
        table.threshold_for(0.0, 5, 5)


def test_table_round_trips_through_json_and_a_damaged_one_names_its_file(tmp_path):
    x, people = synthetic_cohort(seed=6)
    table = build_table(x, people, model_id="synthetic", backbone="sface", cohort={"photos": 216})
    path = tmp_path / "t.json"
    table.save(path)
    back = FpirTable.load(path)
    assert back.model_id == "synthetic" and back.cohort["photos"] == 216
    for n in (3, 40):
        assert back.threshold_for(0.01, n, 4) == pytest.approx(table.threshold_for(0.01, n, 4), abs=1e-3)
    raw = json.loads(path.read_text())
    raw["fpir"] = raw["fpir"][:-1]
    path.write_text(json.dumps(raw))
    with pytest.raises(ValueError, match=str(path)):
        FpirTable.load(path)


def test_clean_labels_merges_one_person_under_two_labels_and_drops_a_mislabelled_photo():
    x, people = synthetic_cohort(n_people=20, faces=6, wolves=0, seed=7)
    people = people.astype(object)
    people[people == "p03"] = "p19x"  # person 3 also appears under a second label...
    people[np.flatnonzero(people == "p19x")[:3]] = "p03"  # ...half of their photos each
    people[np.flatnonzero(people == "p07")[0]] = "p11"  # one photo of person 7 filed under person 11
    bystander = np.random.default_rng(8).normal(size=x.shape[1])
    x[5 * 6 + 2] = bystander / np.linalg.norm(bystander)  # a stranger's face taken for person 5's
    cleaning = clean_labels(CohortFaces(x, people, len(people), 0))
    assert cleaning.same_person == [["p03", "p19x"]]
    dropped = np.flatnonzero(~cleaning.kept)
    assert list(dropped) == [5 * 6 + 2, 7 * 6]

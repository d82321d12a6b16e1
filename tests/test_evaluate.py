"""evaluate.py: closed set, open set and pairs, each figure checked against numpy from raw similarities.

The model is sface finetuned on 5-celebrity-faces (few epochs; crops and trunk features come
from the caches under FACETOOL_CACHE); unknown people come from deepface-test-dataset, and the
pairs file is deepface-test-dataset's master.csv laid out in the LFW format.
"""
from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from recognizer.cli import evaluate as evaluate_cli
from recognizer.cli import finetune as finetune_cli
from recognizer.sample_data import write_deepface_pairs

ROOT = Path(__file__).resolve().parent.parent
CELEB = "5-celebrity-faces"


@pytest.fixture(scope="module")
def model(tmp_path_factory, data):
    d = tmp_path_factory.mktemp("eval") / "model"
    res = CliRunner().invoke(finetune_cli.main, [str(data / CELEB), "--model", str(d), "--backbone", "sface", "--epochs", "8",
                                                 "--json"], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    return d, json.loads(res.output)


@pytest.fixture(scope="module")
def pairs(tmp_path_factory, data):
    out = tmp_path_factory.mktemp("pairs")
    pairs_file, root = write_deepface_pairs(out, data, folds=10, per_class=3)
    # One photo is missing: its pairs must be listed as skipped, not silently dropped.
    first = pairs_file.read_text().splitlines()[1].split("\t")
    missing = root / first[0] / f"{first[0]}_{int(first[1]):04d}.jpg"
    missing.unlink()
    return pairs_file, root, missing


def _tree_digest(d: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(d.rglob("*")):
        if p.is_file():
            h.update(p.name.encode() + p.read_bytes())
    return h.hexdigest()


@pytest.fixture(scope="module")
def report(model, pairs, data, tmp_path_factory):
    d, _ = model
    pairs_file, root, _ = pairs
    before = _tree_digest(d)
    out = tmp_path_factory.mktemp("report")
    res = CliRunner().invoke(evaluate_cli.main, ["--model", str(d), str(data / CELEB), "--unknown",
                                                 str(data / "deepface-test-dataset/people"), "--pairs", str(pairs_file),
                                                 "--pairs-root", str(root), "--out", str(out), "--json"], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    assert _tree_digest(d) == before, "evaluate.py changed the model"
    return json.loads(res.output), out


# ---- raw similarities, computed here with numpy only ------------------------------------------
def _embed(pipeline, paths):
    emb, kept = [], []
    for p in paths:
        r = pipeline.analyze(p)
        if len(r.faces):
            emb.append(r.embeddings[0])
            kept.append(p)
    return np.stack(emb), kept


def _raw(model_dir, paths):
    """Similarities to every enrolled face, gallery labels, and classifier probabilities (numpy)."""
    import torch

    from recognizer.recognizer import Recognizer

    from recognizer.cache import CropCache

    rec = Recognizer.open(model_dir, cache=CropCache())  # the cache the CLI filled: no detection again
    _, vecs = rec.gallery.vectors()
    people = np.array([r.person for r in rec.gallery.records()])
    rec.gallery.close()
    emb, kept = _embed(rec.pipeline, paths)
    from recognizer.modeldir.config import load_config

    ckpt = torch.load(Path(model_dir) / load_config(model_dir).checkpoint, weights_only=True)
    w = ckpt["head"]["weight"].numpy()
    w = w / np.linalg.norm(w, axis=1, keepdims=True)
    z = float(ckpt["head"]["scale"]) * emb @ w.T
    proba = np.exp(z - z.max(1, keepdims=True))
    return emb @ vecs.T, people, proba / proba.sum(1, keepdims=True), list(ckpt["classes"]), kept


def _knn(sims, people, k=5):
    """Name, similarity to that person's closest neighbour, and the vote ranking, per face."""
    out = []
    for row in sims:
        nn = np.argsort(-row, kind="stable")[:k]
        w, best = {}, {}
        for j in nn:
            w[people[j]] = w.get(people[j], 0.0) + max(row[j], 0.0)
            best[people[j]] = max(best.get(people[j], -1.0), row[j])
        rank = sorted(w, key=lambda p: (w[p], best[p], p), reverse=True)
        out.append((rank[0], best[rank[0]], rank, best))
    return out


def _val(data):
    from recognizer.training.dataset import list_people

    s = list_people(data / CELEB / "val")
    return s.paths, s.labels


def test_closed_set_figures_match_numpy(report, model, data):
    rep, _ = report
    d, _ = model
    paths, labels = _val(data)
    sims, people, proba, classes, kept = _raw(d, paths)
    truth = [labels[paths.index(p)] for p in kept]
    knn = _knn(sims, people)
    cs = rep["closed_set"]
    assert cs["n"] == len(kept) == 25
    assert cs["knn"]["accuracy"] == pytest.approx(np.mean([k[0] == t for k, t in zip(knn, truth)]), abs=1e-4)
    assert cs["knn"]["top_k"]["3"] == pytest.approx(np.mean([t in k[2][:3] for k, t in zip(knn, truth)]), abs=1e-4)
    clf = [classes[i] for i in proba.argmax(1)]
    top3 = [[classes[i] for i in np.argsort(-p)[:3]] for p in proba]
    assert cs["classifier"]["accuracy"] == pytest.approx(np.mean([c == t for c, t in zip(clf, truth)]), abs=1e-4)
    assert cs["classifier"]["top_k"]["3"] == pytest.approx(np.mean([t in r for r, t in zip(top3, truth)]), abs=1e-4)
    for dec in ("classifier", "knn", "combined"):
        assert cs[dec]["top_k"]["1"] == cs[dec]["accuracy"]
        assert set(cs[dec]["per_person"]) >= {"madonna", "macro avg"}
    print("closed set:", {dec: (cs[dec]["accuracy"], cs[dec]["top_k"]["3"]) for dec in ("classifier", "knn", "combined")})


def test_combined_decider_is_what_identify_answers(report, model, data, crop_cache):
    """The evaluated 'combined' names are exactly what identify.py names (threshold out of the way)."""
    from recognizer.decision import decide
    from recognizer.recognizer import Recognizer

    d, _ = model
    paths, _ = _val(data)
    rec = Recognizer.open(d, cache=crop_cache)
    ids = [r.faces[0] for r in rec.identify_many(paths[:8], threshold=-1.0)]
    emb, _ = _embed(rec.pipeline, paths[:8])
    dec = decide(rec.gallery, rec.classifier, emb, k=rec.config.knn_k, model_id=rec.config.model_id)
    rec.gallery.close()
    assert dec.names["combined"] == [f.name for f in ids]
    np.testing.assert_allclose(dec.similarity["combined"], [f.similarity for f in ids], atol=1e-4)


def test_open_set_fpir_and_dir_match_numpy(report, model, data):
    from recognizer.training.dataset import list_people

    rep, _ = report
    d, _ = model
    paths, labels = _val(data)
    sims, people, _, _, kept = _raw(d, paths)
    truth = [labels[paths.index(p)] for p in kept]
    unk = list_people(data / "deepface-test-dataset/people")
    usims, _, _, _, ukept = _raw(d, unk.paths)
    knn, uknn = _knn(sims, people), _knn(usims, people)
    o = rep["open_set"]
    assert o["n_known"] == 25 and o["n_unknown"] == len(ukept)
    t = o["threshold"]
    # The threshold is the one identify uses for this gallery, derived from the target FPIR, and the
    # report puts the FPIR the stranger cohort predicts for it beside the one measured here.
    assert o["threshold_info"]["source"] == "target FPIR" and o["threshold_info"]["threshold"] == pytest.approx(t)
    assert 0 < o["predicted_fpir"] <= 0.01
    fpir = np.mean([s >= t for _, s, _, _ in uknn])
    dir_ = np.mean([n == y and s >= t for (n, s, _, _), y in zip(knn, truth)])
    assert o["deciders"]["knn"]["at_current"]["fpir"] == pytest.approx(fpir, abs=1e-4)
    assert o["deciders"]["knn"]["at_current"]["dir"] == pytest.approx(dir_, abs=1e-4)
    # The recommendation: no threshold on the 1e-4 grid below it keeps FPIR at the target (with 62 unknown
    # faces and a target of 0.01 that means none named), and DIR is measured there.
    rec_t = o["deciders"]["knn"]["recommended"]["threshold"]
    u = np.array([s for _, s, _, _ in uknn])
    allowed = int(np.floor(o["target_fpir"] * len(u)))
    assert (u >= rec_t).sum() <= allowed < (u >= rec_t - 1e-4).sum()
    assert o["deciders"]["knn"]["recommended"]["dir"] == pytest.approx(
        np.mean([n == y and s >= rec_t for (n, s, _, _), y in zip(knn, truth)]), abs=1e-4)
    assert o["deployed"] == "combined" and o["recommended_threshold"] == o["deciders"]["combined"]["recommended"]["threshold"]
    print("open set:", {k: v["at_current"] | {"recommended": v["recommended"]} for k, v in o["deciders"].items()})


def test_verification_matches_numpy_and_lists_the_missing_photo(report, model, pairs, crop_cache):
    from recognizer.recognizer import Recognizer
    from recognizer.evaluation.verification import read_pairs

    rep, _ = report
    d, _ = model
    pairs_file, root, missing = pairs
    v = rep["verification"]
    folds, per_class, pp = read_pairs(pairs_file, root)
    assert (folds, per_class, len(pp)) == (10, 3, 60) == (v["folds"], v["pairs_per_class"], v["pairs_in_file"])
    bad = [p for p in pp if str(missing) in (p.a, p.b)]
    assert bad and len(v["skipped"]) == len(bad) and v["pairs_scored"] == 60 - len(bad)
    assert rep["undetected"]["verification"][0]["reasons"] == {str(missing): "missing"}

    rec = Recognizer.open(d, cache=crop_cache)
    photos = sorted(({p.a for p in pp} | {p.b for p in pp}) - {str(missing)})
    emb, kept = _embed(rec.pipeline, photos)
    rec.gallery.close()
    e = dict(zip(kept, emb))
    ok = [p for p in pp if p.a in e and p.b in e]
    s = np.array([float(e[p.a] @ e[p.b]) for p in ok])
    y = np.array([p.same for p in ok])
    f = np.array([p.fold for p in ok])

    accs = [np.mean((s[f == k] >= _best(s[f != k], y[f != k])) == y[f == k]) for k in range(10)]
    assert v["accuracy_mean"] == pytest.approx(np.mean(accs), abs=1e-4)
    assert v["accuracy_std"] == pytest.approx(np.std(accs), abs=1e-4)
    neg, pos = s[~y], s[y]
    for far in ("0.01", "0.001"):
        # smallest threshold accepting at most FAR of the mismatched pairs: just above the highest one here
        t = max(neg)
        assert v["tar_at_far"][far]["tar"] == pytest.approx(np.mean(pos > t), abs=1e-4)
        assert v["tar_at_far"][far]["far"] == 0.0
    print("verification:", {k: v[k] for k in ("accuracy_mean", "accuracy_std", "tar_at_far")})


def _best(ss, yy):
    """Brute force: accuracy at every midpoint between distinct similarities, lowest of the best."""
    vals = sorted(set(ss.tolist()))
    cands = [vals[0] - 1e-6] + [(a + b) / 2 for a, b in zip(vals, vals[1:])] + [vals[-1] + 1e-6]
    accs = [np.mean((ss >= c) == yy) for c in cands]
    return cands[accs.index(max(accs))]


def test_kfold_accuracy_and_tar_at_far_on_overlapping_scores():
    """Where the classes overlap (unlike sface on deepface pairs), so thresholds and folds matter."""
    from recognizer.evaluation.verification import score_pairs

    rng = np.random.default_rng(0)
    n = 2000
    same = np.arange(n) % 2 == 0
    sims = np.round(np.where(same, rng.normal(0.5, 0.15, n), rng.normal(0.2, 0.15, n)), 3)
    folds = np.arange(n) // 200
    v = score_pairs(sims, same, folds, pairs_file="x", n_folds=10, per_class=100, n_pairs=n, skipped=[])
    accs = [np.mean((sims[folds == k] >= _best(sims[folds != k], same[folds != k])) == same[folds == k]) for k in range(10)]
    assert 0.8 < np.mean(accs) < 0.95
    np.testing.assert_allclose(v.fold_accuracy, accs)
    assert v.accuracy_std == pytest.approx(np.std(accs))
    neg, pos = np.sort(sims[~same])[::-1], sims[same]
    for far in (1e-2, 1e-3):
        k = int(far * len(neg))  # mismatched pairs allowed through; the next one down must be refused
        tar, t, far_reached = v.tar[far]
        assert (neg >= t).sum() <= k and t <= neg[k] + 1e-4 and t > neg[k]
        assert tar == pytest.approx(np.mean(pos >= t)) and far_reached <= far
        print(f"TAR@FAR {far:g} = {tar:.3f} at {t}")
    assert not v.notes  # 1000 mismatched pairs resolve FAR 1e-3


def test_report_files_link_their_plots(report):
    rep, out = report
    md = (out / "report.md").read_text()
    for name in ("confusion_classifier.png", "confusion_knn.png", "confusion_combined.png", "openset.png", "verification.png"):
        assert f"]({name})" in md and (out / name).stat().st_size > 5000, name
    assert json.loads((out / "report.json").read_text()) == rep
    assert "Recommended threshold" in md and "10-fold accuracy" in md and "TAR @ FAR 0.001" in md


def test_finetune_report_is_the_same_closed_set_computation(report, model):
    rep, _ = report
    _, ft = model
    for dec in ("classifier", "knn", "combined"):
        assert ft[dec]["accuracy"] == rep["closed_set"][dec]["accuracy"]
        assert ft[dec]["top_k"] == rep["closed_set"][dec]["top_k"]
        assert ft[dec]["per_person"] == rep["closed_set"][dec]["per_person"]


def test_set_threshold_stores_the_bounded_threshold(model, data, tmp_path):
    """With enough strangers for the target, the stored threshold is the one whose FPIR upper bound is under it."""
    import shutil

    from recognizer.evaluation.open_set import fpir_upper_bound
    from recognizer.modeldir.config import load_config

    d, _ = model
    m = tmp_path / "m"
    shutil.copytree(d, m)
    res = CliRunner().invoke(evaluate_cli.main, ["--model", str(m), str(data / CELEB), "--unknown",
                                                 str(data / "deepface-test-dataset/people"), "--set-threshold",
                                                 "--target-fpir", "0.05", "--json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.output)
    o = out["open_set"]
    assert load_config(m).threshold == out["threshold_set"] == o["bounded_threshold"] != out["threshold"]
    assert load_config(d).threshold == out["threshold"]
    b = o["deciders"][o["deployed"]]["bounded"]
    named = round(b["fpir"] * o["n_unknown"])
    assert fpir_upper_bound(named, o["n_unknown"]) <= 0.05 < fpir_upper_bound(named + 1, o["n_unknown"])
    assert b["threshold"] >= o["deciders"][o["deployed"]]["recommended"]["threshold"]


def test_set_threshold_on_too_few_strangers_is_refused(model, data, tmp_path):
    """Without --unknown, a held-out person's few faces cannot show FPIR <= 0.01: refused, model.json untouched.
    (Before: a threshold that named 93 % of strangers was stored.)"""
    import shutil

    d, _ = model
    m = tmp_path / "m"
    shutil.copytree(d, m)
    before = (m / "model.json").read_bytes()
    res = CliRunner().invoke(evaluate_cli.main, ["--model", str(m), str(data / CELEB), "--set-threshold"])
    assert res.exit_code == 1, res.output
    assert "threshold not set" in res.output and "at least 299" in res.output and "--target-fpir" in res.output
    assert "No threshold may be stored" in res.output  # the report itself says so too
    assert (m / "model.json").read_bytes() == before


def test_fpir_upper_bound_is_clopper_pearson():
    """Checked against the binomial CDF summed exactly with math.comb, and the closed form for none named."""
    import math

    from recognizer.evaluation.open_set import allowed_false_accepts, fpir_upper_bound, strangers_needed

    def cdf(k, n, p):
        return sum(math.comb(n, i) * p ** i * (1 - p) ** (n - i) for i in range(k + 1))

    for k, n in [(0, 5), (0, 299), (3, 62), (10, 400), (1, 2)]:
        ub = fpir_upper_bound(k, n)
        assert cdf(k, n, ub) == pytest.approx(0.05, abs=1e-9)
        assert ub > k / n
    assert fpir_upper_bound(0, 100) == pytest.approx(1 - 0.05 ** (1 / 100), rel=1e-9)
    assert fpir_upper_bound(5, 5) == 1.0
    assert strangers_needed(0.01) == 299 and strangers_needed(0.05) == 59
    assert fpir_upper_bound(0, 299) <= 0.01 < fpir_upper_bound(0, 298)
    assert allowed_false_accepts(298, 0.01) is None and allowed_false_accepts(299, 0.01) == 0
    for n in (300, 1000, 5000):
        k = allowed_false_accepts(n, 0.01)
        assert fpir_upper_bound(k, n) <= 0.01 < fpir_upper_bound(k + 1, n)


def test_knn_only_model_with_held_out_people(data, tmp_path, crop_cache):
    """A never-finetuned model: kNN only, said so; unknowns held out of a copy of the gallery, the model untouched."""
    from recognizer.training.dataset import list_people
    from recognizer.evaluation.run import EvaluationOptions, evaluate_model
    from recognizer.recognizer import Recognizer

    people = ["ben_afflek", "elton_john", "madonna", "mindy_kaling"]
    rec = Recognizer.open(tmp_path / "m", backbone="sface", create=True, cache=crop_cache)
    train = list_people(data / CELEB / "train")
    for p in people:
        rec.enroll(p, [x for x, lab in zip(train.paths, train.labels) if lab == p][:6])
    rec.gallery.close()
    before = _tree_digest(tmp_path / "m")
    rep = evaluate_model(tmp_path / "m", data / CELEB, EvaluationOptions(holdout_share=0.25, seed=1), cache=crop_cache)
    assert _tree_digest(tmp_path / "m") == before
    d = rep.to_dict()
    assert list(d["closed_set"]) == ["n", "knn"] and any("no classifier" in n for n in d["notes"])
    assert any("not enrolled" in n and "jerry_seinfeld" in n for n in d["notes"])
    o = d["open_set"]
    assert list(o["deciders"]) == ["knn"] and o["deployed"] == "knn"
    held = o["unknown_source"].split(": ")[1].split(";")[0]
    assert held in people and "jerry_seinfeld" in o["unknown_source"]
    assert o["n_known"] == 15 and o["n_unknown"] == 10  # 5 val photos each: 3 known, 1 held out + jerry


def test_threshold_for_rate_and_rates_on_a_small_case():
    from recognizer.evaluation.open_set import rates_at, threshold_for_rate

    neg = np.array([0.1, 0.5, 0.3, 0.36300000001, 0.2])
    assert threshold_for_rate(neg, 5, 0.0) == 0.5001
    assert threshold_for_rate(neg, 5, 0.2) == 0.3631  # one of five may pass: 0.5; the next, 0.363..., must not
    assert threshold_for_rate(neg, 10, 0.5) == -1.0
    correct = np.array([True, True, False, True])
    ks = np.array([0.9, 0.4, 0.8, 0.35])
    named = np.array([True, False, True])
    us = np.array([0.5, 0.9, 0.37])
    fpir, dir_ = rates_at(correct, ks, named, us, np.array([0.36, 0.45]))
    np.testing.assert_allclose(fpir, [2 / 3, 1 / 3])
    np.testing.assert_allclose(dir_, [2 / 4, 1 / 4])  # 0.9 and 0.4 correct and over 0.36; 0.8 wrong; 0.35 under


def test_malformed_pairs_file_is_refused(tmp_path):
    from facecore.errors import FaceToolError
    from recognizer.evaluation.verification import read_pairs

    with pytest.raises(FaceToolError, match="first line"):
        read_pairs(_write(tmp_path / "p.txt", "a 1 2\n"), tmp_path)
    with pytest.raises(FaceToolError, match="3 pair lines, expected 1 folds x 2 x 1 = 2"):
        read_pairs(_write(tmp_path / "q.txt", "1 1\na 1 2\nb 1 c 2\nd 1 2\n"), tmp_path)
    with pytest.raises(FaceToolError, match="mismatched"):
        read_pairs(_write(tmp_path / "r.txt", "1 1\na 1 2\nb 1 3\n"), tmp_path)


def _write(p: Path, text: str) -> Path:
    p.write_text(text)
    return p


def test_help_is_fast_and_imports_nothing_heavy():
    code = "import sys; sys.argv=['evaluate.py','--help']; import evaluate\ntry: evaluate.main()\nexcept SystemExit: pass\nprint('torch' in sys.modules, 'sklearn' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert "--target-fpir" in out.stdout and out.stdout.strip().endswith("False False")


def test_report_lists_every_mistake_with_unknown_in_the_open_set_confusion(report):
    """Issue 27: the report a person can act on — every wrong answer (photo, expected, got, similarity), an
    "unknown" row and column, thumbnails linked only where written."""
    rep, out = report
    names, m = rep["open_set_confusion"]["names"], np.array(rep["open_set_confusion"]["matrix"])
    o = rep["open_set"]
    assert "unknown" in names and m.sum() == o["n_known"] + o["n_unknown"]
    u = names.index("unknown")
    assert m[u].sum() == o["n_unknown"]  # every stranger's face is in the unknown row
    dep = o["deciders"][o["deployed"]]["at_current"]
    assert m[u].sum() - m[u, u] == round(dep["fpir"] * o["n_unknown"])  # strangers named = FPIR's count
    wrong = rep["mistakes"]["open_set"]
    assert len(wrong) == m.sum() - np.trace(m)
    for w in wrong:
        assert w["expected"] != w["got"] and Path(w["photo"]).is_file() and -1 <= w["similarity"] <= 1
    sims = [w["similarity"] for w in wrong]
    assert sims == sorted(sims, reverse=True)
    md = (out / "report.md").read_text()
    for i in range(min(len(wrong), 50)):
        name = f"mistakes/open_set-{i:03d}.jpg"
        assert f"]({name})" in md and (out / name).stat().st_size > 500
    for link in __import__("re").findall(r"\]\(([^)]+)\)", md):
        assert (out / link).is_file(), link  # no link to a file that was not written


def test_mistakes_and_unknown_confusion_match_brute_force():
    from recognizer.evaluation.mistakes import answers, confusion_with_unknown, find_mistakes

    rng = np.random.default_rng(5)
    people = ["ada", "bo", "cy"]
    for _ in range(20):
        n = int(rng.integers(0, 30))
        expected = [str(x) for x in rng.choice(people + ["unknown"], n)]
        named = [None if rng.random() < 0.2 else str(rng.choice(people + ["dee"])) for _ in range(n)]
        sims = rng.uniform(-1, 1, n)
        got = answers(named, sims, 0.3)
        assert got == [x if x is not None and s >= 0.3 else "unknown" for x, s in zip(named, sims)]
        photos = [f"p{i}.jpg" for i in range(n)]
        wrong = find_mistakes(expected, got, sims, photos)
        assert {w.photo for w in wrong} == {photos[i] for i in range(n) if expected[i] != got[i]}
        names, m = confusion_with_unknown(expected, got)
        for i, e in enumerate(names):
            for j, g in enumerate(names):
                assert m[i, j] == sum(1 for a, b in zip(expected, got) if (a, b) == (e, g))
        assert m.sum() == n and "unknown" in names

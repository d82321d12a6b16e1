"""recognizer.evaluation.metrics gives scikit-learn's numbers exactly (==, not approx): the core install
computes evaluation reports without scikit-learn, which is only in the [train] extra (issue 26)."""
from __future__ import annotations

import numpy as np
import pytest

from recognizer.evaluation.metrics import classification_report, confusion_matrix

pytestmark = pytest.mark.train  # scikit-learn is in requirements-train.txt
sk = pytest.importorskip("sklearn.metrics")

NAMES = ["ada", "bo", "cy", "dee", "(none)", "eve"]


def _cases():
    rng = np.random.default_rng(26)
    for n in (1, 2, 3, 5, 17, 60, 250):
        for k in (1, 2, 3, 6):
            for _ in range(6):
                true = [NAMES[i] for i in rng.integers(0, min(k, 4), n)]  # "(none)" and "eve" are never the truth
                noise = rng.random()
                pred = [t if rng.random() > noise else NAMES[i] for t, i in zip(true, rng.integers(0, k, n))]
                yield true, pred
    yield ["a"], ["a"]
    yield ["a"], ["b"]
    yield ["a", "a"], ["(none)", "(none)"]
    yield ["a", "b"], ["b", "a"]  # nothing right
    yield ["a", "b", "c"], ["a", "a", "a"]  # labels never predicted
    yield ["a", "b", "c", "c"], ["a", "b", "c", "c"]  # all right
    yield ["x", "y"] * 7, ["x"] * 14
    yield ["a", "b", "c"], ["z", "z", "z"]  # every answer outside the labels


CASES = list(_cases())


@pytest.mark.parametrize("true,pred", CASES, ids=range(len(CASES)))
def test_classification_report_equals_scikit_learn(true, pred):
    for labels in (sorted(set(true)), sorted(set(true) | set(pred))):
        expected = sk.classification_report(true, pred, labels=labels, output_dict=True, zero_division=0)
        got = classification_report(true, pred, labels=labels)
        assert got == expected
        assert list(got) == list(expected)  # same keys in the same order
        assert all(type(v) is type(expected[k]) for k, v in got.items())


@pytest.mark.filterwarnings("ignore:A single label was found")
@pytest.mark.parametrize("true,pred", CASES, ids=range(len(CASES)))
def test_confusion_matrix_equals_scikit_learn(true, pred):
    # As closed_set.py asks (the truths, then other answers), the truths alone, and in another order.
    for labels in (sorted(set(true)) + sorted(set(pred) - set(true)), sorted(set(true)), sorted(set(true) | set(pred))[::-1]):
        expected = sk.confusion_matrix(true, pred, labels=labels)
        got = confusion_matrix(true, pred, labels=labels)
        assert got.dtype == expected.dtype and got.shape == expected.shape
        assert np.array_equal(got, expected)


def test_confusion_plot_is_pixel_for_pixel_scikit_learns(tmp_path):
    from PIL import Image

    from recognizer.evaluation.report import plot_confusion, pyplot, save_png

    names = ["ada", "bo", "cy", "(none)"]
    matrix = np.array([[5, 1, 0, 0], [0, 7, 2, 1], [1, 0, 9, 0], [0, 0, 0, 0]])
    plot_confusion(names, matrix, "closed set", tmp_path / "ours.png")
    size = max(4.0, 0.6 * len(names) + 2)
    fig, ax = pyplot().subplots(figsize=(size, size), dpi=100)
    sk.ConfusionMatrixDisplay(matrix, display_labels=names).plot(ax=ax, cmap="Blues", colorbar=False, xticks_rotation=45)
    ax.set(xlabel="answer", ylabel="true person", title="closed set")
    fig.tight_layout()
    save_png(fig, tmp_path / "sklearn.png")
    ours, theirs = (np.asarray(Image.open(tmp_path / f).convert("RGB")) for f in ("ours.png", "sklearn.png"))
    assert ours.shape == theirs.shape and np.array_equal(ours, theirs)

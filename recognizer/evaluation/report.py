"""An evaluation written out: REPORT_DIR/report.md (tables, plots linked relatively), report.json, PNGs.

Rendering only: every figure comes from the EvaluationReport (`recognizer.evaluation.run`).
Plots use matplotlib's Agg backend (no display needed) and are written atomically.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import numpy as np

from facecore.atomic import atomic_write
from facecore.outputs import check_output, check_output_dir, output_file
from recognizer.image import load_image

REPORT_MD = "report.md"
REPORT_JSON = "report.json"
OPENSET_PNG = "openset.png"
VERIFICATION_PNG = "verification.png"
OPENSET_CONFUSION_PNG = "confusion_openset.png"
MISTAKES_SHOWN = 50  # per section in report.md (report.json lists them all), each with a thumbnail under --out
THUMB = 96  # pixels, the longer side of a mistake's thumbnail

__all__ = ["MISTAKES_SHOWN", "OPENSET_CONFUSION_PNG", "OPENSET_PNG", "REPORT_JSON", "REPORT_MD", "VERIFICATION_PNG", "confusion_png", "plot_confusion",
           "plot_open_set", "plot_verification", "pyplot", "render_markdown", "save_png", "write_report"]


def confusion_png(decider: str) -> str:
    return f"confusion_{decider}.png"


def pyplot():
    import matplotlib  # heavy (seconds to import): only plots need it

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # after use("Agg"): no display is needed

    return plt


def save_png(fig, path: Path, inputs: Sequence[str | Path] | None = None) -> Path:
    """Save `fig` as a PNG at `path`, atomically; with `inputs`, as a user's output (facecore.outputs: never
    among the inputs, replacing only the tool's own file)."""
    try:
        if inputs is None:
            with atomic_write(path) as fh:
                fig.savefig(fh, format="png")
        else:
            with output_file(path, inputs, what="evaluation report") as tmp:
                fig.savefig(tmp, format="png")
    finally:
        pyplot().close(fig)
    return path


def plot_confusion(names: list[str], matrix: np.ndarray, title: str, path: Path, inputs: Sequence | None = None) -> Path:
    """Counts in the cells, names on both axes: what scikit-learn's ConfusionMatrixDisplay draws (with
    cmap="Blues", no colour bar, x labels at 45°), drawn here so the core install needs no scikit-learn."""
    plt = pyplot()
    size = max(4.0, 0.6 * len(names) + 2)
    fig, ax = plt.subplots(figsize=(size, size), dpi=100)
    matrix = np.asarray(matrix)
    n = len(names)
    image = ax.imshow(matrix, interpolation="nearest", cmap="Blues")
    if matrix.size:
        # Dark text on light cells, light text on dark ones.
        low, high = image.cmap(0), image.cmap(1.0)
        middle = (matrix.max() + matrix.min()) / 2.0
        for i in range(matrix.shape[0]):
            for j in range(matrix.shape[1]):
                ax.text(j, i, _cell_text(matrix[i, j]), ha="center", va="center",
                        color=high if matrix[i, j] < middle else low)
    ax.set(xticks=np.arange(n), yticks=np.arange(n), xticklabels=names, yticklabels=names)
    ax.set_ylim((n - 0.5, -0.5))
    plt.setp(ax.get_xticklabels(), rotation=45)
    ax.set(xlabel="answer", ylabel="true person", title=title)
    fig.tight_layout()
    return save_png(fig, path, inputs)


def _cell_text(value) -> str:
    if np.issubdtype(np.asarray(value).dtype, np.integer):
        return format(int(value), "d")
    return format(value, ".2g")


def plot_open_set(open_set, path: Path, inputs: Sequence | None = None) -> Path:
    plt = pyplot()
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.2), dpi=100)
    for d, s in open_set.deciders.items():
        # FPIR 0 cannot sit on a log axis: it is drawn at half the smallest non-zero step.
        floor = 0.5 / max(open_set.n_unknown, 1)
        # Thresholds ascend, so both rates descend: reversed, FPIR ascends along the x axis.
        line, = ax1.plot(np.maximum(s.curve_fpir[::-1], floor), s.curve_dir[::-1], label=d)
        ax2.plot(s.curve_thresholds, s.curve_fpir, color=line.get_color(), linestyle="--", label=f"{d} FPIR")
        ax2.plot(s.curve_thresholds, s.curve_dir, color=line.get_color(), label=f"{d} DIR")
    ax1.set(xscale="log", xlabel="FPIR (unknown faces named)", ylabel="DIR (known faces named correctly)")
    ax1.axvline(open_set.target_fpir, color="grey", linestyle=":", label=f"target FPIR {open_set.target_fpir:g}")
    ax1.grid(alpha=0.3)
    ax1.legend(fontsize=8)
    ax2.axvline(open_set.threshold, color="black", linestyle=":", label=f"current {open_set.threshold:.3f}")
    ax2.axvline(open_set.recommended_threshold, color="red", linestyle=":", label=f"recommended {open_set.recommended_threshold:.4f}")
    ax2.set(xlim=(-0.2, 1.0), xlabel="threshold (cosine similarity)", ylabel="rate")
    ax2.grid(alpha=0.3)
    ax2.legend(fontsize=7)
    fig.tight_layout()
    return save_png(fig, path, inputs)


def plot_verification(ver, path: Path, inputs: Sequence | None = None) -> Path:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
    bins = np.linspace(-0.3, 1.0, 53)
    ax.hist(ver.similarities[ver.same], bins=bins, alpha=0.6, label="matched pairs")
    ax.hist(ver.similarities[~ver.same], bins=bins, alpha=0.6, label="mismatched pairs")
    if ver.fold_threshold:
        ax.axvline(float(np.mean(ver.fold_threshold)), color="black", linestyle=":", label="mean 10-fold threshold")
    ax.set(xlabel="cosine similarity", ylabel="pairs")
    ax.legend()
    fig.tight_layout()
    return save_png(fig, path, inputs)


def _table(header: list[str], rows: list[list]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return out + [""]


def _undetected(items: list[dict]) -> list[str]:
    if not items:
        return ["Every photo had a detectable face.", ""]
    out = [f"{len(items)} photo(s) left out (no detectable face, missing or unreadable):", ""]
    for u in items:
        out.append(f"- `{u.get('file') or u.get('a')}`" + (f" ({u['person']})" if "person" in u else "")
                   + f": {u.get('reason') or u.get('reasons')}")
    return out + [""]


def _notes(notes: list[str]) -> list[str]:
    return [f"- {n}" for n in notes] + ([""] if notes else [])


def _closed_set_md(rep, plots: frozenset[str]) -> list[str]:
    c = rep.closed
    deciders = list(c.predictions)
    L = ["## Closed set", "", f"{len(c.labels)} faces of enrolled people from `{rep.data}`; no threshold applies.", ""]
    ks = sorted(next(iter(c.top_k.values())).keys()) if c.top_k else []
    L += _table(["decider", "accuracy", *[f"top-{k}" for k in ks], "macro F1"],
                [[d, f"{c.accuracy(d):.4f}", *[f"{c.top_k[d][k]:.4f}" for k in ks],
                  f"{c.classification_report(d).get('macro avg', {}).get('f1-score', 0.0):.4f}"] for d in deciders])
    people = sorted(set(c.labels))
    L += ["Per person (precision / recall / F1, scikit-learn's classification_report):", ""]
    reports = {d: c.classification_report(d) for d in deciders}
    L += _table(["person", "support", *deciders],
                [[p, int(reports[deciders[0]][p]["support"]),
                  *[f"{reports[d][p]['precision']:.2f} / {reports[d][p]['recall']:.2f} / {reports[d][p]['f1-score']:.2f}"
                    for d in deciders]] for p in people])
    L += _images([(f"confusion matrix, {d}", confusion_png(d)) for d in deciders], plots)
    return L + _undetected(rep.undetected.get("closed_set", []))


def _current_threshold_md(o) -> list[str]:
    """How the current threshold was chosen, and the FPIR the cohort predicted against the one measured."""
    ti = o.threshold_info
    if not ti:
        return []
    measured = o.deciders[o.deployed].at_current.fpir
    pred = "no FPIR table for this model" if o.predicted_fpir is None else f"{o.predicted_fpir:.4f}"
    return [f"Threshold in use {o.threshold:.4f} ({ti['source']}"
            + (f" {ti['target_fpir']:g}" if ti["source"] == "target FPIR" else "")
            + f", for {ti['people']} people with {ti['faces_per_person']:.1f} faces each): FPIR predicted from the "
            f"stranger cohort {pred}, measured here {measured:.4f} ({o.deployed}, {o.n_unknown} unknown faces).", ""]


def _stored_threshold_md(rep, o) -> list[str]:
    """The threshold `--set-threshold` may store: FPIR's upper bound under the target, or why there is none."""
    conf = f"{o.to_dict()['confidence']:.0%}"
    if o.bounded_threshold is None:
        return [f"No threshold may be stored from these figures: showing FPIR ≤ {o.target_fpir:g} at {conf} confidence "
                f"needs at least {o.strangers_needed} unknown faces with none named ({o.n_unknown} here); "
                "`--set-threshold` refuses.", ""]
    b = o.deciders[o.deployed].bounded
    return [f"Threshold with FPIR ≤ {o.target_fpir:g} at {conf} confidence: **{b.threshold:.4f}** "
            f"(FPIR here {b.fpir:.4f}, DIR {b.dir:.4f})"
            + ("; written to model.json." if rep.threshold_set is not None else "; `--set-threshold` stores it in model.json."), ""]


def _open_set_md(rep, plots: frozenset[str]) -> list[str]:
    o = rep.open
    L = ["## Open set", "", f"{o.n_known} faces of known people, {o.n_unknown} faces of unknown people ({o.unknown_source}).",
         "FPIR: unknown faces given a name. DIR: known faces given their own name.", ""]
    L += _table(["decider", f"FPIR @ {o.threshold:.4f} (in use)", f"DIR @ {o.threshold:.4f}",
                 f"threshold for FPIR ≤ {o.target_fpir:g}", "FPIR there", "DIR there"],
                [[d + (" (identify uses this)" if d == o.deployed else ""), f"{s.at_current.fpir:.4f}", f"{s.at_current.dir:.4f}",
                  f"{s.recommended.threshold:.4f}", f"{s.recommended.fpir:.4f}", f"{s.recommended.dir:.4f}"]
                 for d, s in o.deciders.items()])
    L += [f"**Recommended threshold: {o.recommended_threshold:.4f}** ({o.deployed}, target FPIR {o.target_fpir:g}, "
          f"measured on these {o.n_unknown} unknown faces).", ""]
    L += _stored_threshold_md(rep, o)
    L += _current_threshold_md(o)
    if o.threshold_info and round(o.threshold, 4) != round(rep.threshold, 4):
        L += [f"The threshold in use here, {o.threshold:.4f}, is the one identify would use for the "
              f"{o.threshold_info['people']} people left once some are held out; with all its people the model uses "
              f"{rep.threshold:.4f} (the header's).", ""]
    L += _notes(o.notes)
    L += _images([("FPIR and DIR", OPENSET_PNG), ("open-set confusion matrix, with unknown", OPENSET_CONFUSION_PNG)],
                 plots)
    return L + _undetected(rep.undetected.get("unknown", []))


def _verification_md(v, plots: frozenset[str]) -> list[str]:
    L = ["## Verification on pairs", "",
         f"`{v.pairs_file}`: {v.n_folds} folds × {v.per_class} matched + {v.per_class} mismatched pairs; "
         f"{len(v.similarities)} of {v.n_pairs} pairs scored ({int(v.same.sum())} matched, {int((~v.same).sum())} mismatched).", ""]
    rows = [["10-fold accuracy" if v.n_folds == 10 else f"{v.n_folds}-fold accuracy", f"{v.accuracy_mean:.4f} ± {v.accuracy_std:.4f}"]]
    rows += [[f"TAR @ FAR {far:g}", f"{t[0]:.4f} (threshold {t[1]:.4f}, FAR reached {t[2]:.4f})"] for far, t in v.tar.items()]
    L += _table(["figure", "value"], rows)
    L += _notes(v.notes)
    L += _images([("similarities of pairs", VERIFICATION_PNG)], plots)
    return L + _undetected(v.skipped)


def _images(images: list[tuple[str, str]], plots: frozenset[str]) -> list[str]:
    """Links to the plots among `images` (alt text, file name) that were written beside the report."""
    shown = [f"![{alt}]({name})" for alt, name in images if name in plots]
    return [" ".join(shown), ""] if shown else []


def thumbnail_name(section: str, i: int) -> str:
    return f"mistakes/{section}-{i:03d}.jpg"


def _mistakes_md(rep, plots: frozenset[str]) -> list[str]:
    """The wrong answers of each section, most confident first, with their thumbnails where written."""
    L = []
    titles = {"closed_set": "closed set, no threshold", "open_set": "open set, at the threshold in use"}
    for section, items in rep.mistakes.items():
        if not L:
            L = ["## Mistakes", "", "Faces given a wrong name, known people called unknown, strangers named "
                 "(similarity: to the name given, or to the nearest person when the answer is unknown).", ""]
        L += [f"### {titles.get(section, section)}: {len(items)}", ""]
        if not items:
            continue
        rows = []
        for i, m in enumerate(items[:MISTAKES_SHOWN]):
            thumb = thumbnail_name(section, i)
            rows.append([f"![]({thumb})" if thumb in plots else "", f"`{m.photo}`", m.expected, m.got, f"{m.similarity:.4f}"])
        L += _table(["face", "photo", "expected", "got", "similarity"], rows)
        if len(items) > MISTAKES_SHOWN:
            L += [f"… and {len(items) - MISTAKES_SHOWN} more (report.json lists them all).", ""]
    return L


def _write_thumbnails(rep, out: Path, inputs: Sequence[str | Path] = ()) -> list[Path]:
    """A small crop of each mistake's face shown in report.md; a photo that cannot be read gets none."""
    written = []
    for section, items in rep.mistakes.items():
        for i, m in enumerate(items[:MISTAKES_SHOWN]):
            if m.box is None:
                continue
            try:
                img = load_image(m.photo)
            except (OSError, ValueError):
                continue
            x1, y1, x2, y2 = m.box
            pad = 0.2 * max(x2 - x1, y2 - y1)
            crop = img.crop((int(max(0, x1 - pad)), int(max(0, y1 - pad)), int(min(img.width, x2 + pad)),
                             int(min(img.height, y2 + pad))))
            crop.thumbnail((THUMB, THUMB))
            path = out / thumbnail_name(section, i)
            with output_file(path, inputs, what="evaluation report") as tmp:
                crop.save(tmp, format="JPEG", quality=85)
            written.append(path)
    return written


def render_markdown(rep, plots: frozenset[str] = frozenset()) -> str:
    """An EvaluationReport as Markdown: a header, then each section that was scored; `plots`: the names of the
    plot files written beside it (only those are linked: printed without --out, none is)."""
    L = [f"# Evaluation of `{rep.model_dir}`", "",
         f"backbone **{rep.backbone}**, model id `{rep.model_id}`, k = {rep.knn_k}, threshold in use {rep.threshold:.4f}"
         + ("" if rep.has_classifier else " — no classifier: kNN only"), ""]
    L += _notes(rep.notes)
    if rep.closed is not None:
        L += _closed_set_md(rep, plots)
    if rep.open is not None:
        L += _open_set_md(rep, plots)
    if rep.verification is not None:
        L += _verification_md(rep.verification, plots)
    L += _mistakes_md(rep, plots)
    return "\n".join(L)


def write_report(rep, out_dir: str | Path, inputs: Sequence[str | Path] = ()) -> list[Path]:
    """Write report.md, report.json and the plots into `out_dir` by the outputs rule (facecore.outputs:
    never among `inputs`, replacing only the tool's own files, every file checked before any is written);
    returns the paths."""
    out = check_output_dir(out_dir, inputs, what="report folder")
    plots = []
    if rep.closed is not None:
        plots += [(plot_confusion, (*rep.closed.confusion(d), f"{d} ({rep.closed.accuracy(d):.3f})"), out / confusion_png(d))
                  for d in rep.closed.predictions]
    if rep.open is not None:
        plots.append((plot_open_set, (rep.open,), out / OPENSET_PNG))
    if rep.open_confusion is not None:
        plots.append((plot_confusion, (*rep.open_confusion, f"open set at {rep.open.threshold:.4f}"),
                      out / OPENSET_CONFUSION_PNG))
    if rep.verification is not None and len(rep.verification.similarities):
        plots.append((plot_verification, (rep.verification,), out / VERIFICATION_PNG))
    md, js = out / REPORT_MD, out / REPORT_JSON
    for target in [md, js, *(p for _, _, p in plots)]:
        check_output(target, inputs, what="evaluation report")
    files = [plot(*args, path, inputs=inputs) for plot, args, path in plots]
    files += _write_thumbnails(rep, out, inputs)
    with output_file(md, inputs, what="evaluation report") as tmp:
        tmp.write_bytes(render_markdown(rep, frozenset(f.relative_to(out).as_posix() for f in files)).encode("utf-8"))
    with output_file(js, inputs, what="evaluation report") as tmp:
        tmp.write_text(json.dumps(rep.to_dict(), indent=2, sort_keys=True), encoding="utf-8")
    return [md, js, *files]

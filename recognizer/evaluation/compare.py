"""Two versions of one model side by side on the same held-out faces: closed set and open set.

Used before switching to a candidate: each model is scored by `evaluate_recognizer` (evaluate.py's code)
with its own gallery, classifier and threshold, on the photos of people enrolled in both models or in
neither, so both score the same faces (the open set's unknown faces are `unknown_dir`'s, else the same
people held out of a copy of each gallery: the choice depends only on the people and the seed).
"""
from __future__ import annotations

import logging

from recognizer.evaluation.run import evaluate_recognizer

__all__ = ["SIDES", "compare", "side_by_side_text", "summary"]

log = logging.getLogger(__name__)

SIDES = ("current", "candidate")


def compare(current, candidate, photos: tuple[list[str], list[str], str], opts) -> dict:
    """Side-by-side figures of two open Recognizer views on `photos` (paths, labels, description)."""
    paths, labels, desc = photos
    a, b = set(current.gallery.people()), set(candidate.gallery.people())
    keep = [i for i, lab in enumerate(labels) if (lab in a) == (lab in b)]
    left_out = sorted({labels[i] for i in range(len(labels)) if (labels[i] in a) != (labels[i] in b)})
    same = ([paths[i] for i in keep], [labels[i] for i in keep], desc)
    out: dict = {"data": desc, "photos": len(keep), "notes": []}
    if left_out:
        out["notes"].append(f"left out, enrolled in one model only: {', '.join(left_out)}")
    for side, rec in zip(SIDES, (current, candidate)):
        out[side] = summary(evaluate_recognizer(rec, same, opts))
    c, n = out["current"], out["candidate"]
    out["same_faces"] = (c["closed_set"]["n"] == n["closed_set"]["n"]
                         and (c["open_set"] or {}).get("n_known") == (n["open_set"] or {}).get("n_known")
                         and (c["open_set"] or {}).get("n_unknown") == (n["open_set"] or {}).get("n_unknown"))
    if not out["same_faces"]:
        out["notes"].append("the two models scored different numbers of faces (see each side's counts)")
    return out


def summary(report) -> dict:
    """The closed- and open-set figures of an EvaluationReport, without the per-person detail."""
    closed = report.closed.to_dict() if report.closed is not None else {"n": 0}
    out = {"model_id": report.model_id, "backbone": report.backbone, "classifier": report.has_classifier,
           "closed_set": {"n": closed["n"], "people": len(set(report.closed.labels)) if report.closed is not None else 0,
                          **{d: {"accuracy": v["accuracy"], "correct": v["correct"]} for d, v in closed.items() if d != "n"}},
           "open_set": None, "notes": list(report.notes)}
    o = report.open
    if o is not None:
        at = o.deciders[o.deployed].at_current
        out["open_set"] = {
            "n_known": o.n_known, "n_unknown": o.n_unknown, "unknown_source": o.unknown_source, "deployed": o.deployed,
            "threshold": round(o.threshold, 4), "dir": round(at.dir, 4), "fpir": round(at.fpir, 4),
            "known_named": int(round(at.dir * o.n_known)), "unknown_named": int(round(at.fpir * o.n_unknown)),
            "deciders": {d: s.at_current.to_dict() for d, s in o.deciders.items()}}
    return out


def side_by_side_text(cmp: dict) -> str:
    """The comparison as the aligned text table finetune.py prints."""
    c, n = cmp["current"], cmp["candidate"]
    w = 30
    lines = [f"side by side on the same held-out faces ({cmp['data']}, {cmp['photos']} photos):",
             f"  {'':<{w}}{'current':<26}candidate",
             f"  {'model':<{w}}{_short(c['model_id']):<26}{_short(n['model_id'])}"]
    cs = c["closed_set"]
    lines.append(f"  closed set, {cs['n']} faces of {cs['people']} people (accuracy)")
    for d in ("classifier", "knn", "combined"):
        if d in c["closed_set"] or d in n["closed_set"]:
            lines.append(f"    {d:<{w - 2}}{_acc(c['closed_set'], d):<26}{_acc(n['closed_set'], d)}")
    co, no = c["open_set"], n["open_set"]
    if co is None or no is None:
        lines.append("  open set: not scored (" + "; ".join(x for x in c["notes"] if "open set" in x) + ")")
    else:
        lines.append(f"  open set, {co['n_known']} known + {co['n_unknown']} unknown faces (unknown: {co['unknown_source']})")
        lines.append(f"    {'threshold (decider)':<{w - 2}}{_thr(co):<26}{_thr(no)}")
        lines.append(f"    {'DIR: known named right':<{w - 2}}{_rate(co, 'dir', 'known_named', 'n_known'):<26}"
                     f"{_rate(no, 'dir', 'known_named', 'n_known')}")
        lines.append(f"    {'FPIR: unknown given a name':<{w - 2}}{_rate(co, 'fpir', 'unknown_named', 'n_unknown'):<26}"
                     f"{_rate(no, 'fpir', 'unknown_named', 'n_unknown')}")
    for note in cmp.get("notes", []):
        lines.append(f"  note: {note}")
    return "\n".join(lines)


def _short(model_id: str) -> str:
    return model_id if len(model_id) <= 24 else model_id[:21] + "..."


def _acc(cs: dict, d: str) -> str:
    if d not in cs:
        return "-"
    return f"{cs[d]['accuracy']:.3f} ({cs[d]['correct']}/{cs['n']})"


def _thr(o: dict) -> str:
    return f"{o['threshold']:.4f} ({o['deployed']})"


def _rate(o: dict, key: str, count: str, total: str) -> str:
    return f"{o[key]:.3f} ({o[count]}/{o[total]})"

"""The shared sample photos (`../shared/data` beside the checkout, or $FACES_DATA) and deepface-test-dataset's
labelled pairs, scored or laid out in LFW's format."""
from __future__ import annotations

import csv
import os
from pathlib import Path

__all__ = ["PROJECT_ROOT", "data_dir", "pair_similarities", "write_deepface_pairs"]

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def data_dir() -> Path:
    return Path(os.environ.get("FACES_DATA") or PROJECT_ROOT.parent / "shared" / "data").expanduser()


def pair_similarities(pipeline, data: str | Path) -> tuple[list[float], list[bool], int]:
    """(similarities, same-person flags, pairs listed) of master.csv's pairs whose photos both have a face."""
    root = Path(data) / "deepface-test-dataset"
    where = {r["file"]: root / r["path"] for r in csv.DictReader(open(root / "identities.csv"))}
    pairs = [(r["file_x"], r["file_y"], r["Decision"] == "Yes") for r in csv.DictReader(open(root / "master.csv"))]
    emb = {}
    for name in sorted({f for p in pairs for f in p[:2]}):
        res = pipeline.analyze(where[name])
        if res.faces:
            emb[name] = res.embeddings[0]
    kept = [(a, b, same) for a, b, same in pairs if a in emb and b in emb]
    return [float(emb[a] @ emb[b]) for a, b, _ in kept], [same for *_, same in kept], len(pairs)


def write_deepface_pairs(out_dir: str | Path, data: str | Path, folds: int = 10, per_class: int = 3) -> tuple[Path, Path]:
    """(pairs file, root) for `folds` x `per_class` pairs of each kind; raises ValueError if there are too few."""
    ds = Path(data) / "deepface-test-dataset"
    with open(ds / "identities.csv", newline="", encoding="utf-8") as fh:
        who = {r["file"]: (r["identity"], ds / r["path"]) for r in csv.DictReader(fh) if r["path"].startswith("people/")}
    number: dict[str, str] = {}
    root = Path(out_dir) / "root"
    for name in sorted({p for p, _ in who.values()}):
        files = sorted(f for f, (p, _) in who.items() if p == name)
        (root / name).mkdir(parents=True, exist_ok=True)
        for n, f in enumerate(files, 1):
            number[f] = str(n)
            link = root / name / f"{name}_{n:04d}.jpg"
            if not link.is_symlink():
                link.symlink_to(who[f][1].resolve())
    matched, mismatched = [], []
    with open(ds / "master.csv", newline="", encoding="utf-8") as fh:
        for r in csv.DictReader(fh):
            a, b, same = r["file_x"], r["file_y"], r["Decision"].strip() == "Yes"
            if a not in who or b not in who:
                continue
            (matched if same else mismatched).append((a, b))
    need = folds * per_class
    if len(matched) < need or len(mismatched) < need:
        raise ValueError(f"{folds} folds x {per_class} pairs need {need} of each kind; master.csv has "
                         f"{len(matched)} matched and {len(mismatched)} mismatched")
    lines = [f"{folds}\t{per_class}"]
    for f in range(folds):
        for a, b in matched[f * per_class:(f + 1) * per_class]:
            lines.append(f"{who[a][0]}\t{number[a]}\t{number[b]}")
        for a, b in mismatched[f * per_class:(f + 1) * per_class]:
            lines.append(f"{who[a][0]}\t{number[a]}\t{who[b][0]}\t{number[b]}")
    pairs = Path(out_dir) / "pairs.txt"
    pairs.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return pairs, root

#!/usr/bin/env python3
"""The main job on the sample photos: finetune, enroll a newcomer, name the faces in new photos.

    .venv/bin/python demo.py [--data DIR] [--out DIR] [--backbone auto|sface|facenet]

1. Finetunes on 5-celebrity-faces (train/val): classifier, kNN and combined val accuracy.
2. Enrolls Obama and Biden from face_recognition-examples into the same model, without retraining.
3. Names every face in the group photos (Obama and Biden by name, everyone else unknown) and
   writes annotated photos and JSON to OUT/.
"""
from __future__ import annotations

import json
import logging
import shutil
import time
from pathlib import Path

import click

import recognizer
from facecore.errors import WeightsError
from facecore.outputs import check_output_dir, is_ours, output_file
from recognizer.annotate import save_annotated
from recognizer.cli._options import passive_openmp
from recognizer.embedding.weights import resolve_weights
from recognizer.sample_data import data_dir

__all__ = ["main", "pick_backbone"]

log = logging.getLogger("demo")

RESULTS = "group_results.json"


def pick_backbone(requested: str) -> tuple[str, str]:
    """facenet with VGGFace2 when its weights can be had, else sface; and why."""
    if requested != "auto":
        return requested, f"asked for with --backbone {requested}"
    try:
        resolve_weights("vggface2", timeout=15)
        return "facenet", "the VGGFace2 weights are available"
    except WeightsError as exc:
        log.info("VGGFace2 weights unavailable: %s", exc)
        return "sface", ("the VGGFace2 weights are not in the cache and could not be downloaded here; "
                         "sface ships inside its package and works offline")


def _clear_previous_demo(out: Path, data: Path) -> None:
    """Remove OUT only when it is absent, empty, or an earlier demo's folder (its group_results.json provably
    the tool's own: facecore.outputs); never the sample photos or a folder of the user's."""
    check_output_dir(out, [data], what="demo folder")
    if out.is_dir() and any(out.iterdir()):
        if not is_ours(out / RESULTS):
            raise click.ClickException(f"{out}: is not empty and not an earlier demo's folder; it is left as it is: "
                                       "give --out a new or empty folder")
        shutil.rmtree(out)


@click.command()
@click.option("--data", type=click.Path(file_okay=False), help="Sample photos (default ../shared/data or $FACES_DATA).")
@click.option("--out", default="out/demo", show_default=True, type=click.Path(file_okay=False))
@click.option("--backbone", type=click.Choice(["auto", "sface", "facenet"]), default="auto", show_default=True)
def main(data, out, backbone):
    passive_openmp()
    data = Path(data) if data else data_dir()
    out = Path(out)
    if not (data / "5-celebrity-faces").is_dir():
        raise click.ClickException(f"sample photos not found in {data}; pass --data or set FACES_DATA")
    backbone, why = pick_backbone(backbone)
    click.echo(f"backbone: {backbone} ({why})")
    _clear_previous_demo(out, data)

    # 1. Finetune on five celebrities (for sface, the classifier head alone: it has no trainable blocks).
    model = out / "model"
    t0 = time.perf_counter()
    report = recognizer.finetune(data / "5-celebrity-faces", model, backbone=backbone, progress=True)
    click.echo(f"finetuned on {report.n_train} faces of {len(report.classes)} people in {time.perf_counter() - t0:.1f} s")
    for d in ("classifier", "knn", "combined"):
        sc = report.scores[d]
        click.echo(f"  5-celebrity-faces val accuracy, {d:<10}: {sc['accuracy']:.3f} ({sc['correct']}/{report.scores['n']})")

    # 2. Newcomers, enrolled after finetuning: the classifier has never seen them.
    rec = recognizer.open(model, cache=True)
    fr = data / "face_recognition-examples"
    for person in ("barack_obama", "joe_biden"):
        enrolled = rec.enroll(person, fr / "people" / person)
        click.echo(f"  enrolled {person}: {enrolled.added} faces, {len(enrolled.skipped)} skipped")

    # 3. Group photos: Obama and Biden by name, everyone else unknown.
    groups = recognizer.list_images(fr / "group") + recognizer.list_images(data / "facenet-pytorch-test-images/group")
    ann = out / "annotated"
    ann.mkdir(parents=True, exist_ok=True)
    results = []
    for res in rec.identify_many(groups):
        save_annotated(res, ann / (Path(res.photo).stem + ".png"))
        results.append(res.to_dict())
        names = [f.name or "unknown" for f in res.faces]
        click.echo(f"  {Path(res.photo).name}: {', '.join(names)}")
    with output_file(out / RESULTS, [data], what="demo results") as tmp:
        tmp.write_text(json.dumps(results, indent=2), encoding="utf-8")
    click.echo(f"annotated photos in {ann}/, JSON in {out / RESULTS}")


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""The main job on the sample photos: enroll people, name the faces in new photos, draw them.

    .venv/bin/python demo.py [--data DIR] [--out DIR] [--backbone auto|sface|facenet]

1. Enrolls the five people of 5-celebrity-faces/train and names the faces of its val split.
2. Enrolls Obama and Biden from face_recognition-examples and names every face in the group
   photos; everyone else must come back unknown. Annotated photos go to OUT/annotated/.
"""
from __future__ import annotations

import json
import shutil
import sys
import time
from pathlib import Path

import click


def pick_backbone(requested: str) -> tuple[str, str]:
    """facenet with VGGFace2 when its weights can be had, else sface; and why."""
    if requested != "auto":
        return requested, f"asked for with --backbone {requested}"
    from recognizer.errors import WeightsError
    from recognizer.weights import resolve_weights

    try:
        resolve_weights("vggface2", timeout=15)
        return "facenet", "the VGGFace2 weights are available"
    except WeightsError as exc:
        first = str(exc).splitlines()[0]
        return "sface", f"the VGGFace2 weights could not be had ({first}); sface ships with its package and works offline"


@click.command()
@click.option("--data", type=click.Path(file_okay=False), help="Sample photos (default ../shared/data or $FACES_DATA).")
@click.option("--out", default="out/demo", show_default=True, type=click.Path(file_okay=False))
@click.option("--backbone", type=click.Choice(["auto", "sface", "facenet"]), default="auto", show_default=True)
def main(data, out, backbone):
    from recognizer.annotate import annotate
    from recognizer.cache import CropCache
    from recognizer.data import data_dir
    from recognizer.image import list_images
    from recognizer.recognizer import Recognizer

    data = Path(data) if data else data_dir()
    out = Path(out)
    if not (data / "5-celebrity-faces").is_dir():
        raise click.ClickException(f"sample photos not found in {data}; pass --data or set FACES_DATA")
    backbone, why = pick_backbone(backbone)
    click.echo(f"backbone: {backbone} ({why})")
    shutil.rmtree(out, ignore_errors=True)
    cache = CropCache()

    # 1. Five celebrities: enroll train, identify val.
    t0 = time.perf_counter()
    rec = Recognizer.open(out / "celebrities", backbone=backbone, create=True, cache=cache)
    for person in sorted(p for p in (data / "5-celebrity-faces/train").iterdir() if p.is_dir()):
        report = rec.enroll(person.name, list_images(person), progress=True)
        click.echo(f"  enrolled {person.name}: {report.added} faces, {len(report.skipped)} skipped")
    t1 = time.perf_counter()
    val = list_images(data / "5-celebrity-faces/val", recursive=True)
    correct = 0
    for res in rec.identify_many(val, progress=True):
        truth = Path(res.photo).parent.name
        name = res.faces[0].name if res.faces else None
        correct += name == truth
        if name != truth:
            click.echo(f"  wrong: {res.photo}: {name} (truth {truth})")
    t2 = time.perf_counter()
    click.echo(f"5-celebrity-faces val: {correct}/{len(val)} named correctly "
               f"(enroll {t1 - t0:.1f} s for 93 photos, identify {t2 - t1:.1f} s for {len(val)})")

    # 2. Obama and Biden in group photos; everyone else is unknown.
    fr = data / "face_recognition-examples"
    rec2 = Recognizer.open(out / "obama-biden", backbone=backbone, create=True, cache=cache)
    for person in ("barack_obama", "joe_biden"):
        rec2.enroll(person, list_images(fr / "people" / person))
    groups = list_images(fr / "group") + list_images(data / "facenet-pytorch-test-images/group")
    ann = out / "annotated"
    ann.mkdir(parents=True, exist_ok=True)
    results = []
    for res in rec2.identify_many(groups):
        annotate(res.photo, res).save(ann / (Path(res.photo).stem + ".png"))
        results.append(res.to_dict())
        names = [f.name or "unknown" for f in res.faces]
        click.echo(f"  {Path(res.photo).name}: {', '.join(names)}")
    (out / "group_results.json").write_text(json.dumps(results, indent=2))
    click.echo(f"annotated photos in {ann}/, JSON in {out / 'group_results.json'}")


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    main()

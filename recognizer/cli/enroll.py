"""Enroll a person from a folder of photos, without retraining.

    enroll.py --model DIR --name NAME FOLDER [--backbone sface|facenet] [--json]
    enroll.py --model DIR --name NAME FOLDER_OR_LIST.txt --ray [auto|ADDRESS] [--out OUTCOMES.jsonl]
    enroll.py --model DIR --list | --remove NAME | --rename OLD NEW
"""
from __future__ import annotations

import json

import click

from recognizer.cli._options import (
    friendly_errors,
    gallery_option,
    model_option,
    passive_openmp,
    ray_option,
    ray_out_option,
    ray_workers_option,
    setup_logging,
    verbose_option,
    weights_dir_option,
)


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@model_option
@click.option("--name", help="The person's name.")
@click.argument("folder", required=False, type=click.Path())
@click.option("--backbone", type=click.Choice(["sface", "facenet"]), help="Backbone for a new model (must match an existing one).")
@click.option("--weights", help="facenet weights: vggface2, casia-webface, random or a .pt file (new models only).")
@weights_dir_option
@click.option("--list", "list_people", is_flag=True, help="List enrolled people with their face counts.")
@click.option("--remove", metavar="NAME", help="Remove a person and all their faces.")
@click.option("--rename", nargs=2, metavar="OLD NEW", help="Rename a person.")
@click.option("--allow-similar", is_flag=True, help="Accept a new name that looks like an enrolled person's (case, look-alike letters): they are different people.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.option("--no-cache", is_flag=True, help="Do not read or write the crop cache (~/.cache/facetool).")
@gallery_option
@ray_option
@ray_out_option
@ray_workers_option
@verbose_option
@friendly_errors
def main(model_dir, name, folder, backbone, weights, weights_dir, list_people, remove, rename, allow_similar, as_json, no_cache,
         gallery, ray_address, out_path, workers, verbose):
    """Add NAME's faces from FOLDER (one face per photo, the largest) to the model's gallery."""
    passive_openmp()
    setup_logging(verbose)
    import recognizer

    actions = sum(bool(x) for x in (folder, list_people, remove, rename))
    if actions != 1:
        raise click.UsageError("give exactly one of: FOLDER (with --name), --list, --remove NAME, --rename OLD NEW")
    if folder and not name:
        raise click.UsageError("--name is required to enroll a folder")
    if (out_path or workers) and ray_address is None:
        raise click.UsageError("--out and --workers go with --ray")
    if ray_address is not None:
        if not folder:
            raise click.UsageError("--ray enrolls a FOLDER (or a list file of photo paths)")
        enroll_on_ray(model_dir, name, folder, backbone, weights_dir, gallery, ray_address, out_path, workers, no_cache,
                      as_json)
        return
    files = recognizer.list_images(folder) if folder else []  # before creating a model: a typo makes nothing
    if folder:
        rec = recognizer.create(model_dir, backbone=backbone, weights=weights, weights_dir=weights_dir, cache=not no_cache,
                                gallery=gallery)
    else:
        rec = recognizer.open(model_dir, backbone=backbone, weights=weights, weights_dir=weights_dir, cache=not no_cache,
                              gallery=gallery)
    with rec:
        _run(rec, name, files, folder, list_people, remove, rename, allow_similar, as_json)


def _run(rec, name, files, folder, list_people, remove, rename, allow_similar, as_json) -> None:
    if list_people:
        people = rec.people()
        if as_json:
            click.echo(json.dumps({"people": people}, indent=2))
        else:
            for person, count in people.items():
                click.echo(f"{count:5d}  {person}")
        return
    if remove:
        n = rec.remove(remove)
        click.echo(json.dumps({"removed": remove, "faces": n}) if as_json else f"removed {remove} ({n} faces)")
        return
    if rename:
        rec.rename(*rename, allow_similar=allow_similar)
        click.echo(json.dumps({"renamed": rename[0], "to": rename[1]}) if as_json else f"renamed {rename[0]} -> {rename[1]}")
        return
    if not files:
        raise click.ClickException(f"{folder}: no image files found")
    report = rec.enroll(name, files, progress=not as_json, allow_similar=allow_similar)
    if as_json:
        click.echo(json.dumps(report.to_dict(), indent=2))
        return
    for f in report.files:
        if f.status != "added":
            click.echo(f"{f.status:>13}  {f.file}" + (f"  ({f.detail})" if f.detail else ""))
    click.echo(f"{report.name}: added {report.added} face(s), skipped {len(report.skipped)} file(s); "
               f"{rec.people().get(report.name, 0)} enrolled in total")

def enroll_on_ray(model_dir, name, folder, backbone, weights_dir, gallery, address, out_path, workers, no_cache, as_json):
    import tempfile
    from pathlib import Path

    import recognizer

    with tempfile.TemporaryDirectory(prefix="facetool-ray-") as tmp:
        out = Path(out_path) if out_path else Path(tmp) / "outcomes.jsonl"
        summary = recognizer.enroll_bulk(model_dir, name, [folder], out, address=address, workers=workers,
                                         weights_dir=weights_dir, gallery=gallery, use_cache=not no_cache,
                                         progress=not as_json, backbone=backbone)
        with open(out, encoding="utf-8") as fh:
            files = [json.loads(line) for line in fh]
    added = sum(f["status"] in ("added", "several faces") for f in files)
    if as_json:
        click.echo(json.dumps({"name": name, "added": added, "files": files, "done_before": summary.done_before}, indent=2))
        return
    for f in files:
        if f["status"] != "added":
            click.echo(f"{f['status']:>13}  {f['file']}" + (f"  ({f['detail']})" if f["detail"] else ""))
    click.echo(f"{name}: added {added} face(s) from {summary.total} photo(s) ({summary.done_before} done by an earlier run)")


if __name__ == "__main__":
    main()

"""Enroll a person from a folder of photos, without retraining.

    enroll.py --model DIR --name NAME FOLDER [--backbone sface|facenet] [--json]
    enroll.py --model DIR --name NAME FOLDER_OR_LIST.txt --ray [auto|ADDRESS] [--out OUTCOMES.jsonl]
    enroll.py --model DIR --list | --remove NAME | --rename OLD NEW [--merge]       (facetool people ...)
    enroll.py --model DIR --export FILE | --import FILE | --make-chips               (facetool people ...)
    enroll.py --model DIR --name NAME --cluster RUN:ID [--exclude 4,7]   (a cluster made by cluster.py; facetool clusters name)
    enroll.py --model DIR --discard RUN | RUN:ID                         (facetool clusters discard | dismiss)
    enroll.py --model DIR --target-fpir 0.01                             (facetool model threshold)

After enrolling it says which unknown threshold the model now uses, how many strangers that is
expected to let through (FPIR) and what it costs known people (DIR), and warns about enrolled
photos that match another person at that threshold (a mislabelled photo, or two look-alikes).
The actions about people and clusters run the same functions as `facetool people` and
`facetool clusters` (recognizer/cli/people.py, recognizer/cli/cluster.py).
"""
from __future__ import annotations

import json
import shlex
import tempfile
from pathlib import Path

import click

import recognizer
from recognizer import bulk
from recognizer.cli import cluster, model, people
from recognizer.cli._options import (allow_similar_option, friendly_errors, gallery_option, model_option,
                                     no_cache_option, ray_option, ray_out_option, ray_workers_option, start,
                                     verbose_option, weights_dir_option)

__all__ = ["enroll_on_ray", "main"]

ACTIONS = ("FOLDER (with --name), --cluster RUN:ID (with --name), --list, --remove NAME, --rename OLD NEW, "
           "--export FILE, --import FILE, --make-chips, --discard RUN[:ID] (or --target-fpir alone)")


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
@click.option("--merge", is_flag=True, help="With --rename: NEW is enrolled already and OLD's faces join theirs (one person under two names).")
@click.option("--export", "export_file", metavar="FILE", type=click.Path(dir_okay=False),
              help="Write every enrolled face (names, chips, vectors) to one archive FILE.")
@click.option("--import", "import_file", metavar="FILE", type=click.Path(dir_okay=False),
              help="Add the faces of an --export archive (re-embedded from their chips on another model); "
                   "people already enrolled here are skipped and reported (exit 1).")
@click.option("--make-chips", is_flag=True,
              help="For a model made before chips were kept: make each face's chip from its photo where it is "
                   "still there; lists the faces that cannot get one (exit 1).")
@model.target_fpir_option
@allow_similar_option
@click.option("--allow-low-quality", is_flag=True,
              help="Enroll faces under the quality floor too (too small, blurred, turned away); they are refused by default.")
@click.option("--cluster", "cluster_ref", metavar="RUN:ID", help="Enroll a cluster of a cluster.py run (RUN may be 'latest').")
@click.option("--exclude", metavar="N,N", default="", help="With --cluster: face numbers to leave out.")
@click.option("--discard", metavar="RUN[:ID]", help="Delete a saved cluster.py run, or dismiss one of its clusters.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@no_cache_option
@gallery_option
@ray_option
@ray_out_option
@ray_workers_option
@verbose_option
@friendly_errors
def main(model_dir, name, folder, backbone, weights, weights_dir, list_people, remove, rename, merge, export_file, import_file,
         make_chips, target_fpir, allow_similar, allow_low_quality, cluster_ref, exclude, discard, as_json, no_cache, gallery, ray_address,
         out_path, workers, verbose):
    """Add NAME's faces from FOLDER (one face per photo, the largest) to the model's gallery."""
    start(verbose)
    actions = sum(bool(x) for x in (folder, list_people, remove, rename, export_file, import_file, make_chips, cluster_ref, discard))
    excluded = _check(actions, target_fpir, name, folder, cluster_ref, exclude, rename, merge, ray_address, out_path, workers)
    if ray_address is not None:
        enroll_on_ray(model_dir, name, folder, backbone, weights, weights_dir, gallery, ray_address, out_path, workers,
                      no_cache, allow_similar, as_json)
        return
    if discard or cluster_ref:  # a saved cluster.py run (--target-fpir is not applied here)
        with recognizer.open(model_dir, weights_dir=weights_dir, gallery=gallery) as rec:
            if discard:
                cluster.discard(rec, discard, as_json)
            else:
                cluster.name_cluster(rec, cluster_ref, name, excluded, allow_similar, as_json)
        return
    files = recognizer.list_images(folder) if folder else []  # before creating a model: a typo makes nothing
    if import_file:
        backbone, weights = people.model_for_import(import_file, backbone, weights)
    make = recognizer.create if folder or import_file else recognizer.open
    with make(model_dir, backbone=backbone, weights=weights, weights_dir=weights_dir, cache=not no_cache,
              gallery=gallery) as rec:
        if target_fpir is not None:
            rec.set_target_fpir(target_fpir)
        if list_people:
            people.show_people(rec, as_json)
        elif remove:
            people.remove_person(rec, remove, as_json)
        elif rename:
            merge_hint = f"enroll.py --model {shlex.quote(model_dir)} --rename {{old}} {{new}} --merge"
            people.rename_person(rec, *rename, merge=merge, allow_similar=allow_similar, as_json=as_json,
                                 merge_hint=merge_hint)
        elif export_file:
            people.export_people(rec, export_file, as_json)
        elif import_file:
            people.import_people(rec, import_file, as_json)
        elif make_chips:
            people.make_chips(rec, as_json)
        elif folder:
            _enroll(rec, name, files, folder, allow_similar, as_json, allow_low_quality)
        else:  # --target-fpir alone (facetool model threshold)
            model.show_threshold(rec, as_json)


def _check(actions, target_fpir, name, folder, cluster_ref, exclude, rename, merge, ray_address, out_path, workers) -> list[int]:
    """The usage rules of the flags; the face numbers of --exclude."""
    if actions != 1 and not (actions == 0 and target_fpir is not None):
        raise click.UsageError(f"give exactly one of: {ACTIONS}")
    if (folder or cluster_ref) and not name:
        raise click.UsageError("--name is required to enroll a folder or a cluster")
    if exclude and not cluster_ref:
        raise click.UsageError("--exclude goes with --cluster")
    if merge and not rename:
        raise click.UsageError("--merge goes with --rename OLD NEW")
    excluded = cluster.parse_exclude(exclude)
    if (out_path or workers) and ray_address is None:
        raise click.UsageError("--out and --workers go with --ray")
    if ray_address is not None and not folder:
        raise click.UsageError("--ray enrolls a FOLDER (or a list file of photo paths)")
    return excluded


def _enroll(rec, name, files, folder, allow_similar, as_json, allow_low_quality=False) -> None:
    if not files:
        raise click.ClickException(f"{folder}: no image files found")
    report = rec.enroll(name, files, progress=not as_json, allow_similar=allow_similar, allow_low_quality=allow_low_quality)
    info = rec.threshold_info()
    warnings = rec.confusions([report.name]) if report.added else []
    if as_json:
        click.echo(json.dumps({**report.to_dict(), "threshold": info.to_dict(), "warnings": [w.to_dict() for w in warnings]}, indent=2))
        return
    for f in report.files:
        if f.status != "added":
            click.echo(f"{f.status:>13}  {f.file}" + (f"  ({f.detail})" if f.detail else ""))
    click.echo(f"{report.name}: added {report.added} face(s), skipped {len(report.skipped)} file(s); "
               f"{rec.people().get(report.name, 0)} enrolled in total")
    click.echo(info.describe())
    for w in warnings:
        click.echo(f"warning: {w.person}'s photo {w.photo} matches {w.other}'s photo {w.other_photo} "
                   f"(similarity {w.similarity:.3f} >= {info.threshold:.3f}): a mislabelled photo, or two people the model confuses")


def enroll_on_ray(model_dir, name, folder, backbone, weights, weights_dir, gallery, address, out_path, workers, no_cache,
                  allow_similar, as_json):
    """`--ray`: enroll FOLDER (or a list file) on Ray workers, one outcome per photo (see recognizer.bulk)."""
    with tempfile.TemporaryDirectory(prefix="facetool-ray-") as tmp, \
            recognizer.create(model_dir, backbone=backbone, weights=weights, weights_dir=weights_dir, cache=not no_cache,
                              gallery=gallery) as rec:
        out = Path(out_path) if out_path else Path(tmp) / "outcomes.jsonl"
        summary = bulk.enroll_bulk(rec, name, [folder], out, address=address, workers=workers, allow_similar=allow_similar,
                                   progress=not as_json)
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

"""Enroll people from their photos, without retraining.

    enroll.py --model DIR --name NAME FOLDER_OR_PHOTO... [--backbone sface|facenet] [--json]
    enroll.py --model DIR --people DIR                   (DIR/<person>/<photos>, the layout finetune reads)
    enroll.py --model DIR --name NAME FOLDER_OR_LIST.txt --ray [auto|ADDRESS] [--out OUTCOMES.jsonl]
    enroll.py --model DIR --list | --remove NAME | --rename OLD NEW [--merge]       (facetool people ...)
    enroll.py --model DIR --faces NAME [--sheet F.png] | --remove-face ID | --move-face ID NAME
    enroll.py --model DIR --export FILE | --import FILE | --make-chips               (facetool people ...)
    enroll.py --model DIR --name NAME --cluster RUN:ID [--exclude 4,7]   (a cluster made by cluster.py; facetool clusters name)
    enroll.py --model DIR --discard RUN | RUN:ID                         (facetool clusters discard | dismiss)
    enroll.py --model DIR --target-fpir 0.01                             (facetool model threshold)

After enrolling it gives a line per person, exits 1 when a person got no face (naming each file and
why it was skipped: no face, unreadable...), says which unknown threshold the model now uses, how many strangers that is
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
from recognizer import bulk, faces
from recognizer.cli import cluster, model, people
from recognizer.cli._options import (allow_similar_option, friendly_errors, gallery_option, model_option,
                                     no_cache_option, ray_option, ray_out_option, ray_workers_option, start,
                                     verbose_option, weights_dir_option)

__all__ = ["enroll_on_ray", "main"]

ACTIONS = ("FOLDER/PHOTO... (with --name), --people DIR, --cluster RUN:ID (with --name), --list, --remove NAME, "
           "--rename OLD NEW, --faces NAME, --remove-face ID, --move-face ID NAME, --export FILE, --import FILE, "
           "--make-chips, --discard RUN[:ID] (or --target-fpir alone)")


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@model_option
@click.option("--name", help="The person's name.")
@click.argument("paths", nargs=-1, type=click.Path())
@click.option("--people", "people_dir", metavar="DIR", type=click.Path(),
              help="Enroll everyone of DIR/<person>/<photos> (the layout finetune reads), one person per folder.")
@click.option("--backbone", type=click.Choice(["sface", "facenet"]), help="Backbone for a new model (must match an existing one).")
@click.option("--weights", help="facenet weights: vggface2, casia-webface, random or a .pt file (new models only).")
@weights_dir_option
@click.option("--list", "list_people", is_flag=True, help="List enrolled people with their face counts.")
@click.option("--remove", metavar="NAME", help="Remove a person and all their faces.")
@click.option("--rename", nargs=2, metavar="OLD NEW", help="Rename a person.")
@click.option("--merge", is_flag=True, help="With --rename: NEW is enrolled already and OLD's faces join theirs (one person under two names).")
@click.option("--faces", "faces_of", metavar="NAME", help="List NAME's faces with their ids (for --remove-face, --move-face).")
@click.option("--sheet", type=click.Path(dir_okay=False), help="With --faces: also write a PNG contact sheet labelled by id.")
@click.option("--remove-face", type=int, metavar="ID", help="Remove one wrongly enrolled face (id from --faces).")
@click.option("--move-face", nargs=2, type=(int, str), metavar="ID NAME", help="Make one face (id from --faces) NAME's.")
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
def main(model_dir, name, paths, people_dir, backbone, weights, weights_dir, list_people, remove, rename, merge, faces_of,
         sheet, remove_face, move_face, export_file, import_file, make_chips, target_fpir, allow_similar, allow_low_quality,
         cluster_ref, exclude, discard, as_json, no_cache, gallery, ray_address, out_path, workers, verbose):
    """Add NAME's faces from FOLDER/PHOTO... (one face per photo, the largest), or everyone's of --people DIR, to the
    model's gallery."""
    start(verbose)
    actions = sum(bool(x) for x in (paths, people_dir, list_people, remove, rename, faces_of, remove_face is not None,
                                    move_face, export_file, import_file, make_chips, cluster_ref, discard))
    excluded = _check(actions, target_fpir, name, paths, people_dir, cluster_ref, exclude, rename, merge, sheet, faces_of,
                      ray_address, out_path, workers)
    if ray_address is not None:
        enroll_on_ray(model_dir, name, paths, backbone, weights, weights_dir, gallery, ray_address, out_path, workers,
                      no_cache, allow_similar, as_json)
        return
    if discard or cluster_ref:  # a saved cluster.py run (--target-fpir is not applied here)
        with recognizer.open(model_dir, weights_dir=weights_dir, gallery=gallery) as rec:
            if discard:
                cluster.discard(rec, discard, as_json)
            else:
                cluster.name_cluster(rec, cluster_ref, name, excluded, allow_similar, as_json)
        return
    # before creating a model: a typo makes nothing
    groups = faces.people_folders(people_dir) if people_dir else {name: _photos(paths)} if paths else {}
    if import_file:
        backbone, weights = people.model_for_import(import_file, backbone, weights)
    make = recognizer.create if groups or import_file else recognizer.open
    with make(model_dir, backbone=backbone, weights=weights, weights_dir=weights_dir, cache=not no_cache,
              gallery=gallery) as rec:
        if target_fpir is not None:
            rec.set_target_fpir(target_fpir)
        if groups:
            _enroll(rec, groups, allow_similar, as_json, single=not people_dir, allow_low_quality=allow_low_quality)
        elif not _people_action(rec, model_dir, list_people, remove, rename, merge, faces_of, sheet, remove_face,
                                move_face, export_file, import_file, make_chips, allow_similar, as_json):
            model.show_threshold(rec, as_json)  # --target-fpir alone (facetool model threshold)


def _photos(paths) -> list[Path]:
    """The photos of FOLDER/PHOTO... (folders expanded to their image files); ImageError naming a path that is not there."""
    for p in map(Path, paths):
        if not p.exists():
            raise recognizer.ImageError(p, "no such file or directory")
    files = recognizer.expand_inputs(list(paths))
    if not files:
        raise click.ClickException(f"{', '.join(map(str, paths))}: no image files found")
    return files


def _people_action(rec, model_dir, list_people, remove, rename, merge, faces_of, sheet, remove_face, move_face,
                   export_file, import_file, make_chips, allow_similar, as_json) -> bool:
    """The actions about people (facetool people ...); False when none was asked for."""
    q = shlex.quote(model_dir)
    if list_people:
        people.show_people(rec, as_json)
    elif remove:
        people.remove_person(rec, remove, as_json)
    elif rename:
        people.rename_person(rec, *rename, merge=merge, allow_similar=allow_similar, as_json=as_json,
                             merge_hint=f"enroll.py --model {q} --rename {{old}} {{new}} --merge")
    elif faces_of:
        people.show_faces(rec, faces_of, sheet, as_json)
    elif remove_face is not None:
        people.remove_face(rec, remove_face, as_json)
    elif move_face:
        people.move_face(rec, *move_face, allow_similar=allow_similar, as_json=as_json,
                         remove_hint=f"enroll.py --model {q} --remove-face {{id}}")
    elif export_file:
        people.export_people(rec, export_file, as_json)
    elif import_file:
        people.import_people(rec, import_file, as_json)
    elif make_chips:
        people.make_chips(rec, as_json)
    else:
        return False
    return True


def _check(actions, target_fpir, name, paths, people_dir, cluster_ref, exclude, rename, merge, sheet, faces_of, ray_address,
           out_path, workers) -> list[int]:
    """The usage rules of the flags; the face numbers of --exclude."""
    if actions != 1 and not (actions == 0 and target_fpir is not None):
        raise click.UsageError(f"give exactly one of: {ACTIONS}")
    if (paths or cluster_ref) and not name:
        raise click.UsageError("--name is required to enroll photos or a cluster (or --people DIR: a folder per person)")
    if people_dir and name:
        raise click.UsageError("--people names each person by their folder; leave out --name")
    if sheet and not faces_of:
        raise click.UsageError("--sheet goes with --faces NAME")
    if exclude and not cluster_ref:
        raise click.UsageError("--exclude goes with --cluster")
    if merge and not rename:
        raise click.UsageError("--merge goes with --rename OLD NEW")
    excluded = cluster.parse_exclude(exclude)
    if (out_path or workers) and ray_address is None:
        raise click.UsageError("--out and --workers go with --ray")
    if ray_address is not None and not paths:
        raise click.UsageError("--ray enrolls FOLDER... (or list files of photo paths) with --name")
    return excluded


def _enroll(rec, groups: dict, allow_similar: bool, as_json: bool, single: bool, allow_low_quality: bool = False) -> None:
    """Enroll each person of `groups` (name -> photos): a line per skipped file and a summary per person, then the
    threshold; exit 1 naming the files when a person got no face (the others are enrolled)."""
    reports = [rec.enroll(name, files, progress=not as_json, allow_similar=allow_similar,
                          allow_low_quality=allow_low_quality) if files
               else recognizer.EnrollReport(name) for name, files in groups.items()]
    info = rec.threshold_info()
    added = [r.name for r in reports if r.added]
    warnings = rec.confusions(added) if added else []
    if as_json:
        out = [r.to_dict() for r in reports]
        body = out[0] if single else {"people": out}
        click.echo(json.dumps({**body, "threshold": info.to_dict(), "warnings": [w.to_dict() for w in warnings]}, indent=2))
    else:
        enrolled = rec.people()
        for report in reports:
            for f in report.files:
                if f.status != "added":
                    click.echo(f"{f.status:>13}  {f.file}" + (f"  ({f.detail})" if f.detail else ""))
            click.echo(f"{report.name}: added {report.added} face(s), skipped {len(report.skipped)} file(s); "
                       f"{enrolled.get(report.name, 0)} enrolled in total")
        click.echo(info.describe())
        for w in warnings:
            click.echo(f"warning: {w.person}'s photo {w.photo} matches {w.other}'s photo {w.other_photo} (similarity "
                       f"{w.similarity:.3f} >= {info.threshold:.3f}): a mislabelled photo, or two people the model confuses")
    failed = [r for r in reports if r.failed]
    for r in failed:
        click.echo(f"error: {r.why_not()}", err=True)
    if failed:
        raise SystemExit(1)


def enroll_on_ray(model_dir, name, paths, backbone, weights, weights_dir, gallery, address, out_path, workers, no_cache,
                  allow_similar, as_json):
    """`--ray`: enroll FOLDER (or a list file) on Ray workers, one outcome per photo (see recognizer.bulk)."""
    with tempfile.TemporaryDirectory(prefix="facetool-ray-") as tmp, \
            recognizer.create(model_dir, backbone=backbone, weights=weights, weights_dir=weights_dir, cache=not no_cache,
                              gallery=gallery) as rec:
        out = Path(out_path) if out_path else Path(tmp) / "outcomes.jsonl"
        summary = bulk.enroll_bulk(rec, name, list(paths), out, address=address, workers=workers, allow_similar=allow_similar,
                                   progress=not as_json)
        files = bulk.read_results(out)
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

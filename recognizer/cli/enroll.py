"""Enroll a person from a folder of photos, without retraining.

    enroll.py --model DIR --name NAME FOLDER [--backbone sface|facenet] [--json]
    enroll.py --model DIR --name NAME FOLDER_OR_LIST.txt --ray [auto|ADDRESS] [--out OUTCOMES.jsonl]
    enroll.py --model DIR --list | --remove NAME | --rename OLD NEW
    enroll.py --model DIR --export FILE | --import FILE | --make-chips
    enroll.py --model DIR --name NAME --cluster RUN:ID [--exclude 4,7]   (a cluster made by cluster.py)
    enroll.py --model DIR --discard RUN | RUN:ID

After enrolling it says which unknown threshold the model now uses, how many strangers that is
expected to let through (FPIR) and what it costs known people (DIR), and warns about enrolled
photos that match another person at that threshold (a mislabelled photo, or two look-alikes).
"""
from __future__ import annotations

import json

import click

from recognizer import archive, bulk
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
@click.option("--export", "export_file", metavar="FILE", type=click.Path(dir_okay=False),
              help="Write every enrolled face (names, chips, vectors) to one archive FILE.")
@click.option("--import", "import_file", metavar="FILE", type=click.Path(dir_okay=False),
              help="Add the faces of an --export archive (re-embedded from their chips on another model); "
                   "people already enrolled here are skipped and reported (exit 1).")
@click.option("--make-chips", is_flag=True,
              help="For a model made before chips were kept: make each face's chip from its photo where it is "
                   "still there; lists the faces that cannot get one (exit 1).")
@click.option("--target-fpir", type=click.FloatRange(0.0, 1.0, min_open=True, max_open=True),
              help="Share of strangers the model may name (e.g. 0.01); the threshold is derived from it for the current gallery.")
@click.option("--allow-similar", is_flag=True, help="Accept a new name that looks like an enrolled person's (case, look-alike letters): they are different people.")
@click.option("--cluster", "cluster_ref", metavar="RUN:ID", help="Enroll a cluster of a cluster.py run (RUN may be 'latest').")
@click.option("--exclude", metavar="N,N", default="", help="With --cluster: face numbers to leave out.")
@click.option("--discard", metavar="RUN[:ID]", help="Delete a saved cluster.py run, or dismiss one of its clusters.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.option("--no-cache", is_flag=True, help="Do not read or write the crop cache (~/.cache/facetool).")
@gallery_option
@ray_option
@ray_out_option
@ray_workers_option
@verbose_option
@friendly_errors
def main(model_dir, name, folder, backbone, weights, weights_dir, list_people, remove, rename, export_file, import_file,
         make_chips, target_fpir, allow_similar, cluster_ref, exclude, discard, as_json, no_cache, gallery, ray_address,
         out_path, workers, verbose):
    """Add NAME's faces from FOLDER (one face per photo, the largest) to the model's gallery."""
    passive_openmp()
    setup_logging(verbose)
    import recognizer
    from recognizer import lifecycle

    actions = sum(bool(x) for x in (folder, list_people, remove, rename, export_file, import_file, make_chips, cluster_ref, discard))
    if actions != 1 and not (actions == 0 and target_fpir is not None):
        raise click.UsageError("give exactly one of: FOLDER (with --name), --cluster RUN:ID (with --name), --list, --remove NAME, "
                               "--rename OLD NEW, --export FILE, --import FILE, --make-chips, --discard RUN[:ID] (or --target-fpir alone)")
    if (folder or cluster_ref) and not name:
        raise click.UsageError("--name is required to enroll a folder or a cluster")
    if exclude and not cluster_ref:
        raise click.UsageError("--exclude goes with --cluster")
    try:
        excluded = [int(v) for v in exclude.replace(" ", "").split(",") if v]
    except ValueError:
        raise click.BadParameter(f"{exclude!r} is not a comma-separated list of face numbers", param_hint="--exclude") from None
    if (out_path or workers) and ray_address is None:
        raise click.UsageError("--out and --workers go with --ray")
    if ray_address is not None:
        if not folder:
            raise click.UsageError("--ray enrolls a FOLDER (or a list file of photo paths)")
        enroll_on_ray(model_dir, name, folder, backbone, weights, weights_dir, gallery, ray_address, out_path, workers,
                      no_cache, allow_similar, as_json)
        return
    if discard or cluster_ref:
        with recognizer.open(model_dir, weights_dir=weights_dir, gallery=gallery) as rec:
            _cluster(rec, name, cluster_ref, excluded, discard, allow_similar, as_json)
        return
    files = recognizer.list_images(folder) if folder else []  # before creating a model: a typo makes nothing
    if import_file:  # checked whole before a model is created or changed
        manifest = lifecycle.read_archive(import_file)
        backbone = backbone or manifest["backbone"]
        weights = weights or (manifest["weights"] if backbone == manifest["backbone"] else None)
    if folder or import_file:
        rec = recognizer.create(model_dir, backbone=backbone, weights=weights, weights_dir=weights_dir, cache=not no_cache,
                                gallery=gallery)
    else:
        rec = recognizer.open(model_dir, backbone=backbone, weights=weights, weights_dir=weights_dir, cache=not no_cache,
                              gallery=gallery)
    with rec:
        if target_fpir is not None:
            rec.set_target_fpir(target_fpir)
            if not actions:
                info = rec.threshold_info()
                click.echo(json.dumps({"threshold": info.to_dict()}, indent=2) if as_json else info.describe())
                return
        if make_chips:
            _make_chips(rec, as_json)
        elif export_file:
            out = archive.export_model(rec, export_file)
            click.echo(json.dumps(out, indent=2) if as_json else
                       f"exported {out['faces']} faces of {len(out['people'])} people ({out['chips']} chips) to {export_file}")
        elif import_file:
            _import(rec, import_file, as_json)
        else:
            _run(rec, name, files, folder, list_people, remove, rename, allow_similar, as_json)


def _cluster(rec, name, cluster_ref, excluded, discard, allow_similar, as_json) -> None:
    from recognizer.clustering import runs
    from recognizer.clustering.service import dismiss_cluster, enroll_cluster, parse_ref

    if discard and ":" in discard:
        dismiss_cluster(rec, *parse_ref(discard))
        click.echo(json.dumps({"dismissed": discard}) if as_json else f"dismissed cluster {discard}")
    elif discard:
        runs.discard_run(rec.dir, discard)
        click.echo(json.dumps({"discarded": discard}) if as_json else f"discarded run {discard}")
    else:
        run_id, cid = parse_ref(cluster_ref)
        out = enroll_cluster(rec, run_id, cid, name, exclude=excluded, allow_similar=allow_similar)
        if as_json:
            click.echo(json.dumps(out.to_dict(), indent=2))
            return
        for s in out.skipped:
            click.echo(f"      skipped  face {s['face']} ({s['photo']}): {s['reason']}")
        click.echo(f"{out.name}: added {out.added} face(s) from cluster {out.run}:{out.cluster}; "
                   f"{rec.people().get(out.name, 0)} enrolled in total")


def _make_chips(rec, as_json: bool) -> None:
    failed = rec.make_chips()
    faces = rec.records()
    without = sum(not r.chip for r in faces)
    if as_json:
        click.echo(json.dumps({"faces": len(faces), "without_chip": without, "failed": failed}, indent=2))
    else:
        for line in failed:
            click.echo(f"no chip: {line}", err=True)
        click.echo(f"{len(faces) - without} of {len(faces)} faces have a chip")
    if failed:
        raise SystemExit(1)


def _import(rec, path, as_json: bool) -> None:
    rep = archive.import_archive(rec, path)
    if as_json:
        click.echo(json.dumps(rep.to_dict(), indent=2))
    else:
        for person, n in rep.added.items():
            click.echo(f"imported {person} ({n} faces)")
        how = f"{rep.reembedded} re-embedded from their chips" if rep.reembedded else f"{rep.reused_vectors} vectors reused"
        click.echo(f"{sum(rep.added.values())} faces imported ({how})")
    for person in rep.clashes:
        click.echo(f"not imported: {person!r} is already enrolled here (rename one of them and import again)", err=True)
    if rep.clashes:
        raise SystemExit(1)


def _run(rec, name, files, folder, list_people, remove, rename, allow_similar, as_json) -> None:
    if list_people:
        records = rec.records()
        people = rec.people()
        stored = rec.chip_ids()
        chips: dict[str, int] = {p: 0 for p in people}
        for r in records:
            chips[r.person] += bool(r.chip) and r.chip in stored
        if as_json:
            click.echo(json.dumps({"people": people, "chips": chips, "threshold": rec.threshold_info().to_dict()}, indent=2))
        else:
            for person, count in people.items():
                click.echo(f"{count:5d}  {person}" + (f"  ({count - chips[person]} without a chip)" if chips[person] < count else ""))
            click.echo(f"{len(records)} faces, {sum(chips.values())} with a stored chip")
            if sum(chips.values()) < len(records):
                click.echo("faces without a chip were enrolled before chips were kept: run --make-chips", err=True)
            click.echo(rec.threshold_info().describe())
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
    import tempfile
    from pathlib import Path

    import recognizer

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

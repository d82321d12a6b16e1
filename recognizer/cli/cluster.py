"""Group the faces a model cannot name into candidate people, to name each group in one step.

    cluster.py --model DIR PHOTO_OR_FOLDER... [--json] [--out DIR]      (facetool cluster: makes a run)
    cluster.py --model DIR --runs                                       (facetool clusters list)
    facetool clusters name --model DIR RUN:ID NAME [--exclude 4,7]      (enroll.py --name NAME --cluster RUN:ID)
    facetool clusters dismiss --model DIR RUN:ID                        (enroll.py --discard RUN:ID)
    facetool clusters discard --model DIR RUN                           (enroll.py --discard RUN)
"""
from __future__ import annotations

import json

import click

import recognizer
from facecore.outputs import check_output_dir
from recognizer.cli._options import (allow_similar_option, friendly_errors, gallery_option, json_option, model_option,
                                     no_cache_option, start, subcommand, verbose_option, weights_dir_option)
from recognizer.clustering import runs, service
from recognizer.clustering.graph import DEFAULT_K
from recognizer.clustering.sheets import write_report
from recognizer.modeldir.config import load_config

__all__ = ["clusters", "discard", "main", "name_cluster", "parse_exclude", "show_runs"]


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@model_option
@click.argument("inputs", nargs=-1, type=click.Path())
@click.option("--json", "as_json", is_flag=True, help="Print the run (photos, faces, clusters) as JSON.")
@click.option("--out", "out_dir", type=click.Path(file_okay=False), help="Write a contact sheet per cluster and an index.html here.")
@click.option("--k", type=click.IntRange(1, 1000), default=None, help="Neighbours per face in the similarity graph.")
@click.option("--linkage", type=click.Choice(["average", "single"]), default="average", help="How two groups are judged alike.")
@click.option("--offset", type=click.FloatRange(-1, 1), default=None, help="Linkage threshold minus the model's threshold.")
@click.option("--runs", "list_runs", is_flag=True, help="List the saved runs and their open clusters (facetool clusters list).")
@weights_dir_option
@no_cache_option
@verbose_option
@friendly_errors
def main(model_dir, inputs, as_json, out_dir, k, linkage, offset, list_runs, weights_dir, no_cache, verbose):
    """Cluster the unknown faces of each PHOTO (folders are expanded to their images)."""
    start(verbose)
    if list_runs:
        if inputs:
            raise click.UsageError("--runs takes no photos")
        show_runs(model_dir, as_json)
        return
    if not inputs:
        raise click.UsageError("give photos or folders to cluster (or --runs)")
    files = recognizer.expand_inputs(list(inputs), recursive=True)
    if not files:
        raise click.ClickException(f"no image files found in {', '.join(inputs)}")
    if out_dir:  # before any photo is read: never among the photos (facecore.outputs)
        check_output_dir(out_dir, [*inputs, *files], what="cluster sheets folder")
    with recognizer.open(model_dir, weights_dir=weights_dir, cache=not no_cache) as rec:
        _cluster(rec, files, as_json, (out_dir, [*inputs, *files]), k, linkage, offset, model_dir)


def _cluster(rec, files, as_json, out, k, linkage, offset, model_dir) -> None:
    out_dir, inputs = out  # the sheets' folder (or None) and what it must keep clear of
    result = service.cluster_photos(rec, files, k=k or DEFAULT_K, linkage=linkage,
                                    offset=service.DEFAULT_LINK_OFFSET if offset is None else offset,
                                    progress=not as_json and len(files) > 1)
    if result.meta["faces"]:
        service.save(rec, result)
    meta = result.meta
    if out_dir:
        index = write_report(out_dir, meta, result.crops, result.id, inputs)
    if as_json:
        click.echo(json.dumps(result.to_dict(), indent=2))
        return
    failed = [p for p in meta["photos"] if p.get("error")]
    for p in failed:
        click.echo(f"{p['photo']}: error: {p['error']}")
    known = sum(len(p["known"]) for p in meta["photos"])
    click.echo(f"{len(meta['faces'])} unknown face(s) in {len(meta['photos'])} photo(s), {known} already named, "
               f"{meta.get('low_quality', 0)} set aside as low quality; {len(meta['clusters'])} cluster(s)" + (f", saved as run {result.id}" if result.id else ""))
    for c in meta["clusters"]:
        photos = sorted({meta["photos"][meta["faces"][i]["photo"]]["photo"] for i in c["faces"]})
        click.echo(f"  {result.id}:{c['id']}  {c['size']} face(s)  central face {c['central']}; "
                   f"{service.looks_like_text(c, meta['threshold'])}; in {', '.join(photos[:3])}"
                   + (f" and {len(photos) - 3} more" if len(photos) > 3 else ""))
    if out_dir:
        click.echo(f"contact sheets: {index}")
    if result.id:
        click.echo(f"name one: enroll.py --model {model_dir} --name NAME --cluster {result.id}:ID")


# ---- saved runs: list, name a cluster, dismiss a cluster, discard a run (shared with enroll.py) ---
def show_runs(model_dir, as_json: bool) -> None:
    load_config(model_dir)  # a clear error for a directory that is no model
    out = [runs.summary(model_dir, rid) for rid in runs.list_runs(model_dir)]
    if as_json:
        click.echo(json.dumps({"runs": out}, indent=2))
        return
    for r in out:
        click.echo(f"{r['run']}  {r['faces']:5d} faces  {r['clusters']:4d} clusters  {r['open']:4d} open")


def parse_exclude(exclude: str) -> list[int]:
    """`--exclude 4,7`: the face numbers of a cluster to leave out."""
    try:
        return [int(v) for v in exclude.replace(" ", "").split(",") if v]
    except ValueError:
        raise click.BadParameter(f"{exclude!r} is not a comma-separated list of face numbers", param_hint="--exclude") from None


def name_cluster(rec, ref: str, name: str, excluded: list[int], allow_similar: bool, as_json: bool) -> None:
    """Enroll the faces of cluster RUN:ID as `name`, but the face numbers in `excluded`."""
    run_id, cid = service.parse_ref(ref)
    out = service.enroll_cluster(rec, run_id, cid, name, exclude=excluded, allow_similar=allow_similar)
    if as_json:
        click.echo(json.dumps(out.to_dict(), indent=2))
        return
    for s in out.skipped:
        click.echo(f"      skipped  face {s['face']} ({s['photo']}): {s['reason']}")
    click.echo(f"{out.name}: added {out.added} face(s) from cluster {out.run}:{out.cluster}; "
               f"{rec.people().get(out.name, 0)} enrolled in total")


def discard(rec, ref: str, as_json: bool) -> None:
    """RUN:ID dismisses one cluster of a run; RUN deletes the whole run."""
    if ":" in ref:
        service.dismiss_cluster(rec, *service.parse_ref(ref))
        click.echo(json.dumps({"dismissed": ref}) if as_json else f"dismissed cluster {ref}")
    else:
        runs.discard_run(rec.dir, ref)
        click.echo(json.dumps({"discarded": ref}) if as_json else f"discarded run {ref}")


def _runs_command(name: str, help: str):
    """A `clusters` subcommand: --model, --json, --weights-dir, --gallery, -v."""
    return subcommand(clusters, name, help, model_option, json_option, weights_dir_option, gallery_option,
                      verbose_option)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def clusters() -> None:
    """The runs `facetool cluster` saved: list them, name a cluster, dismiss a cluster, discard a run."""


@_runs_command("list", "List the saved runs and their open clusters.")
def _list(model_dir, as_json, weights_dir, gallery, verbose):
    start(verbose)
    show_runs(model_dir, as_json)


@_runs_command("name", "Enroll cluster RUN:ID (RUN may be 'latest') as NAME.")
@click.argument("ref", metavar="RUN:ID")
@click.argument("name")
@click.option("--exclude", metavar="N,N", default="", help="Face numbers of the cluster to leave out.")
@allow_similar_option
def _name(model_dir, as_json, weights_dir, gallery, verbose, ref, name, exclude, allow_similar):
    start(verbose)
    excluded = parse_exclude(exclude)
    with recognizer.open(model_dir, weights_dir=weights_dir, gallery=gallery) as rec:
        name_cluster(rec, ref, name, excluded, allow_similar, as_json)


@_runs_command("dismiss", "Dismiss cluster RUN:ID: it is not offered for naming again.")
@click.argument("ref", metavar="RUN:ID")
def _dismiss(model_dir, as_json, weights_dir, gallery, verbose, ref):
    start(verbose)
    if ":" not in ref:
        raise click.BadParameter(f"{ref!r} is not RUN:ID (to delete a whole run: facetool clusters discard)", param_hint="RUN:ID")
    with recognizer.open(model_dir, weights_dir=weights_dir, gallery=gallery) as rec:
        discard(rec, ref, as_json)


@_runs_command("discard", "Delete saved run RUN (its faces and crops).")
@click.argument("run")
def _discard(model_dir, as_json, weights_dir, gallery, verbose, run):
    start(verbose)
    if ":" in run:
        raise click.BadParameter(f"{run!r} is a cluster (to dismiss it: facetool clusters dismiss)", param_hint="RUN")
    with recognizer.open(model_dir, weights_dir=weights_dir, gallery=gallery) as rec:
        discard(rec, run, as_json)

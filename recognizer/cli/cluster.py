"""Group the faces a model cannot name into candidate people, to name each group in one step.

    cluster.py --model DIR PHOTO_OR_FOLDER... [--json] [--out DIR]
    cluster.py --model DIR --runs
    enroll.py --model DIR --name NAME --cluster RUN:ID      (then names a cluster)
"""
from __future__ import annotations

import json

import click

from recognizer.cli._options import friendly_errors, model_option, passive_openmp, setup_logging, verbose_option, weights_dir_option


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@model_option
@click.argument("inputs", nargs=-1, type=click.Path())
@click.option("--json", "as_json", is_flag=True, help="Print the run (photos, faces, clusters) as JSON.")
@click.option("--out", "out_dir", type=click.Path(file_okay=False), help="Write a contact sheet per cluster and an index.html here.")
@click.option("--k", type=click.IntRange(1, 1000), default=None, help="Neighbours per face in the similarity graph.")
@click.option("--linkage", type=click.Choice(["average", "single"]), default="average", help="How two groups are judged alike.")
@click.option("--offset", type=click.FloatRange(-1, 1), default=None, help="Linkage threshold minus the model's threshold.")
@click.option("--runs", "list_runs", is_flag=True, help="List the saved runs and their open clusters.")
@weights_dir_option
@click.option("--no-cache", is_flag=True, help="Do not read or write the crop cache (~/.cache/facetool).")
@verbose_option
@friendly_errors
def main(model_dir, inputs, as_json, out_dir, k, linkage, offset, list_runs, weights_dir, no_cache, verbose):
    """Cluster the unknown faces of each PHOTO (folders are expanded to their images)."""
    passive_openmp()
    setup_logging(verbose)
    import recognizer
    from recognizer.clustering import runs

    if list_runs:
        if inputs:
            raise click.UsageError("--runs takes no photos")
        from recognizer.modeldir.config import load_config

        load_config(model_dir)  # a clear error for a directory that is no model
        out = [runs.summary(model_dir, rid) for rid in runs.list_runs(model_dir)]
        if as_json:
            click.echo(json.dumps({"runs": out}, indent=2))
        for r in [] if as_json else out:
            click.echo(f"{r['run']}  {r['faces']:5d} faces  {r['clusters']:4d} clusters  {r['open']:4d} open")
        return
    if not inputs:
        raise click.UsageError("give photos or folders to cluster (or --runs)")
    files = recognizer.expand_inputs(list(inputs), recursive=True)
    if not files:
        raise click.ClickException(f"no image files found in {', '.join(inputs)}")
    with recognizer.open(model_dir, weights_dir=weights_dir, cache=not no_cache) as rec:
        _cluster(rec, files, as_json, out_dir, k, linkage, offset, model_dir)


def _cluster(rec, files, as_json, out_dir, k, linkage, offset, model_dir) -> None:
    from recognizer.clustering import service
    from recognizer.clustering.graph import DEFAULT_K

    result = service.cluster_photos(rec, files, k=k or DEFAULT_K, linkage=linkage,
                                    offset=service.DEFAULT_LINK_OFFSET if offset is None else offset,
                                    progress=not as_json and len(files) > 1)
    if result.meta["faces"]:
        service.save(rec, result)
    meta = result.meta
    if out_dir:
        from recognizer.clustering.sheets import write_report

        index = write_report(out_dir, meta, result.crops, result.id)
    if as_json:
        click.echo(json.dumps(result.to_dict(), indent=2))
        return
    failed = [p for p in meta["photos"] if p.get("error")]
    for p in failed:
        click.echo(f"{p['photo']}: error: {p['error']}")
    known = sum(len(p["known"]) for p in meta["photos"])
    click.echo(f"{len(meta['faces'])} unknown face(s) in {len(meta['photos'])} photo(s), {known} already named; "
               f"{len(meta['clusters'])} cluster(s)" + (f", saved as run {result.id}" if result.id else ""))
    for c in meta["clusters"]:
        photos = sorted({meta["photos"][meta["faces"][i]["photo"]]["photo"] for i in c["faces"]})
        click.echo(f"  {result.id}:{c['id']}  {c['size']} face(s)  central face {c['central']}; "
                   f"{service.looks_like_text(c, meta['threshold'])}; in {', '.join(photos[:3])}"
                   + (f" and {len(photos) - 3} more" if len(photos) > 3 else ""))
    if out_dir:
        click.echo(f"contact sheets: {index}")
    if result.id:
        click.echo(f"name one: enroll.py --model {model_dir} --name NAME --cluster {result.id}:ID")

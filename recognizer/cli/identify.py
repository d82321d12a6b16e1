"""Name every face in photos, or call it unknown.

    identify.py --model DIR PHOTO_OR_FOLDER... [--json] [--annotate OUT] [--threshold T]
    identify.py --model DIR FOLDER_OR_LIST.txt... --ray [auto|ADDRESS] [--out RESULTS.jsonl] [--json]
"""
from __future__ import annotations

import json
from pathlib import Path

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
@click.argument("inputs", nargs=-1, required=True, type=click.Path())
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object per photo (a JSON list).")
@click.option("--annotate", "annotate_out", type=click.Path(), help="Write annotated photos: a file for one photo, a folder for several (mirroring the input folders). Never an input.")
@click.option("--threshold", type=float, help="Similarity under which a face is unknown (default: the model's).")
@weights_dir_option
@click.option("--no-cache", is_flag=True, help="Do not read or write the crop cache (~/.cache/facetool).")
@gallery_option
@ray_option
@ray_out_option
@ray_workers_option
@verbose_option
@friendly_errors
def main(model_dir, inputs, as_json, annotate_out, threshold, weights_dir, no_cache, gallery, ray_address, out_path,
         workers, verbose):
    """Identify the faces in each PHOTO (folders are expanded to their images)."""
    passive_openmp()
    setup_logging(verbose)
    import recognizer

    if threshold is not None and not -1.0 <= threshold <= 1.0:
        raise click.BadParameter(f"{threshold} is not a cosine similarity in [-1, 1]", param_hint="--threshold")
    if ray_address is not None:
        if annotate_out:
            raise click.UsageError("--annotate does not combine with --ray")
        results = identify_on_ray(model_dir, inputs, out_path, ray_address, workers, threshold, weights_dir, gallery,
                                  no_cache, progress=not as_json)
        report(results, as_json)
        return
    if out_path or workers:
        raise click.UsageError("--out and --workers go with --ray")
    rec = recognizer.open(model_dir, weights_dir=weights_dir, cache=not no_cache, gallery=gallery)
    files = recognizer.expand_inputs(list(inputs), recursive=True)
    if not files:
        raise click.ClickException(f"no image files found in {', '.join(inputs)}")
    targets = recognizer.annotation_paths([Path(p) for p in inputs], files, Path(annotate_out)) if annotate_out else {}
    results = []
    failed = 0
    for res in rec.identify_many(files, threshold=threshold, progress=not as_json and len(files) > 1):
        results.append(res.to_dict())
        if res.error:
            failed += 1
        if targets and res.error is None:
            recognizer.save_annotated(res, targets[res.photo])
        if not as_json:
            if res.error:
                click.echo(f"{res.photo}: error: {res.error}")
                continue
            names = [f.name or "unknown" for f in res.faces]
            click.echo(f"{res.photo}: {len(res.faces)} face(s): {', '.join(names) if names else '-'}")
    if as_json:
        click.echo(json.dumps(results, indent=2))
    if failed == len(results):
        raise SystemExit(1)

def identify_on_ray(model_dir, inputs, out_path, address, workers, threshold, weights_dir, gallery, no_cache, progress):
    """Results (dicts) of a Ray bulk run, read back from its JSON Lines file (a temporary one
    without --out)."""
    import tempfile

    import recognizer

    with tempfile.TemporaryDirectory(prefix="facetool-ray-") as tmp:
        out = Path(out_path) if out_path else Path(tmp) / "results.jsonl"
        summary = recognizer.identify_bulk(model_dir, list(inputs), out, address=address, workers=workers,
                                           threshold=threshold, weights_dir=weights_dir, gallery=gallery,
                                           use_cache=not no_cache, progress=progress)
        if summary.done_before:
            click.echo(f"{out}: {summary.done_before} photo(s) were already done; analysed {summary.processed}",
                       err=True)
        with open(out, encoding="utf-8") as fh:
            return [json.loads(line) for line in fh]


def report(results, as_json):
    if as_json:
        click.echo(json.dumps(results, indent=2))
    else:
        for res in results:
            if "error" in res:
                click.echo(f"{res['photo']}: error: {res['error']}")
                continue
            names = [f["name"] or "unknown" for f in res["faces"]]
            click.echo(f"{res['photo']}: {len(res['faces'])} face(s): {', '.join(names) if names else '-'}")
    if all("error" in r for r in results):
        raise SystemExit(1)


if __name__ == "__main__":
    main()

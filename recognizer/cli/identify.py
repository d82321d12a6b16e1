"""Name every face in photos, or call it unknown.

    identify.py --model DIR PHOTO_OR_FOLDER... [--json] [--annotate OUT] [--threshold T]
"""
from __future__ import annotations

import json
from pathlib import Path

import click

from recognizer.cli._options import friendly_errors, model_option, passive_openmp, setup_logging, verbose_option, weights_dir_option


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@model_option
@click.argument("inputs", nargs=-1, required=True, type=click.Path())
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object per photo (a JSON list).")
@click.option("--annotate", "annotate_out", type=click.Path(), help="Write annotated photos: a file for one photo, a folder for several (mirroring the input folders). Never an input.")
@click.option("--threshold", type=float, help="Similarity under which a face is unknown (default: the model's).")
@weights_dir_option
@click.option("--no-cache", is_flag=True, help="Do not read or write the crop cache (~/.cache/facetool).")
@verbose_option
@friendly_errors
def main(model_dir, inputs, as_json, annotate_out, threshold, weights_dir, no_cache, verbose):
    """Identify the faces in each PHOTO (folders are expanded to their images)."""
    passive_openmp()
    setup_logging(verbose)
    import recognizer

    if threshold is not None and not -1.0 <= threshold <= 1.0:
        raise click.BadParameter(f"{threshold} is not a cosine similarity in [-1, 1]", param_hint="--threshold")
    rec = recognizer.open(model_dir, weights_dir=weights_dir, cache=not no_cache)
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


if __name__ == "__main__":
    main()

"""Report how well a model names people: classifier vs kNN vs combined, unknown rejection, pairs.

    evaluate.py --model DIR [DATA_DIR] [--unknown DIR] [--pairs FILE --pairs-root DIR] [--out REPORT_DIR]
                [--json] [--set-threshold] [--target-fpir 0.01]

DATA_DIR holds <person>/* photos (or val/<person>/*) of enrolled people the model was not built
from. Without --unknown, a share of them is held out of a temporary copy of the gallery and
treated as unknown; the model itself is never changed, except by --set-threshold.
"""
from __future__ import annotations

import json

import click

import recognizer
from facecore.outputs import check_output_dir
from recognizer.cli._options import friendly_errors, model_option, no_cache_option, start, verbose_option

__all__ = ["main"]


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@model_option
@click.argument("data_dir", required=False, type=click.Path(exists=True, file_okay=False))
@click.option("--unknown", "unknown_dir", type=click.Path(exists=True, file_okay=False),
              help="Folder of <person>/ photos of people who are not enrolled (default: hold out a share of DATA_DIR's people).")
@click.option("--pairs", "pairs_file", type=click.Path(exists=True, dir_okay=False), help="Labelled pairs in LFW pairs.txt format.")
@click.option("--pairs-root", type=click.Path(exists=True, file_okay=False), help="Folder holding <name>/<name>_0001.jpg for --pairs.")
@click.option("--out", "out_dir", type=click.Path(file_okay=False), help="Write report.md, report.json and the plots here.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.option("--target-fpir", default=0.01, show_default=True, type=click.FloatRange(0.0, 1.0),
              help="Share of unknown faces allowed to be named, for the recommended threshold.")
@click.option("--set-threshold", is_flag=True, help="Store the threshold whose FPIR upper bound (95% confidence) is under --target-fpir in the model (model.json); refused when the unknown faces are too few to show it.")
@click.option("--holdout", default=0.2, show_default=True, type=click.FloatRange(0.0, 1.0, min_open=True),
              help="Share of people held out as unknown when --unknown is not given.")
@no_cache_option
@click.option("-q", "--quiet", is_flag=True, help="No progress bars.")
@verbose_option
@friendly_errors
def main(model_dir, data_dir, unknown_dir, pairs_file, pairs_root, out_dir, as_json, target_fpir, set_threshold, holdout,
         no_cache, quiet, verbose):
    """Evaluate the model in DIR on DATA_DIR (and/or on --pairs)."""
    start(verbose)
    if data_dir is None and not pairs_file:
        raise click.UsageError("give DATA_DIR, --pairs FILE, or both")
    if pairs_file and not pairs_root:
        raise click.UsageError("--pairs needs --pairs-root")
    if set_threshold and data_dir is None:
        raise click.UsageError("--set-threshold needs DATA_DIR: the threshold is chosen on its open-set figures")
    inputs = [p for p in (model_dir, data_dir, unknown_dir, pairs_file, pairs_root) if p]
    if out_dir:  # before the (long) evaluation: the report folder is never among the inputs
        check_output_dir(out_dir, inputs, what="report folder")
    rep = recognizer.evaluate(model_dir, data_dir, unknown_dir=unknown_dir, pairs_file=pairs_file, pairs_root=pairs_root,
                              target_fpir=target_fpir, holdout=holdout, cache=not no_cache, progress=not quiet and not as_json)
    refused = _store_threshold(rep, model_dir, target_fpir) if set_threshold else None
    if out_dir:
        rep.write(out_dir, inputs)
    click.echo(json.dumps(rep.to_dict(), indent=2) if as_json else rep.markdown())
    if refused:  # after the report, which says why in its open-set section
        raise click.ClickException(refused)


def _store_threshold(rep, model_dir: str, target_fpir: float) -> str | None:
    """Store the bounded threshold in model.json; the reason when it may not be stored."""
    if rep.open is None:
        return "no open-set figures, so no threshold to set (see the notes with --json)"
    if rep.open.bounded_threshold is None:
        return (f"threshold not set: {rep.open.n_unknown} unknown faces cannot show an FPIR of at most {target_fpir:g} "
                f"(that needs at least {rep.open.strangers_needed} with none named); pass --unknown DIR with more "
                f"strangers' photos, or use `enroll.py --model {model_dir} --target-fpir {target_fpir:g}`, which takes "
                "the threshold from the stranger cohort")
    recognizer.set_threshold(model_dir, rep.open.bounded_threshold)
    rep.threshold_set = rep.open.bounded_threshold
    return None


if __name__ == "__main__":
    main()

"""`facetool model`: a model's versions. Train or re-embed a candidate beside the model in use,
switch to it, look at it or discard it, roll back.

    facetool model finetune DATA_DIR --model DIR [--backbone B] [--epochs N] [--switch/--no-switch] ...
    facetool model reembed [DATA_DIR] --model DIR --backbone B [--weights W] [--switch]
    facetool model candidate --model DIR          (what `switch` would switch to, with its figures)
    facetool model switch --model DIR
    facetool model discard --model DIR
    facetool model rollback --model DIR
    facetool model threshold --model DIR [--target-fpir 0.01]   (the unknown threshold; enroll.py --target-fpir alone)

finetune.py's flags (--reembed, --switch alone, --rollback, --discard-candidate) run the same
functions (see recognizer/cli/finetune.py).
"""
from __future__ import annotations

import json
import logging

import click

import recognizer
from facecore.extras import MissingExtra, missing_modules, require_extra
from recognizer import lifecycle
from recognizer.cli import _options
from recognizer.cli._options import friendly_errors, options, passive_openmp
from recognizer.evaluation.compare import side_by_side_text

__all__ = [
    "backbone_option", "cache_dir_option", "cohort_option", "discard", "epochs_option", "json_option", "main",
    "model_option", "patience_option", "quiet_option", "reembed", "rollback", "seed_option", "show_candidate",
    "show_threshold", "start_torch", "switch", "switch_option", "target_fpir_option", "threads_option", "train",
    "train_options", "unfreeze_option", "unknown_option", "weights_dir_option", "weights_option",
]

model_option = click.option("--model", "model_dir", required=True, type=click.Path(file_okay=False),
                            help="Model directory (created if missing).")
backbone_option = click.option("--backbone", type=click.Choice(["facenet", "sface"]), default="facenet", show_default=True)
weights_option = click.option("--weights", default=None,
                              help="facenet base weights: vggface2 (default), casia-webface, random, or a .pt file.")
weights_dir_option = click.option("--weights-dir", default=None, type=click.Path(file_okay=False),
                                  help="Where downloaded weights are cached.")
unfreeze_option = click.option("--unfreeze", default=None,
                               help="facenet blocks to train, e.g. repeat_3,block8 (last_linear and last_bn always train).")
epochs_option = click.option("--epochs", default=30, show_default=True, type=click.IntRange(1, 10000))
seed_option = click.option("--seed", default=0, show_default=True, type=int, help="Makes a run repeatable.")
patience_option = click.option("--patience", default=8, show_default=True, type=click.IntRange(1, 10000),
                               help="Epochs without a better val loss before stopping.")
threads_option = click.option(
    "--threads", default=1, show_default=True, type=click.IntRange(1, 256),
    help="CPU threads for torch. 1 by default: on a small machine shared with other work, more threads "
         "wait on each other and slow detection down; raise it on an idle machine.")
cache_dir_option = click.option("--cache-dir", default=None, type=click.Path(file_okay=False),
                                help="Crop and trunk caches (default ~/.cache/facetool).")
cohort_option = click.option(
    "--cohort", default=None, type=click.Path(file_okay=False),
    help="Stranger cohort (<person>/ photos) the new embeddings' FPIR table is calibrated on "
         "(default: FACETOOL_COHORT or ../shared/data/cohort-celeba). Without one the model keeps its fixed threshold.")
switch_option = click.option(
    "--switch/--no-switch", "switch", default=None,
    help="Switch the model to the result (default: yes for a retrain on the same backbone and weights, no "
         "for another backbone or weights). Alone (--model DIR --switch): switch to the candidate built before.")
unknown_option = click.option(
    "--unknown", "unknown_dir", default=None, type=click.Path(exists=True, file_okay=False),
    help="Photos of people not enrolled (<person>/ folders) for the side-by-side open-set figures "
         "(default: some enrolled people of the held-out faces are held out of a copy of each gallery).")
json_option = click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
quiet_option = click.option("-q", "--quiet", is_flag=True, help="No progress bars.")
target_fpir_option = click.option(
    "--target-fpir", type=click.FloatRange(0.0, 1.0, min_open=True, max_open=True),
    help="Share of strangers the model may name (e.g. 0.01); the threshold is derived from it for the current gallery.")
# The options of a training run, shared by `facetool model finetune` and finetune.py (in this order in their --help).
train_options = options(model_option, backbone_option, weights_option, weights_dir_option, unfreeze_option,
                        epochs_option, seed_option, patience_option, threads_option, cache_dir_option, cohort_option)


def start_torch(threads: int | None) -> None:
    """Set-up of these commands: passive OpenMP threads, warnings on stderr, and for those that
    may run a network (`threads` given) torch's thread count."""
    passive_openmp()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    # Without torch (the core install) there is nothing to set: an sface re-embed, switch or
    # rollback runs without it, and training says which extra it needs (`train`).
    if threads is not None and "torch" not in missing_modules("train"):
        import torch  # seconds to import: only the commands that may run a torch network load it

        torch.set_num_threads(threads)


# ---- the jobs, shared with finetune.py's flags ----------------------------------------------------
def train(data_dir, model_dir, *, as_json: bool, progress: bool, **options) -> None:
    """Finetune on DATA_DIR (see `recognizer.finetune` for `options`) and print the report."""
    try:
        require_extra("train", "facetool finetune")
    except MissingExtra as exc:
        raise click.ClickException(str(exc)) from None
    if options["backbone"] == "sface" and options["unfreeze"]:
        raise click.UsageError("--unfreeze applies to facenet only: sface has no trainable blocks")
    try:
        report = recognizer.finetune(data_dir, model_dir, progress=progress, **options)
    except OSError as exc:  # disk full, read-only: the new files were removed, the old model stands
        where = exc.filename or model_dir
        raise click.ClickException(f"{where}: could not save the finetuned model ({exc.strerror or exc}); "
                                   f"{model_dir} is unchanged") from None
    if as_json:
        click.echo(json.dumps(report.to_dict(), indent=2))
        return
    tr = report.training
    for folder, person in report.matched_folders:
        click.echo(f"training folder {folder} is the enrolled {person}" if person else
                   f"training folder {folder} is nobody enrolled (a new person); if it is someone enrolled, rename it")
    click.echo(f"{report.backbone}: {report.n_train} training faces of {len(report.classes)} people, {report.n_val} val faces ({report.split})")
    click.echo(f"best epoch {tr['best_epoch']} of {len(tr['history'])}{' (early stop)' if tr['stopped_early'] else ''}, "
               f"{tr['seconds_per_epoch'] * 1000:.0f} ms/epoch")
    for d in ("classifier", "knn", "combined"):
        sc = report.scores[d]
        click.echo(f"  val accuracy {d:<10} {sc['accuracy']:.3f} ({sc['correct']}/{report.scores['n']}), top-3 {sc['top_k']['3']:.3f}")
    if report.comparison is not None:
        _print_comparison(report.comparison)
    g = report.gallery
    click.echo(f"gallery: {g['faces']} faces of {len(g['people'])} people ({g['reembedded_enrolled']} enrolled faces re-embedded, "
               f"{len(g['dropped_enrolled'])} dropped)")
    click.echo(f"FPIR table: {report.fpir['how']}")
    for s in report.skipped:
        click.echo(f"  skipped {s['file']}: {s['reason']}", err=True)
    if report.switched:
        click.echo(f"model {report.model_id} in {report.model_dir}" + (" (switched to it)" if report.switch else ""))
    elif report.held_back:
        click.echo(f"model {report.model_id} built as a candidate, NOT switched to: {report.held_back}")
    else:
        click.echo(f"model {report.model_id} built as a candidate beside the model in use, which is unchanged; "
                   f"switch with: finetune.py --model {report.model_dir} --switch")


def reembed(model_dir, backbone, weights, *, data_dir, unknown_dir, switch_now: bool, weights_dir, cache_dir,
            as_json: bool, progress: bool) -> None:
    """Re-embed every enrolled face with another network beside the model in use (a migration)."""
    out = lifecycle.migrate(model_dir, backbone, weights, data_dir=data_dir, unknown_dir=unknown_dir, switch=switch_now,
                            weights_dir=weights_dir, cache_dir=cache_dir, progress=progress)
    if as_json:
        click.echo(json.dumps(out, indent=2))
        return
    c = out["candidate"]
    click.echo(f"re-embedded {c['faces']} faces of {len(c['people'])} people with {c['model_id']} "
               f"beside the model in use ({out['current']['model_id']})")
    _print_comparison(out["comparison"])
    _print_switch(out["switch"], model_dir)


def switch(model_dir, *, weights_dir, as_json: bool, progress: bool) -> None:
    """Switch to the pending candidate (what changed since it was built carried over)."""
    out = lifecycle.switch(model_dir, weights_dir=weights_dir, progress=progress)
    if as_json:
        click.echo(json.dumps(out, indent=2))
        return
    if out["comparison"] is not None:
        click.echo(f"figures scored when the candidate was built ({out['built_at']}):")
    _print_comparison(out["comparison"])
    _print_switch(out, model_dir)


def rollback(model_dir, *, weights_dir, as_json: bool, progress: bool) -> None:
    out = lifecycle.rollback(model_dir, weights_dir=weights_dir, progress=progress)
    click.echo(json.dumps(out, indent=2) if as_json else
               f"rolled back {model_dir} from {out['from']} to {out['to']}: {out['faces']} faces re-embedded")


def discard(model_dir, *, as_json: bool) -> None:
    gone = lifecycle.discard_candidate(model_dir)
    click.echo(json.dumps({"discarded": gone}) if as_json else
               ("discarded the candidate" if gone else "no candidate was pending"))


def show_candidate(model_dir, *, as_json: bool) -> None:
    """The pending candidate and its side-by-side figures, or that none is pending."""
    cand = lifecycle.candidate(model_dir)
    if as_json:
        click.echo(json.dumps({"candidate": cand}, indent=2))
        return
    if cand is None:
        click.echo("no candidate is pending")
        return
    click.echo(f"candidate {cand['model_id']} ({cand['kind']}, {cand['backbone']}"
               + (f" {cand['weights']}" if cand["weights"] else "")
               + f"), built {cand['built_at']} beside {cand['built_beside']}")
    _print_comparison(cand["comparison"])
    click.echo(f"switch with: facetool model switch --model {model_dir}; discard with: facetool model discard --model {model_dir}")


def show_threshold(rec, as_json: bool) -> None:
    """The unknown threshold the model uses now, what it lets through and what it costs."""
    info = rec.threshold_info()
    click.echo(json.dumps({"threshold": info.to_dict()}, indent=2) if as_json else info.describe())


def _print_comparison(cmp) -> None:
    if cmp is None:
        click.echo("no held-out photos given: no side-by-side figures (pass DATA_DIR)")
    elif "error" in cmp:
        click.echo(f"side-by-side figures unavailable: {cmp['error']}", err=True)
    else:
        click.echo(side_by_side_text(cmp))


def _print_switch(out, model_dir) -> None:
    if out is None:
        click.echo(f"the model in use is unchanged; switch with: finetune.py --model {model_dir} --switch")
        return
    since = [f"{out['enrolled_since_build']} faces enrolled"]
    if out["removed_since_build"]:
        since.append(f"removed: {', '.join(out['removed_since_build'])}")
    if out["renamed_since_build"]:
        since.append("renamed: " + ", ".join(f"{a} -> {b}" for a, b in out["renamed_since_build"].items()))
    click.echo(f"switched {model_dir} from {out['from']} to {out['to']}: {out['faces']} faces "
               f"({'; '.join(since)} since the candidate was built); --rollback returns")


# ---- the commands ---------------------------------------------------------------------------------
_errors = friendly_errors(also=(ValueError,))  # lifecycle's ValueErrors are the user's mistakes, said in words
_ctx = {"help_option_names": ["-h", "--help"]}
# switch, rollback
_version_options = options(model_option, weights_dir_option, threads_option, json_option, quiet_option)


@click.group(context_settings=_ctx)
def main() -> None:
    """A model's versions (finetune or re-embed beside the one in use; candidate, switch, discard, rollback) and its threshold."""


@main.command("finetune", context_settings=_ctx)
@click.argument("data_dir", type=click.Path(exists=True, file_okay=False))
@train_options
@options(switch_option, unknown_option, json_option, quiet_option)
@_errors
def _finetune(data_dir, model_dir, backbone, weights, weights_dir, unfreeze, epochs, seed, patience, threads, cache_dir,
              cohort, switch, unknown_dir, as_json, quiet):
    """Finetune on DATA_DIR/train/<person>/* (and val/<person>/*); on an existing model the result
    is built beside the model in use and scored side by side with it."""
    start_torch(threads)
    train(data_dir, model_dir, as_json=as_json, progress=not quiet and not as_json, backbone=backbone, weights=weights,
          weights_dir=weights_dir, unfreeze=unfreeze, epochs=epochs, seed=seed, patience=patience, cache_dir=cache_dir,
          cohort=cohort, switch=switch, unknown_dir=unknown_dir)


@main.command("reembed", context_settings=_ctx)
@click.argument("data_dir", required=False, type=click.Path(exists=True, file_okay=False))
@model_option
@click.option("--backbone", type=click.Choice(["facenet", "sface"]), required=True, help="The network to re-embed with.")
@options(weights_option, weights_dir_option)
@click.option("--switch", "switch_now", is_flag=True, help="Switch to the result now (default: build it beside, switch later).")
@options(unknown_option, threads_option, cache_dir_option, json_option, quiet_option)
@_errors
def _reembed(data_dir, model_dir, backbone, weights, weights_dir, switch_now, unknown_dir, threads, cache_dir, as_json, quiet):
    """Migrate without training: re-embed every enrolled face from its chip with --backbone/--weights,
    beside the model in use (DATA_DIR, optional: held-out labelled photos to compare on)."""
    start_torch(threads)
    reembed(model_dir, backbone, weights, data_dir=data_dir, unknown_dir=unknown_dir, switch_now=switch_now,
            weights_dir=weights_dir, cache_dir=cache_dir, as_json=as_json, progress=not quiet and not as_json)


@main.command("switch", context_settings=_ctx)
@_version_options
@_errors
def _switch(model_dir, weights_dir, threads, as_json, quiet):
    """Switch to the candidate built beside the model; what was enrolled, removed or renamed since
    is carried over, and the replaced version is kept for `rollback`."""
    start_torch(threads)
    switch(model_dir, weights_dir=weights_dir, as_json=as_json, progress=not quiet and not as_json)


@main.command("rollback", context_settings=_ctx)
@_version_options
@_errors
def _rollback(model_dir, weights_dir, threads, as_json, quiet):
    """Return to the version before the last finetune or switch: the faces enrolled now are
    re-embedded from their chips with that version's network."""
    start_torch(threads)
    rollback(model_dir, weights_dir=weights_dir, as_json=as_json, progress=not quiet and not as_json)


@main.command("candidate", context_settings=_ctx)
@options(model_option, json_option)
@_errors
def _candidate(model_dir, as_json):
    """Show the candidate pending beside the model (what `switch` would switch to) and its figures."""
    start_torch(None)
    show_candidate(model_dir, as_json=as_json)


@main.command("discard", context_settings=_ctx)
@options(model_option, json_option)
@_errors
def _discard(model_dir, as_json):
    """Delete the candidate built beside the model, and its files."""
    start_torch(None)
    discard(model_dir, as_json=as_json)


@main.command("threshold", context_settings=_ctx)
@options(_options.model_option, target_fpir_option, _options.json_option, _options.gallery_option,
         _options.verbose_option)
@friendly_errors
def _threshold(model_dir, target_fpir, as_json, gallery, verbose):
    """Show the unknown threshold the model uses now; with --target-fpir, derive it from that share
    of strangers let through (stored in model.json) first."""
    _options.start(verbose)
    with recognizer.open(model_dir, gallery=gallery) as rec:
        if target_fpir is not None:
            rec.set_target_fpir(target_fpir)
        show_threshold(rec, as_json)

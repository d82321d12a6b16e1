"""Finetune a recognizer on labelled photos: DATA_DIR/train/<person>/* (and optionally val/<person>/*).

    finetune.py DATA_DIR --model DIR [--backbone facenet|sface] [--weights W] [--weights-dir D]
                [--unfreeze BLOCKS] [--epochs N] [--seed S] [--switch/--no-switch] [--unknown U] [--json]
    finetune.py [DATA_DIR] --model DIR --reembed --backbone B [--weights W] [--switch] [--unknown U]
    finetune.py --model DIR --switch | --rollback | --discard-candidate

facenet: the last Inception-ResNet blocks (default block8, last_linear, last_bn) and a classification
head are trained; the rest of the network stays frozen. sface: the head alone is trained on its
embeddings. DIR gets checkpoint-<token>.pt, model.json, the gallery rebuilt from the training faces
(plus faces enrolled since, re-embedded), curves_*.png and report.json.

On an existing model the result is built beside the model in use and both are scored side by side
on the same held-out faces (closed set and open set, each at its own threshold). A retrain on the
same backbone and weights then switches to it (--no-switch: not); another backbone or weights (a
migration) switches only with --switch, now or later (`--model DIR --switch`). --reembed migrates
without training: every enrolled face re-embedded from its chip with the new network (DATA_DIR:
held-out labelled photos for the side-by-side figures). --rollback returns to the version before.
"""
from __future__ import annotations

import sys

import click

from facecore.extras import MissingExtra, require_extra


@click.command(help=__doc__.split("\n\n")[0])
@click.argument("data_dir", required=False, type=click.Path(exists=True, file_okay=False))
@click.option("--model", "model_dir", required=True, type=click.Path(file_okay=False), help="Model directory (created if missing).")
@click.option("--backbone", type=click.Choice(["facenet", "sface"]), default="facenet", show_default=True)
@click.option("--weights", default=None, help="facenet base weights: vggface2 (default), casia-webface, random, or a .pt file.")
@click.option("--weights-dir", default=None, type=click.Path(file_okay=False), help="Where downloaded weights are cached.")
@click.option("--unfreeze", default=None, help="facenet blocks to train, e.g. repeat_3,block8 (last_linear and last_bn always train).")
@click.option("--epochs", default=30, show_default=True, type=click.IntRange(1, 10000))
@click.option("--seed", default=0, show_default=True, type=int, help="Makes a run repeatable.")
@click.option("--patience", default=8, show_default=True, type=click.IntRange(1, 10000), help="Epochs without a better val loss before stopping.")
@click.option("--threads", default=1, show_default=True, type=click.IntRange(1, 256),
              help="CPU threads for torch. 1 by default: on a small machine shared with other work, more threads "
                   "wait on each other and slow detection down; raise it on an idle machine.")
@click.option("--cache-dir", default=None, type=click.Path(file_okay=False), help="Crop and trunk caches (default ~/.cache/facetool).")
@click.option("--cohort", default=None, type=click.Path(file_okay=False),
              help="Stranger cohort (<person>/ photos) the new embeddings' FPIR table is calibrated on "
                   "(default: FACETOOL_COHORT or ../shared/data/cohort-celeba). Without one the model keeps its fixed threshold.")
@click.option("--rollback", is_flag=True, help="Return the model to the version before the last finetune or switch (no DATA_DIR): "
              "the faces enrolled now are re-embedded from their chips with that version's network.")
@click.option("--switch/--no-switch", "switch", default=None,
              help="Switch the model to the result (default: yes for a retrain on the same backbone and weights, no "
                   "for another backbone or weights). Alone (--model DIR --switch): switch to the candidate built before.")
@click.option("--reembed", is_flag=True, help="Migrate without training: re-embed every enrolled face from its chip with "
              "--backbone/--weights, beside the model in use (DATA_DIR, optional: held-out photos to compare on).")
@click.option("--unknown", "unknown_dir", default=None, type=click.Path(exists=True, file_okay=False),
              help="Photos of people not enrolled (<person>/ folders) for the side-by-side open-set figures "
                   "(default: some enrolled people of the held-out faces are held out of a copy of each gallery).")
@click.option("--discard-candidate", is_flag=True, help="Delete the candidate built beside the model (no DATA_DIR).")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bars.")
def main(data_dir, model_dir, backbone, weights, weights_dir, unfreeze, epochs, seed, patience, threads, cache_dir, rollback,
         switch, reembed, unknown_dir, discard_candidate, cohort, as_json, quiet) -> None:
    import json
    import logging

    from recognizer.cli._options import passive_openmp

    passive_openmp()
    try:
        require_extra("train", "facetool finetune")
    except MissingExtra as exc:
        raise click.ClickException(str(exc)) from None

    import torch

    import recognizer
    from recognizer import lifecycle

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    torch.set_num_threads(threads)
    if rollback:
        if data_dir:
            raise click.UsageError("--rollback takes no DATA_DIR")
        try:
            out = lifecycle.rollback(model_dir, weights_dir=weights_dir, progress=not quiet and not as_json)
        except (recognizer.FaceToolError, ValueError) as exc:
            raise click.ClickException(str(exc)) from None
        click.echo(json.dumps(out, indent=2) if as_json else
                   f"rolled back {model_dir} from {out['from']} to {out['to']}: {out['faces']} faces re-embedded")
        return
    progress = not quiet and not as_json
    if discard_candidate:
        if data_dir or reembed or switch:
            raise click.UsageError("--discard-candidate takes no DATA_DIR, --reembed or --switch")
        try:
            gone = lifecycle.discard_candidate(model_dir)
        except (recognizer.FaceToolError, ValueError) as exc:
            raise click.ClickException(str(exc)) from None
        click.echo(json.dumps({"discarded": gone}) if as_json else
                   ("discarded the candidate" if gone else "no candidate was pending"))
        return
    if reembed:
        try:
            out = lifecycle.migrate(model_dir, backbone, weights, data_dir=data_dir, unknown_dir=unknown_dir,
                                                switch=bool(switch), weights_dir=weights_dir, cache_dir=cache_dir,
                                                progress=progress)
        except (recognizer.FaceToolError, ValueError) as exc:
            raise click.ClickException(str(exc)) from None
        if as_json:
            click.echo(json.dumps(out, indent=2))
            return
        c = out["candidate"]
        click.echo(f"re-embedded {c['faces']} faces of {len(c['people'])} people with {c['model_id']} "
                   f"beside the model in use ({out['current']['model_id']})")
        _print_comparison(out["comparison"])
        _print_switch(out["switch"], model_dir)
        return
    if not data_dir:
        if switch:
            try:
                out = lifecycle.switch(model_dir, weights_dir=weights_dir, progress=progress)
            except (recognizer.FaceToolError, ValueError) as exc:
                raise click.ClickException(str(exc)) from None
            if as_json:
                click.echo(json.dumps(out, indent=2))
                return
            if out["comparison"] is not None:
                click.echo(f"figures scored when the candidate was built ({out['built_at']}):")
            _print_comparison(out["comparison"])
            _print_switch(out, model_dir)
            return
        raise click.UsageError("DATA_DIR is required (unless --rollback, --switch or --discard-candidate)")
    if backbone == "sface" and unfreeze:
        raise click.UsageError("--unfreeze applies to facenet only: sface has no trainable blocks")
    try:
        report = recognizer.finetune(data_dir, model_dir, backbone=backbone, weights=weights, weights_dir=weights_dir,
                                     unfreeze=unfreeze, epochs=epochs, seed=seed, patience=patience, cache_dir=cache_dir,
                                     cohort=cohort, switch=switch, unknown_dir=unknown_dir, progress=progress)
    except (recognizer.FaceToolError, ValueError) as exc:
        raise click.ClickException(str(exc)) from None
    except OSError as exc:  # disk full, read-only: the new files were removed, the old model stands
        where = exc.filename or model_dir
        raise click.ClickException(f"{where}: could not save the finetuned model ({exc.strerror or exc}); "
                                   f"{model_dir} is unchanged") from None
    if as_json:
        click.echo(json.dumps(report.to_dict(), indent=2))
        return
    tr = report.training
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
    else:
        click.echo(f"model {report.model_id} built as a candidate beside the model in use, which is unchanged; "
                   f"switch with: finetune.py --model {report.model_dir} --switch")


def _print_comparison(cmp) -> None:
    from recognizer.evaluation.compare import side_by_side_text

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


if __name__ == "__main__":
    sys.exit(main())

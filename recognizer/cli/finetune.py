"""Finetune a recognizer on labelled photos: DATA_DIR/train/<person>/* (and optionally val/<person>/*).

    finetune.py DATA_DIR --model DIR [--backbone facenet|sface] [--weights W] [--weights-dir D]
                [--unfreeze BLOCKS] [--epochs N] [--seed S] [--json]

facenet: the last Inception-ResNet blocks (default block8, last_linear, last_bn) and a classification
head are trained; the rest of the network stays frozen. sface: the head alone is trained on its
embeddings. DIR gets checkpoint-<token>.pt, model.json, the gallery rebuilt from the training faces
(plus faces enrolled since, re-embedded), curves_*.png and report.json.
"""
from __future__ import annotations

import sys

import click


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
@click.option("--rollback", is_flag=True, help="Return the model to the version before the last finetune (no DATA_DIR): "
              "the faces enrolled now are re-embedded from their chips with that version's network.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bars.")
def main(data_dir, model_dir, backbone, weights, weights_dir, unfreeze, epochs, seed, patience, threads, cache_dir, rollback,
         cohort, as_json, quiet) -> None:
    import json
    import logging

    from recognizer.cli._options import passive_openmp

    passive_openmp()

    import torch

    import recognizer

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    torch.set_num_threads(threads)
    if rollback:
        if data_dir:
            raise click.UsageError("--rollback takes no DATA_DIR")
        try:
            out = recognizer.Recognizer.rollback(model_dir, weights_dir=weights_dir, progress=not quiet and not as_json)
        except (recognizer.FaceToolError, ValueError) as exc:
            raise click.ClickException(str(exc)) from None
        click.echo(json.dumps(out, indent=2) if as_json else
                   f"rolled back {model_dir} from {out['from']} to {out['to']}: {out['faces']} faces re-embedded")
        return
    if not data_dir:
        raise click.UsageError("DATA_DIR is required (unless --rollback)")
    if backbone == "sface" and unfreeze:
        raise click.UsageError("--unfreeze applies to facenet only: sface has no trainable blocks")
    try:
        report = recognizer.finetune(data_dir, model_dir, backbone=backbone, weights=weights, weights_dir=weights_dir,
                                     unfreeze=unfreeze, epochs=epochs, seed=seed, patience=patience, cache_dir=cache_dir,
                                     cohort=cohort, progress=not quiet and not as_json)
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
    prev = report.previous if report.previous and "error" not in report.previous else None
    if prev:
        click.echo(f"val faces, previous model ({prev['model_id']}) -> this one:")
    for d in ("classifier", "knn", "combined"):
        sc = report.scores[d]
        was = ""
        if prev and d in prev:
            was = f"{prev[d]['accuracy']:.3f} ({prev[d]['correct']}/{prev['n']}) -> "
        elif prev:
            was = "  (none)   -> "
        click.echo(f"  val accuracy {d:<10} {was}{sc['accuracy']:.3f} ({sc['correct']}/{report.scores['n']}), top-3 {sc['top_k']['3']:.3f}")
    g = report.gallery
    click.echo(f"gallery: {g['faces']} faces of {len(g['people'])} people ({g['reembedded_enrolled']} enrolled faces re-embedded, "
               f"{len(g['dropped_enrolled'])} dropped)")
    click.echo(f"FPIR table: {report.fpir['how']}")
    for s in report.skipped:
        click.echo(f"  skipped {s['file']}: {s['reason']}", err=True)
    click.echo(f"model {report.model_id} in {report.model_dir}")


if __name__ == "__main__":
    sys.exit(main())

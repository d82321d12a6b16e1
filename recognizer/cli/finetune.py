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

Each job is also a `facetool model` subcommand (finetune, reembed, switch, rollback, discard,
candidate); both run the functions of recognizer/cli/model.py.
"""
from __future__ import annotations

import sys

import click

from recognizer.cli import model
from recognizer.cli._options import friendly_errors
from recognizer.cli.model import json_option, quiet_option, switch_option, train_options, unknown_option

__all__ = ["main"]


@click.command(help=__doc__.split("\n\n")[0])
@click.argument("data_dir", required=False, type=click.Path(exists=True, file_okay=False))
@train_options
@click.option("--rollback", is_flag=True, help="Return the model to the version before the last finetune or switch (no DATA_DIR): "
              "the faces enrolled now are re-embedded from their chips with that version's network.")
@switch_option
@click.option("--reembed", is_flag=True, help="Migrate without training: re-embed every enrolled face from its chip with "
              "--backbone/--weights, beside the model in use (DATA_DIR, optional: held-out photos to compare on).")
@unknown_option
@click.option("--discard-candidate", is_flag=True, help="Delete the candidate built beside the model (no DATA_DIR).")
@json_option
@quiet_option
@friendly_errors(also=(ValueError,))  # lifecycle's ValueErrors are the user's mistakes, said in words
def main(data_dir, model_dir, backbone, weights, weights_dir, unfreeze, epochs, seed, patience, threads, cache_dir, rollback,
         switch, reembed, unknown_dir, discard_candidate, cohort, as_json, quiet) -> None:
    model.start_torch(threads)
    progress = not quiet and not as_json
    if rollback:
        if data_dir:
            raise click.UsageError("--rollback takes no DATA_DIR")
        model.rollback(model_dir, weights_dir=weights_dir, as_json=as_json, progress=progress)
    elif discard_candidate:
        if data_dir or reembed or switch:
            raise click.UsageError("--discard-candidate takes no DATA_DIR, --reembed or --switch")
        model.discard(model_dir, as_json=as_json)
    elif reembed:
        model.reembed(model_dir, backbone, weights, data_dir=data_dir, unknown_dir=unknown_dir, switch_now=bool(switch),
                      weights_dir=weights_dir, cache_dir=cache_dir, as_json=as_json, progress=progress)
    elif not data_dir:
        if not switch:
            raise click.UsageError("DATA_DIR is required (unless --rollback, --switch or --discard-candidate)")
        model.switch(model_dir, weights_dir=weights_dir, as_json=as_json, progress=progress)
    else:
        model.train(data_dir, model_dir, as_json=as_json, progress=progress, backbone=backbone, weights=weights,
                    weights_dir=weights_dir, unfreeze=unfreeze, epochs=epochs, seed=seed, patience=patience,
                    cache_dir=cache_dir, cohort=cohort, switch=switch, unknown_dir=unknown_dir)


if __name__ == "__main__":
    sys.exit(main())

"""The `facetool` command.

    facetool enroll | identify | cluster | evaluate | serve | finetune     (one job each; also enroll.py, ...)
    facetool people list | rename | merge | remove | export | import | make-chips
    facetool clusters list | name | dismiss | discard                      (the runs `facetool cluster` saved)
    facetool model finetune | reembed | candidate | switch | discard | rollback | threshold

Each one-job command is also a script of its own at the top of the checkout (enroll.py, ...),
whose older action flags (enroll.py --list, finetune.py --switch, ...) run the same functions as
the groups. Nothing heavy (torch, OpenCV, Ray, FastAPI) is imported until a subcommand needs it.
"""
from __future__ import annotations

import click

from recognizer.cli import cluster, enroll, evaluate, finetune, identify, model, people, serve

__all__ = ["main"]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="facetool")
def main() -> None:
    """Teach a computer your own people, then name them in photos (offline, on a CPU)."""


main.add_command(enroll.main, "enroll")
main.add_command(identify.main, "identify")
main.add_command(finetune.main, "finetune")
main.add_command(evaluate.main, "evaluate")
main.add_command(serve.main, "serve")
main.add_command(cluster.main, "cluster")
main.add_command(people.main, "people")
main.add_command(cluster.clusters, "clusters")
main.add_command(model.main, "model")

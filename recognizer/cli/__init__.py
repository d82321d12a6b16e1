"""The `facetool` command: enroll, identify, cluster, finetune, evaluate and serve as subcommands.

Each subcommand is also a script of its own at the top of the checkout (enroll.py, ...). Nothing
heavy is imported until a subcommand runs.
"""
from __future__ import annotations

import click

from recognizer.cli import cluster, enroll, evaluate, finetune, identify, serve


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

__all__ = ["main"]

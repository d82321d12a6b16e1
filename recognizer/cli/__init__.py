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

import importlib

import click

from recognizer.cli._options import passive_openmp
from recognizer.image import tune_malloc

__all__ = ["command", "main"]

# Each subcommand's module imports the features it drives at its top (training, clustering, the
# archive, the server...); this package is imported by every one of them (`identify.py` imports
# recognizer.cli.identify), so it names them here and imports one only when it runs: identifying
# one photo loads neither training nor clustering nor the server.
COMMANDS = {
    "cluster": "recognizer.cli.cluster:main",
    "clusters": "recognizer.cli.cluster:clusters",
    "enroll": "recognizer.cli.enroll:main",
    "evaluate": "recognizer.cli.evaluate:main",
    "finetune": "recognizer.cli.finetune:main",
    "identify": "recognizer.cli.identify:main",
    "model": "recognizer.cli.model:main",
    "people": "recognizer.cli.people:main",
    "serve": "recognizer.cli.serve:main",
}


def command(name: str) -> click.Command:
    """The subcommand `name`, imported now. OpenMP threads are made passive first: the modules a
    subcommand imports load FAISS's OpenMP runtime, which reads that setting once, when it loads; and
    glibc's malloc is made lean before any thread starts (`recognizer.image.tune_malloc`)."""
    passive_openmp()
    tune_malloc()
    module, attr = COMMANDS[name].split(":")
    return getattr(importlib.import_module(module), attr)


class _LazyGroup(click.Group):
    """A click group whose subcommands are "module:attr" names, imported when asked for (the
    pattern of click's documentation, "Lazily Loading Subcommands")."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        return command(name) if name in COMMANDS else None


@click.group(cls=_LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="facetool")
def main() -> None:
    """Teach a computer your own people, then name them in photos (offline, on a CPU)."""

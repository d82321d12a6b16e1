"""Shared pieces of the command-line tools: process set-up, logging, error reporting, common options."""
from __future__ import annotations

import functools
import logging
import os
import sys

import click

from facecore.errors import FaceToolError
from recognizer.image import tune_malloc

__all__ = [
    "allow_similar_option", "friendly_errors", "gallery_option", "json_option", "model_option", "no_cache_option",
    "options", "passive_openmp", "ray_option", "ray_out_option", "ray_workers_option", "setup_logging", "start",
    "subcommand", "verbose_option", "weights_dir_option",
]


def passive_openmp() -> None:
    """Make torch's OpenMP threads wait passively (a value the user set is kept); call before torch loads.

    Spinning threads hold the cores that the threads they wait for need, when other processes share
    them: detection ran several times slower (benchmarks/results/implementation-choices.md); passive
    waiting costs microseconds per parallel region. The variable is read once, when OpenMP loads.
    """
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def setup_logging(verbose: int) -> None:
    level = logging.WARNING - 10 * verbose
    logging.basicConfig(level=max(level, logging.DEBUG), format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)


def start(verbose: int) -> None:
    """What every command does first: passive OpenMP threads (before torch loads), glibc's malloc kept lean
    (`recognizer.image.tune_malloc`), then logging."""
    passive_openmp()
    tune_malloc()
    setup_logging(verbose)


def friendly_errors(fn=None, *, also: tuple[type[Exception], ...] = ()):
    """Turn the tool's typed errors (and the exception types in `also`) into a one-line message
    and exit status 1, never a traceback. `@friendly_errors` or `@friendly_errors(also=(ValueError,))`."""
    if fn is None:
        return functools.partial(friendly_errors, also=also)
    caught = (FaceToolError, *also)

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except caught as exc:
            raise click.ClickException(str(exc)) from None

    return wrapper


model_option = click.option(
    "--model", "model_dir", required=True, type=click.Path(file_okay=False), help="Model directory (created by enroll.py or finetune.py)."
)
weights_dir_option = click.option(
    "--weights-dir", type=click.Path(file_okay=False), default=None, help="Where facenet weights are cached (default $TORCH_HOME/checkpoints)."
)
verbose_option = click.option("-v", "--verbose", count=True, help="More log output (-vv for debug).")
json_option = click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
no_cache_option = click.option("--no-cache", is_flag=True, help="Do not read or write the crop cache (~/.cache/facetool).")
allow_similar_option = click.option(
    "--allow-similar", is_flag=True,
    help="Accept a new name that looks like an enrolled person's (case, look-alike letters): they are different people.")
gallery_option = click.option(
    "--gallery", metavar="URI", default=None,
    help="Keep the enrolled faces in Milvus: milvus://HOST:PORT/COLLECTION (a server) or milvus-lite:PATH.db "
    "(embedded). Default: the model directory's own gallery.")
ray_option = click.option(
    "--ray", "ray_address", metavar="ADDRESS", is_flag=False, flag_value="auto", default=None,
    help="Run detection and embedding on a Ray cluster: 'auto' (the default when --ray has no value) joins this "
    "machine's (RAY_ADDRESS, or `ray start` here); HOST:6379 (the head's GCS port) or ray://HOST:10001 (its Ray "
    "Client port) joins that one (a cluster with token auth: set RAY_AUTH_MODE=token and RAY_AUTH_TOKEN or "
    "~/.ray/auth_token, as for `ray start --address`). With "
    "no cluster to join ('local', or 'auto' with none) the photos are analysed in this process: a Ray cluster "
    "started for one run on one machine is slower. --out and resuming work either way.")
ray_out_option = click.option(
    "--out", "out_path", type=click.Path(dir_okay=False), default=None,
    help="With --ray: append one JSON line per photo here; a rerun skips the photos already in it.")
ray_workers_option = click.option(
    "--workers", type=click.IntRange(min=1), default=None, help="With --ray: analysing workers (default: one per CPU).")


def options(*decorators):
    """One decorator applying `decorators` as if stacked in this order (the first is the top one)."""

    def wrap(fn):
        for decorator in reversed(decorators):
            fn = decorator(fn)
        return fn

    return wrap


def subcommand(group: click.Group, name: str, help: str, *decorators):
    """A subcommand of `group` taking `decorators`' options, with typed errors as one-line messages."""

    def wrap(fn):
        return group.command(name, help=help, context_settings={"help_option_names": ["-h", "--help"]})(
            friendly_errors(options(*decorators)(fn)))

    return wrap

"""Shared pieces of the command-line tools: process set-up, logging, error reporting, common options."""
from __future__ import annotations

import functools
import logging
import os
import sys

import click


def passive_openmp() -> None:
    """Make torch's OpenMP threads wait passively; call before torch is imported.

    torch's OpenMP threads spin while they wait for work by default. When other processes share
    the cores, a spinning thread holds a core the thread it waits for needs, which slowed
    detection several times over (figures: benchmarks/results/implementation-choices.md);
    passive waiting costs microseconds per parallel region. The variable is read once, when torch
    loads its OpenMP runtime, so the command-line tools set it first thing; a value the user set
    is kept. A program that imports the library decides this for itself.
    """
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def setup_logging(verbose: int) -> None:
    level = logging.WARNING - 10 * verbose
    logging.basicConfig(level=max(level, logging.DEBUG), format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)


def friendly_errors(fn):
    """Turn the tool's typed errors into a one-line message and exit status 2, never a traceback."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        from facecore.errors import FaceToolError

        try:
            return fn(*args, **kwargs)
        except FaceToolError as exc:
            raise click.ClickException(str(exc)) from None

    return wrapper


model_option = click.option(
    "--model", "model_dir", required=True, type=click.Path(file_okay=False), help="Model directory (created by enroll.py or finetune.py)."
)
weights_dir_option = click.option(
    "--weights-dir", type=click.Path(file_okay=False), default=None, help="Where facenet weights are cached (default $TORCH_HOME/checkpoints)."
)
verbose_option = click.option("-v", "--verbose", count=True, help="More log output (-vv for debug).")
gallery_option = click.option(
    "--gallery", metavar="URI", default=None,
    help="Keep the enrolled faces in Milvus: milvus://HOST:PORT/COLLECTION (a server) or milvus-lite:PATH.db "
    "(embedded). Default: the model directory's own gallery.")
ray_option = click.option(
    "--ray", "ray_address", metavar="ADDRESS", is_flag=False, flag_value="auto", default=None,
    help="Run detection and embedding on Ray: 'auto' (the default when --ray has no value) joins this machine's "
    "Ray cluster or starts a local one; 'local' always starts one; or a cluster address (ray://HOST:10001).")
ray_out_option = click.option(
    "--out", "out_path", type=click.Path(dir_okay=False), default=None,
    help="With --ray: append one JSON line per photo here; a rerun skips the photos already in it.")
ray_workers_option = click.option(
    "--workers", type=click.IntRange(min=1), default=None, help="With --ray: analysing workers (default: one per CPU).")

"""The optional parts of the install ("extras") and the one-line error when one is missing.

The core install (`pip install facetool`) has no torch, Ray or Milvus; a command that needs one
calls `require_extra` first, which raises `MissingExtra` (a FaceToolError, so the commands print
it as one line) naming what to install. Checked with importlib's find_spec: nothing is imported.
"""
from __future__ import annotations

from importlib.util import find_spec

from facecore.errors import FaceToolError

__all__ = ["EXTRAS", "MissingExtra", "install_hint", "missing_modules", "require_extra"]

# Extra -> the modules it brings (requirements-<extra>.txt; facenet-pytorch goes in with --no-deps).
EXTRAS = {
    "train": ("torch", "torchvision", "facenet_pytorch"),
    "milvus": ("pymilvus", "milvus_lite"),
    "ray": ("ray",),
}


class MissingExtra(FaceToolError):
    """A command needs an extra that is not installed."""


def _installed(module: str) -> bool:
    try:
        return find_spec(module) is not None
    except (ImportError, ValueError):  # a finder that refuses it, or a half-imported module
        return False


def missing_modules(extra: str) -> list[str]:
    return [m for m in EXTRAS[extra] if not _installed(m)]


def install_hint(extra: str) -> str:
    hint = f"pip install 'facetool[{extra}]'"
    if extra == "train":  # facenet-pytorch's own pins are stale: it goes in without its dependencies
        hint += " && pip install --no-deps facenet-pytorch==2.6.0"
    return hint


def require_extra(extra: str, what: str) -> None:
    """Raise MissingExtra, in one line, when `what` (e.g. "facetool finetune") cannot run for
    lack of `extra`'s modules."""
    missing = missing_modules(extra)
    if missing:
        raise MissingExtra(f"{what} needs the [{extra}] extra ({', '.join(missing)} not installed): {install_hint(extra)}")

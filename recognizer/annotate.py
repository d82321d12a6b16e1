"""Where `identify.py --annotate` writes annotated photos (drawn by recognizer.drawing), and writing them."""
from __future__ import annotations

import os
from pathlib import Path

from facecore.atomic import atomic_write
from facecore.errors import FaceToolError
from recognizer.results import PhotoIdentification

__all__ = ["annotation_paths", "save_annotated"]


def _real(p: Path) -> str:
    return os.path.normcase(os.path.realpath(p))


def _refuse_out_inside_inputs(inputs: list[Path], out: Path) -> None:
    """FaceToolError when OUT is (inside) an input folder: a rerun would read it as photos."""
    for folder in (p for p in inputs if p.is_dir()):
        real_out, real_in = Path(os.path.realpath(out)), Path(os.path.realpath(folder))
        if real_out == real_in or real_in in real_out.parents:
            raise FaceToolError(f"{out}: the annotation folder is (inside) the input folder {folder}; "
                                "choose a folder outside the photos")


def _mirrored_target(f: Path, inputs: list[Path], out: Path, taken: set[str]) -> Path:
    """`f`'s PNG below OUT, keeping its path below its input folder, apart from every name in `taken`."""
    root = next((p for p in inputs if p.is_dir() and (p == f or p in f.parents)), None)
    rel = f.relative_to(root) if root is not None else Path(f.name)
    if len(inputs) > 1 and root is not None:
        rel = Path(root.resolve().name or "root") / rel
    target = out / rel.with_suffix(".png")
    n = 1
    while str(target).casefold() in taken:  # x.jpg and x.png, X.jpg and x.jpg, two inputs of one name
        n += 1
        target = out / rel.parent / f"{rel.stem}-{n}.png"
    return target


def annotation_paths(inputs: list[Path], files: list[Path], out: Path) -> dict[str, Path]:
    """Where `identify.py --annotate OUT` writes each photo of `files` (expanded from `inputs`): OUT itself for one
    photo file, else below OUT as below their input folder (under its name when several inputs are given). Every
    output is distinct, never an input photo nor inside an input folder: FaceToolError before anything is written."""
    photos = {_real(f) for f in files}
    single = len(inputs) == 1 and len(files) == 1 and not inputs[0].is_dir()
    if not single:
        _refuse_out_inside_inputs(inputs, out)
    targets: dict[str, Path] = {}
    taken: set[str] = set()
    for f in files:
        target = out if single else _mirrored_target(f, inputs, out, taken)
        if _real(target) in photos:
            raise FaceToolError(f"{target}: is an input photo; --annotate never writes over an input")
        taken.add(str(target).casefold())  # apart on case-insensitive disks too
        targets[str(f)] = target
    return targets


def save_annotated(result: PhotoIdentification, target: Path) -> None:
    """Draw `result` on its photo and write it as a PNG to `target`, atomically."""
    img = result.annotated()
    with atomic_write(target) as fh:
        img.save(fh, format="PNG")

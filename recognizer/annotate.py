"""Draw boxes and names on a photo: known faces in green, unknown ones in red with a dashed look."""
from __future__ import annotations

import os
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from facecore.atomic import atomic_write
from facecore.errors import FaceToolError
from recognizer.image import load_image
from recognizer.results import PhotoIdentification

KNOWN = (40, 200, 80)
UNKNOWN = (230, 50, 50)


def annotate(photo: str | Path | Image.Image, result: PhotoIdentification) -> Image.Image:
    """A copy of the photo with each face boxed and labelled."""
    img = (photo if isinstance(photo, Image.Image) else load_image(photo)).copy()
    draw = ImageDraw.Draw(img)
    # Scale lines and text with the photo so labels stay readable on 4000-px photos and 200-px ones.
    unit = max(1, round(max(img.size) / 400))
    try:
        font = ImageFont.load_default(size=max(10, 6 * unit))
    except TypeError:  # Pillow without FreeType
        font = ImageFont.load_default()
    for face in result.faces:
        colour = KNOWN if face.name else UNKNOWN
        x1, y1, x2, y2 = face.box
        draw.rectangle([x1, y1, x2, y2], outline=colour, width=max(2, unit))
        label = f"{face.name} {face.score:.2f}" if face.name else f"unknown {face.similarity:.2f}"
        tx1, ty1, tx2, ty2 = draw.textbbox((x1, y1), label, font=font)
        ty = y1 - (ty2 - ty1) - 2 * unit if y1 - (ty2 - ty1) - 2 * unit > 0 else y2
        draw.rectangle([x1, ty, x1 + (tx2 - tx1) + 2 * unit, ty + (ty2 - ty1) + 2 * unit], fill=colour)
        draw.text((x1 + unit, ty + unit - (ty1 - y1)), label, fill=(255, 255, 255), font=font)
    return img


def annotation_paths(inputs: list[Path], files: list[Path], out: Path) -> dict[str, Path]:
    """Where `identify.py --annotate OUT` writes each photo of `files` (expanded from `inputs`).

    One photo given as a file: OUT itself. Otherwise OUT is a folder mirroring the inputs: a
    folder's photos keep their paths below it (under the folder's own name when several inputs
    are given), so a/x.jpg and b/x.jpg stay apart. Every output is distinct, never an input
    photo, and never inside an input folder (a rerun would read it as a photo): FaceToolError
    before anything is written.
    """
    def real(p: Path) -> str:
        return os.path.normcase(os.path.realpath(p))

    photos = {real(f) for f in files}
    single = len(inputs) == 1 and len(files) == 1 and not inputs[0].is_dir()
    if not single:
        for folder in (p for p in inputs if p.is_dir()):
            real_out, real_in = Path(os.path.realpath(out)), Path(os.path.realpath(folder))
            if real_out == real_in or real_in in real_out.parents:
                raise FaceToolError(f"{out}: the annotation folder is (inside) the input folder {folder}; "
                                    "choose a folder outside the photos")
    targets: dict[str, Path] = {}
    taken: set[str] = set()
    for f in files:
        if single:
            target = out
        else:
            root = next((p for p in inputs if p.is_dir() and (p == f or p in f.parents)), None)
            rel = f.relative_to(root) if root is not None else Path(f.name)
            if len(inputs) > 1 and root is not None:
                rel = Path(root.resolve().name or "root") / rel
            target = out / rel.with_suffix(".png")
            n = 1
            while str(target).casefold() in taken:  # x.jpg and x.png, X.jpg and x.jpg, two inputs of one name
                n += 1
                target = out / rel.parent / f"{rel.stem}-{n}.png"
        if real(target) in photos:
            raise FaceToolError(f"{target}: is an input photo; --annotate never writes over an input")
        taken.add(str(target).casefold())  # apart on case-insensitive disks too
        targets[str(f)] = target
    return targets


def save_annotated(result: PhotoIdentification, target: Path) -> None:
    """Draw `result` on its photo and write it as a PNG to `target`, atomically."""
    img = result.annotated()
    with atomic_write(target) as fh:
        img.save(fh, format="PNG")

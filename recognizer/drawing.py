"""Draw boxes and names on a photo: known faces in green, unknown ones in red. Below the typed results
(`PhotoIdentification.annotated()`), so they never import the annotation feature above them."""
from __future__ import annotations

from typing import Iterable, Protocol

from PIL import Image, ImageDraw, ImageFont

from recognizer.image import ImageSource, load_image

__all__ = ["KNOWN", "LOW", "UNKNOWN", "draw_faces", "label_text"]

KNOWN = (40, 200, 80)
UNKNOWN = (230, 50, 50)
LOW = (128, 128, 128)  # a face under the quality floor: unknown because it cannot be told, not a stranger


class _Face(Protocol):
    """What drawing reads of a face (results.FaceIdentity has it)."""
    box: list[float]
    name: str | None
    score: float
    similarity: float


def label_text(name: str | None, similarity: float) -> str:
    """A face's or track's label: the name (or unknown) and one number, the similarity to the named person (to
    the nearest person when unknown): what every photo, video and page label shows (README)."""
    return f"{name or 'unknown'} {similarity:.2f}"


def draw_faces(photo: ImageSource, faces: Iterable[_Face]) -> Image.Image:
    """A copy of the photo with each face boxed and labelled."""
    img = (photo if isinstance(photo, Image.Image) else load_image(photo)).copy()
    draw = ImageDraw.Draw(img)
    # Scale lines and text with the photo so labels stay readable on 4000-px photos and 200-px ones.
    unit = max(1, round(max(img.size) / 400))
    try:
        font = ImageFont.load_default(size=max(10, 6 * unit))
    except TypeError:  # Pillow without FreeType
        font = ImageFont.load_default()
    for face in faces:
        low = getattr(face, "unknown_reason", None) == "low quality"
        colour = KNOWN if face.name else LOW if low else UNKNOWN
        x1, y1, x2, y2 = face.box
        draw.rectangle([x1, y1, x2, y2], outline=colour, width=max(2, unit if not low else 1))
        label = "low quality" if low else label_text(face.name, face.similarity)
        tx1, ty1, tx2, ty2 = draw.textbbox((x1, y1), label, font=font)
        ty = y1 - (ty2 - ty1) - 2 * unit if y1 - (ty2 - ty1) - 2 * unit > 0 else y2
        draw.rectangle([x1, ty, x1 + (tx2 - tx1) + 2 * unit, ty + (ty2 - ty1) + 2 * unit], fill=colour)
        draw.text((x1 + unit, ty + unit - (ty1 - y1)), label, fill=(255, 255, 255), font=font)
    return img

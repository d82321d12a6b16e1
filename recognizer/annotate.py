"""Draw boxes and names on a photo: known faces in green, unknown ones in red with a dashed look."""
from __future__ import annotations

from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from recognizer.image import load_image
from recognizer.recognizer import PhotoIdentification

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

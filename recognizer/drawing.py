"""Draw boxes and names on a photo or a video frame: known faces in green, unknown ones in red. Below the
typed results (`PhotoIdentification.annotated()`), so they never import the annotation feature above them.

One rule for every picture (photos, video frames, the web page's PNGs): all boxes are drawn first and all
labels last, so no box is ever drawn over a label; each label sits beside its box where it covers no other
box or label when such a place exists (above, below, then beside or inside), and always inside the picture.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Iterable, Protocol, Sequence

from PIL import Image, ImageDraw, ImageFont

from recognizer.image import ImageSource, load_image

__all__ = ["KNOWN", "LOW", "UNKNOWN", "Mark", "draw_faces", "draw_marks", "label_boxes", "label_text", "place_labels"]

KNOWN = (40, 200, 80)
UNKNOWN = (230, 50, 50)
LOW = (128, 128, 128)  # a face under the quality floor: unknown because it cannot be told, not a stranger
_WHITE = (255, 255, 255)


class _Face(Protocol):
    """What drawing reads of a face (results.FaceIdentity has it)."""
    box: list[float]
    name: str | None
    score: float
    similarity: float


@dataclass(frozen=True)
class Mark:
    """One box to draw: where (x1, y1, x2, y2 in pixels), its label and its colour."""
    box: Sequence[float]
    label: str
    colour: tuple[int, int, int]


def label_text(name: str | None, similarity: float) -> str:
    """A face's or track's label: the name (or unknown) and one number, the similarity to the named person (to
    the nearest person when unknown): what every photo, video and page label shows (README)."""
    return f"{name or 'unknown'} {similarity:.2f}"


Rect = tuple[float, float, float, float]


def _overlap(a: Rect, b: Rect) -> float:
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    return w * h if w > 0 and h > 0 else 0.0


def _clamped(x: float, y: float, w: float, h: float, size: tuple[int, int]) -> Rect:
    """The label's rectangle moved inside the picture (a label wider than the picture starts at its left edge)."""
    x = max(0.0, min(x, size[0] - w))
    y = max(0.0, min(y, size[1] - h))
    return (x, y, x + w, y + h)


def _candidates(box: Sequence[float], w: float, h: float, size: tuple[int, int]) -> list[Rect]:
    """Places for a w x h label, in order of preference: above, below, (right-aligned too), beside, inside."""
    x1, y1, x2, y2 = (float(v) for v in box)
    spots = [(x1, y1 - h), (x1, y2), (x2 - w, y1 - h), (x2 - w, y2), (x2, y1), (x1 - w, y1), (x1, y1), (x1, y2 - h)]
    return [_clamped(x, y, w, h, size) for x, y in spots]


def place_labels(boxes: Sequence[Sequence[float]], sizes: Sequence[tuple[float, float]],
                 size: tuple[int, int]) -> list[Rect]:
    """Where each box's label goes: a rectangle (x1, y1, x2, y2) of the label's (width, height), inside a
    picture of `size`. Larger boxes choose first; each takes the first place that covers no other box,
    no label already placed and not its own face, else the place that covers least of them."""
    rects = [tuple(float(v) for v in b) for b in boxes]
    order = sorted(range(len(rects)), key=lambda i: -(rects[i][2] - rects[i][0]) * (rects[i][3] - rects[i][1]))
    placed: dict[int, Rect] = {}
    for i in order:
        others = [r for j, r in enumerate(rects) if j != i]

        def cost(spot: Rect) -> float:
            # Another label hidden is worse than a face edge; the own face matters least.
            return (sum(_overlap(spot, r) for r in others) + 2 * sum(_overlap(spot, p) for p in placed.values())
                    + 0.25 * _overlap(spot, rects[i]))

        spots = _candidates(rects[i], *sizes[i], size)
        placed[i] = min(spots, key=lambda s: (cost(s), spots.index(s)))
    return [placed[i] for i in range(len(rects))]


def _unit(size: tuple[int, int]) -> int:
    """Line width and text scale: they grow with the picture so labels stay readable on 4000-px photos and 200-px ones."""
    return max(1, round(max(size) / 400))


@lru_cache(maxsize=16)
def _font(unit: int) -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=max(10, 6 * unit))
    except TypeError:  # Pillow without FreeType
        return ImageFont.load_default()


def label_boxes(size: tuple[int, int], marks: Sequence[Mark]) -> list[Rect]:
    """Where `draw_marks` puts each mark's label on a picture of `size`: (x1, y1, x2, y2), the label's
    coloured box."""
    unit = _unit(size)
    font, draw = _font(unit), ImageDraw.Draw(Image.new("RGB", (1, 1)))
    inks = [draw.textbbox((0, 0), m.label, font=font) for m in marks]
    return place_labels([m.box for m in marks], [(r - x + 2 * unit, b - y + 2 * unit) for x, y, r, b in inks], size)


def draw_marks(img: Image.Image, marks: Sequence[Mark]) -> Image.Image:
    """Draw on `img` itself: every box, then every label where `label_boxes` puts it; returns `img`."""
    draw = ImageDraw.Draw(img)
    unit = _unit(img.size)
    font = _font(unit)
    for m in marks:
        draw.rectangle([float(v) for v in m.box], outline=m.colour, width=max(2, unit))
    for m, (x1, y1, x2, y2) in zip(marks, label_boxes(img.size, marks)):
        left, top, _, _ = draw.textbbox((0, 0), m.label, font=font)
        draw.rectangle([x1, y1, x2 - 1, y2 - 1], fill=m.colour)
        draw.text((x1 + unit - left, y1 + unit - top), m.label, fill=_WHITE, font=font)
    return img


def draw_faces(photo: ImageSource, faces: Iterable[_Face]) -> Image.Image:
    """A copy of the photo with each face boxed and labelled."""
    img = (photo if isinstance(photo, Image.Image) else load_image(photo)).copy()
    marks = []
    for f in faces:
        low = getattr(f, "unknown_reason", None) == "low quality"
        marks.append(Mark(f.box, "low quality" if low else label_text(f.name, f.similarity),
                          KNOWN if f.name else LOW if low else UNKNOWN))
    return draw_marks(img, marks)

"""What a user looks at: one contact sheet (PNG) per cluster and an index.html that opens from disk.

The page needs no server or network: inline CSS, no script, images by relative path.
"""
from __future__ import annotations

import html
import io
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from facecore.outputs import InputSet, check_output, check_output_dir, output_file
from recognizer.clustering.service import looks_like_text

__all__ = ["INDEX", "contact_sheet", "face_png", "sheet_name", "write_report"]

THUMB = 96
COLS = 8
INDEX = "index.html"
MAX_ON_SHEET = 64  # a sheet of a huge cluster shows its first faces and says how many more
try:
    _NUMBER_FONT = ImageFont.load_default(size=14)
except TypeError:  # Pillow without FreeType
    _NUMBER_FONT = ImageFont.load_default()


def contact_sheet(crops: np.ndarray, faces: list[int], central: int, *, labels: list[str] | None = None,
                  frame: bool = True) -> bytes:
    """PNG bytes: the cluster's crops in a grid, the central face first, framed (unless not `frame`); each
    labelled with its index, or with `labels[index]`."""
    shown = [central] + [i for i in faces if i != central]
    more = max(0, len(shown) - MAX_ON_SHEET)
    shown = shown[:MAX_ON_SHEET]
    cols = min(COLS, len(shown))
    rows = (len(shown) + cols - 1) // cols
    pad = 4
    sheet = Image.new("RGB", (cols * (THUMB + pad) + pad, rows * (THUMB + pad) + pad + (16 if more else 0)), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    for n, i in enumerate(shown):
        x, y = pad + (n % cols) * (THUMB + pad), pad + (n // cols) * (THUMB + pad)
        sheet.paste(Image.fromarray(crops[i]).resize((THUMB, THUMB), Image.BILINEAR), (x, y))
        if i == central and frame:
            draw.rectangle([x - 2, y - 2, x + THUMB + 1, y + THUMB + 1], outline=(0, 160, 0), width=3)
        _number(draw, (x, y), str(i) if labels is None else labels[i])
    if more:
        draw.text((pad, sheet.height - 14), f"... and {more} more", fill=(0, 0, 0))
    buf = io.BytesIO()
    sheet.save(buf, format="PNG", optimize=True)
    return buf.getvalue()


def sheet_name(cluster: int) -> str:
    """The file name of a cluster's contact sheet."""
    return f"cluster-{cluster:04d}.png"


def _number(draw: ImageDraw.ImageDraw, corner: tuple[int, int], text: str) -> None:
    """A face's number (what `--exclude` takes) in yellow on a black box in the crop's corner: legible on
    light faces and dark ones alike."""
    x, y = corner
    left, top, right, bottom = draw.textbbox((0, 0), text, font=_NUMBER_FONT)
    draw.rectangle([x, y, x + right - left + 5, y + bottom - top + 5], fill=(0, 0, 0))
    draw.text((x + 3 - left, y + 3 - top), text, fill=(255, 255, 0), font=_NUMBER_FONT)


def face_png(crop: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(crop).save(buf, format="PNG")
    return buf.getvalue()


def write_report(out_dir: str | Path, meta: dict, crops: np.ndarray, run_id: str | None,
                 inputs: Sequence[str | Path] = ()) -> Path:
    """Sheets and index.html under `out_dir` by the outputs rule (facecore.outputs: never an input nor inside
    an input folder, replacing only the tool's own files, every one checked before any is written); returns
    the index path."""
    out, inputs = check_output_dir(out_dir, inputs, what="cluster sheets folder"), InputSet(inputs)
    for target in [out / INDEX, *(out / sheet_name(c["id"]) for c in meta["clusters"])]:
        check_output(target, inputs, what="cluster sheet")
    out.mkdir(parents=True, exist_ok=True, mode=0o700)
    thr = meta["threshold"]
    e = html.escape
    rows = []
    for c in meta["clusters"]:
        sheet = sheet_name(c["id"])
        with output_file(out / sheet, inputs, what="cluster sheet") as tmp:
            tmp.write_bytes(contact_sheet(crops, c["faces"], c["central"]))
        items = []
        for fi in c["faces"]:
            f = meta["faces"][fi]
            box = ", ".join(f"{v:.0f}" for v in f["box"])
            items.append(f"<li>face {fi}{' (central)' if fi == c['central'] else ''}: {e(meta['photos'][f['photo']]['photo'])} [{box}]</li>")
        ref = f"{run_id}:{c['id']}" if run_id else str(c["id"])
        rows.append(
            f"<section id='c{c['id']}'><h2>Cluster {c['id']} &middot; {c['size']} face{'s' if c['size'] != 1 else ''}</h2>"
            f"<p>{e(looks_like_text(c, thr))}; cohesion {c['cohesion']:.2f}</p>"
            f"<img src='{sheet}' alt='faces of cluster {c['id']}'>"
            f"<p><code>enroll.py --model MODEL --name NAME --cluster {e(ref)}</code></p>"
            f"<details><summary>photos and boxes</summary><ul>{''.join(items)}</ul></details></section>")
    known = sum(len(p["known"]) for p in meta["photos"])
    link = meta["linkage"]
    page = (
        "<!doctype html><html><head><meta charset='utf-8'><title>Unknown faces</title>"
        "<meta http-equiv='Content-Security-Policy' content=\"default-src 'none'; img-src 'self'; style-src 'unsafe-inline'\">"
        "<style>body{font-family:sans-serif;margin:2em;max-width:70em}section{border-top:1px solid #ccc;padding:.5em 0}"
        "img{max-width:100%}code{background:#f4f4f4;padding:2px 4px}</style></head><body>"
        f"<h1>Unknown faces{(' &middot; run ' + e(run_id)) if run_id else ''}</h1>"
        f"<p>{len(meta['faces'])} unknown faces in {len(meta['photos'])} photos ({known} faces already named were set aside), "
        f"{len(meta['clusters'])} clusters. Linkage: {e(link['rule'])}, threshold {link['link_threshold']:.3f} "
        f"(the model's {thr:.3f} {link['offset']:+.2f}), k = {link['k']}.</p>"
        + "".join(rows) + "</body></html>")
    index = out / INDEX
    with output_file(index, inputs, what="cluster index") as tmp:
        tmp.write_bytes(page.encode("utf-8"))
    return index

"""Drawing a video's tracks: the video with named boxes, and a contact sheet of the tracks.

Colours are the photo annotations' (recognizer.drawing). Between two sampled frames of a track its
box moves linearly, so the annotated video shows every frame boxed, not only the sampled ones.
It draws any `TrackedVideo` and so does not import the analysis above it.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Protocol

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from facecore.errors import VideoError
from facecore.outputs import output_file
from recognizer.drawing import KNOWN, UNKNOWN, label_text
from recognizer.video.reader import VideoInfo, VideoLimits, VideoReader
from recognizer.video.tracking import Track

__all__ = ["TrackedVideo", "boxes_at", "contact_sheet", "track_label", "write_annotated_video",
           "write_contact_sheet"]


class TrackedVideo(Protocol):
    """What drawing needs of a video's analysis: its name, stream facts, sampling rate and tracks."""

    source: str
    info: VideoInfo
    sample_fps: float
    tracks: list[Track]


def track_label(track: Track) -> str:
    return label_text(track.name, track.similarity)


def boxes_at(track: Track, frame: int, hold: int) -> np.ndarray | None:
    """The track's box at `frame`: a sampled box, a linear blend of the two around it, or the
    last box held for `hold` frames after the track's last sample; None outside the track."""
    faces = track.faces
    if frame < faces[0].frame or frame > faces[-1].frame + hold:
        return None
    frames = [f.frame for f in faces]
    j = int(np.searchsorted(frames, frame, side="right")) - 1
    a = faces[j]
    if j + 1 >= len(faces) or frame == a.frame:
        return a.box
    b = faces[j + 1]
    w = (frame - a.frame) / (b.frame - a.frame)
    return (1 - w) * a.box + w * b.box


def write_annotated_video(source: str | os.PathLike, result: TrackedVideo, out: str | os.PathLike,
                          limits: VideoLimits = VideoLimits()) -> int:
    """Write `source` with each track's box and name drawn on every frame it spans, as MPEG-4
    video at the source's frame rate (never over `source` or another file that is not the tool's own:
    facecore.outputs). Returns the number of frames written."""
    import cv2  # OpenCV is heavy and only needed to write a video

    fps = result.info.fps or result.sample_fps
    hold = max(1, round(fps / result.sample_fps)) - 1
    written = 0
    with VideoReader(source, sample_fps=None, limits=limits) as reader:
        w, h = reader.info.width, reader.info.height
        thick = max(2, round(max(w, h) / 400))
        scale = max(0.4, max(w, h) / 1400)
        with output_file(out, [source], what="annotated video") as tmp:
            writer = cv2.VideoWriter(str(tmp), cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h))
            if not writer.isOpened():
                raise VideoError(out, "cannot be written as an MPEG-4 video (OpenCV has no mp4v encoder here)")
            try:
                for frame in reader.frames(bgr=True):
                    bgr = frame.image
                    if bgr.shape[1::-1] != (w, h):
                        bgr = cv2.resize(bgr, (w, h))
                    for track in result.tracks:
                        box = boxes_at(track, frame.index, hold)
                        if box is not None:
                            _draw_box(bgr, box, track_label(track), KNOWN if track.name else UNKNOWN, thick, scale)
                    writer.write(bgr)
                    written += 1
            finally:
                writer.release()
    return written


def _draw_box(bgr: np.ndarray, box: np.ndarray, label: str, rgb: tuple[int, int, int], thick: int, scale: float) -> None:
    import cv2  # OpenCV is heavy and only needed to write a video

    colour = rgb[::-1]
    x1, y1, x2, y2 = (int(round(float(v))) for v in box)
    cv2.rectangle(bgr, (x1, y1), (x2, y2), colour, thick)
    (tw, th), base = cv2.getTextSize(label, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
    ty = y1 - th - base - 2 if y1 - th - base - 2 > 0 else y2
    cv2.rectangle(bgr, (x1, ty), (x1 + tw + 4, ty + th + base + 2), colour, -1)
    cv2.putText(bgr, label, (x1 + 2, ty + th + 1), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), 1, cv2.LINE_AA)


def contact_sheet(result: TrackedVideo, *, thumb: int = 80, per_row: int = 8) -> Image.Image:
    """One row per track: its name (or unknown), time span and number of faces, then up to
    `per_row` of its faces spread over its length."""
    label_w, pad = 260, 6
    rows = result.tracks or []
    width = label_w + per_row * (thumb + pad) + pad
    height = max(1, len(rows)) * (thumb + pad) + pad + 24
    sheet = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    try:
        font = ImageFont.load_default(size=13)
    except TypeError:  # Pillow without FreeType
        font = ImageFont.load_default()
    draw.text((pad, 4), f"{Path(result.source).name}: {len(rows)} track(s), sampled at {result.sample_fps:g} frames/s", fill=(0, 0, 0), font=font)
    if not rows:
        draw.text((pad, 24 + pad), "no faces found", fill=(120, 120, 120), font=font)
    for r, track in enumerate(rows):
        y = 24 + pad + r * (thumb + pad)
        colour = KNOWN if track.name else UNKNOWN
        draw.rectangle([pad, y, pad + 6, y + thumb], fill=colour)
        lines = [track.name or "unknown", f"track {track.id}, similarity {track.similarity:.2f}"
                 + (f", vote share {track.score:.2f}" if track.name else ""),
                 f"{track.first.time:.1f}-{track.last.time:.1f} s, frames {track.first.frame}-{track.last.frame}",
                 f"{len(track.faces)} face(s)"]
        for k, line in enumerate(lines):
            draw.text((pad + 12, y + 2 + k * 18), line, fill=(0, 0, 0), font=font)
        for k, crop in enumerate(track.thumbnails(per_row)):
            img = Image.fromarray(np.asarray(crop, np.uint8), "RGB").resize((thumb, thumb), Image.BILINEAR)
            sheet.paste(img, (label_w + pad + k * (thumb + pad), y))
    return sheet


def write_contact_sheet(result: TrackedVideo, out_dir: str | os.PathLike, name: str | None = None) -> Path:
    """Save the contact sheet as OUT_DIR/<video name>.tracks.jpg (or OUT_DIR/`name`) by the outputs
    rule (facecore.outputs: never the video, only replacing the tool's own file); returns its path."""
    target = Path(out_dir) / (name or f"{Path(result.source).stem}.tracks.jpg")
    source = [] if result.source is None or isinstance(getattr(result, "path", None), int) else [result.source]
    with output_file(target, source, what="contact sheet") as tmp:
        contact_sheet(result).save(tmp, format="JPEG", quality=90)
    return target

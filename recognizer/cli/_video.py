"""What `identify` does with a video or a camera: track, name, print and draw.

Kept apart from the photo code of the command so that the command itself only sorts its inputs.
"""
from __future__ import annotations

import os
from pathlib import Path

import click

import recognizer
from recognizer.annotate import SHEET_SUFFIX

__all__ = ["identify_one_video", "quiet_decoders", "wants_video_file"]


def quiet_decoders(verbose: int) -> None:
    """Keep FFmpeg's and OpenCV's own logging off the terminal unless -v: a damaged video makes
    FFmpeg print a line per broken packet, while the tool reports the damage once, in words.
    FFmpeg reads the variable when OpenCV first opens a video, so this runs before that."""
    import cv2  # OpenCV takes a while to import: only runs that read a video load it

    if verbose:
        return
    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "8")  # AV_LOG_FATAL
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)


def wants_video_file(out: Path) -> bool:
    """`--annotate OUT`: a video's name (`out.mp4`) asks for the annotated video, anything else for a folder."""
    return not out.is_dir() and recognizer.is_video_input(out)


def identify_one_video(rec, source: str | os.PathLike | int, *, sample_fps: float | None, threshold, seconds: float | None,
                       target: Path | None, as_json: bool) -> dict:
    """Identify one video or camera and draw it to `target` (a `.tracks.jpg` contact sheet, else the
    annotated video; planned by recognizer.annotate); returns its JSON object (with `error` instead
    of tracks when it could not be read)."""
    name = f"camera {source}" if isinstance(source, int) else str(source)
    try:
        result = rec.identify_video(source, fps=sample_fps, threshold=threshold, seconds=seconds, progress=not as_json)
    except recognizer.VideoError as exc:
        if not as_json:
            click.echo(f"{name}: error: {exc.reason}")
        return {"video": name, "error": exc.reason}
    if target is not None:
        if target.name.endswith(SHEET_SUFFIX):
            result.write_contact_sheet(target.parent, target.name)
        else:
            result.write_annotated(target)
    if not as_json:
        note = " (truncated or damaged: stopped early)" if result.truncated else ""
        if result.low_quality:
            note += f"; {result.low_quality} low-quality face(s) set aside"
        click.echo(f"{name}: {len(result.tracks)} track(s) in {result.video_seconds:.1f} s of video{note}")
        for t in result.tracks:
            who = t.name or "unknown"
            share = f", vote share {t.score:.2f}" if t.name else ""
            click.echo(f"  track {t.id} {who}: {t.first.time:.1f}-{t.last.time:.1f} s (frames {t.first.frame}-{t.last.frame}), "
                       f"{len(t.faces)} face(s), similarity {t.similarity:.2f}{share}")
    return result.to_dict()

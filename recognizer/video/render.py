"""Drawing a video's tracks: the video with named boxes, and a contact sheet of the tracks.

Colours are the photo annotations' (recognizer.drawing). Between two sampled frames of a track its
box moves linearly, so the annotated video shows every frame boxed, not only the sampled ones.
It draws any `TrackedVideo` and so does not import the analysis above it.
"""
from __future__ import annotations

import logging
import os
from fractions import Fraction
from pathlib import Path
from typing import Protocol

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from facecore.errors import VideoError
from facecore.outputs import output_file
from recognizer.drawing import KNOWN, UNKNOWN, Mark, draw_marks, label_text
from recognizer.video.reader import VideoInfo, VideoLimits, VideoReader
from recognizer.video.tracking import Track

__all__ = ["VIDEO_OUTPUT_SUFFIXES", "TrackedVideo", "boxes_at", "contact_sheet", "track_label", "write_annotated_video",
           "write_contact_sheet"]

log = logging.getLogger(__name__)


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


# What Chromium, Firefox and Safari all play: H.264 (yuv420p) with AAC in MP4, or VP9 with Opus in WebM.
# The audio is copied as it is when the container and browsers take its codec, else re-encoded.
_FORMATS = {".mp4": ("mp4", "libx264", "aac", {"aac", "mp3", "opus", "flac"}),
            ".m4v": ("mp4", "libx264", "aac", {"aac", "mp3", "opus", "flac"}),
            ".mov": ("mov", "libx264", "aac", {"aac", "mp3"}),
            ".webm": ("webm", "libvpx-vp9", "libopus", {"opus", "vorbis"})}
VIDEO_OUTPUT_SUFFIXES = tuple(_FORMATS)
_SOUND_AFTER = 5.0  # seconds of sound kept after the last frame


def write_annotated_video(source: str | os.PathLike, result: TrackedVideo, out: str | os.PathLike,
                          limits: VideoLimits = VideoLimits()) -> int:
    """Write `source` with each track's box and name drawn on every frame it spans, at the source's frame
    rate, as H.264 in MP4 (`.mp4`, `.m4v`, `.mov`) or VP9 in WebM (`.webm`), with the source's sound
    when it has some (PyAV, FFmpeg's own muxers and encoders), never over `source` or another file that is
    not the tool's own (facecore.outputs). Returns the number of frames written."""
    import av  # PyAV bundles FFmpeg's libraries; only drawing a video needs it

    suffix = Path(out).suffix.lower()
    if suffix not in _FORMATS:
        raise VideoError(out, f"an annotated video is written as {', '.join(VIDEO_OUTPUT_SUFFIXES)} "
                              f"(what a browser plays), not {suffix or 'a name without a suffix'}")
    container_format, vcodec, acodec, copyable = _FORMATS[suffix]
    fps = result.info.fps or result.sample_fps
    hold = max(1, round(fps / result.sample_fps)) - 1
    rate = Fraction(fps).limit_denominator(1001)
    with VideoReader(source, sample_fps=None, limits=limits) as reader, \
            output_file(out, [source], what="annotated video") as tmp:
        # yuv420p needs even sides: an odd last row or column is left out.
        size = (reader.info.width & ~1, reader.info.height & ~1)
        options = {"movflags": "+faststart"} if container_format in ("mp4", "mov") else {}
        try:
            with av.open(str(tmp), "w", format=container_format, options=options) as output:
                video = output.add_stream(vcodec, rate=rate)
                video.width, video.height, video.pix_fmt = size[0], size[1], "yuv420p"
                video.options = ({"crf": "23", "preset": "veryfast"} if vcodec == "libx264"
                                 else {"crf": "32", "b": "0", "deadline": "realtime", "cpu-used": "8"})
                with _AudioCopy(av, source, output, acodec, copyable) as audio:
                    written = _encode_frames(av, reader, result, (output, video, audio), size, hold, rate)
                    # The sound of a video read to its end may run past the last frame (up to _SOUND_AFTER:
                    # a short video with hours of sound is no way round the limits); one cut short by a
                    # limit or damage keeps its sound up to its last frame.
                    cut = reader.truncated or (limits.max_seconds is not None and written < reader.info.frame_count)
                    audio.finish(float(written / rate) + (0 if cut else _SOUND_AFTER))
        except av.FFmpegError as exc:
            raise VideoError(out, f"cannot be written as a {container_format} video: {exc}") from exc
    return written


def _encode_frames(av, reader: VideoReader, result: TrackedVideo, streams: tuple, size: tuple[int, int],
                   hold: int, rate: Fraction) -> int:
    """Draw and encode every frame the reader gives, muxing the sound up to each frame's time; returns the count."""
    output, video, audio = streams
    written = 0
    for frame in reader.frames():
        img = frame.image if frame.image.size == size else frame.image.crop((0, 0, *size))
        marks = [Mark(box, track_label(t), KNOWN if t.name else UNKNOWN) for t in result.tracks
                 if (box := boxes_at(t, frame.index, hold)) is not None]
        out = av.VideoFrame.from_image(draw_marks(img, marks))
        out.pts = written
        output.mux(video.encode(out.reformat(format="yuv420p")))
        written += 1
        audio.until(float(written / rate))
    output.mux(video.encode(None))
    return written


class _AudioCopy:
    """The source's first audio stream into the output, in time order with the video: its packets copied
    when the output takes the codec, else decoded and encoded again (`acodec`). Nothing without audio."""

    def __init__(self, av, source: str | os.PathLike, output, acodec: str, copyable: set[str]):
        self.av, self.output = av, output
        self.input = av.open(str(source))
        ins = self.input.streams.audio
        self.stream_in = ins[0] if ins else None
        self.copy = self.stream_in is not None and self.stream_in.codec_context.name in copyable
        self.stream_out = None
        if self.stream_in is None:
            return
        if self.copy:
            self.stream_out = output.add_stream_from_template(self.stream_in)
        else:
            rate = self.stream_in.codec_context.sample_rate or 48000
            self.stream_out = output.add_stream(acodec, rate=48000 if acodec == "libopus" else rate)
            self.stream_out.layout = "stereo" if self.stream_in.codec_context.layout.nb_channels > 1 else "mono"
        self.packets = self.input.demux(self.stream_in)
        self.pending = None

    def __enter__(self) -> "_AudioCopy":
        return self

    def __exit__(self, *exc) -> None:
        self.input.close()

    def until(self, seconds: float) -> None:
        """Mux the sound that starts before `seconds` into the video."""
        if self.stream_in is None:
            return
        try:
            while True:
                packet = self.pending or next(self.packets, None)
                self.pending = None
                if packet is None:
                    self.stream_in = None
                    break
                if packet.pts is None or packet.size == 0:
                    continue
                if packet.pts * packet.time_base >= seconds:
                    self.pending = packet
                    break
                self._write(packet)
        except self.av.FFmpegError as exc:  # damaged sound: the video keeps what was read of it
            log.warning("%s: the sound stops at %.1f s, where it cannot be read (%s)", self.input.name, seconds, exc)
            self.stream_in = None

    def _write(self, packet) -> None:
        if self.copy:
            packet.stream = self.stream_out
            self.output.mux(packet)
            return
        for frame in packet.decode():
            frame.pts = None
            self.output.mux(self.stream_out.encode(frame))

    def finish(self, seconds: float) -> None:
        """The rest of the sound that starts before `seconds`."""
        self.until(seconds)
        if self.stream_out is not None and not self.copy:
            self.output.mux(self.stream_out.encode(None))


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

"""Who appears in a video, and when: sampled frames through the photo pipeline, faces into tracks.

Each sampled frame goes through the same detection, embedding and per-face decision as a photo
(`FacePipeline.analyze_many`, `Recognizer.decide`), so a frame's faces are exactly those of that
frame saved as a picture; the tracker then links them and names each track by its faces' vote.
Faces under the quality floor (`recognizer.quality`: false detections, blobs) join no track and
start none; they are counted (`low_quality`).
"""
from __future__ import annotations

import logging
import os
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from PIL import Image
from tqdm import tqdm

from facecore.errors import VideoError
from recognizer.quality import LOW_QUALITY
from recognizer.video import render
from recognizer.video.reader import DEFAULT_SAMPLE_FPS, Frame, VideoInfo, VideoLimits, VideoReader
from recognizer.video.tracking import Observation, Track, Tracker, TrackerSettings, colour_signature, is_cut

__all__ = ["VideoIdentification", "identify_video"]

log = logging.getLogger(__name__)


@dataclass
class VideoIdentification:
    source: str  # what the video is called (its path, a camera, or an upload's name)
    info: VideoInfo
    sample_fps: float
    tracks: list[Track] = field(default_factory=list)
    path: str | os.PathLike | int | None = None  # what was read: a file, or a camera index
    decoded: int = 0  # frames decoded
    sampled: int = 0  # frames analysed
    truncated: bool = False
    seconds: float = 0.0  # wall-clock time the analysis took
    low_quality: int = 0  # faces set aside, under the quality floor

    @property
    def video_seconds(self) -> float:
        """Seconds of video read (of the stream's own time)."""
        return self.decoded / self.info.fps if self.info.fps > 0 else 0.0

    def write_annotated(self, out: str | os.PathLike, limits: VideoLimits = VideoLimits()) -> int:
        """Write the video again with each track's box and name drawn (H.264 MP4 or VP9 WebM by
        `out`'s suffix, with the source's sound); returns the frames written."""
        if self.path is None or isinstance(self.path, int):
            raise VideoError(self.source, "only a video file can be annotated again; a camera's frames are not kept")
        return render.write_annotated_video(self.path, self, out, limits)

    def contact_sheet(self) -> Image.Image:
        """A PIL image: one row per track, its name and span, and faces spread over its length."""
        return render.contact_sheet(self)

    def write_contact_sheet(self, out_dir: str | os.PathLike, name: str | None = None) -> Path:
        """Save the contact sheet as OUT_DIR/<video name>.tracks.jpg (or OUT_DIR/`name`); returns its path."""
        return render.write_contact_sheet(self, out_dir, name)

    def to_dict(self) -> dict:
        out = {"video": self.source, **self.info.to_dict(), "sample_fps": self.sample_fps,
               "frames_decoded": self.decoded, "frames_sampled": self.sampled, "truncated": self.truncated,
               "low_quality_faces": self.low_quality, "tracks": [t.to_dict() for t in self.tracks]}
        if self.truncated:
            out["warning"] = f"decoding stopped at frame {self.decoded} of the {self.info.frame_count} declared: the file is truncated or damaged"
        return out


def identify_video(recognizer, source: str | os.PathLike | int, *, sample_fps: float = DEFAULT_SAMPLE_FPS,
                   threshold: float | None = None, limits: VideoLimits = VideoLimits(),
                   tracker: TrackerSettings = TrackerSettings(), name: str | None = None,
                   progress: bool = False) -> VideoIdentification:
    """Track and name the faces of a video file or camera (`source` an int) with an opened Recognizer.

    Raises VideoError for a file that is no video, cannot be opened, or yields no frame at all;
    a video cut short gives the tracks of what was decoded, with `truncated` set. A camera is
    read until `limits.max_seconds` or Ctrl-C.
    """
    thr = recognizer.threshold_for(threshold)  # the one the per-face decisions apply
    started = time.perf_counter()
    with VideoReader(source, sample_fps=sample_fps, limits=limits, name=name) as reader:
        result = VideoIdentification(reader.name, reader.info, reader.sample_fps, path=source)
        tracks = Tracker(thr, tracker, interval=1.0 / reader.sample_fps)
        pending: deque[tuple[Frame, bool]] = deque()

        def images() -> Iterator:
            signature = None
            for frame in reader.frames():
                before, signature = signature, colour_signature(frame.image)
                pending.append((frame, is_cut(before, signature, tracker)))
                yield frame.image

        bar = tqdm(total=reader.info.frame_count or None, unit="frame", disable=not progress, dynamic_ncols=True,
                   desc=os.path.basename(reader.name) if not reader.camera else reader.name)
        try:
            for res in recognizer.pipeline.analyze_many(images(), total=reader.expected_samples()):
                frame, cut = pending.popleft()
                frame.image = None  # the picture is no longer needed; keep memory to the frames in flight
                bar.update(reader.decoded - bar.n)
                result.sampled += 1
                if res.error is not None:
                    log.warning("%s: frame %d skipped: %s", reader.name, frame.index, res.error)
                    tracks.update(frame.time, [], cut=cut)
                    continue
                ident = recognizer.decide(res, threshold=thr)
                kept = [i for i, fid in enumerate(ident.faces) if fid.unknown_reason != LOW_QUALITY]
                result.low_quality += len(ident.faces) - len(kept)
                tracks.update(frame.time, [Observation(frame.index, frame.time, res.faces[i].box, res.faces[i].score,
                                                       res.embeddings[i], ident.faces[i].name, ident.faces[i].similarity,
                                                       res.crops[i]) for i in kept], cut=cut)
        except KeyboardInterrupt:
            if not reader.camera:
                raise
            log.info("%s: stopped after %d frames", reader.name, reader.decoded)
        finally:
            bar.update(reader.decoded - bar.n)
            bar.close()
        result.decoded = reader.decoded
        result.truncated = reader.truncated
    if result.decoded == 0:
        raise VideoError(result.source, "no frame could be decoded (damaged, or no video stream)")
    result.tracks = tracks.finish()
    result.seconds = time.perf_counter() - started
    return result

"""Outputs that open anywhere (issue 28, item 2): the annotated video in a format browsers play, with its
sound; labels inside the picture and never under another box; cluster-sheet numbers legible on any face;
training curves that say what they show.

The video tests draw boxes on the real Hamilton clip (video-hamilton/) without running a model: what is
tested is the encoding and drawing, not the tracking (tests/test_video.py runs both).
"""
from __future__ import annotations

import io
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

CLIP = Path("video-hamilton") / "short_hamilton_clip.mp4"
# Lin-Manuel Miranda's face in frames 84-210 of the clip, and a false detection just above his head
# (what the tracker found in frame 90: tests/test_video.py).
LIN_BOX = np.array([161.0, 62.0, 240.0, 170.0], np.float32)
FALSE_BOX = np.array([181.0, 27.0, 205.0, 52.0], np.float32)


@dataclass
class Tracked:
    """A `TrackedVideo` (recognizer.video.render) made by hand: a source, its stream facts and tracks."""
    source: str
    info: object
    sample_fps: float = 5.0
    tracks: list = field(default_factory=list)


def tracked(clip: Path, spans: list[tuple[str | None, np.ndarray, int, int]]) -> Tracked:
    """The clip with one track per (name, box, first frame, last frame), its box still."""
    from recognizer.video.reader import VideoReader
    from recognizer.video.tracking import Observation, Track

    with VideoReader(clip, sample_fps=None) as reader:
        info = reader.info
    tracks = []
    for k, (name, box, first, last) in enumerate(spans, 1):
        faces = [Observation(f, f / info.fps, box, 0.99, np.zeros(128, np.float32), name, 0.65 if name else 0.18)
                 for f in range(first, last + 1, 6)]
        tracks.append(Track(k, faces, name, 1.0 if name else 0.0, 0.65 if name else 0.18))
    return Tracked(str(clip), info, tracks=tracks)


def streams(path: Path) -> dict:
    """What ffprobe says of a file, through PyAV: the container's duration, each stream's codec and duration,
    and the video's decoded frames."""
    import av

    with av.open(str(path)) as c:
        out = {s.type: {"codec": s.codec_context.name, "duration": float(s.duration * s.time_base) if s.duration else None}
               for s in c.streams}
        out["frames"] = sum(1 for _ in c.decode(video=0))
        out["duration"] = c.duration / 1e6
    return out


@pytest.fixture(scope="module")
def clip(data) -> Path:
    return data / CLIP


@pytest.fixture(scope="module")
def mute_clip(clip, tmp_path_factory) -> Path:
    """The clip's first 40 frames, without its sound (H.264, written with PyAV)."""
    import av

    out = tmp_path_factory.mktemp("mute") / "mute.mp4"
    with av.open(str(clip)) as src, av.open(str(out), "w") as dst:
        stream = dst.add_stream("libx264", rate=30)
        stream.width, stream.height, stream.pix_fmt = 640, 360, "yuv420p"
        for i, frame in enumerate(src.decode(video=0)):
            if i == 40:
                break
            frame.pts, frame.time_base = i, Fraction(1, 30)
            dst.mux(stream.encode(frame.reformat(format="yuv420p")))
        dst.mux(stream.encode(None))
    return out


def test_a_video_without_sound_gets_none_and_keeps_every_frame(mute_clip, tmp_path):
    from recognizer.video.render import write_annotated_video

    out = tmp_path / "annotated.mp4"
    assert write_annotated_video(mute_clip, tracked(mute_clip, [("Lin-Manuel Miranda", LIN_BOX, 0, 39)]), out) == 40
    probe = streams(out)
    assert "audio" not in probe and probe["video"]["codec"] == "h264" and probe["frames"] == 40


def test_webm_is_vp9_with_opus_and_a_limit_cuts_the_sound_with_the_video(clip, tmp_path):
    """The clip's AAC sound is re-encoded as Opus (WebM takes no AAC); read for 2 s, the sound stops there too."""
    from recognizer.video.reader import VideoLimits
    from recognizer.video.render import write_annotated_video

    out = tmp_path / "annotated.webm"
    n = write_annotated_video(clip, tracked(clip, [("Lin-Manuel Miranda", LIN_BOX, 0, 200)]), out, VideoLimits(max_seconds=2))
    probe = streams(out)
    assert probe["video"]["codec"] == "vp9" and probe["audio"]["codec"] == "opus"
    assert n == probe["frames"] and abs(n / 29.97 - 2) < 0.05
    assert abs(probe["duration"] - n / 29.97) < 0.1  # not the clip's 10 s of sound


def test_an_output_no_browser_plays_is_refused_naming_the_file(clip, tmp_path):
    from facecore.errors import VideoError
    from recognizer.video.render import write_annotated_video

    with pytest.raises(VideoError, match=r"annotated\.avi.*\.mp4, \.m4v, \.mov, \.webm"):
        write_annotated_video(clip, tracked(clip, []), tmp_path / "annotated.avi")
    assert not list(tmp_path.iterdir())


def test_labels_stay_inside_the_picture_and_off_other_boxes(data):
    """On a real photo: a face at the right edge (its label would run out of the picture) and, above another
    face, a small box where that face's label would go. Every label is whole, inside the picture, covers no
    other box, and no box line runs through it (boxes are drawn first)."""
    from recognizer.drawing import KNOWN, UNKNOWN, Mark, draw_marks, label_boxes

    photo = Image.open(data / "video-hamilton" / "lin-manuel-miranda.png").convert("RGB")  # 704 x 612
    w, h = photo.size
    marks = [Mark([w - 60, 200, w - 1, 280], "Lin-Manuel Miranda 0.65", KNOWN),
             Mark([200, 120, 330, 300], "Alex Lacamoire 0.52", KNOWN),
             Mark([230, 95, 280, 118], "unknown 0.18", UNKNOWN),
             Mark([5, 2, 120, 40], "unknown 0.21", UNKNOWN)]  # at the top left: no room above
    drawn = np.asarray(draw_marks(photo.copy(), marks), np.int32)
    rects = label_boxes(photo.size, marks)
    for i, (m, (x1, y1, x2, y2)) in enumerate(zip(marks, rects)):
        assert 0 <= x1 < x2 <= w and 0 <= y1 < y2 <= h, (m.label, (x1, y1, x2, y2))
        for j, other in enumerate(marks):
            if j != i:
                ox1, oy1, ox2, oy2 = other.box
                assert x2 <= ox1 or x1 >= ox2 or y2 <= oy1 or y1 >= oy2, (m.label, "covers", other.label)
                if j < i:
                    px1, py1, px2, py2 = rects[j]
                    assert x2 <= px1 or x1 >= px2 or y2 <= py1 or y1 >= py2, (m.label, "covers", other.label)
        # Only the label's own colour and its white text (and their blends) inside it: nothing drawn over it.
        px = drawn[int(y1):int(y2), int(x1):int(x2)].reshape(-1, 3).astype(float)
        fill = np.array(m.colour, float)
        t = np.clip(((px - fill) @ (255 - fill)) / ((255 - fill) @ (255 - fill)), 0, 1)
        off = np.abs(px - (fill + t[:, None] * (255 - fill))).max(axis=1)
        assert off.max() <= 3, m.label
        assert (t > 0.9).sum() > 20, m.label  # the text is there


def test_a_label_at_the_right_edge_is_whole(data):
    """The same label beside a face in the middle and a face touching the right edge of a real photo: as much
    of its white text shows in both (before, the one at the edge ran out of the picture)."""
    from recognizer.drawing import draw_faces

    @dataclass
    class Face:
        box: list
        name: str | None = "Lin-Manuel Miranda"
        score: float = 1.0
        similarity: float = 0.65

    photo = Image.open(data / "video-hamilton" / "lin-manuel-miranda.png").convert("RGB")
    photo = Image.fromarray((np.asarray(photo) * 0.6).astype(np.uint8))  # nothing light of its own: light is text
    w = photo.width

    def text_pixels(box) -> int:
        return int((np.asarray(draw_faces(photo, [Face(box)])) > 170).all(axis=2).sum())

    middle, edge = text_pixels([300, 250, 380, 330]), text_pixels([w - 50, 250, w - 1, 330])
    assert middle > 50 and edge > 0.9 * middle, (middle, edge)


def test_sheet_numbers_are_legible_on_light_and_dark_faces(data):
    """The numbers `--exclude` takes, on a real face made almost white and almost black: yellow on a dark
    box in both, so the contrast between number and backing is high whatever the face."""
    from recognizer.clustering.sheets import THUMB, contact_sheet

    face = np.asarray(Image.open(data / "video-hamilton" / "lin-manuel-miranda.png").convert("RGB")
                      .crop((250, 60, 470, 280)).resize((112, 112)), np.float32)
    light = (255 - (255 - face) * 0.08).astype(np.uint8)
    dark = (face * 0.08).astype(np.uint8)
    crops = np.stack([light, dark, light])
    sheet = np.asarray(Image.open(io.BytesIO(contact_sheet(crops, [0, 1, 2], 0))).convert("RGB"), np.float32)
    for n in range(3):
        x = 4 + n * (THUMB + 4)
        corner = sheet[5:5 + 18, x + 1:x + 25].reshape(-1, 3)  # inside the central face's frame
        lum = corner @ np.array([0.2126, 0.7152, 0.0722], np.float32)
        yellow = (corner[:, 0] > 200) & (corner[:, 1] > 200) & (corner[:, 2] < 90)
        assert yellow.sum() >= 8, n
        # WCAG contrast between the number's yellow and the darkest quarter of its corner.
        hi, lo = np.median(lum[yellow]) / 255, np.percentile(lum[~yellow], 25) / 255
        assert (hi + 0.05) / (lo + 0.05) > 7, (n, hi, lo)


def test_training_curves_are_titled_with_the_kept_epoch_marked(tmp_path):
    from recognizer.network.loop import EpochStats
    from recognizer.training.curves import LOSS_PNG, curve_figure, plot_curves

    history = [EpochStats(1, 2.0, 0.3, 1.9, 0.35, 1.0), EpochStats(2, 1.2, 0.6, 1.1, 0.62, 1.0),
               EpochStats(3, 0.7, 0.8, 1.3, 0.6, 1.0)]
    fig = curve_figure(history, "loss", "cross-entropy", 2)
    ax = fig.axes[0]
    assert "best epoch 2" in ax.get_title() and "cross-entropy" in ax.get_title()
    marked = [line for line in ax.get_lines() if list(line.get_xdata()) == [2, 2]]
    assert len(marked) == 1 and "best epoch (2)" in marked[0].get_label()
    assert [t.get_text() for t in ax.get_legend().get_texts()][-1].startswith("best epoch (2)")
    paths = plot_curves(history, tmp_path, 2)
    assert [p.name for p in paths][0] == LOSS_PNG and all(p.stat().st_size > 5000 for p in paths)


def test_a_damaged_clip_gives_what_decodes_with_its_sound_up_to_there(clip, tmp_path):
    """Noise over a third of the clip's bytes: the frames before it are written, the sound stops with them."""
    from recognizer.video.render import write_annotated_video

    data = bytearray(clip.read_bytes())
    rng = np.random.default_rng(0)
    for at in (len(data) // 3, len(data) // 2):
        data[at:at + 50_000] = rng.integers(0, 256, 50_000, dtype=np.uint8).tobytes()
    damaged = tmp_path / "damaged.mp4"
    damaged.write_bytes(bytes(data))
    n = write_annotated_video(damaged, tracked(clip, [("Lin-Manuel Miranda", LIN_BOX, 0, 274)]), tmp_path / "out.mp4")
    probe = streams(tmp_path / "out.mp4")
    assert 30 < n < 275 and probe["frames"] == n
    assert probe["audio"]["codec"] == "aac" and abs(probe["audio"]["duration"] - n / 29.97) < 0.1


def test_sound_past_the_last_frame_is_kept_for_five_seconds_at_most(clip, tmp_path):
    """The clip's first 20 frames with 9 s of its sound: the annotated one ends 5 s after its last frame."""
    import av

    short = tmp_path / "short.mp4"
    with av.open(str(clip)) as src, av.open(str(short), "w") as dst:
        video = dst.add_stream("libx264", rate=Fraction(30000, 1001))
        video.width, video.height, video.pix_fmt = 640, 360, "yuv420p"
        audio = dst.add_stream_from_template(src.streams.audio[0])
        for i, frame in enumerate(src.decode(video=0)):
            if i == 20:
                break
            frame.pts, frame.time_base = i, Fraction(1001, 30000)
            dst.mux(video.encode(frame.reformat(format="yuv420p")))
        dst.mux(video.encode(None))
        src.seek(0)
        for packet in src.demux(src.streams.audio[0]):
            if packet.dts is not None:
                packet.stream = audio
                dst.mux(packet)
    assert streams(short)["audio"]["duration"] > 8
    from recognizer.video.render import write_annotated_video

    assert write_annotated_video(short, tracked(short, []), tmp_path / "out.mp4") == 20
    probe = streams(tmp_path / "out.mp4")
    assert "audio" in probe and abs(probe["duration"] - (20 * 1001 / 30000 + 5)) < 0.1, probe

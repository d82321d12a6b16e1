"""Faces in video: tracks named as a whole, on the real Hamilton clip, and bad video files.

The clip (video-hamilton/, see SOURCES.md there): a wide shot of the stage (frames ~0-19),
Alex Lacamoire in profile at the piano (~20-89), Lin-Manuel Miranda facing the camera (~90-219)
and the audience with Barack Obama and unknown guests (~220-274). The model enrolls Lin-Manuel
Miranda from the still of the same evening, Alex Lacamoire from two independent photos and
Barack Obama from two independent photos. Damaged files are made from the clip in tmp.
"""
from __future__ import annotations

import json
import signal
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

VH = "video-hamilton"
CLIP = "short_hamilton_clip.mp4"
LIN, ALEX, OBAMA = "Lin-Manuel Miranda", "Alex Lacamoire", "Barack Obama"


@contextmanager
def deadline(seconds: int):
    """Fail instead of hanging: bad files must give an answer in bounded time."""

    def expired(signum, frame):
        raise TimeoutError(f"no answer within {seconds} s")

    before = signal.signal(signal.SIGALRM, expired)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, before)


@pytest.fixture(scope="module")
def clip(data) -> Path:
    return data / VH / CLIP


@pytest.fixture(scope="module")
def rec(tmp_path_factory, data):
    from recognizer.recognizer import Recognizer

    r = Recognizer.open(tmp_path_factory.mktemp("video") / "model", backbone="sface", create=True)
    refs = data / VH
    for name, files in ((LIN, ["lin-manuel-miranda.png"]), (ALEX, ["alex-lacamoire-2.jpg", "alex-lacamoire-3.jpg"]),
                        (OBAMA, ["obama.jpg", "obama2.jpg"])):
        assert r.enroll(name, [refs / f for f in files]).added == len(files)
    yield r
    r.close()


@pytest.fixture(scope="module")
def result(rec, clip):
    from recognizer.video.analysis import identify_video

    with deadline(300):
        return identify_video(rec, clip)


def named(result, name):
    return [t for t in result.tracks if t.name == name]


def test_lin_manuel_miranda_is_one_track_over_his_shot(result):
    assert result.decoded == 275 and not result.truncated
    assert result.sampled == 46  # 9.18 s at the default 5 frames/s
    sampled = sorted({f.frame for t in result.tracks for f in t.faces} | set(range(0, 275, 6)))
    his_shot = [f for f in sampled if 90 <= f <= 219]
    covered = {f.frame for t in named(result, LIN) for f in t.faces if 90 <= f.frame <= 219}
    assert len(covered) >= 0.8 * len(his_shot), (sorted(covered), his_shot)
    # One track carries the whole close shot: no split, hence no change of name inside it.
    main = max(named(result, LIN), key=lambda t: len(t.faces))
    assert main.first.frame <= 96 and main.last.frame >= 204
    assert main.last.frame < 220  # the cut to the audience ends it: Obama's face at the same place is another track


def test_obama_named_in_the_audience_and_nobody_else_named(result):
    obama = named(result, OBAMA)
    assert len(obama) == 1 and obama[0].first.frame >= 210 and len(obama[0].faces) >= 8
    for t in result.tracks:
        if t.name == LIN:
            assert t.last.frame < 220
        elif t.name == OBAMA:
            assert t.first.frame >= 210
        else:
            # Alex Lacamoire's profile at the piano is not named (too far from his photos), and
            # no guest, pianist or false detection gets a known name.
            assert t.name is None, t.to_dict()
    guests = [t for t in result.tracks if t.first.frame >= 210 and t.name is None]
    assert len(guests) >= 3


def test_track_name_holds_where_single_frames_would_flicker(rec, result):
    """Per-face decisions are kept on the observations; the track's vote gives every face one name."""
    from dataclasses import replace

    from recognizer.video.tracking import vote

    thr = rec.config.threshold
    for t in result.tracks:
        assert vote(t.faces, thr)[0] == t.name  # the name is the vote over the whole track
    # Had a third of his faces fallen under the threshold (blur, a turned head), the track, and
    # so every frame of it, would still carry his name.
    lin = max(named(result, LIN), key=lambda t: len(t.faces))
    faces = [replace(f, name=None, similarity=thr - 0.1) if i % 3 == 0 else f for i, f in enumerate(lin.faces)]
    assert vote(faces, thr)[0] == LIN


def test_video_frames_match_the_photo_path(rec, result, clip, tmp_path):
    """A sampled frame's faces are exactly those identify finds in the frame saved as a picture."""
    import cv2

    cap = cv2.VideoCapture(str(clip))
    cap.set(cv2.CAP_PROP_POS_FRAMES, 150)
    ok, bgr = cap.read()
    cap.release()
    assert ok
    png = tmp_path / "frame150.png"
    cv2.imwrite(str(png), bgr)
    photo = rec.pipeline.analyze(png)
    at = [f for t in result.tracks for f in t.faces if f.frame == 150]
    assert len(at) == len(photo.faces) >= 1
    for face, emb in zip(photo.faces, photo.embeddings):
        match = [f for f in at if np.array_equal(f.box, face.box)]
        assert len(match) == 1 and np.array_equal(match[0].embedding, emb)


def probe(path: Path) -> dict:
    """What ffprobe says of a file, through PyAV: each stream's codec, pixel format, duration and frames."""
    import av

    with av.open(str(path)) as c:
        streams = {s.type: {"codec": s.codec_context.name, "pix_fmt": getattr(s.codec_context, "pix_fmt", None),
                            "rate": s.average_rate if s.type == "video" else None,
                            "frames": sum(1 for _ in c.decode(s)) if s.type == "video" else None,
                            "duration": float(s.duration * s.time_base) if s.duration else None}
                   for s in c.streams}
        return {"duration": c.duration / 1e6, **streams}


@pytest.fixture(scope="module")
def annotated(result, clip, tmp_path_factory) -> Path:
    from recognizer.video.render import write_annotated_video

    out = tmp_path_factory.mktemp("annotated") / "annotated.mp4"
    assert write_annotated_video(clip, result, out) == 275
    return out


def test_annotated_video_plays_in_browsers_with_the_clips_sound_and_length(clip, annotated):
    """H.264 in yuv420p (what Chromium, Firefox and Safari decode), the whole clip to within one frame, and
    the clip's AAC sound track (the clip has one), copied."""
    src, out = probe(clip), probe(annotated)
    assert src["audio"]["codec"] == "aac"
    assert out["video"]["codec"] == "h264" and out["video"]["pix_fmt"] == "yuv420p"
    frame = 1 / float(src["video"]["rate"])
    assert out["video"]["frames"] == src["video"]["frames"] == 275
    assert abs(out["video"]["duration"] - src["video"]["duration"]) < frame
    assert abs(out["duration"] - src["duration"]) < frame
    assert out["audio"]["codec"] == "aac" and abs(out["audio"]["duration"] - src["audio"]["duration"]) < frame
    with open(annotated, "rb") as fh:  # the index first (faststart): a browser starts playing before the end arrives
        head = fh.read(4096)
    assert head.find(b"moov") != -1 and (head.find(b"mdat") == -1 or head.find(b"moov") < head.find(b"mdat"))


def test_labels_are_inside_the_frame_and_never_under_a_box_in_frame_90(result, annotated):
    """Frame 90: Lin-Manuel Miranda and a false detection just above his head. His label goes where the other
    box is not, inside the frame; the frame is kept in artifacts/ to look at."""
    import av

    from recognizer.drawing import KNOWN, UNKNOWN, Mark, label_boxes
    from recognizer.video.render import boxes_at, track_label

    here = {t.name: t for t in result.tracks if boxes_at(t, 90, 5) is not None}
    # The false detection above his head is under the quality floor (issue 30): it makes no track now, so
    # his label has nothing to avoid here; tests/test_video_outputs.py places labels beside that same box.
    assert LIN in here and set(here) <= {LIN, None}
    marks = [Mark(boxes_at(t, 90, 5), track_label(t), KNOWN if t.name else UNKNOWN) for t in here.values()]
    with av.open(str(annotated)) as c:
        frame = next(f for i, f in enumerate(c.decode(video=0)) if i == 90).to_image()
    artifacts = Path(__file__).resolve().parent.parent / "artifacts"
    artifacts.mkdir(exist_ok=True)
    frame.save(artifacts / "video-frame-090.png")
    labels = label_boxes(frame.size, marks)
    for x1, y1, x2, y2 in labels:
        assert 0 <= x1 < x2 <= frame.width and 0 <= y1 < y2 <= frame.height
    lin = labels[list(here).index(LIN)]
    if None in here:
        fx1, fy1, fx2, fy2 = boxes_at(here[None], 90, 5)
        assert lin[2] <= fx1 or lin[0] >= fx2 or lin[3] <= fy1 or lin[1] >= fy2
    # In the video itself: the label's green box where it was placed, with nothing red drawn over it.
    x1, y1, x2, y2 = (int(round(v)) for v in lin)
    fill = np.asarray(frame, np.int32)[y1 + 1 : y2 - 1, x1 + 1 : x2 - 1].reshape(-1, 3)
    green = (np.abs(fill - KNOWN).sum(axis=1) < 90).mean()
    red = ((fill[:, 0] > fill[:, 1] + 80) & (fill[:, 0] > 150)).mean()
    assert green > 0.5 and red == 0, (green, red)


def test_annotated_video_and_contact_sheet(result, clip, annotated, tmp_path):
    import cv2

    from recognizer.video.render import write_contact_sheet

    out = annotated
    cap = cv2.VideoCapture(str(out))
    assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == 275
    cap.set(cv2.CAP_PROP_POS_FRAMES, 240)
    ok, bgr = cap.read()
    cap.release()
    assert ok

    def edge_colour(track):
        x1, y1, x2, y2 = (int(v) for v in next(f.box for f in track.faces if f.frame == 240))
        # The box's left edge, a few pixels thick, through the video codec's losses.
        return bgr[y1 + 5 : y2 - 5, max(x1 - 1, 0) : x1 + 2].reshape(-1, 3).mean(axis=0)[::-1]

    obama = named(result, OBAMA)[0]
    guest = next(t for t in result.tracks if t.name is None and t.first.frame >= 210)
    r, g, _ = edge_colour(obama)
    assert g > r + 60  # green: known
    r, g, _ = edge_colour(guest)
    assert r > g + 60  # red: unknown
    sheet = write_contact_sheet(result, tmp_path / "sheet")
    from PIL import Image

    with Image.open(sheet) as im:
        assert im.height >= len(result.tracks) * 80


def test_json_and_cli(rec, clip, tmp_path):
    from recognizer.cli import identify

    out = tmp_path / "sheet"
    res = CliRunner().invoke(identify.main, ["--model", str(rec.dir), str(clip), "--json", "--seconds", "0.7",
                                             "--annotate", str(out)], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    (video,) = json.loads(res.output)
    assert video["video"] == str(clip) and video["frames_decoded"] == 21 and video["width"] == 640
    tracks = video["tracks"]
    assert [t["name"] for t in tracks] == [LIN, None]  # the wide shot: Lin-Manuel Miranda standing, the pianist
    for t in tracks:
        assert set(t) >= {"track", "name", "score", "first_frame", "last_frame", "first_time", "last_time", "faces"}
        assert [f["frame"] for f in t["faces"]] == [0, 6, 12, 18]
        assert len(t["faces"][0]["box"]) == 4
    assert (out / "short_hamilton_clip.tracks.jpg").stat().st_size > 0


# ---- bad files ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def bad_files(clip, tmp_path_factory) -> dict[str, Path]:
    import cv2

    d = tmp_path_factory.mktemp("badvideo")
    data = clip.read_bytes()
    rng = np.random.default_rng(0)
    out = {}

    def put(name, payload):
        out[name] = d / name
        out[name].write_bytes(payload)

    put("truncated.mp4", data[: len(data) // 2])  # the index (moov) is at the end of this file
    noisy = bytearray(data)
    noisy[len(data) // 3 : len(data) // 3 + 50_000] = rng.integers(0, 256, 50_000, dtype=np.uint8).tobytes()
    put("damaged.mp4", bytes(noisy))
    put("text.mp4", b"this is a text file with a video name\n" * 50)
    put("fake-header.mp4", data[:32] + rng.integers(0, 256, 100_000, dtype=np.uint8).tobytes())
    # An AVI cut in half: its frames decode in order until the data stops.
    cap = cv2.VideoCapture(str(clip))
    avi, blurred = d / "clip.avi", d / "no-faces.avi"
    w1 = cv2.VideoWriter(str(avi), cv2.VideoWriter_fourcc(*"MJPG"), 29.97, (320, 180))
    w2 = cv2.VideoWriter(str(blurred), cv2.VideoWriter_fourcc(*"MJPG"), 29.97, (320, 180))
    for i in range(90):
        ok, frame = cap.read()
        small = cv2.resize(frame, (320, 180))
        w1.write(small)
        w2.write(cv2.GaussianBlur(small, (0, 0), 12))  # the same footage, every face blurred away
    w1.release()
    w2.release()
    cap.release()
    put("truncated.avi", avi.read_bytes()[: avi.stat().st_size // 2])
    out["no-faces.avi"] = blurred
    return out


def test_damaged_and_fake_videos_give_clear_errors(rec, bad_files):
    from facecore.errors import VideoError
    from recognizer.video.analysis import identify_video

    expect = {
        "truncated.mp4": "cannot be opened as a video",
        "text.mp4": "is not a video",
        "fake-header.mp4": "cannot be opened as a video",
    }
    for name, message in expect.items():
        with deadline(60), pytest.raises(VideoError, match=message) as err:
            identify_video(rec, bad_files[name])
        assert str(bad_files[name]) in str(err.value)


def test_truncated_and_damaged_videos_give_what_they_hold(rec, bad_files):
    from recognizer.video.analysis import identify_video

    with deadline(120):
        cut = identify_video(rec, bad_files["truncated.avi"])
    assert cut.truncated and 0 < cut.decoded < 90 and cut.info.frame_count == 90
    assert "truncated" in cut.to_dict()["warning"]
    with deadline(120):
        damaged = identify_video(rec, bad_files["damaged.mp4"], sample_fps=2)
    assert damaged.truncated and damaged.decoded < 275


def test_video_without_faces_gives_no_tracks(rec, bad_files):
    from recognizer.video.analysis import identify_video

    with deadline(120):
        res = identify_video(rec, bad_files["no-faces.avi"])
    assert res.decoded == 90 and res.sampled == 15 and res.tracks == []
    assert res.to_dict()["tracks"] == []


def test_cli_reports_bad_videos_and_still_takes_photos_by_content(rec, bad_files, data, tmp_path):
    from recognizer.cli import identify

    photo_named_video = tmp_path / "really-a-photo.mp4"
    photo_named_video.write_bytes((data / VH / "obama2.jpg").read_bytes())
    args = ["--model", str(rec.dir), str(bad_files["text.mp4"]), str(photo_named_video), "--json"]
    with deadline(120):
        res = CliRunner().invoke(identify.main, args, catch_exceptions=False)
    assert res.exit_code == 0, res.output
    out = json.loads(res.output)
    assert out[0] == {"video": str(bad_files["text.mp4"]), "error": out[0]["error"]} and "is not a video" in out[0]["error"]
    assert [f["name"] for f in out[1]["faces"]] == [OBAMA]


# ---- the tracker alone ----------------------------------------------------------------------


def _obs(frame, box, emb, name=None, sim=0.2):
    from recognizer.video.tracking import Observation

    v = np.asarray(emb, np.float32)
    return Observation(frame, frame / 10, np.asarray(box, np.float32), 0.99, v / np.linalg.norm(v), name, sim)


def test_tracker_links_by_place_and_look_survives_gaps_and_ends_at_cuts():
    from recognizer.video.tracking import Tracker

    a, b = [1, 0, 0], [0, 1, 0]
    t = Tracker(0.4)
    # Two people walk towards each other and cross: their looks keep them apart.
    for k in range(6):
        t.update(k / 10, [_obs(k, [10 + 10 * k, 10, 50 + 10 * k, 50], a), _obs(k, [110 - 10 * k, 10, 150 - 10 * k, 50], b)])
    # Person a is missed for 0.5 s (under the 1 s gap), then seen again far away.
    t.update(1.1, [_obs(11, [300, 200, 340, 240], a)])
    # A cut: the same look at the same place starts a new track.
    t.update(1.2, [_obs(12, [300, 200, 340, 240], a)], cut=True)
    # 1.5 s later: too long a gap, a new track even for the same face.
    t.update(2.7, [_obs(27, [300, 200, 340, 240], a)])
    tracks = t.finish()
    assert [len(x.faces) for x in tracks] == [7, 6, 1, 1]
    assert all(np.allclose(f.embedding, a) for f in tracks[0].faces)
    assert all(np.allclose(f.embedding, b) for f in tracks[1].faces)


def test_vote_keeps_strangers_unknown_and_known_people_named():
    from recognizer.video.tracking import vote

    e = [1, 0]
    stranger = [_obs(k, [0, 0, 9, 9], e, LIN if k == 3 else None, 0.45 if k == 3 else 0.25) for k in range(8)]
    assert vote(stranger, 0.43)[0] is None
    blurred = [_obs(k, [0, 0, 9, 9], e, LIN if k % 2 else None, 0.6 if k % 2 else 0.35) for k in range(8)]
    name, score, sim = vote(blurred, 0.43)
    assert name == LIN and 0.5 < score < 1 and sim == pytest.approx(0.6)
    split = [_obs(k, [0, 0, 9, 9], e, LIN if k < 3 else OBAMA, 0.5) for k in range(8)]
    assert vote(split, 0.43)[0] == OBAMA
    assert vote([], 0.43) == (None, 0.0, 0.0)


# ---- the server ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def audience_clip(clip, tmp_path_factory) -> Path:
    """The clip's last two seconds (frames 216-274: Barack Obama and three guests), re-encoded."""
    import cv2

    out = tmp_path_factory.mktemp("audience") / "audience.mp4"
    cap = cv2.VideoCapture(str(clip))
    cap.set(cv2.CAP_PROP_POS_FRAMES, 216)
    writer = cv2.VideoWriter(str(out), cv2.VideoWriter_fourcc(*"mp4v"), 29.97, (640, 360))
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        writer.write(frame)
    writer.release()
    cap.release()
    return out


def test_server_identifies_a_short_video_within_its_own_limits(rec, clip, audience_clip, bad_files):
    from fastapi.testclient import TestClient

    from web.app import create_app
    from web.settings import Settings

    data = clip.read_bytes()
    # Photos keep their 1 MB limit while the same endpoint takes a 2 MB video.
    client = TestClient(create_app(rec, Settings(max_upload_bytes=2**20, max_video_bytes=2 * 2**20)), base_url="http://localhost")
    with deadline(300):
        res = client.post("/identify", files={"file": ("audience.mp4", audience_clip.read_bytes(), "video/mp4")})
    assert res.status_code == 200, res.text
    body = res.json()
    assert body["video"] == "audience.mp4" and body["frames_decoded"] == 59 and body["frames_sampled"] == 10
    assert sorted(t["name"] or "" for t in body["tracks"]) == ["", "", "", OBAMA]
    res = client.post("/identify", params={"fps": 1, "annotate": 1}, files={"file": ("audience.mp4", audience_clip.read_bytes())})
    assert res.status_code == 200 and res.headers["content-type"] == "image/jpeg" and res.content[:3] == b"\xff\xd8\xff"
    bad = client.post("/identify", files={"file": ("cut.mp4", bad_files["truncated.mp4"].read_bytes())})
    assert bad.status_code == 400 and bad.json()["error"].startswith("cut.mp4: cannot be opened as a video")
    assert "upload.video" not in bad.text  # the server's temporary file is not the client's business
    big_photo = client.post("/identify", files={"file": ("big.jpg", b"\xff\xd8\xff" + bytes(2**20))})
    assert big_photo.status_code == 413 and "upload limit" in big_photo.json()["error"]

    # The body is cut off while it is read, at the video limit once its first bytes say video...
    small = TestClient(create_app(rec, Settings(max_upload_bytes=700_000, max_video_bytes=300_000)), base_url="http://localhost")

    def streamed(payload: bytes, name: str):  # chunked, no Content-Length: only the running count can stop it
        yield f'--b\r\nContent-Disposition: form-data; name="file"; filename="{name}"\r\n\r\n'.encode()
        for i in range(0, len(payload), 65536):
            yield payload[i : i + 65536]
        yield b"\r\n--b--\r\n"

    headers = {"Content-Type": "multipart/form-data; boundary=b"}
    res = small.post("/identify", content=streamed(data, "hamilton.mp4"), headers=headers)
    assert res.status_code == 413 and "video upload limit of 300000 bytes" in res.json()["error"]
    # ...and at the photo limit for anything else, however large the video limit.
    res = client.post("/identify", content=streamed(b"\xff\xd8\xff" + bytes(3 * 2**20), "big.jpg"), headers=headers)
    assert res.status_code == 413 and "request body is over the upload limit of 1048576 bytes" in res.json()["error"]
    short = TestClient(create_app(rec, Settings(max_video_seconds=5)), base_url="http://localhost")
    res = short.post("/identify", files={"file": ("hamilton.mp4", data)})
    assert res.status_code == 413 and "lasts 9.2 s" in res.json()["error"]


def test_photo_whose_candidates_all_fail_the_last_stage_has_no_faces(clip, detector):
    """Frame 24 of the clip, blurred: the first two stages keep candidates and the last rejects
    them all, which once raised IndexError from the final non-maximum suppression."""
    import cv2
    from PIL import Image

    cap = cv2.VideoCapture(str(clip))
    cap.set(cv2.CAP_PROP_POS_FRAMES, 24)
    ok, frame = cap.read()
    cap.release()
    assert ok
    blurred = cv2.GaussianBlur(cv2.resize(frame, (320, 180)), (0, 0), 12)
    assert detector.detect(Image.fromarray(cv2.cvtColor(blurred, cv2.COLOR_BGR2RGB))) == []


def test_sparse_sampling_keeps_tracks_across_two_missed_samples():
    from recognizer.video.tracking import Tracker

    a = [1, 0, 0]
    t = Tracker(0.4, interval=1.0)  # one sample a second: the 1 s default gap alone would end every track
    for k in (0, 1, 2, 5):  # samples 3 and 4 miss the face (frame 10k is at k seconds)
        t.update(float(k), [_obs(10 * k, [10, 10, 50, 50], a)])
    t.update(9.0, [_obs(90, [10, 10, 50, 50], a)])  # three missed: a new track
    assert [len(x.faces) for x in t.finish()] == [4, 1]


def test_false_detections_join_no_track_and_are_counted(result):
    """Frame 90: Lin-Manuel Miranda and a 23-px blob over his label; the blob is under the quality floor,
    so it is in no track (nor drawn), and the summary counts it (issue 30)."""
    at90 = [f for t in result.tracks for f in t.faces if f.frame == 90]
    assert len(at90) == 1 and at90[0].box[2] - at90[0].box[0] > 60
    assert result.low_quality >= 1 and result.to_dict()["low_quality_faces"] == result.low_quality

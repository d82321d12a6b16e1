"""Video identification speed against real time, on the Hamilton clip, at the default sampling.

    .venv/bin/python benchmarks/video_speed.py [--repeats N] [--fps F] [--frame-out FILE]

In one run it prints the clip's own duration (the reference), then per repeat the wall-clock time
to identify it (decode, sample, detect, embed, decide, track, vote; models loaded before, as a
user's second video would find them), the CPU time of the process, frames decoded per second,
frames analysed per second and the real-time factor (clip seconds / wall seconds: above 1 is
faster than real time), and the CPU seconds per second of video, which do not depend on what else
runs (under the number of cores: real time is within reach of those cores). The load average is printed before and after: other processes on the
machine's cores slow everything down. With --frame-out, frame 240 of the annotated video
(Barack Obama among unknown guests) is saved there as a JPEG.

The model enrolls Lin-Manuel Miranda (lin-manuel-miranda.png), Alex Lacamoire (the two
independent photos) and Barack Obama (obama.jpg, obama2.jpg) with the sface backbone, in a
temporary directory.
"""
from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

from recognizer.cli._options import passive_openmp
from recognizer.sample_data import data_dir

CLIP = "video-hamilton/short_hamilton_clip.mp4"
PEOPLE = {
    "Lin-Manuel Miranda": ["lin-manuel-miranda.png"],
    "Alex Lacamoire": ["alex-lacamoire-2.jpg", "alex-lacamoire-3.jpg"],
    "Barack Obama": ["obama.jpg", "obama2.jpg"],
}


def load() -> str:
    return "load average %.2f %.2f %.2f" % os.getloadavg()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--fps", type=float, default=None, help="sampling rate (default: identify's default)")
    ap.add_argument("--frame-out", type=Path, default=None)
    args = ap.parse_args()
    passive_openmp()

    import recognizer
    from recognizer.video.reader import DEFAULT_SAMPLE_FPS, VideoReader

    fps = args.fps or DEFAULT_SAMPLE_FPS
    data = data_dir()
    clip = data / CLIP
    print(f"{os.cpu_count()} cores; {load()}")
    with VideoReader(clip) as r:
        info = r.info
    print(f"clip: {clip.name}, {info.width}x{info.height}, {info.fps:.2f} frames/s, {info.frame_count} frames, "
          f"duration {info.duration:.3f} s (the reference)")
    with tempfile.TemporaryDirectory() as tmp:
        rec = recognizer.create(Path(tmp) / "model", backbone="sface")
        for name, files in PEOPLE.items():
            rec.enroll(name, [data / "video-hamilton" / f for f in files])
        rec.identify(data / "video-hamilton" / "obama2.jpg")  # first calls allocate and pick kernels
        walls, cpus, results = [], [], []
        for i in range(args.repeats):
            cpu, t = time.process_time(), time.perf_counter()
            res = rec.identify_video(clip, fps=fps)
            wall, cpu = time.perf_counter() - t, time.process_time() - cpu
            walls.append(wall)
            cpus.append(cpu)
            results.append(res)
            print(f"run {i + 1}: {wall:.2f} s wall, {cpu:.2f} s CPU; {res.decoded / wall:.1f} frames decoded/s, "
                  f"{res.sampled / wall:.2f} frames analysed/s ({res.sampled} at {fps:g}/s); "
                  f"real-time factor {info.duration / wall:.2f}; {len(res.tracks)} tracks")
        med = statistics.median(walls)
        print(f"median: {med:.2f} s for {info.duration:.3f} s of video: real-time factor {info.duration / med:.2f}, "
              f"{info.frame_count / med:.1f} frames/s; {load()}")
        # What the work itself costs, whatever else runs: CPU seconds per second of video. Under
        # os.cpu_count() it fits in real time on this machine's cores once they are free.
        cpu = statistics.median(cpus)
        print(f"CPU: {cpu:.2f} s per run, {cpu / info.duration:.2f} CPU-s per video second "
              f"(real time needs under {os.cpu_count()} on {os.cpu_count()} free cores)")
        last = results[-1]
        for t in last.tracks:
            print(f"  track {t.id}: {t.name or 'unknown'}, frames {t.first.frame}-{t.last.frame}, {len(t.faces)} faces, "
                  f"score {t.score:.2f}, similarity {t.similarity:.3f}")
        if args.frame_out is not None:
            import cv2

            video = Path(tmp) / "annotated.mp4"
            last.write_annotated(video)
            cap = cv2.VideoCapture(str(video))
            cap.set(cv2.CAP_PROP_POS_FRAMES, 240)
            ok, frame = cap.read()
            cap.release()
            if not ok:
                raise SystemExit("could not read frame 240 of the annotated video back")
            args.frame_out.parent.mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(args.frame_out), frame, [cv2.IMWRITE_JPEG_QUALITY, 85])
            print(f"frame 240 of the annotated video: {args.frame_out} ({args.frame_out.stat().st_size} bytes)")
        rec.close()


if __name__ == "__main__":
    main()

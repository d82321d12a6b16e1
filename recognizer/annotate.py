"""Where `identify.py --annotate` writes annotated photos (drawn by recognizer.drawing) and the
videos' contact sheets or annotated video, and writing the photos; the rule itself (never an
input or inside an input folder, distinct names, only the tool's own files replaced) is
facecore.outputs'."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

from facecore.outputs import InputSet, check_output, check_output_dir, output_file, unique
from recognizer.results import PhotoIdentification
from recognizer.video.reader import is_video_input

__all__ = ["SHEET_SUFFIX", "annotation_paths", "save_annotated"]

SHEET_SUFFIX = ".tracks.jpg"  # a video's contact sheet: <video name>.tracks.jpg


def _mirrored_target(f: Path, inputs: list[Path], out: Path, taken: set[str], suffix: str) -> Path:
    """`f`'s output (`suffix`) below OUT, keeping its path below its input folder, apart from every name in `taken`."""
    root = next((p for p in inputs if p.is_dir() and (p == f or p in f.parents)), None)
    rel = f.relative_to(root) if root is not None else Path(f.name)
    if len(inputs) > 1 and root is not None:
        rel = Path(root.resolve().name or "root") / rel
    # x.jpg and x.png, X.jpg and x.jpg, two inputs of one name: apart, case-insensitively
    return unique(out / rel.parent / f"{rel.stem}{suffix}", taken, suffix)


def annotation_paths(inputs: list[Path], files: list[Path], out: Path,
                     videos: Sequence[Path] = ()) -> dict[str, Path]:
    """Where `identify.py --annotate OUT` writes each photo of `files` and each video of `videos` (expanded from
    `inputs`): OUT itself for one photo file (or one video file when OUT is a video's name: the annotated video),
    else below OUT as below their input folder (under its name when several inputs are given), a PNG per photo
    and a `<name>.tracks.jpg` contact sheet per video. Every output is distinct, never an input nor inside an input
    folder, and never an existing file that is not the tool's own: OutputError before anything is written."""
    everything = InputSet([*inputs, *files, *videos])
    single = len(inputs) == 1 and len(files) + len(videos) == 1 and not inputs[0].is_dir()
    as_file = single and (bool(files) or (not out.is_dir() and is_video_input(out)))
    if not as_file:
        check_output_dir(out, everything, what="annotation folder")
    targets: dict[str, Path] = {}
    taken: set[str] = set()
    for f, suffix in [*((v, SHEET_SUFFIX) for v in videos), *((p, ".png") for p in files)]:
        target = out if as_file else _mirrored_target(f, inputs, out, taken, suffix)
        targets[str(f)] = check_output(target, everything, what="annotation")
    return targets


def save_annotated(result: PhotoIdentification, target: Path) -> None:
    """Draw `result` on its photo and write it as a PNG to `target` (facecore.outputs: atomically, never
    over the photo or a file that is not the tool's own)."""
    img = result.annotated()
    with output_file(target, [result.photo], what="annotated photo") as tmp:
        img.save(tmp, format="PNG")

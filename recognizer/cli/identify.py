"""Name every face in photos and videos, or call it unknown.

    identify.py --model DIR PHOTO_VIDEO_OR_FOLDER... [--json] [--annotate OUT] [--threshold T] [--fps F]
    identify.py --model DIR --camera 0 [--seconds S] [--annotate DIR]
    identify.py --model DIR FOLDER_OR_LIST.txt... --ray [auto|ADDRESS] [--out RESULTS.jsonl] [--json]   (photos only)
"""
from __future__ import annotations

import json
import tempfile
from pathlib import Path

import click

import recognizer
from facecore.outputs import check_output, check_output_dir
from recognizer import bulk
from recognizer.cli._options import (friendly_errors, gallery_option, model_option, no_cache_option, ray_option,
                                     ray_out_option, ray_workers_option, start, verbose_option, weights_dir_option)
from recognizer.cli._video import identify_one_video, quiet_decoders, wants_video_file

__all__ = ["main", "report"]


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@model_option
@click.argument("inputs", nargs=-1, type=click.Path())
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object per photo or video (a JSON list).")
@click.option("--annotate", "annotate_out", type=click.Path(),
              help="Write annotated photos: a file for one photo, a folder for several (mirroring the input folders). "
                   "Never an input. For one video, OUT.mp4 writes the video with named boxes; a folder gets a contact "
                   "sheet of each video's tracks.")
@click.option("--threshold", type=float, help="Similarity under which a face is unknown (default: the model's).")
@click.option("--fps", "sample_fps", type=float, default=None, show_default=False,
              help="Frames per second of video to analyse (default 5).")
@click.option("--camera", type=int, default=None, help="Identify faces from camera N (0: the first) until Ctrl-C or --seconds.")
@click.option("--seconds", type=float, default=None, help="Read at most this many seconds of each video or of the camera.")
@weights_dir_option
@no_cache_option
@gallery_option
@ray_option
@ray_out_option
@ray_workers_option
@verbose_option
@friendly_errors
def main(model_dir, inputs, as_json, annotate_out, threshold, sample_fps, camera, seconds, weights_dir, no_cache, gallery,
         ray_address, out_path, workers, verbose):
    """Identify the faces in each PHOTO or VIDEO (folders are expanded to their images and videos;
    a file is taken for a video by its content, not its name). In a video each face is followed
    through the frames and the whole track gets one name."""
    start(verbose)
    if threshold is not None and not -1.0 <= threshold <= 1.0:
        raise click.BadParameter(f"{threshold} is not a cosine similarity in [-1, 1]", param_hint="--threshold")
    open_model = dict(weights_dir=weights_dir, cache=not no_cache, gallery=gallery)
    if ray_address is not None:
        if annotate_out or camera is not None or sample_fps is not None or seconds is not None:
            raise click.UsageError("--ray identifies photos: --annotate, --camera, --fps and --seconds do not combine with it")
        if not inputs:
            raise click.UsageError("give folders, photos or list files of photo paths to identify with --ray")
        results = _identify_on_ray(model_dir, open_model, inputs, out_path, ray_address, workers, threshold,
                                   progress=not as_json)
        report(results, as_json)
        return
    _check_local(inputs, out_path, workers, sample_fps, seconds, camera)
    video = dict(sample_fps=sample_fps, threshold=threshold, seconds=seconds, verbose=verbose)
    annotate = Path(annotate_out) if annotate_out else None
    if camera is not None:
        results = _identify_camera(model_dir, open_model, camera, annotate, video, as_json)
    else:
        results = _identify_files(model_dir, open_model, inputs, annotate, video, as_json)
    report(results, as_json, printed=True)


def _check_local(inputs, out_path, workers, sample_fps, seconds, camera) -> None:
    """The usage rules of a run without Ray."""
    if out_path or workers:
        raise click.UsageError("--out and --workers go with --ray")
    if sample_fps is not None and not 0 < sample_fps <= 1000:
        raise click.BadParameter(f"{sample_fps} is not a number of frames per second in (0, 1000]", param_hint="--fps")
    if seconds is not None and not seconds > 0:
        raise click.BadParameter(f"{seconds} is not a positive number of seconds", param_hint="--seconds")
    if not inputs and camera is None:
        raise click.UsageError("give photos, videos or folders, or --camera N")
    if inputs and camera is not None:
        raise click.UsageError("--camera reads the camera alone; give files in another run")


def _identify_camera(model_dir, open_model: dict, camera: int, annotate: Path | None, video: dict, as_json: bool) -> list[dict]:
    """Camera N until Ctrl-C or --seconds: one result, its tracks (a contact sheet with --annotate)."""
    targets = {}
    if annotate is not None:
        if wants_video_file(annotate):
            raise click.BadParameter("a camera's frames are not kept for an annotated video; give a folder for a "
                                     "contact sheet", param_hint="--annotate")
        sheet = check_output_dir(annotate, []) / f"camera {camera}.tracks.jpg"
        targets[camera] = check_output(sheet, [], what="contact sheet")
    with recognizer.open(model_dir, **open_model) as rec:
        return _identify_videos(rec, [camera], targets, video, as_json)


def _identify_files(model_dir, open_model: dict, inputs, annotate: Path | None, video: dict, as_json: bool) -> list[dict]:
    """Photos, videos and folders of them: each video's tracks, then each photo's faces."""
    files, videos, photos = _sort_inputs(inputs)
    if not files:
        raise click.ClickException(f"no image or video files found in {', '.join(inputs)}")
    if annotate is not None and len(files) > 1 and wants_video_file(annotate):
        raise click.BadParameter(f"{annotate}: several inputs are annotated into a folder, not one video file", param_hint="--annotate")
    # every output checked before anything is read or written (facecore.outputs)
    targets = recognizer.annotation_paths([Path(p) for p in inputs], photos, annotate, videos) if annotate else {}
    with recognizer.open(model_dir, **open_model) as rec:
        results = _identify_videos(rec, videos, targets, video, as_json) if videos else []
        return results + _identify_photos(rec, photos, targets, video["threshold"], as_json)


def _sort_inputs(inputs) -> tuple[list, list, list]:
    """Every file the inputs name (folders expanded, their videos too), its videos and its photos."""
    files = recognizer.expand_inputs(list(inputs), recursive=True)
    listed = set(files)
    for p in map(Path, inputs):
        if p.is_dir():  # folders: their videos too, by content or name
            files.extend(sorted(f for f in p.rglob("*") if f.is_file() and f not in listed and recognizer.is_video_input(f)))
    videos = [f for f in files if recognizer.is_video_input(f)]
    photos = [f for f in files if f not in set(videos)]
    return files, videos, photos


def _identify_videos(rec, sources: list, targets: dict, video: dict, as_json: bool) -> list[dict]:
    """Each video (or camera number) tracked and named, drawn where `targets` says; printed unless `as_json`."""
    quiet_decoders(video["verbose"])
    return [identify_one_video(rec, source, sample_fps=video["sample_fps"], threshold=video["threshold"],
                               seconds=video["seconds"], target=targets.get(source if isinstance(source, int) else str(source)),
                               as_json=as_json) for source in sources]


def _identify_photos(rec, photos: list, targets: dict, threshold, as_json: bool) -> list[dict]:
    """Each photo's faces named (an annotated copy where `targets` says); printed unless `as_json`."""
    results = []
    for res in rec.identify_many(photos, threshold=threshold, progress=not as_json and len(photos) > 1):
        results.append(res.to_dict())
        if targets and res.error is None:
            recognizer.save_annotated(res, targets[res.photo])
        if not as_json:
            _print_photo(res.to_dict())
    return results


def _print_photo(res: dict) -> None:
    if "error" in res:
        click.echo(f"{res['photo']}: error: {res['error']}")
        return
    names = [f["name"] or ("unknown (low quality)" if f.get("unknown") == "low quality" else "unknown") for f in res["faces"]]
    click.echo(f"{res['photo']}: {len(res['faces'])} face(s): {', '.join(names) if names else '-'}")


def _identify_on_ray(model_dir, open_model: dict, inputs, out_path, address, workers, threshold, progress) -> list[dict]:
    """Results (dicts) of a Ray bulk run, read back from its JSON Lines file (a temporary one
    without --out)."""
    with tempfile.TemporaryDirectory(prefix="facetool-ray-") as tmp, recognizer.open(model_dir, **open_model) as rec:
        out = Path(out_path) if out_path else Path(tmp) / "results.jsonl"
        summary = bulk.identify_bulk(rec, list(inputs), out, address=address, workers=workers, threshold=threshold,
                                     progress=progress)
        if summary.done_before:
            click.echo(f"{out}: {summary.done_before} photo(s) were already done; analysed {summary.processed}",
                       err=True)
        return bulk.read_results(out)


def report(results: list[dict], as_json: bool, printed: bool = False) -> None:
    """Print results (as JSON, or a line per photo unless `printed` already); exit 1 when every one failed."""
    if as_json:
        click.echo(json.dumps(results, indent=2))
    elif not printed:
        for res in results:
            _print_photo(res)
    if all("error" in r for r in results):
        raise SystemExit(1)

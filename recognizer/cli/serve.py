"""Serve a model over HTTP: a web page at /, a JSON API, OpenAPI docs at /docs.

    serve.py --model DIR [--host 127.0.0.1] [--port 8000] [--token T] [--protect-reads]

Changes (enroll, remove, rename) need `Authorization: Bearer T`; without a token they are refused.
"""
from __future__ import annotations

import click

import recognizer
from recognizer.cli._options import (friendly_errors, gallery_option, model_option, start, verbose_option,
                                     weights_dir_option)

__all__ = ["main"]


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@model_option
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on (0.0.0.0 exposes it to the network).")
@click.option("--port", default=8000, show_default=True, type=click.IntRange(0, 65535), help="Port to listen on.")
@click.option("--token", envvar="FACETOOL_TOKEN", show_envvar=True, default=None,
              help="Bearer token that enroll/remove/rename requests must send. Prefer the environment variable: "
                   "a command-line argument is visible to other users in the process list.")
@click.option("--protect-reads", is_flag=True, help="Require the token for /identify and /people too.")
@click.option("--max-upload-mb", default=10.0, show_default=True, type=click.FloatRange(min=0, min_open=True), help="Largest request body (all files of one upload together).")
@click.option("--max-pixels", default=60_000_000, show_default=True, type=click.IntRange(min=1), help="Largest image, in pixels, that will be decoded.")
@click.option("--max-photo-mb", default=96.0, show_default=True, type=click.FloatRange(min=1),
              help="Memory one photo may take to decode; larger (or costlier: palettes, 16-bit) photos are refused.")
@click.option("--allowed-host", "allowed_hosts", multiple=True, metavar="NAME",
              help="A host name clients use to reach the server (repeatable). Besides it, only localhost, IP "
              "addresses and --host are answered: other names are how a web page would reach it by DNS rebinding.")
@click.option("--body-timeout", default=10.0, show_default=True, type=click.FloatRange(min=0.1),
              help="Seconds a client may pause while sending headers or a request body before it is cut off.")
@click.option("--max-video-mb", default=50.0, show_default=True, type=click.FloatRange(min=0, min_open=True), help="Largest video upload to /identify.")
@click.option("--max-video-seconds", default=60.0, show_default=True, type=click.FloatRange(min=0, min_open=True), help="Longest video /identify takes.")
@click.option("--model-workers", default=0, show_default=True, type=click.IntRange(min=0),
              help="Photos identified side by side (0: one per core).")
@weights_dir_option
@gallery_option
@verbose_option
@friendly_errors
def main(model_dir, host, port, token, protect_reads, max_upload_mb, max_pixels, max_photo_mb, allowed_hosts, body_timeout, max_video_mb, max_video_seconds,
         model_workers, weights_dir, gallery, verbose):
    """Serve the model in DIR: identify uploaded photos and manage enrolled people."""
    start(verbose)
    # The server's modules pull in FastAPI, Starlette and uvicorn (a third of a second): only serving
    # loads them, not `serve.py --help` (tests/test_architecture.py lists this as the one allowed lazy import of ours).
    import uvicorn

    from web.app import create_app
    from web.guard import GuardSettings, protocol_with
    from web.settings import Settings

    token = token or None
    if protect_reads and not token:
        raise click.UsageError("--protect-reads needs a token (--token or FACETOOL_TOKEN)")
    # No crop cache: it would keep detections and face crops of every uploaded photo on disk,
    # strangers' included.
    rec = recognizer.open(model_dir, weights_dir=weights_dir, cache=False, gallery=gallery)
    max_upload = int(max_upload_mb * 1024 * 1024)
    guard = GuardSettings(allowed_hosts=(host, *allowed_hosts), header_timeout=body_timeout, body_timeout=body_timeout,
                          max_upload_disk=max(GuardSettings.max_upload_disk, 4 * max_upload))
    settings = Settings(token=token, protect_reads=protect_reads, max_upload_bytes=max_upload, max_pixels=max_pixels,
                        max_photo_bytes=int(max_photo_mb * 1024 * 1024), guard=guard,
                        max_video_bytes=int(max_video_mb * 1024 * 1024), max_video_seconds=max_video_seconds,
                        model_workers=model_workers)
    app = create_app(rec, settings)
    click.echo(f"serving {model_dir} ({rec.config.backbone}, {len(rec.people())} people) on http://{host}:{port}/ ; "
               f"changes {'need the token' if token else 'are disabled (no token)'}"
               + ("; reads need the token" if protect_reads else ""), err=True)
    uvicorn.run(app, host=host, port=port, log_level="info" if verbose else "warning", access_log=bool(verbose),
                http=protocol_with(guard.header_timeout))


if __name__ == "__main__":
    main()

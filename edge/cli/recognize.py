"""Device commands: `shelfsight classify`, `shelfsight run`. No TensorFlow on these paths."""
from __future__ import annotations

import json
from pathlib import Path

import click

from .common import ImageArgs, open_recognizer, runtime_options, top_k_option
from .config import config_option
from .objects import build_objects, objects_options
from .sync import config_from_options, sync_options

ONE_SHOT_SOURCE_TIMEOUT_S = 10.0  # run --max-frames: how long a missing camera is waited for


@click.command()
@click.argument("bundle", type=click.Path())
@click.argument("images", nargs=-1, required=True)
@top_k_option(3)
@click.option("--json", "as_json", is_flag=True, help="One result record (JSON) per line and image.")
@runtime_options
def classify(bundle, images, top_k, as_json, runtime, threads, delegate):
    """Name the product in each image: files, folders (their images, recursively) or globs.

    Unreadable images are skipped and counted. --json writes the result schema that search
    and events share (shelfsight.result/1).
    """
    inputs = ImageArgs(images)
    with open_recognizer(bundle, runtime, threads, delegate, top_k) as rec:
        for path, frame in inputs:
            r = rec.classify(frame)
            if as_json:
                click.echo(json.dumps({"image": path, **r.to_dict()}))
            else:
                top = ", ".join(f"{p.label} {p.score:.3f}" for p in r.predictions)
                click.echo(f"{path}: {r.label or 'unknown'} ({top}) {r.latency_ms:.1f} ms")
    inputs.report()


@click.command(name="run")
@click.argument("bundle", type=click.Path())
@config_option
@click.option("--source", required=True,
              help="Camera index, video file, image folder or file, rtsp/http URL, GStreamer pipeline, picamera2.")
@click.option("--sink", "sinks", multiple=True, default=("stdout",), show_default=True,
              help="stdout, jsonl:PATH or an http(s):// hook URL; repeatable.")
@click.option("--loop", is_flag=True, help="Restart a file or folder at its end.")
@click.option("--roi", help="Region x,y,w,h in pixels, or fractions with a decimal point (0.25,0.25,0.5,0.5).")
@top_k_option(3)
@click.option("--search-k", type=click.IntRange(0, 100), default=3, show_default=True,
              help="Similar catalog items per event (0: no search).")
@click.option("--stable-frames", type=click.IntRange(1, 1000), default=3, show_default=True,
              help="Frames a product must be stable before it is reported.")
@click.option("--reset-frames", type=click.IntRange(1, 1000), default=5, show_default=True,
              help="Unknown/empty frames that end an appearance.")
@click.option("--min-sharpness", type=float, default=15.0, show_default=True, help="0 turns the blur check off.")
@click.option("--no-quality-gate", is_flag=True, help="Recognise every frame, however dark or blurred.")
@click.option("--jpeg-quality", type=click.IntRange(1, 100), default=None,
              help="Attach the frame as JPEG to each event (off by default: no picture leaves the device).")
@click.option("--metrics-port", type=click.IntRange(1, 65535), default=None, help="Serve Prometheus metrics.")
@click.option("--metrics-host", default="127.0.0.1", show_default=True,
              help="Address the metrics server binds (0.0.0.0: every interface, for a scraper elsewhere).")
@click.option("--max-frames", type=click.IntRange(1), default=None)
@click.option("--source-timeout", type=click.FloatRange(0, min_open=True), default=None,
              help="Give up (exit 3) when a camera or stream gives no frame for this many seconds "
                   f"[default: {ONE_SHOT_SOURCE_TIMEOUT_S:g} with --max-frames, else retry until stopped].")
@click.option("--every-frame/--latest-frame", "every_frame", default=None,
              help="Process every frame, or only the newest (default: newest for cameras, every for files).")
@click.option("--summary", type=click.Path(), help="Write the run summary as JSON here.")
@click.option("--show", is_flag=True, help="Preview window with the annotated frame.")
@objects_options
@runtime_options
@sync_options
def run_command(bundle, source, sinks, loop, roi, top_k, search_k, stable_frames, reset_frames, min_sharpness,
                no_quality_gate, jpeg_quality, metrics_port, metrics_host, max_frames, source_timeout, every_frame,
                summary, show, objects, count_line, scene, runtime, threads, delegate, **sync):
    """Recognise products from a camera, stream, video or folder until it ends or SIGTERM.

    With --objects, every product in view is proposed, named, tracked and reported once
    when confirmed and once when it leaves (see `shelfsight calibrate` for --scene).

    With --outbox, events also go to a durable outbox sent to --endpoint; with
    --bundle-store, BUNDLE is installed there once and updates from the server are
    verified, health-checked and swapped in without a restart.

    A camera or stream that is not there is retried with backoff (one warning, then the
    attempts are counted: summary "reopens", metric source_reopens_total); a one-shot run
    (--max-frames, or --source-timeout) gives up instead, exit code 3.
    """
    from ..device import Device, DeviceOptions
    from ..pipeline.quality import QualityOptions, Roi
    from ..pipeline.runner import RunOptions
    from ..runtime.options import RecognizerOptions
    from ..runtime.smoothing import SmoothingOptions

    options = DeviceOptions(
        recognizer=RecognizerOptions(bundle, runtime=runtime, threads=threads, delegates=tuple(delegate),
                                     top_k=top_k, search_k=search_k),
        source=source, loop=loop, sinks=tuple(sinks), metrics_port=metrics_port,
        metrics_host=metrics_host,
        objects=build_objects(objects, count_line, scene, runtime, threads),
        run=RunOptions(
            roi=Roi.parse(roi) if roi else None,
            quality=QualityOptions.off() if no_quality_gate else QualityOptions(min_sharpness=min_sharpness),
            smoothing=SmoothingOptions(stable_frames, reset_frames),
            drop_frames=None if every_frame is None else not every_frame,
            jpeg_quality=jpeg_quality, max_frames=max_frames, show=show,
            source_timeout_s=(source_timeout if source_timeout is not None or max_frames is None
                              else ONE_SHOT_SOURCE_TIMEOUT_S)),
        sync=(config_from_options(**sync) if sync["outbox"] is not None or sync["bundle_store"] is not None
              else None))
    result = Device(options).run()
    report = result.to_dict()
    if summary:
        Path(summary).write_text(json.dumps(report, indent=2) + "\n")
    p50 = report["latency_p50_ms"]
    click.echo(f"{report['frames']} frames, {report['events']} events, {report['fps']:.1f} fps, "
               f"p50 {'-' if p50 is None else f'{p50:.1f}'} ms, stopped by {report['stopped_by']}", err=True)


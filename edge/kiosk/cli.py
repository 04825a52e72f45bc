"""`shelfsight kiosk` (the self-checkout screen) and `shelfsight feedback export`."""
from __future__ import annotations

import json
import logging
import secrets
from pathlib import Path

import click

from ..cli.recognize import runtime_options
from ..cli.sync import config_from_options, sync_options

log = logging.getLogger(__name__)


@click.command()
@click.argument("bundle", type=click.Path())
@click.option("--source", required=True,
              help="Camera index, video file, image folder or file, rtsp/http URL, GStreamer pipeline, picamera2.")
@click.option("--port", type=click.IntRange(0, 65535), default=8080, show_default=True)
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to serve on (the default: this device's own screen only).")
@click.option("--staff-token", envvar="SHELFSIGHT_STAFF_TOKEN",
              help="Secret of the staff page, at least 8 characters (default: $SHELFSIGHT_STAFF_TOKEN, "
                   "else a new one, printed once).")
@click.option("--store", "store_dir", type=click.Path(file_okay=False, path_type=Path), default=Path("kiosk-feedback"),
              show_default=True, help="Feedback store: confirmed photos the model got wrong, kept on the device.")
@click.option("--teach-after", type=click.IntRange(0, 1000), default=5, show_default=True,
              help="Confirmed photos of one product before the device enrols them (0: never).")
@click.option("--review", is_flag=True, help="Hold those photos for staff to approve instead of enrolling them.")
@click.option("--sync-photos", is_flag=True,
              help="Also send each photo kept from now on to the sync server (a kind=feedback event with the "
                   "JPEG, through --outbox; with --review once staff approved it). Off by default: kept photos "
                   "stay on the device.")
@click.option("--sink", "sinks", multiple=True, default=("stdout",), show_default=True,
              help="stdout, jsonl:PATH or an http(s):// hook URL; repeatable. Taps arrive as kind=confirmed.")
@click.option("--loop", is_flag=True, help="Restart a file or folder at its end.")
@click.option("--fps", "source_fps", type=click.FloatRange(0.1, 120), default=15.0, show_default=True,
              help="Rate a file or folder source is played at (a camera keeps its own).")
@click.option("--view-fps", type=click.IntRange(1, 30), default=15, show_default=True,
              help="Most live-view frames a second per screen.")
@click.option("--view-width", type=click.IntRange(64, 4096), default=320, show_default=True,
              help="Width of the live view in pixels (scaled down, never up); wider is sharper and costs the browser more CPU (480: ~11% of a core at 15 fps without a GPU, 320: ~7%).")
@click.option("--images", type=click.Path(file_okay=False, path_type=Path),
              help="Folder of catalog images (by the catalog's file names, or ITEM_ID.jpg).")
@click.option("--no-quality-gate", is_flag=True, help="Recognise every frame, however dark or blurred.")
@runtime_options
@sync_options
def kiosk(bundle, source, port, host, staff_token, store_dir, teach_after, review, sync_photos, sinks, loop, source_fps,
          view_fps, view_width, images, no_quality_gate, runtime, threads, delegate, **sync):
    """Serve the self-checkout screen: live view, the top-3 to tap, "none of these" with a catalog
    search, and taps that teach the device. Open http://HOST:PORT/ on the kiosk's browser;
    the staff page is /staff."""
    from ..pipeline.quality import QualityOptions
    from ..pipeline.runner import RunOptions
    from ..runtime.options import RecognizerOptions
    from .app import serve
    from .options import KioskOptions
    from .station import KioskStation

    if sync_photos and sync["outbox"] is None:
        raise click.UsageError("--sync-photos sends the kept photos through the sync outbox: give --outbox DB "
                               "and --endpoint URL")
    if not staff_token:
        staff_token = secrets.token_urlsafe(12)
        click.echo(f"staff page: http://{host}:{port}/staff?token={staff_token}", err=True)
    options = KioskOptions(store=store_dir, staff_token=staff_token, host=host, port=port, teach_after=teach_after,
                           review=review, view_fps=view_fps, view_width=view_width, source_fps=source_fps,
                           images=images, sync_photos=sync_photos)
    station = KioskStation(
        RecognizerOptions(bundle, runtime=runtime, threads=threads, delegates=tuple(delegate), top_k=5, search_k=5),
        source, options, loop=loop, sinks=sinks,
        sync=(config_from_options(**sync) if sync["outbox"] is not None or sync["bundle_store"] is not None
              else None),
        run_options=RunOptions(quality=QualityOptions.off()) if no_quality_gate else None)
    station.start()
    click.echo(f"kiosk on http://{host}:{port}/ ({source})", err=True)
    try:
        serve(station)
    finally:
        station.stop()
    click.echo(f"{station.confirmations.count} confirmed, {station.teacher.enrolments} enrolments", err=True)


@click.group()
def feedback():
    """The kiosk's feedback store: confirmed photos the model got wrong or was unsure of."""


@feedback.command(name="export")
@click.argument("store_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="A new (or empty) folder: manifest.csv and images/ITEM_ID/N.jpg.")
def export_command(store_dir, out):
    """Write the kept photos as a dataset (CSV manifest + images) for the next training round."""
    from .feedback import FeedbackStore

    with FeedbackStore.open_existing(store_dir) as store:
        report = store.export(out)
    click.echo(json.dumps(report))

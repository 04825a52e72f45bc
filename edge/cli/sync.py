"""`shelfsight sync`: upload the outbox and/or keep the device's bundle up to date.

`sync_options` is the click option set and `config_from_options` turns it into a
`SyncConfig`, so `shelfsight run` can offer the same options.
"""
from __future__ import annotations

import functools
import signal
import threading
from pathlib import Path

import click

from ..sync.outbox import DROP_POLICIES, OutboxOptions
from ..sync.service import SyncConfig, SyncService
from ..sync.heartbeat import HeartbeatOptions
from ..sync.http import TOKEN_ENV, HttpOptions, SyncError
from ..sync.updates import UpdateOptions
from ..sync.uploader import UploadOptions

_PATH = click.Path(path_type=Path)
_FILE = click.Path(dir_okay=False, path_type=Path)


def sync_options(command):
    """Add the sync options to a click command (they arrive as keyword arguments)."""
    options = [
        click.option("--endpoint", help="Base URL of the sync server, e.g. https://sync.example:8765."),
        click.option("--outbox", type=_FILE, help="Outbox database (SQLite) of events waiting to be sent."),
        click.option("--token-file", type=_FILE, help=f"File holding the bearer token (default: ${TOKEN_ENV})."),
        click.option("--token-env", default=TOKEN_ENV, show_default=True,
                     help="Environment variable holding the token when no file is given."),
        click.option("--ca-bundle", type=_FILE, help="PEM CA certificates to trust for the server."),
        click.option("--allow-http", is_flag=True, help="Allow plain http to non-loopback servers."),
        click.option("--device-id", default="", help="Name this device to the server."),
        click.option("--batch-size", type=int, default=500, show_default=True, help="Events per request."),
        click.option("--max-events", type=int, default=OutboxOptions.max_events, show_default=True,
                     help="Outbox bound: events held."),
        click.option("--max-bytes", type=int, default=OutboxOptions.max_bytes, show_default=True,
                     help="Outbox bound: bytes of event JSON held."),
        click.option("--max-age", type=float, default=OutboxOptions.max_age_s, show_default=True,
                     help="Outbox bound: drop events older than this many seconds."),
        click.option("--drop-policy", type=click.Choice(DROP_POLICIES), default="oldest", show_default=True,
                     help="What a full outbox drops."),
        click.option("--bundle-store", type=_PATH, help="Directory of bundle versions to keep up to date."),
        click.option("--manifest-url", help="Manifest to poll (default: ENDPOINT/v1/manifest)."),
        click.option("--public-key", type=_FILE, help="Ed25519 public key (PEM): install signed bundles only."),
        click.option("--poll-interval", type=float, default=300.0, show_default=True,
                     help="Seconds between update checks."),
        click.option("--heartbeat-interval", type=float, default=60.0, show_default=True,
                     help="Seconds between health reports to --endpoint (with --outbox; 0: none; not with --once)."),
    ]
    return functools.reduce(lambda cmd, option: option(cmd), reversed(options), command)


def config_from_options(endpoint, outbox, token_file, token_env, ca_bundle, allow_http, device_id, batch_size,
                        max_events, max_bytes, max_age, drop_policy, bundle_store, manifest_url, public_key,
                        poll_interval, heartbeat_interval=0.0) -> SyncConfig:
    """A SyncConfig from the `sync_options` values (raises ConfigError for bad ones)."""
    http = HttpOptions(token_file=token_file, token_env=token_env, ca_bundle=ca_bundle,
                       allow_http=allow_http, device_id=device_id)
    outbox_options = OutboxOptions(max_events=max_events, max_bytes=max_bytes, max_age_s=max_age,
                                   drop_policy=drop_policy)
    if endpoint is None and (outbox is not None or (bundle_store is not None and manifest_url is None)):
        raise click.UsageError("--endpoint is required to upload or to find the manifest")
    upload = (UploadOptions(endpoint=endpoint, http=http, batch_events=batch_size)
              if outbox is not None else None)
    updates = None
    if bundle_store is not None:
        updates = UpdateOptions(manifest_url=manifest_url or endpoint.rstrip("/") + "/v1/manifest", http=http,
                                public_key=public_key, interval_s=poll_interval)
    heartbeat = HeartbeatOptions(heartbeat_interval) if upload is not None and heartbeat_interval != 0 else None
    return SyncConfig(outbox=outbox, outbox_options=outbox_options, upload=upload,
                      store_dir=bundle_store, updates=updates, heartbeat=heartbeat)


@click.command("sync")
@sync_options
@click.option("--once", is_flag=True, help="Send what waits and check for an update once, then exit.")
@click.option("--timeout", type=float, default=60.0, show_default=True,
              help="With --once: give up sending after this many seconds.")
def sync(once: bool, timeout: float, **options) -> None:
    """Send queued events to the sync server and/or install bundle updates.

    Runs until interrupted (Ctrl-C or SIGTERM); events not yet acknowledged stay in
    the outbox for next time. With --once, events left unsent are an error (exit 2).
    """
    config = config_from_options(**options)
    service = SyncService(config)
    try:
        if once:
            _run_once(service, timeout)
        else:
            _run_until_signal(service)
    finally:
        service.stop()


def _run_once(service: SyncService, timeout: float) -> None:
    if service.updater is not None:
        result = service.check_updates_once()
        click.echo(f"bundle: {result.status} {result.bundle_id or ''} (running {result.running_id}) "
                   f"{result.reason}".rstrip())
    if service.uploader is not None:
        drained = service.uploader.drain(timeout)
        stats = service.outbox.stats()
        dropped = sum(stats.counters[k] for k in ("dropped_oldest", "refused", "expired"))
        click.echo(f"outbox: {service.uploader.stats.events_acked} sent, {stats.pending} waiting, dropped {dropped}")
        if not drained:
            raise SyncError(f"{stats.pending} events still waiting after {timeout:g} s; run sync again later")


def _run_until_signal(service: SyncService) -> None:
    stop = threading.Event()
    previous = signal.signal(signal.SIGTERM, lambda *_: stop.set())
    service.start()
    click.echo("sync running; Ctrl-C to stop", err=True)
    try:
        while not stop.wait(1.0):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)

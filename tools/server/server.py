"""The sync server (aiohttp): event intake, health reports, bundle offers and rollouts,
fleet status, metrics, fault injection; one process or several (``--workers``).

Endpoints (all but /healthz need ``Authorization: Bearer <token>``; who may call which is in `auth`)::

    GET  /healthz                 {"ok": true}
    POST /v1/events               {"events": [{"id": ...}, ...]} -> {"held": [...], "rejected": {...}}
                                  keyed by (device, event id), so resends are harmless; an id
                                  reused with other content is rejected, with the reason
    POST /v1/health               a device's heartbeat: bundle_id, fps, unknown_rate, errors, outbox_backlog
    GET  /v1/manifest             manifest.json bytes of the bundle offered to this device (ETag)
    GET  /v1/manifest.sig         its Ed25519 signature (file beside the bundle, or --signing-key)
    GET  /v1/bundles/NAME         a file of that bundle or its archive, with Range support
    GET  /v1/stats                {"events": distinct events held, "redeliveries": ..., "batches": ...}
    GET  /v1/admin/fleet          every device's last report and every rollout
    GET|POST /v1/admin/faults     read or set this worker's fault injection (only with --admin)
    GET  /metrics                 Prometheus exposition (admin token)

Devices use either their own token (`shelfsight fleet device add`), or, in the reference
setup, a token shared by all (``--token-file``) with X-Shelfsight-Device naming them.
With ``--bundle`` every device is offered that bundle (a directory, signature in
``DIR/manifest.json.sig``, or a .tar.gz, signature in ``ARCHIVE.sig``; read on each
request); without it each device gets its rollout's bundle (`shelfsight fleet rollout`).

Fault injection (tests and demos): a share of event batches answered 500, a share whose
connection is dropped without an answer, a share answered slowly; each randomly before
or after the batch is stored, so the device sees both "lost request" and "lost answer".
"""
from __future__ import annotations

import asyncio
import logging
import signal
import ssl
import threading
from pathlib import Path

import click
from aiohttp import web

from shelfsight.edge.sync.http import is_loopback
from shelfsight.errors import ConfigError

from .app import STATE, ServerState, make_app
from .config import Faults, ServerConfig, read_token_file

log = logging.getLogger(__name__)


def _ssl_context(config: ServerConfig) -> ssl.SSLContext | None:
    if config.tls_cert is None:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(config.tls_cert, config.tls_key)
    return context


async def _start(config: ServerConfig, reuse_port: bool = False) -> tuple[web.AppRunner, str]:
    app = make_app(config)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, config.host, config.port, ssl_context=_ssl_context(config), reuse_port=reuse_port)
    try:
        await site.start()
    except OSError as e:
        await runner.cleanup()
        raise ConfigError(f"cannot listen on {config.host}:{config.port}: {e.strerror or e}") from None
    port = runner.addresses[0][1]
    scheme = "https" if config.tls_cert else "http"
    return runner, f"{scheme}://{config.host}:{port}"


class SyncServer:
    """The server in a background thread, for tests: ``with SyncServer(config) as s: s.url``.

    ``state`` gives live access to faults and the offered bundle; ``stop()`` is idempotent.
    """

    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        self.url = ""
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None

    @property
    def state(self) -> ServerState:
        return self._runner.app[STATE]

    def start(self) -> "SyncServer":
        """Listen (once; a second call does nothing). Raises ConfigError if the port is taken."""
        if self._thread is not None:
            return self
        self._thread = threading.Thread(target=self._run, name="sync-server", daemon=True)
        self._thread.start()
        self._ready.wait(30)
        if self._error is not None:
            raise self._error
        return self

    def _run(self) -> None:
        self._loop = asyncio.new_event_loop()
        try:
            self._runner, self.url = self._loop.run_until_complete(_start(self.config))
        except BaseException as e:  # handed to the starting thread
            self._error = e
            self._ready.set()
            return
        self._ready.set()
        self._loop.run_forever()
        self._loop.run_until_complete(self._runner.cleanup())
        self._loop.close()

    def stop(self) -> None:
        if self._loop is not None and self._thread is not None and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(30)

    def __enter__(self) -> "SyncServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def serve(config: ServerConfig, reuse_port: bool = False, announce: bool = True) -> None:
    """Run one server process in the foreground until SIGINT or SIGTERM."""
    async def main() -> None:
        runner, url = await _start(config, reuse_port)
        if announce:
            click.echo(f"sync-server listening on {url} (data in {config.data_dir})", err=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        await runner.cleanup()
    asyncio.run(main())


@click.command("sync-server")
@click.option("--port", type=int, default=8765, show_default=True, help="TCP port (0 picks a free one).")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on (beyond loopback, plain http is warned about: use --tls-cert/--tls-key).")
@click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Directory for the SQLite database and the bundle store.")
@click.option("--database", envvar="SHELFSIGHT_FLEET_DB",
              help="postgresql://... or sqlite:///PATH (default: SQLite in --data-dir) [$SHELFSIGHT_FLEET_DB].")
@click.option("--workers", type=int, default=1, show_default=True,
              help="Server processes sharing the port (more than one needs PostgreSQL).")
@click.option("--pool-size", type=int, default=8, show_default=True, help="Database connections per worker.")
@click.option("--token-file", type=click.Path(dir_okay=False, path_type=Path),
              help="File whose first line is a token shared by all devices (without it: per-device tokens only).")
@click.option("--bundle", type=click.Path(path_type=Path),
              help="Bundle directory or .tar.gz offered to every device (without it: rollouts decide).")
@click.option("--bundle-store", envvar="SHELFSIGHT_BUNDLE_STORE",
              help="The fleet's bundles: a directory (default: DATA_DIR/bundles) or s3://BUCKET/PREFIX "
                   "(endpoint and credentials from $AWS_ENDPOINT_URL_S3, $AWS_ACCESS_KEY_ID, ...) "
                   "[$SHELFSIGHT_BUNDLE_STORE].")
@click.option("--signing-key", type=click.Path(dir_okay=False, path_type=Path),
              help="Ed25519 private key (PEM) to sign the offered manifest.")
@click.option("--tls-cert", type=click.Path(dir_okay=False, path_type=Path), help="Certificate chain (PEM) for https.")
@click.option("--tls-key", type=click.Path(dir_okay=False, path_type=Path), help="Private key (PEM) for https.")
@click.option("--admin", is_flag=True, help="Enable /v1/admin/faults to change fault injection live.")
@click.option("--fail-rate", type=float, default=0.0, help="Share of event batches answered 500.")
@click.option("--drop-rate", type=float, default=0.0, help="Share of event batches whose connection is dropped.")
@click.option("--slow-rate", type=float, default=0.0, help="Share of event batches answered slowly.")
@click.option("--slow-s", type=float, default=2.0, show_default=True, help="Delay of a slow answer.")
@click.option("--seed", type=int, help="Seed of the fault injection.")
def sync_server(port, host, data_dir, database, workers, pool_size, token_file, bundle, bundle_store, signing_key,
                tls_cert, tls_key, admin, fail_rate, drop_rate, slow_rate, slow_s, seed) -> None:
    """Run the sync server: stores device events, offers bundles, runs rollouts."""
    faults = Faults(error_rate=fail_rate, drop_rate=drop_rate, slow_rate=slow_rate, slow_s=slow_s)
    config = ServerConfig(data_dir=data_dir, token=read_token_file(token_file) if token_file else None,
                          database=database, workers=workers, pool_size=pool_size, host=host, port=port, bundle=bundle,
                          bundle_store=bundle_store, signing_key=signing_key, tls_cert=tls_cert, tls_key=tls_key,
                          admin=admin, seed=seed, faults=faults)
    warning = plain_http_warning(config)
    if warning:
        log.warning(warning)
    if workers > 1:
        from .workers import serve_workers
        serve_workers(config)
    else:
        serve(config)


def plain_http_warning(config: ServerConfig) -> str | None:
    """The one line to warn with when plain http listens beyond loopback, where bearer tokens
    travel in clear (None when it is https, or loopback only)."""
    if config.tls_cert is not None or is_loopback(config.host):
        return None
    return (f"plain http on {config.host}: device and admin tokens travel in clear; "
            "give --tls-cert and --tls-key, or put a TLS proxy in front and listen on 127.0.0.1")

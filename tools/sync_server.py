"""Reference sync server (aiohttp): event intake, bundle offers, fault injection.

Endpoints (all but /healthz need ``Authorization: Bearer <token>``)::

    GET  /healthz                 {"ok": true}
    POST /v1/events               {"events": [{"id": ...}, ...]} -> {"held": [...], "rejected": {...}}
                                  stored in SQLite keyed by event id, so resends are harmless
    GET  /v1/stats                {"events": distinct ids held, "redeliveries": ..., "batches": ...}
    GET  /v1/manifest             manifest.json bytes of the offered bundle (ETag, If-None-Match)
    GET  /v1/manifest.sig         its Ed25519 signature (file beside the bundle, or --signing-key)
    GET  /v1/bundles/NAME         a bundle file or the archive, with Range support
    GET|POST /v1/admin/faults     read or set fault injection (only with --admin)

The offered bundle is a directory (signature in ``DIR/manifest.json.sig``) or a .tar.gz
archive (signature in ``ARCHIVE.sig``); it is read on each request, so replacing it on
disk changes the offer.

Fault injection (tests and demos): a share of event batches answered 500, a share whose
connection is dropped without an answer, a share answered slowly; each randomly before
or after the batch is stored, so the device sees both "lost request" and "lost answer".
"""
from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import random
import signal
import sqlite3
import ssl
import threading
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import click
from aiohttp import web

from shelfsight.edge.sync.outbox import MAX_ID_CHARS
from shelfsight.edge.sync.signature import SIGNATURE_SUFFIX, load_private_key, sign
from shelfsight.edge.sync.updates import ARCHIVE_HEADER, ARCHIVE_SIZE_HEADER
from ..errors import BundleError, ConfigError
from .sync_keys import manifest_bytes, signature_path

log = logging.getLogger(__name__)

MAX_BATCH_EVENTS = 10_000
MAX_BODY_BYTES = 32 * 1024**2


@dataclass
class Faults:
    """Fault injection settings; mutable so a test or /v1/admin/faults can change them live.

    Attributes:
        error_rate: share of event batches answered HTTP 500.
        drop_rate: share of event batches whose connection is closed without an answer.
        slow_rate: share of event batches answered after ``slow_s`` seconds.
        truncate_downloads: the next N bundle file downloads stop halfway.
        truncate_name: only downloads of this file count ("" for any).
    """

    error_rate: float = 0.0
    drop_rate: float = 0.0
    slow_rate: float = 0.0
    slow_s: float = 0.0
    truncate_downloads: int = 0
    truncate_name: str = ""

    def __post_init__(self) -> None:
        self.check()

    def check(self) -> None:
        rates = (self.error_rate, self.drop_rate, self.slow_rate)
        if any(not 0.0 <= r <= 1.0 for r in rates) or sum(rates) > 1.0:
            raise ConfigError(f"fault rates must be in 0..1 and sum to <= 1, got error {self.error_rate}, "
                              f"drop {self.drop_rate}, slow {self.slow_rate}")
        if self.slow_s < 0 or self.truncate_downloads < 0:
            raise ConfigError(f"slow_s and truncate_downloads must be >= 0, got {self.slow_s}, "
                              f"{self.truncate_downloads}")

    def update(self, values: dict[str, Any]) -> None:
        names = {f.name for f in fields(self)}
        unknown = set(values) - names
        if unknown:
            raise ConfigError(f"unknown fault settings {sorted(unknown)}, expected some of {sorted(names)}")
        old = asdict(self)
        try:
            for name, value in values.items():
                kind = {"truncate_downloads": int, "truncate_name": str}.get(name, float)
                setattr(self, name, kind(value))
            self.check()
        except (TypeError, ValueError, ConfigError):
            for name, value in old.items():
                setattr(self, name, value)
            raise


@dataclass(frozen=True)
class ServerConfig:
    """How to run the reference server.

    Attributes:
        data_dir: where events.db lives (created if missing).
        token: the bearer token devices must send.
        bundle: bundle directory or .tar.gz to offer, or None.
        signing_key: Ed25519 private key (PEM) to sign the manifest on the fly; without
            it a signature file beside the bundle is served if present.
        tls_cert, tls_key: serve https with this certificate chain and key.
        admin: enable /v1/admin/faults.
        seed: random seed of fault injection (None: unseeded).
    """

    data_dir: Path
    token: str
    host: str = "127.0.0.1"
    port: int = 8765
    bundle: Path | None = None
    signing_key: Path | None = None
    tls_cert: Path | None = None
    tls_key: Path | None = None
    admin: bool = False
    seed: int | None = None
    faults: Faults = field(default_factory=Faults)

    def __post_init__(self) -> None:
        if not self.token:
            raise ConfigError("the server token is empty")
        if not 0 <= self.port <= 65535:
            raise ConfigError(f"port {self.port} is out of range 0..65535")
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ConfigError("https needs both a certificate and a key")
        if self.bundle is not None and not Path(self.bundle).exists():
            raise ConfigError(f"bundle {self.bundle} not found (expected a directory or .tar.gz)")


def read_token_file(path: str | Path) -> str:
    """First line of a token file. Raises ConfigError if missing or empty."""
    try:
        lines = Path(path).read_text(encoding="utf-8").strip().splitlines()
    except OSError as e:
        raise ConfigError(f"token file {path}: {e.strerror or e}") from None
    if not lines or not lines[0].strip():
        raise ConfigError(f"token file {path} is empty (expected the token on line 1)")
    return lines[0].strip()


# -- event store -----------------------------------------------------------------------------
class EventStore:
    """Events keyed by id in SQLite; storing an id twice keeps the first copy."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")
        self.db.executescript("""
            CREATE TABLE IF NOT EXISTS events (id TEXT PRIMARY KEY, body TEXT NOT NULL,
                                               device TEXT NOT NULL, received REAL NOT NULL);
            CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
        """)

    def store(self, events: list[tuple[str, str]], device: str) -> int:
        """Store (id, json) pairs; returns how many were new."""
        now = time.time()
        self.db.execute("BEGIN IMMEDIATE")
        try:
            before = self.db.total_changes
            self.db.executemany("INSERT OR IGNORE INTO events VALUES (?, ?, ?, ?)",
                                [(i, body, device, now) for i, body in events])
            new = self.db.total_changes - before
            for name, n in (("batches", 1), ("received", len(events)), ("redeliveries", len(events) - new)):
                self.db.execute("INSERT INTO counters VALUES (?, ?) ON CONFLICT(name) "
                                "DO UPDATE SET value = value + excluded.value", (name, n))
            self.db.execute("COMMIT")
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        return new

    def stats(self) -> dict[str, int]:
        stats = {"events": self.db.execute("SELECT COUNT(*) FROM events").fetchone()[0],
                 "devices": self.db.execute("SELECT COUNT(DISTINCT device) FROM events").fetchone()[0],
                 "batches": 0, "received": 0, "redeliveries": 0}
        stats.update(self.db.execute("SELECT name, value FROM counters").fetchall())
        return stats

    def close(self) -> None:
        self.db.close()


def parse_batch(body: bytes) -> tuple[list[tuple[str, str]], dict[str, str]]:
    """(valid (id, json) pairs, rejected id -> reason) of a POST /v1/events body.

    Raises:
        web.HTTPBadRequest: not JSON, no "events" list, too many events, or an event
            without a string id (it could not be reported back).
    """
    try:
        payload = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise _bad_request("body is not JSON") from None
    events = payload.get("events") if isinstance(payload, dict) else None
    if not isinstance(events, list):
        raise _bad_request('expected {"events": [...]}')
    if len(events) > MAX_BATCH_EVENTS:
        raise _bad_request(f"{len(events)} events in one batch, limit {MAX_BATCH_EVENTS}")
    valid, rejected = [], {}
    for n, event in enumerate(events):
        event_id = event.get("id") if isinstance(event, dict) else None
        if not isinstance(event_id, str):
            raise _bad_request(f"event {n} has no string id")
        if not 0 < len(event_id) <= MAX_ID_CHARS:
            rejected[event_id] = f"id must be 1..{MAX_ID_CHARS} characters"
            continue
        valid.append((event_id, json.dumps(event, separators=(",", ":"), ensure_ascii=False)))
    return valid, rejected


def _bad_request(reason: str) -> web.HTTPBadRequest:
    return web.HTTPBadRequest(text=json.dumps({"error": reason}), content_type="application/json")


# -- bundle offer ----------------------------------------------------------------------------
@dataclass(frozen=True)
class Offer:
    manifest: bytes
    signature: bytes | None
    archive: Path | None
    root: Path | None

    @property
    def etag(self) -> str:
        return '"' + hashlib.sha256(self.manifest).hexdigest()[:32] + '"'


def read_offer(bundle: Path, signing_key=None) -> Offer:
    """The manifest bytes and signature of a bundle directory or .tar.gz."""
    manifest = manifest_bytes(bundle)
    if signing_key is not None:
        signature = sign(manifest, signing_key)
    else:
        sig_file = signature_path(bundle)
        signature = sig_file.read_bytes() if sig_file.is_file() else None
    if bundle.is_dir():
        return Offer(manifest, signature, archive=None, root=bundle)
    return Offer(manifest, signature, archive=bundle, root=None)


# -- the application -------------------------------------------------------------------------
STATE = web.AppKey("state", object)


class ServerState:
    """What handlers share: config, live faults, the event store, the bundle to offer."""

    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        self.faults = config.faults
        self.bundle = Path(config.bundle) if config.bundle else None
        self.signing_key = load_private_key(config.signing_key) if config.signing_key else None
        self.store = EventStore(Path(config.data_dir) / "events.db")
        self.rng = random.Random(config.seed)
        self.range_requests = 0

    def offer(self) -> Offer:
        if self.bundle is None:
            raise web.HTTPNotFound(text="no bundle offered")
        try:
            return read_offer(self.bundle, self.signing_key)
        except (OSError, BundleError) as e:
            log.error("cannot offer bundle %s: %s", self.bundle, e)
            raise web.HTTPServiceUnavailable(text="bundle unreadable") from None


@web.middleware
async def auth_middleware(request: web.Request, handler):
    if request.path != "/healthz":
        state: ServerState = request.app[STATE]
        expected = f"Bearer {state.config.token}".encode()
        given = request.headers.get("Authorization", "").encode()
        if not hmac.compare_digest(given, expected):
            raise web.HTTPUnauthorized(text="missing or wrong bearer token")
    return await handler(request)


async def health(request: web.Request) -> web.Response:
    return web.json_response({"ok": True})


async def post_events(request: web.Request) -> web.Response:
    state: ServerState = request.app[STATE]
    valid, rejected = parse_batch(await request.read())
    faults, rng = state.faults, state.rng
    roll, after_store = rng.random(), rng.random() < 0.5
    fault = ("error" if roll < faults.error_rate else
             "drop" if roll < faults.error_rate + faults.drop_rate else
             "slow" if roll < faults.error_rate + faults.drop_rate + faults.slow_rate else None)
    if fault and not after_store:
        await _inject(request, fault, faults.slow_s)
    state.store.store(valid, request.headers.get("X-Shelfsight-Device", ""))
    if fault and after_store:
        await _inject(request, fault, faults.slow_s)
    return web.json_response({"held": [i for i, _ in valid], "rejected": rejected})


async def _inject(request: web.Request, fault: str, slow_s: float) -> None:
    if fault == "error":
        raise web.HTTPInternalServerError(text="injected fault")
    if fault == "drop":
        request.transport.abort()
        raise web.HTTPInternalServerError(text="connection dropped")  # never reaches the client
    await asyncio.sleep(slow_s)


async def get_stats(request: web.Request) -> web.Response:
    state: ServerState = request.app[STATE]
    return web.json_response(dict(state.store.stats(), range_requests=state.range_requests))


async def get_manifest(request: web.Request) -> web.Response:
    offer = request.app[STATE].offer()
    headers = {"ETag": offer.etag, "Cache-Control": "no-cache"}
    if offer.archive is not None:
        headers[ARCHIVE_HEADER] = offer.archive.name
        headers[ARCHIVE_SIZE_HEADER] = str(offer.archive.stat().st_size)
    if request.headers.get("If-None-Match") == offer.etag:
        return web.Response(status=304, headers=headers)
    return web.Response(body=offer.manifest, content_type="application/json", headers=headers)


async def get_signature(request: web.Request) -> web.Response:
    offer = request.app[STATE].offer()
    if offer.signature is None:
        raise web.HTTPNotFound(text="the offered manifest is not signed")
    return web.Response(body=offer.signature, content_type="text/plain")


async def get_bundle_file(request: web.Request) -> web.StreamResponse:
    state: ServerState = request.app[STATE]
    offer = state.offer()
    name = request.match_info["name"]
    if offer.archive is not None:
        path = offer.archive if name == offer.archive.name else None
    else:
        listed = json.loads(offer.manifest).get("files", {})
        path = offer.root / name if name in listed and "/" not in name else None
    if path is None or not path.is_file():
        raise web.HTTPNotFound(text=f"no bundle file {name!r}")
    if request.http_range.start:
        state.range_requests += 1
    if state.faults.truncate_downloads > 0 and state.faults.truncate_name in ("", name):
        state.faults.truncate_downloads -= 1
        return await _truncated(request, path)
    return web.FileResponse(path)


async def _truncated(request: web.Request, path: Path) -> web.StreamResponse:
    """Announce the whole (requested range of the) file, send half of it, then close the
    connection: what a device sees when the network goes away mid-download."""
    data = path.read_bytes()
    start = request.http_range.start or 0
    headers = {"Content-Length": str(len(data) - start), "Content-Type": "application/octet-stream"}
    if start:
        headers["Content-Range"] = f"bytes {start}-{len(data) - 1}/{len(data)}"
    response = web.StreamResponse(status=206 if start else 200, headers=headers)
    await response.prepare(request)
    await response.write(data[start:start + (len(data) - start) // 2])
    request.transport.close()
    return response


async def admin_faults(request: web.Request) -> web.Response:
    state: ServerState = request.app[STATE]
    if not state.config.admin:
        raise web.HTTPNotFound(text="admin endpoints are off (start with --admin)")
    if request.method == "POST":
        try:
            state.faults.update(await request.json())
        except (ConfigError, ValueError, TypeError, AttributeError) as e:
            raise _bad_request(str(e)) from None
    return web.json_response(asdict(state.faults))


def make_app(config: ServerConfig) -> web.Application:
    app = web.Application(middlewares=[auth_middleware], client_max_size=MAX_BODY_BYTES)
    state = ServerState(config)
    app[STATE] = state
    app.router.add_get("/healthz", health)
    app.router.add_post("/v1/events", post_events)
    app.router.add_get("/v1/stats", get_stats)
    app.router.add_get("/v1/manifest", get_manifest)
    app.router.add_get("/v1/manifest" + SIGNATURE_SUFFIX, get_signature)
    app.router.add_get("/v1/bundles/{name}", get_bundle_file)
    app.router.add_route("*", "/v1/admin/faults", admin_faults)

    async def close_store(app: web.Application) -> None:
        state.store.close()
    app.on_cleanup.append(close_store)
    return app


def _ssl_context(config: ServerConfig) -> ssl.SSLContext | None:
    if config.tls_cert is None:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(config.tls_cert, config.tls_key)
    return context


async def _start(config: ServerConfig) -> tuple[web.AppRunner, str]:
    app = make_app(config)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, config.host, config.port, ssl_context=_ssl_context(config))
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


def serve(config: ServerConfig) -> None:
    """Run in the foreground until SIGINT or SIGTERM."""
    async def main() -> None:
        runner, url = await _start(config)
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
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Directory for the event database.")
@click.option("--token-file", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="File whose first line is the bearer token devices must send.")
@click.option("--bundle", type=click.Path(path_type=Path), help="Bundle directory or .tar.gz to offer.")
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
def sync_server(port, host, data_dir, token_file, bundle, signing_key, tls_cert, tls_key, admin,
                fail_rate, drop_rate, slow_rate, slow_s, seed) -> None:
    """Run the reference sync server: stores device events, offers a bundle."""
    faults = Faults(error_rate=fail_rate, drop_rate=drop_rate, slow_rate=slow_rate, slow_s=slow_s)
    config = ServerConfig(data_dir=data_dir, token=read_token_file(token_file), host=host, port=port,
                          bundle=bundle, signing_key=signing_key, tls_cert=tls_cert, tls_key=tls_key,
                          admin=admin, seed=seed, faults=faults)
    serve(config)

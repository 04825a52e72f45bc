"""The aiohttp application: event intake, health reports, the bundle offer of each device,
admin routes, metrics and fault injection. Access rules are in `auth`.

A worker keeps nothing in memory that another worker needs: devices, tokens, events and
rollouts are in the database, bundles in the bundle store. Only fault injection (a test
feature) is per worker, and says so.
"""
from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from aiohttp import web

from shelfsight.bundle import bundle_files
from shelfsight.edge.sync.signature import SIGNATURE_SUFFIX, load_private_key, sign
from shelfsight.edge.sync.updates import ARCHIVE_HEADER, ARCHIVE_SIZE_HEADER
from shelfsight.errors import BundleError, ConfigError

from .auth import PRINCIPAL, make_middleware
from .bundles import open_bundle_store
from .config import ServerConfig
from .fleet import Fleet
from .keys import manifest_bytes, signature_path
from .metrics import ServerMetrics
from .rollouts import parse_health, status_row
from .storage import open_storage
from .store import bad_request, parse_batch

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 32 * 1024**2
WORKER_HEADER = "X-Shelfsight-Worker"


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
    """What handlers share: config, this worker's faults, storage, the fleet, the bundle offer."""

    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        self.faults = config.faults
        self.bundle = Path(config.bundle) if config.bundle else None  # one bundle for every device
        self.signing_key = load_private_key(config.signing_key) if config.signing_key else None
        self.store = open_storage(config.database_url, config.pool_size)
        self.fleet = Fleet(self.store, open_bundle_store(config.bundle_location, config.bundle_cache))
        self.metrics = ServerMetrics()
        self.rng = random.Random(config.seed)
        self.range_requests = 0

    async def offer(self, request: web.Request) -> Offer:
        device = request[PRINCIPAL].device or ""
        try:
            bundle = self.bundle or await asyncio.to_thread(self.fleet.offer_for, device)
            if bundle is None:
                raise web.HTTPNotFound(text="no bundle offered")
            return read_offer(bundle, self.signing_key)
        except (OSError, BundleError) as e:
            log.error("cannot offer a bundle to %r: %s", device, e)
            raise web.HTTPServiceUnavailable(text="bundle unreadable") from None


@web.middleware
async def count_middleware(request: web.Request, handler):
    state: ServerState = request.app[STATE]
    route = request.match_info.route.resource.canonical if request.match_info.route.resource else "unmatched"
    status = 500
    try:
        response = await handler(request)
        status = response.status
        response.headers[WORKER_HEADER] = str(os.getpid())
        return response
    except web.HTTPException as e:
        status = e.status
        e.headers[WORKER_HEADER] = str(os.getpid())
        raise
    finally:
        state.metrics.requests.labels(route, str(status)).inc()


async def health(request: web.Request) -> web.Response:
    return web.json_response({"ok": True})


async def post_events(request: web.Request) -> web.Response:
    state: ServerState = request.app[STATE]
    t0 = time.perf_counter()
    try:
        body = await request.read()
    except ConnectionResetError:  # the device went away mid-request (it resends the batch)
        raise web.HTTPBadRequest(text="connection lost while reading the batch") from None
    valid, rejected = parse_batch(body)
    faults, rng = state.faults, state.rng
    roll, after_store = rng.random(), rng.random() < 0.5
    fault = ("error" if roll < faults.error_rate else
             "drop" if roll < faults.error_rate + faults.drop_rate else
             "slow" if roll < faults.error_rate + faults.drop_rate + faults.slow_rate else None)
    if fault and not after_store:
        await _inject(request, fault, faults.slow_s)
    held, conflicts = await asyncio.to_thread(state.fleet.ingest, request[PRINCIPAL].device or "", valid)
    state.metrics.events.labels("held").inc(len(held))
    state.metrics.events.labels("rejected").inc(len(rejected) + len(conflicts))
    state.metrics.batch_seconds.observe(time.perf_counter() - t0)
    if fault and after_store:
        await _inject(request, fault, faults.slow_s)
    return web.json_response({"held": held, "rejected": dict(rejected, **conflicts)})


async def _inject(request: web.Request, fault: str, slow_s: float) -> None:
    if fault == "error":
        raise web.HTTPInternalServerError(text="injected fault")
    if fault == "drop":
        request.transport.abort()
        raise web.HTTPInternalServerError(text="connection dropped")  # never reaches the client
    await asyncio.sleep(slow_s)


async def post_health(request: web.Request) -> web.Response:
    """A heartbeat: ``{"bundle_id", "fps", "unknown_rate", "errors", "outbox_backlog"}``, any subset."""
    state: ServerState = request.app[STATE]
    try:
        payload = json.loads(await request.read())
        if not isinstance(payload, dict):
            raise ValueError("expected a JSON object")
        report = parse_health(payload)
    except (ValueError, UnicodeDecodeError) as e:  # JSONDecodeError is a ValueError
        raise bad_request(f"health report: {e}") from None
    rolled_back = await asyncio.to_thread(state.fleet.report_health, request[PRINCIPAL].device or "", report)
    return web.json_response({"ok": True, "rolled_back": rolled_back.id if rolled_back else None})


async def get_stats(request: web.Request) -> web.Response:
    state: ServerState = request.app[STATE]
    stats = await asyncio.to_thread(state.store.stats)
    return web.json_response(dict(stats, range_requests=state.range_requests))


async def get_fleet(request: web.Request) -> web.Response:
    """Every device's last report and every rollout (what `shelfsight fleet status` shows)."""
    store = request.app[STATE].store
    devices, rollouts = await asyncio.gather(asyncio.to_thread(store.devices), asyncio.to_thread(store.rollouts))
    now = time.time()
    return web.json_response({"devices": [status_row(d, now) for d in devices],
                              "rollouts": [r.to_dict() for r in rollouts]})


async def get_metrics(request: web.Request) -> web.Response:
    state: ServerState = request.app[STATE]
    body = await asyncio.to_thread(state.metrics.render, state.store)
    return web.Response(body=body, headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"})


async def get_manifest(request: web.Request) -> web.Response:
    offer = await request.app[STATE].offer(request)
    headers = {"ETag": offer.etag, "Cache-Control": "no-cache"}
    if offer.archive is not None:
        headers[ARCHIVE_HEADER] = offer.archive.name
        headers[ARCHIVE_SIZE_HEADER] = str(offer.archive.stat().st_size)
    if request.headers.get("If-None-Match") == offer.etag:
        return web.Response(status=304, headers=headers)
    return web.Response(body=offer.manifest, content_type="application/json", headers=headers)


async def get_signature(request: web.Request) -> web.Response:
    offer = await request.app[STATE].offer(request)
    if offer.signature is None:
        raise web.HTTPNotFound(text="the offered manifest is not signed")
    return web.Response(body=offer.signature, content_type="text/plain")


async def get_bundle_file(request: web.Request) -> web.StreamResponse:
    """A file of the bundle offered to this device (no other bundle's)."""
    state: ServerState = request.app[STATE]
    offer = await state.offer(request)
    name = request.match_info["name"]
    if offer.archive is not None:
        path = offer.archive if name == offer.archive.name else None
    else:
        listed = bundle_files(json.loads(offer.manifest))  # index.json too, for bundles that do not list it
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
    """This worker's fault injection (each worker has its own; the answer names the worker)."""
    state: ServerState = request.app[STATE]
    if not state.config.admin:
        raise web.HTTPNotFound(text="admin endpoints are off (start with --admin)")
    if request.method == "POST":
        try:
            state.faults.update(await request.json())
        except (ConfigError, ValueError, TypeError, AttributeError) as e:
            raise bad_request(str(e)) from None
    return web.json_response(asdict(state.faults))


def make_app(config: ServerConfig) -> web.Application:
    state = ServerState(config)
    app = web.Application(middlewares=[count_middleware, make_middleware(config.token, state.store)],
                          client_max_size=MAX_BODY_BYTES)
    app[STATE] = state
    app.router.add_get("/healthz", health)
    app.router.add_get("/metrics", get_metrics)
    app.router.add_post("/v1/events", post_events)
    app.router.add_post("/v1/health", post_health)
    app.router.add_get("/v1/stats", get_stats)
    app.router.add_get("/v1/manifest", get_manifest)
    app.router.add_get("/v1/manifest" + SIGNATURE_SUFFIX, get_signature)
    app.router.add_get("/v1/bundles/{name}", get_bundle_file)
    app.router.add_get("/v1/admin/fleet", get_fleet)
    app.router.add_route("*", "/v1/admin/faults", admin_faults)

    async def close_store(app: web.Application) -> None:
        state.store.close()
    app.on_cleanup.append(close_store)
    return app

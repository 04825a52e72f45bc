"""The aiohttp application: authentication, event intake, the bundle offer, fault injection."""
from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import random
from dataclasses import asdict, dataclass
from pathlib import Path

from aiohttp import web

from shelfsight.bundle import bundle_files
from shelfsight.edge.sync.signature import SIGNATURE_SUFFIX, load_private_key, sign
from shelfsight.edge.sync.updates import ARCHIVE_HEADER, ARCHIVE_SIZE_HEADER
from shelfsight.errors import BundleError, ConfigError

from .config import ServerConfig
from .keys import manifest_bytes, signature_path
from .store import EventStore, bad_request, parse_batch

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 32 * 1024**2


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

"""Who may call what: the bearer token names a principal (a device by its own token, an
admin, or the reference setup's shared token), and each route admits some of them.

    open            /healthz
    device          /v1/events, /v1/health, /v1/manifest(.sig), /v1/bundles/*
    admin           /v1/admin/*, /v1/stats, /metrics (the shared token too, in the reference setup)

A device token only ever acts as its own device: a request naming another device in
X-Shelfsight-Device is refused (403). With the shared token the header names the device,
by the same rule as `shelfsight fleet device add` (a name outside it is a 400).
"""
from __future__ import annotations

import asyncio
import hmac

from aiohttp import web

from .storage import FleetError, Principal
from .storage.base import check_device_name
from .tokens import bearer

PRINCIPAL = web.RequestKey("principal", Principal)
DEVICE_HEADER = "X-Shelfsight-Device"
OPEN_PATHS = ("/healthz",)
ADMIN_PATHS = ("/v1/admin/", "/v1/stats", "/metrics")


def _admin_route(path: str) -> bool:
    return any(path == p or (p.endswith("/") and path.startswith(p)) for p in ADMIN_PATHS)


async def resolve(request: web.Request, shared_token: str | None, storage) -> Principal | None:
    token = bearer(request.headers.get("Authorization", ""))
    if token is None:
        return None
    if shared_token is not None and hmac.compare_digest(token.encode(), shared_token.encode()):
        return Principal(role="device", device=request.headers.get(DEVICE_HEADER, ""), shared=True)
    return await asyncio.to_thread(storage.principal, token)


def make_middleware(shared_token: str | None, storage):
    @web.middleware
    async def auth_middleware(request: web.Request, handler):
        if request.path in OPEN_PATHS:
            return await handler(request)
        principal = await resolve(request, shared_token, storage)
        if principal is None:
            raise web.HTTPUnauthorized(text="missing or wrong bearer token")
        if _admin_route(request.path):
            if principal.role != "admin" and not principal.shared:
                raise web.HTTPForbidden(text="this route needs an admin token")
        elif principal.role != "device":
            raise web.HTTPForbidden(text="this route is for devices; an admin token cannot act as one")
        elif not principal.shared and request.headers.get(DEVICE_HEADER, principal.device) != principal.device:
            raise web.HTTPForbidden(text=f"this token belongs to device {principal.device!r}")
        if principal.shared and principal.device:
            try:
                check_device_name(principal.device)
            except FleetError as e:
                raise web.HTTPBadRequest(text=f"{DEVICE_HEADER}: {e}") from None
        request[PRINCIPAL] = principal
        return await handler(request)
    return auth_middleware

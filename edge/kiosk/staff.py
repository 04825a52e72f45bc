"""The staff page: the kiosk's health and the teaching queue, behind a token.

The token comes as ``Authorization: Bearer TOKEN``, or once as ``/staff?token=TOKEN`` (answered
with a redirect that drops it from the address and a same-site, HTTP-only cookie holding a MAC
of it, not the token). Every comparison is `hmac.compare_digest`. No token: 401; a wrong one: 403.

    GET  /staff                               the page
    GET  /api/staff/state                     bundle, fps, latency, unknown rate, sync, queue, last events
    GET  /api/staff/photo/ID                  a kept photo (for the queue)
    POST /api/staff/queue/ITEM/approve        enrol the held photos of ITEM
    POST /api/staff/queue/ITEM/discard        delete them
    POST /api/staff/photo/ID/approve          enrol that one held photo
    POST /api/staff/photo/ID/discard          delete it
"""
from __future__ import annotations

import asyncio
import hashlib
import hmac
from pathlib import Path
from typing import Callable

from aiohttp import web

from shelfsight.errors import ShelfsightError

COOKIE = "shelfsight_staff"
STATIC = Path(__file__).resolve().parent / "static"
SCREENS = web.AppKey("screens", object)
TOKEN = web.AppKey("staff_token", str)

_LOGIN = """<!doctype html><html lang="en"><head><meta charset="utf-8"><title>shelfsight staff</title>
<link rel="stylesheet" href="/static/kiosk.css"></head><body class="staff login"><main>
<h1>Staff</h1><p class="why">{why}</p><form method="get" action="/staff">
<input name="token" type="password" placeholder="staff token" autofocus required><button>Open</button>
</form></main></body></html>"""


def _mac(token: str) -> str:
    return hmac.new(token.encode(), b"shelfsight-kiosk-staff", hashlib.sha256).hexdigest()


def authorised(request: web.Request) -> bool | None:
    """True: the right token (or its cookie); False: a wrong one; None: none given."""
    token = request.app[TOKEN]
    header = request.headers.get("Authorization", "")
    if header:
        scheme, _, given = header.partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), token.encode())
    given = request.query.get("token")
    if given is not None:
        return hmac.compare_digest(given.encode(), token.encode())
    cookie = request.cookies.get(COOKIE)
    if cookie is not None:
        return hmac.compare_digest(cookie.encode(), _mac(token).encode())
    return None


def _refuse(request: web.Request, ok: bool | None, page: bool) -> web.Response:
    status, why = (401, "This page needs the staff token.") if ok is None else (403, "That token is not right.")
    if page:
        return web.Response(text=_LOGIN.format(why=why), status=status, content_type="text/html",
                            headers={"Cache-Control": "no-store"})
    return web.json_response({"error": why}, status=status)


async def _page(request: web.Request) -> web.StreamResponse:
    ok = authorised(request)
    if not ok:
        return _refuse(request, ok, page=True)
    if "token" in request.query:  # drop it from the address bar and history
        response = web.HTTPSeeOther("/staff")
        response.set_cookie(COOKIE, _mac(request.app[TOKEN]), httponly=True, samesite="Strict", path="/")
        return response
    return web.FileResponse(STATIC / "staff.html", headers={"Cache-Control": "no-store"})


def _api(handler):
    async def guarded(request: web.Request) -> web.StreamResponse:
        ok = authorised(request)
        if not ok:
            return _refuse(request, ok, page=False)
        return await handler(request)
    return guarded


async def _state(request: web.Request) -> web.Response:
    screens = request.app[SCREENS]
    stats = await asyncio.get_running_loop().run_in_executor(None, screens.station.stats)
    stats["screens"] = {"streams": screens.streams, "listeners": screens.listeners}
    return web.json_response(stats, headers={"Cache-Control": "no-store"})


async def _photo(request: web.Request) -> web.Response:
    store = request.app[SCREENS].station.store
    try:
        photo = store.photo(int(request.match_info["photo_id"]))
        data = store.path(photo).read_bytes()
    except (KeyError, ValueError, OSError):
        return web.json_response({"error": "no such photo"}, status=404)
    return web.Response(body=data, content_type="image/jpeg", headers={"Cache-Control": "no-store"})


async def _decide(request: web.Request) -> web.Response:
    item_id, action = request.match_info["item_id"], request.match_info["action"]
    return await _decided(request, item_id, action, None, lambda: f"no photos of {item_id!r} are waiting for review")


async def _decide_photo(request: web.Request) -> web.Response:
    store, action = request.app[SCREENS].station.store, request.match_info["action"]
    try:
        photo = store.photo(int(request.match_info["photo_id"]))
    except (KeyError, ValueError):
        return web.json_response({"error": f"no photo {request.match_info['photo_id']!r} on this device"},
                                 status=404)
    return await _decided(request, photo.item_id, action, [photo.id],
                          lambda: f"photo {photo.id} is not waiting for review (it is {store.photo(photo.id).status})")


async def _decided(request: web.Request, item_id: str, action: str, photo_ids: list[int] | None,
                   missing: Callable[[], str]) -> web.Response:
    teacher = request.app[SCREENS].station.teacher
    decide = teacher.approve if action == "approve" else teacher.discard
    try:
        result = await asyncio.get_running_loop().run_in_executor(None, decide, item_id, photo_ids)
    except KeyError:
        return web.json_response({"error": missing()}, status=404)
    except ShelfsightError as e:
        return web.json_response({"error": str(e)}, status=409)
    return web.json_response(result if isinstance(result, dict) else {"discarded": item_id, "photos": result})


def add_routes(app: web.Application, token: str) -> None:
    app[TOKEN] = token
    app.router.add_get("/staff", _page)
    app.router.add_get("/api/staff/state", _api(_state))
    app.router.add_get("/api/staff/photo/{photo_id}", _api(_photo))
    app.router.add_post(r"/api/staff/queue/{item_id}/{action:approve|discard}", _api(_decide))
    app.router.add_post(r"/api/staff/photo/{photo_id}/{action:approve|discard}", _api(_decide_photo))

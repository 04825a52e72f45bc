"""The kiosk's web server (aiohttp): the shopper's page, its live view and answers, taps, the
catalog search, and the staff page (`staff`). Every asset is package data (`static/`): the page
works with no network at all.

    GET  /                      the shopper's page          GET /staff   the staff page (token)
    GET  /stream.mjpg           live view (MJPEG, at most view_fps per screen)
    GET  /api/events            the answers as server-sent events (a JSON state per frame that changes
                                what the screen shows, and at least 4 a second for fresh frame ids)
    GET  /api/state             the current state          GET /api/config   the page's settings
    GET  /api/catalog?q=TEXT    items whose name, label or SKU contain every word
    GET  /api/similar?frame=ID  visual search of a recognised frame ("none of these")
    GET  /catalog/ID/image      the item's catalog image (a thumbnail; 404 when the device has none)
    POST /api/confirm           {"frame": ID, "item_id": ...}: the shopper's tap (`confirm`)

aiohttp is already the project's HTTP stack (the reference sync server): asyncio, so one thread
serves many long-lived streams; well kept; pure-Python fallbacks where a wheel is missing.
"""
from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import threading
import time
from collections import OrderedDict
from pathlib import Path
from typing import Any

import cv2
from aiohttp import web

from shelfsight.images import UnreadableImage, read_image

from .candidates import CatalogCache, choose, filter_items
from .confirm import ConfirmError
from .live import Shown
from .station import KioskStation
from . import staff

log = logging.getLogger(__name__)

STATIC = Path(__file__).resolve().parent / "static"
STATION = web.AppKey("station", KioskStation)
PING_S = 10.0  # an idle stream writes a comment this often, so a gone screen is noticed
THUMB_PX = 240
# Each frame is followed at once by the next part's boundary and headers: Chromium draws a part
# only once the next one has begun, so a frame sent bare would wait a whole frame period (67 ms
# at 15 fps) on screen. No Content-Length: the boundary ends a part.
PART = b"\r\n--frame\r\nContent-Type: image/jpeg\r\n\r\n"
UNCHANGED_S = 0.25  # a state that looks as the last one sent goes out at most this often (fresh frame ids)


class Screens:
    """What the handlers share: the state of each frame (made once for every screen), catalog
    thumbnails, and the screens connected."""

    def __init__(self, station: KioskStation) -> None:
        self.station = station
        self.catalog = CatalogCache()
        self._state: tuple[int, dict] = (0, {})
        self._lock = threading.Lock()
        self.thumbs: OrderedDict[str, bytes | None] = OrderedDict()
        self.streams = 0
        self.listeners = 0

    def items(self) -> dict:
        return self.catalog.items(self.station.recognizer.current)

    def state(self, seq: int, shown: Shown | None) -> dict:
        with self._lock:
            if self._state[0] == seq and seq:
                return self._state[1]
        state = _state_of(shown, self.items(), self.station.teacher.taught())
        with self._lock:
            self._state = (seq, state)
        return state


def _state_of(shown: Shown | None, items: dict, taught: frozenset[str]) -> dict:
    if shown is None:
        return {"frame": 0, "state": "starting", "candidates": []}
    base = {"frame": shown.frame_id, "captured": shown.captured, "recognized": shown.recognized}
    if shown.recognition is None:
        return {**base, "state": "empty", "reason": shown.reason, "candidates": []}
    known, offered = choose(shown.recognition, items, taught)
    return {**base, "state": "known" if known else "unknown", "latency_ms": round(shown.recognition.latency_ms, 2),
            "candidates": [c.to_dict() for c in offered]}


def make_app(station: KioskStation) -> web.Application:
    """The kiosk's aiohttp application for a started station (stopped when the app shuts down)."""
    app = web.Application(client_max_size=64 * 1024)
    app[STATION] = station
    screens = Screens(station)
    app[staff.SCREENS] = screens
    app.router.add_get("/", lambda r: web.FileResponse(STATIC / "kiosk.html", headers=_NO_CACHE))
    app.router.add_static("/static/", STATIC, append_version=False)
    app.router.add_get("/stream.mjpg", _stream)
    app.router.add_get("/api/events", _events)
    app.router.add_get("/api/state", _state)
    app.router.add_get("/api/config", _config)
    app.router.add_get("/api/catalog", _catalog)
    app.router.add_get("/api/similar", _similar)
    app.router.add_get("/catalog/{item_id}/image", _catalog_image)
    app.router.add_post("/api/confirm", _confirm)
    staff.add_routes(app, station.options.staff_token)
    app.on_shutdown.append(_on_shutdown)
    return app


_NO_CACHE = {"Cache-Control": "no-store"}


async def _on_shutdown(app: web.Application) -> None:
    app[STATION].view.close()  # every stream ends


def _screens(request: web.Request) -> Screens:
    return request.app[staff.SCREENS]


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


async def _stream(request: web.Request) -> web.StreamResponse:
    screens = _screens(request)
    view = screens.station.view
    period = 1.0 / screens.station.options.view_fps
    response = web.StreamResponse(headers={"Content-Type": "multipart/x-mixed-replace; boundary=frame",
                                           **_NO_CACHE})
    await response.prepare(request)
    loop = asyncio.get_running_loop()
    screens.streams += 1
    seq = 0
    try:
        jpeg = b""
        while True:
            try:
                got = await asyncio.wait_for(view.frames.newer(seq), PING_S)
            except asyncio.TimeoutError:  # a gone screen fails here: before the first frame a line of the
                await response.write(jpeg + PART if jpeg else b"\r\n")  # preamble, then the last frame again
                continue
            if got is None:
                break
            seq, frame = got
            due = time.monotonic() + period
            if not jpeg:
                await response.write(PART)
            jpeg = await loop.run_in_executor(None, view.jpeg, seq, frame)
            await response.write(jpeg + PART)
            await asyncio.sleep(max(0.0, due - time.monotonic()))
    except (ConnectionError, asyncio.CancelledError):
        pass  # the screen went away; nothing else is affected
    finally:
        screens.streams -= 1
    return response


async def _events(request: web.Request) -> web.StreamResponse:
    screens = _screens(request)
    results = screens.station.view.results
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream", **_NO_CACHE})
    await response.prepare(request)
    screens.listeners += 1
    seq, sent = 0, (None, 0.0)
    try:
        current = results.get()
        if current[0]:
            seq = current[0]
            await response.write(_sse(screens.state(*current)))
        while True:
            try:
                got = await asyncio.wait_for(results.newer(seq), PING_S)
            except asyncio.TimeoutError:
                await response.write(b": ping\n\n")
                continue
            if got is None:
                break
            seq = got[0]
            state = screens.state(*got)
            key = _looks(state)
            now = time.monotonic()
            if key == sent[0] and now - sent[1] < UNCHANGED_S:
                continue  # the screen would look the same: only its frame id would move on
            sent = (key, now)
            await response.write(_sse(state))
    except (ConnectionError, asyncio.CancelledError):
        pass
    finally:
        screens.listeners -= 1
    return response


def _looks(state: dict) -> tuple:
    """What a state looks like on screen (confidence bars to the percent)."""
    return (state["state"], tuple((c["item_id"], round(c["confidence"] * 100)) for c in state["candidates"]))


def _sse(state: dict) -> bytes:
    return b"data: " + json.dumps(state, separators=(",", ":")).encode() + b"\n\n"


async def _state(request: web.Request) -> web.Response:
    screens = _screens(request)
    return web.json_response(screens.state(*screens.station.view.results.get()), headers=_NO_CACHE)


async def _config(request: web.Request) -> web.Response:
    options = request.app[STATION].options
    return web.json_response({"confirm_hold_s": options.confirm_hold_s, "view_fps": options.view_fps})


async def _catalog(request: web.Request) -> web.Response:
    query = request.query.get("q", "")[:200]
    found = filter_items(_screens(request).items(), query)
    return web.json_response({"query": query, "items": [c.to_dict() for c in found]})


async def _similar(request: web.Request) -> web.Response:
    station = request.app[STATION]
    try:
        frame_id = int(request.query.get("frame", ""))
        k = min(max(int(request.query.get("k", "12")), 1), 48)
    except ValueError:
        return _error(400, "frame must be a kiosk frame id and k a whole number")
    shown = station.view.held(frame_id, pin=True)
    if shown is None or shown.image is None:
        return _error(410, f"frame {frame_id} is no longer held; search by name instead")

    def search() -> list[dict]:
        with station.using() as rec:
            if rec.index is None:
                return []
            matches = rec.index.search(rec.embed(shown.image), k)
        items = _screens(request).items()
        return [{"item_id": m.item_id, "sku": m.sku or m.item_id, "name": m.name or m.label or m.item_id,
                 "label": m.label, "confidence": round(max(0.0, m.similarity), 4), "why": "search"}
                for m in matches if m.item_id in items]

    found = await asyncio.get_running_loop().run_in_executor(None, search)
    return web.json_response({"frame": frame_id, "items": found})


async def _catalog_image(request: web.Request) -> web.Response:
    screens = _screens(request)
    item_id = request.match_info["item_id"]
    if item_id not in screens.thumbs:
        item = screens.items().get(item_id)
        if item is None:
            return _error(404, f"item {item_id!r} is not in the catalog")
        data = await asyncio.get_running_loop().run_in_executor(None, _thumbnail, screens.station, item)
        screens.thumbs[item_id] = data
        while len(screens.thumbs) > 512:
            screens.thumbs.popitem(last=False)
    data = screens.thumbs[item_id]
    if data is None:
        return _error(404, f"no catalog image of {item_id!r} on this device")
    return web.Response(body=data, content_type="image/jpeg", headers={"Cache-Control": "max-age=3600"})


def _thumbnail(station: KioskStation, item: Any) -> bytes | None:
    """The first of the item's images found: as named, beside the bundle, or in --images."""
    roots = [Path(station.recognizer.current.bundle.root)]
    if station.options.images is not None:
        roots.insert(0, station.options.images)
    candidates = []
    for name in item.images:
        path = Path(name)
        candidates.append(path)
        candidates += [root / name for root in roots] + [root / path.name for root in roots]
    candidates += [root / f"{item.item_id}{suffix}" for root in roots for suffix in (".jpg", ".png")]
    for path in candidates:
        with contextlib.suppress(UnreadableImage, OSError, ValueError):
            if path.is_file():
                image = read_image(path)
                scale = THUMB_PX / max(image.shape[:2])
                if scale < 1:
                    image = cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
                ok, data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 85])
                if ok:
                    return data.tobytes()
    return None


async def _confirm(request: web.Request) -> web.Response:
    station = request.app[STATION]
    try:
        body = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError, ValueError):
        return _error(400, 'a tap is JSON: {"frame": ID, "item_id": "..."}')
    if not isinstance(body, dict):
        return _error(400, 'a tap is a JSON object: {"frame": ID, "item_id": "..."}')
    try:
        answer = await asyncio.get_running_loop().run_in_executor(
            None, station.confirmations.confirm, body.get("frame"), body.get("item_id"))
    except ConfirmError as e:
        return _error(e.status, str(e))
    return web.json_response(answer)


class BackgroundServer:
    """The app served from a thread of its own (tests, tools); `url` once started; `close()` idempotent."""

    def __init__(self, station: KioskStation, host: str = "127.0.0.1", port: int = 0) -> None:
        self.station, self.host, self.port = station, host, port
        self.url = ""
        self._loop = asyncio.new_event_loop()
        self._runner: web.AppRunner | None = None
        self._thread = threading.Thread(target=self._loop.run_forever, name="kiosk-http", daemon=True)

    def start(self) -> "BackgroundServer":
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(30)
        return self

    async def _start(self) -> None:
        self._runner = web.AppRunner(make_app(self.station), shutdown_timeout=2.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        port = self._runner.addresses[0][1]
        self.url = f"http://{self.host}:{port}"

    def close(self) -> None:
        if self._runner is not None:
            runner, self._runner = self._runner, None
            asyncio.run_coroutine_threadsafe(runner.cleanup(), self._loop).result(30)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)

    def __enter__(self) -> "BackgroundServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


def serve(station: KioskStation) -> None:
    """Serve the kiosk on the station's host and port until SIGINT / SIGTERM; stops the station."""
    options = station.options
    if not options.loopback:
        log.warning("the kiosk page is served on %s: every device on that network can open it and tap", options.host)
    web.run_app(make_app(station), host=options.host, port=options.port, shutdown_timeout=2.0,
                print=lambda line: log.warning("%s", line), access_log=None)

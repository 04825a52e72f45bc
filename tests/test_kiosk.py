"""The self-checkout screen in a real browser (Debian's chromium, driven by Playwright), on a real
int8 bundle indexed with the sample catalog and a generated video of one product on the tray.

Screenshots of each page go to the test's tmp dir (and to $SHELFSIGHT_KIOSK_SCREENSHOTS when set).
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

CHROMIUM = Path("/usr/bin/chromium")
pytestmark = [pytest.mark.slow, pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium package")]
TOKEN = "staff-secret-token"


# ---- fixtures: an indexed bundle, a video per product, a browser ------------------------------

@pytest.fixture(scope="module")
def indexed(int8_bundle, sample_data, tmp_path_factory):
    from shelfsight.edge.indexing import build_index

    bundle = tmp_path_factory.mktemp("kiosk") / "bundle"
    shutil.copytree(int8_bundle, bundle)
    build_index(bundle, sample_data, progress=False)
    return bundle


@pytest.fixture(scope="module")
def product(indexed):
    """(item id, video) of a catalog product the bundle names right from its iconic image, and
    another product's item id (what a shopper says the first one is, when the model is 'wrong')."""
    from shelfsight.edge.runtime.recognizer import Recognizer
    from shelfsight.images import read_image
    from shelfsight.tools import make_objects_video as mv
    from shelfsight.tools.make_video import make_video

    with Recognizer.create_from_bundle(indexed) as rec:
        known = [label for label, path in mv.catalog_products() if rec.recognize(read_image(path)).label == label]
    assert len(known) >= 2, known
    path = dict(mv.catalog_products())[known[0]]
    video = make_video([path], indexed.parent / f"{known[0]}.avi", fps=15, hold=30, gap=0)
    return known[0], video, known[-1]


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM))
        yield b
        b.close()


@pytest.fixture
def kiosk(indexed, product, tmp_path):
    """start(sync=None, **KioskOptions) -> (station, url, sink path): a kiosk on a private copy of the bundle."""
    from shelfsight.edge.kiosk import BackgroundServer, KioskOptions, KioskStation
    from shelfsight.edge.runtime.options import RecognizerOptions

    started = []

    def start(sync=None, **options):
        bundle = tmp_path / "bundle"
        shutil.copytree(indexed, bundle)
        sink = tmp_path / "events.jsonl"
        station = KioskStation(RecognizerOptions(bundle, top_k=5, search_k=5), str(product[1]),
                               KioskOptions(store=tmp_path / "feedback", staff_token=TOKEN,
                                            **{"confirm_hold_s": 0.3, **options}),
                               loop=True, sinks=(f"jsonl:{sink}",), sync=sync)
        station.start()
        server = BackgroundServer(station).start()
        started.append((station, server))
        return station, server.url, sink

    yield start
    for station, server in started:
        server.close()
        station.stop()


def _shot(page, tmp_path, name):
    path = tmp_path / f"{name}.png"
    page.screenshot(path=str(path))
    if os.environ.get("SHELFSIGHT_KIOSK_SCREENSHOTS"):
        out = Path(os.environ["SHELFSIGHT_KIOSK_SCREENSHOTS"])
        out.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, out / f"{name}.png")
    assert path.stat().st_size > 5000
    return path


def _confirmed(sink):
    if not sink.exists():
        return []
    return [e for e in map(json.loads, sink.read_text().splitlines()) if e.get("kind") == "confirmed"]


def _http(url, data=None, headers=None):
    """(status, JSON body) of a GET, or a POST of ``data`` as JSON."""
    body = None if data is None else json.dumps(data).encode()
    request = urllib.request.Request(url, body, {"Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(request, timeout=10) as r:
            return r.status, json.loads(r.read() or b"null")
    except urllib.error.HTTPError as e:
        text = e.read()
        try:
            return e.code, json.loads(text)
        except ValueError:
            return e.code, text.decode()


def _state_after(url, frame, timeout=5.0):
    """The first state of a recognised frame >= ``frame``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        _, state = _http(f"{url}/api/state")
        if state["frame"] >= frame and state["state"] in ("known", "unknown"):
            return state
        time.sleep(0.02)
    raise AssertionError(f"no recognised frame from {frame} on within {timeout} s (last: {state})")


# ---- the shopper's page -----------------------------------------------------------------------

def test_the_page_shows_the_product_in_its_top3_within_2_s_and_a_tap_writes_one_confirmed_event(
        kiosk, product, browser, tmp_path):
    item, _, _ = product
    station, url, sink = kiosk()
    page = browser.new_page(viewport={"width": 1024, "height": 600})
    started = time.monotonic()
    page.goto(url)
    page.wait_for_selector(f'.candidate[data-item="{item}"]', timeout=2000)
    assert time.monotonic() - started < 2.0
    assert page.locator(".candidate").count() == 3
    assert page.locator("#prompt").inner_text() == "Is this your product?"
    page.wait_for_function("window.__kiosk.viewFrames > 0", timeout=2000)  # the live view
    assert page.evaluate("document.getElementById('live').width") == 320  # drawn on the canvas in Chromium
    _shot(page, tmp_path, "kiosk")

    page.click(f'.candidate[data-item="{item}"]')
    page.wait_for_selector("#toast:not([hidden])", timeout=2000)
    name = station.recognizer.current.index.catalog.get(item).name or item
    assert page.locator("#toast").inner_text() == f"Added: {name} ✓"
    page.click(f'.candidate[data-item="{item}"]')  # a second tap while "added" shows: ignored
    last = page.evaluate("window.__kiosk.last")
    again = _http(f"{url}/api/confirm", {"frame": last["answer"]["frame"], "item_id": item})  # a retried request
    assert again[0] == 200 and again[1]["duplicate"] is True and again[1]["event_id"] == last["answer"]["event_id"]
    events = _confirmed(sink)
    assert len(events) == 1
    event = events[0]
    assert (event["item_id"], event["sku"], event["name"], event["kiosk_frame"], event["model_item"],
            event["model_correct"]) == (item, item, name, last["answer"]["frame"], item, True)
    assert event["label"] == item and event["predictions"][0]["label"] == item and "jpeg" not in event
    assert [s["item_id"] for s in event["shown"]][0] == item and len(event["shown"]) == 3
    assert station.store.counts()["pending"] == 0  # the model was right: no photo kept
    page.close()


def test_confirmations_of_a_mislabelled_product_teach_the_device_and_the_next_frame_names_it(
        kiosk, product, browser, tmp_path):
    item, _, other = product  # the tray shows `item`; in this shop it is sold as `other`
    station, url, sink = kiosk(teach_after=3)
    page = browser.new_page(viewport={"width": 1024, "height": 600})
    page.goto(url)
    answers = []
    for n in range(3):
        page.wait_for_selector(f'.candidate.first[data-item="{item}"]', timeout=3000)
        page.click("#none")
        page.wait_for_selector("#results .candidate", timeout=3000)  # the visual search's results
        page.fill("#filter", other[:4].lower())
        page.wait_for_selector(f'#results .candidate[data-item="{other}"]', timeout=3000)
        if n == 0:
            _shot(page, tmp_path, "kiosk-search")
        page.click(f'#results .candidate[data-item="{other}"]')
        page.wait_for_selector("#search", state="hidden", timeout=3000)
        answers.append(page.evaluate("window.__kiosk.last.answer"))
        time.sleep(0.35)  # the page ignores taps while "added" shows
    assert [a["kept"] for a in answers] == [True] * 3
    assert [a["taught"] for a in answers[:2]] == [None, None]
    taught = answers[2]["taught"]
    assert (taught["enrolled"], taught["photos"]) == (other, 3)
    state = _state_after(url, taught["from_frame"])
    assert (state["candidates"][0]["item_id"], state["candidates"][0]["why"], state["state"]) == \
        (other, "taught", "known")
    page.wait_for_selector(f'.candidate.first[data-item="{other}"]', timeout=2000)
    events = _confirmed(sink)
    assert [(e["item_id"], e["model_item"], e["model_correct"]) for e in events] == [(other, item, False)] * 3
    assert station.store.counts()["enrolled"] == 3
    page.close()

    out = tmp_path / "dataset"  # shelfsight feedback export
    done = subprocess.run([sys.executable, "-m", "shelfsight", "feedback", "export", str(tmp_path / "feedback"),
                           "--out", str(out)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["photos"] == 3
    rows = (out / "manifest.csv").read_text().splitlines()
    assert rows[0].startswith("path,item_id,sku,name,label,predicted") and len(rows) == 4
    assert all((out / r.split(",")[0]).is_file() and r.split(",")[1] == other for r in rows[1:])
    refused = subprocess.run([sys.executable, "-m", "shelfsight", "feedback", "export", str(tmp_path / "feedback"),
                              "--out", str(out)], capture_output=True, text=True, timeout=60)
    assert refused.returncode == 2 and refused.stderr.count("\n") == 1 and "not an empty folder" in refused.stderr


# ---- the staff page ---------------------------------------------------------------------------

def test_the_staff_page_refuses_a_missing_or_wrong_token_and_decides_each_photo_or_all_of_a_product(
        kiosk, product, browser, tmp_path):
    item, _, other = product
    station, url, sink = kiosk(teach_after=3, review=True)
    assert _http(f"{url}/staff")[0] == 401
    assert _http(f"{url}/staff?token=wrong-token")[0] == 403
    assert _http(f"{url}/api/staff/state")[0] == 401
    assert _http(f"{url}/api/staff/state", headers={"Authorization": "Bearer wrong-token"})[0] == 403
    assert _http(f"{url}/api/staff/queue/{other}/approve", {})[0] == 401
    assert _http(f"{url}/api/staff/photo/1/approve", {})[0] == 401
    status, stats = _http(f"{url}/api/staff/state", headers={"Authorization": f"Bearer {TOKEN}"})
    assert status == 200 and stats["bundle"]["id"] == station.recognizer.current.bundle.bundle_id

    for _ in range(3):  # three confirmations the model got wrong: held for review, not enrolled
        state = _state_after(url, station.view.next_frame_id())
        assert _http(f"{url}/api/confirm", {"frame": state["frame"], "item_id": other})[0] == 200
    assert station.store.counts()["held"] == 3 and station.teacher.enrolments == 0
    first, second, third = [p.id for p in station.store.photos(other)]

    page = browser.new_page(viewport={"width": 1100, "height": 800})
    response = page.goto(f"{url}/staff")
    assert response.status == 401 and page.locator("input[name=token]").count() == 1
    page.fill("input[name=token]", TOKEN)
    page.click("form button")
    row = f'.queue-item[data-item="{other}"]'
    page.wait_for_selector(row, timeout=3000)
    assert page.url == f"{url}/staff"  # the token left the address bar
    page.wait_for_selector('.card[data-name="fps"]')
    assert station.recognizer.current.bundle.bundle_id[:12] in page.locator('.card[data-name="bundle"]').inner_text()
    page.wait_for_function("document.querySelectorAll('#events tr').length >= 2", timeout=3000)
    page.wait_for_function(f"[...document.querySelectorAll('{row} .photo img')].every((i) => i.naturalWidth > 0)",
                           timeout=3000)  # each held photo as a thumbnail
    assert page.locator(f"{row} .photo").count() == 3
    _shot(page, tmp_path, "kiosk-staff")

    page.click(f'.photo[data-photo="{second}"] .discard-one')  # one photo shows a hand, not the product
    page.wait_for_selector(f'.photo[data-photo="{second}"]', state="detached", timeout=3000)
    assert station.store.photo(second).status == "discarded" and station.teacher.enrolments == 0
    page.click(f'.photo[data-photo="{first}"] .approve-one')
    page.wait_for_selector(f'.photo[data-photo="{first}"]', state="detached", timeout=3000)
    assert station.store.photo(first).status == "enrolled" and station.teacher.enrolments == 1
    assert page.locator(f"{row} b").inner_text().endswith("(1 photo)")
    page.click(f"{row} .approve")  # approve all: the one left
    page.wait_for_selector(row, state="detached", timeout=3000)
    assert station.store.counts()["enrolled"] == 2 and station.teacher.enrolments == 2
    assert station.store.photo(third).status == "enrolled"
    assert _http(f"{url}/api/staff/queue/{other}/approve", {}, {"Authorization": f"Bearer {TOKEN}"})[0] == 404
    assert _http(f"{url}/api/staff/photo/{second}/approve", {}, {"Authorization": f"Bearer {TOKEN}"}) == (
        404, {"error": f"photo {second} is not waiting for review (it is discarded)"})
    page.close()


# ---- kept photos and the sync server ----------------------------------------------------------

@pytest.mark.parametrize("sync_photos", [False, True], ids=["off", "on"])
def test_kept_photos_reach_the_sync_server_once_with_sync_photos_and_never_without(
        kiosk, product, tmp_path, sync_photos):
    import base64

    from shelfsight.edge.sync.http import HttpOptions
    from shelfsight.edge.sync.service import SyncConfig
    from shelfsight.edge.sync.uploader import UploadOptions
    from sync_fakes import server, token_file

    item, _, other = product
    with server(tmp_path) as srv:
        sync = SyncConfig(outbox=tmp_path / "outbox.db", upload=UploadOptions(
            endpoint=srv.url, http=HttpOptions(token_file=token_file(tmp_path)), idle_s=0.05))
        station, url, sink = kiosk(sync=sync, teach_after=0, sync_photos=sync_photos)
        frames = []
        for chosen in (other, other, item):  # two taps the model got wrong (kept), one it got right
            state = _state_after(url, station.view.next_frame_id())
            assert _http(f"{url}/api/confirm", {"frame": state["frame"], "item_id": chosen})[0] == 200
            frames.append(state["frame"])
        assert _http(f"{url}/api/confirm", {"frame": frames[0], "item_id": other})[1]["duplicate"] is True
        kept = station.store.photos()
        assert [p.item_id for p in kept] == [other, other]

        deadline = time.monotonic() + 20
        while True:  # until the server holds every confirmed event and the outbox is empty
            held = [json.loads(body) for _, _, body in srv.state.store.events()]
            if (sum(e.get("kind") == "confirmed" for e in held) == 3
                    and station.service.outbox.stats().pending == 0):
                break
            assert time.monotonic() < deadline, station.service.outbox.stats()
            time.sleep(0.1)
        feedback = [e for e in held if e.get("kind") == "feedback"]
        if not sync_photos:
            assert feedback == [] and not any("jpeg" in e for e in held)  # no image left the device
            return
        assert sorted(e["id"] for e in feedback) == sorted(f"{p.event_id}-photo" for p in kept)
        for e in feedback:
            photo = station.store.photo(e["photo"])
            assert base64.b64decode(e["jpeg"]) == station.store.path(photo).read_bytes()
            assert (e["item_id"], e["confirmed_event"]) == (other, photo.event_id)
        assert sum("jpeg" in e for e in held) == 2  # the confirmed and recognised events carry no picture
        assert srv.state.store.stats()["redeliveries"] == 0
        assert not any("jpeg" in line for line in sink.read_text().splitlines())  # nor do the other sinks


# ---- bad input --------------------------------------------------------------------------------

def test_reloads_two_browsers_a_dropped_stream_an_unknown_item_and_a_flood_of_taps_leave_one_event_per_frame(
        kiosk, product, browser, tmp_path):
    from shelfsight.edge.catalog.enroll import EnrolledDelta

    item, _, other = product
    station, url, sink = kiosk(teach_after=3)
    first, second = browser.new_page(), browser.new_context().new_page()
    for page in (first, second):  # two screens at once
        page.goto(url)
        page.wait_for_selector(f'.candidate[data-item="{item}"]', timeout=3000)
    first.reload()
    first.wait_for_selector(f'.candidate[data-item="{item}"]', timeout=2000)

    host, port = url.removeprefix("http://").split(":")  # a screen that goes away mid-stream
    for path in ("/stream.mjpg", "/api/events"):
        with socket.create_connection((host, int(port)), timeout=5) as s:
            s.sendall(f"GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
            assert len(s.recv(4096)) > 0
    encoded = station.view.encoded

    state = _state_after(url, station.view.next_frame_id())
    status, body = _http(f"{url}/api/confirm", {"frame": state["frame"], "item_id": "no-such-product"})
    assert status == 404 and body == {"error": "item 'no-such-product' is not in this bundle's catalog; "
                                               "choose one of the products offered, or search the catalog"}
    assert _http(f"{url}/api/confirm", {"frame": "x", "item_id": item})[0] == 400
    assert _confirmed(sink) == []

    def tap(frame, chosen=other):
        return _http(f"{url}/api/confirm", {"frame": frame, "item_id": chosen})

    with ThreadPoolExecutor(16) as pool:  # a flood on one frame: one event
        answers = list(pool.map(tap, [state["frame"]] * 40))
    assert sorted(s for s, _ in answers) == [200] * 40
    assert sum(not a.get("duplicate") for _, a in answers) == 1
    assert tap(state["frame"], item)[0] == 409  # the frame is confirmed already, as another product
    assert len(_confirmed(sink)) == 1

    stop = threading.Event()
    results = []

    def hammer():  # a flood across frames: each new frame confirmed once, teaching once per 3 photos
        while not stop.is_set():
            _, now = _http(f"{url}/api/state")
            if now["state"] in ("known", "unknown"):
                results.append(tap(now["frame"]))

    threads = [threading.Thread(target=hammer) for _ in range(6)]
    for t in threads:
        t.start()
    time.sleep(3.0)
    stop.set()
    for t in threads:
        t.join()
    fresh = [a for s, a in results if s == 200 and not a.get("duplicate")]
    assert {s for s, _ in results} <= {200, 409, 410}
    events = _confirmed(sink)
    assert len(events) == 1 + len(fresh) and len({e["kiosk_frame"] for e in events}) == len(events)
    assert len({e["id"] for e in events}) == len(events)
    counts = station.store.counts()
    kept = sum(not e["model_correct"] for e in events)
    assert counts["enrolled"] + counts["pending"] == kept and counts["enrolling"] == 0
    delta = EnrolledDelta.load(station.recognizer.current.bundle.root / "enrolled.npz")
    assert len(delta.matrix) == counts["enrolled"]  # every enrolled photo exactly once in the index
    assert counts["enrolled"] >= 3

    assert station.running and station.view.encoded > encoded  # still recognising and streaming
    assert second.locator(".candidate").count() == 3
    _state_after(url, station.view.next_frame_id())
    first.close()
    second.close()


def test_each_live_view_frame_is_followed_at_once_by_the_next_parts_headers(kiosk):
    # Chromium draws a multipart part only once the next one has begun: a frame sent bare would
    # wait a whole frame period on screen
    import cv2
    import numpy as np

    from shelfsight.edge.kiosk.app import PART

    station, url, _ = kiosk()
    with urllib.request.urlopen(f"{url}/stream.mjpg", timeout=10) as r:
        assert r.headers["Content-Type"] == "multipart/x-mixed-replace; boundary=frame"
        data = r.read(100_000)  # several frames of ~13 kB
    assert PART == b"\r\n--frame\r\nContent-Type: image/jpeg\r\n\r\n" and data.startswith(PART)
    frames = data.split(PART)[1:-1]  # the whole ones
    assert len(frames) >= 1
    assert all(f.startswith(b"\xff\xd8") and f.endswith(b"\xff\xd9") for f in frames)
    image = cv2.imdecode(np.frombuffer(frames[0], np.uint8), cv2.IMREAD_COLOR)
    assert image.shape == (240, 320, 3)  # the 640x480 video at the default 320 px view


def test_chromium_draws_a_live_view_frame_when_it_arrives_not_a_frame_later(browser):
    """The kiosk's MJPEG framing (`PART`) in the real browser: black and white frames 0.4 s apart,
    each drawn within 0.15 s of being sent (a bare part waits for the next: 0.4 s)."""
    import asyncio

    import cv2
    import numpy as np
    from aiohttp import web

    from shelfsight.edge.kiosk.app import PART

    frames = [cv2.imencode(".jpg", np.full((24, 32, 3), v, np.uint8))[1].tobytes() for v in (0, 255)]
    sent = []

    async def stream(request):
        response = web.StreamResponse(headers={"Content-Type": "multipart/x-mixed-replace; boundary=frame"})
        await response.prepare(request)
        await response.write(PART)
        for n in range(8):
            sent.append(time.time())
            await response.write(frames[(n + 1) % 2] + PART)  # white first
            await asyncio.sleep(0.4)
        return response

    page_html = """<img id="live"><canvas id="c" width="4" height="4"></canvas><script>
      window.seen = []; let last = -1;
      (function tick() {
        const img = document.getElementById("live");
        if (img.naturalWidth) {
          const c = document.getElementById("c").getContext("2d");
          c.drawImage(img, 0, 0, 4, 4);
          const white = c.getImageData(2, 2, 1, 1).data[0] > 127 ? 1 : 0;
          if (white !== last) { last = white; seen.push(Date.now() / 1000); }
        }
        requestAnimationFrame(tick);
      })();
    </script>"""
    app = web.Application()
    app.router.add_get("/", lambda r: web.Response(text=page_html, content_type="text/html"))
    app.router.add_get("/stream.mjpg", stream)
    with _served(app) as url:
        page = browser.new_page()
        page.goto(url)
        page.evaluate("document.getElementById('live').src = '/stream.mjpg'")
        page.wait_for_function("window.seen.length >= 7", timeout=10_000)
        seen = page.evaluate("window.seen")
        page.close()
    delays = [shown - at for shown, at in zip(seen, sent)]
    assert max(delays[1:]) < 0.15, delays  # the first includes the page's own start


def test_the_pages_own_mjpeg_reader_draws_every_part_however_the_stream_is_cut(browser):
    """The page's own MJPEG reader (fetch, ImageDecoder, a canvas): a preamble, parts cut
    into 7-byte writes; each frame is drawn, the last one without waiting for a next part."""
    import asyncio

    import cv2
    import numpy as np
    from aiohttp import web

    from shelfsight.edge.kiosk.app import PART, STATIC

    levels = (255, 0, 255, 0, 255)
    frames = [cv2.imencode(".jpg", np.full((24, 32, 3), v, np.uint8))[1].tobytes() for v in levels]

    async def stream(request):
        response = web.StreamResponse(headers={"Content-Type": "multipart/x-mixed-replace; boundary=frame"})
        await response.prepare(request)
        data = b"\r\n" + PART + b"".join(f + PART for f in frames)  # a ping before the first part, as the kiosk's
        for at in range(0, len(data), 7):
            await response.write(data[at:at + 7])
            await asyncio.sleep(0.002)
        while request.transport is not None and not request.transport.is_closing():
            await asyncio.sleep(0.05)  # held open: no next part comes
        return response

    app = web.Application()
    app.router.add_get("/", lambda r: web.FileResponse(STATIC / "kiosk.html"))
    app.router.add_static("/static/", STATIC)
    app.router.add_get("/stream.mjpg", stream)
    with _served(app) as url:
        page = browser.new_page()
        page.goto(url)
        page.wait_for_function(f"window.__kiosk.viewFrames >= {len(frames)}", timeout=10_000)
        time.sleep(0.3)
        assert page.evaluate("window.__kiosk.viewFrames") == len(frames)
        white = page.evaluate("""() => {
            const c = document.createElement("canvas");
            c.width = c.height = 4;
            c.getContext("2d").drawImage(document.getElementById("live"), 0, 0, 4, 4);
            return c.getContext("2d").getImageData(2, 2, 1, 1).data[0];
        }""")
        page.close()
    assert white > 200  # the last frame on screen


@contextlib.contextmanager
def _served(app):
    """``app`` on a loopback port from a thread of its own (Playwright's sync API holds this
    thread's loop); yields its URL."""
    import asyncio

    from aiohttp import web

    runner = web.AppRunner(app, shutdown_timeout=1.0)

    async def start():
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()

    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    asyncio.run_coroutine_threadsafe(start(), loop).result(10)
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}/"
    finally:
        asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)


def test_a_hidden_page_streams_nothing_and_picks_up_again_when_shown(kiosk, product, browser):
    item, _, _ = product
    station, url, _ = kiosk()
    page = browser.new_page()
    page.goto(url)
    page.wait_for_selector(f'.candidate[data-item="{item}"]', timeout=3000)

    def screens():
        return _http(f"{url}/api/staff/state", headers={"Authorization": f"Bearer {TOKEN}"})[1]["screens"]

    def until(expected):
        deadline = time.monotonic() + 5
        while screens() != expected:
            assert time.monotonic() < deadline, screens()
            time.sleep(0.05)

    def show(hidden):
        page.evaluate("""(hidden) => {
            Object.defineProperty(document, "hidden", { value: hidden, configurable: true });
            Object.defineProperty(document, "visibilityState", { value: hidden ? "hidden" : "visible",
                                                                 configurable: true });
            document.dispatchEvent(new Event("visibilitychange"));
        }""", hidden)

    until({"streams": 1, "listeners": 1})
    show(True)  # a screen saver, another app in front
    until({"streams": 0, "listeners": 0})
    encoded, drawn = station.view.encoded, page.evaluate("window.__kiosk.viewFrames")
    time.sleep(1.5)  # longer than the page's reconnect delay
    assert station.view.encoded == encoded and screens() == {"streams": 0, "listeners": 0}
    show(False)
    until({"streams": 1, "listeners": 1})
    page.wait_for_function(f"window.__kiosk.viewFrames > {drawn}", timeout=3000)  # the live view again
    frame = page.evaluate("window.__kiosk.state.frame")
    page.wait_for_function(f"window.__kiosk.state.frame > {frame}", timeout=3000)  # answers flow again
    assert station.view.encoded > encoded
    page.close()


def test_the_kiosk_command_serves_the_page_and_stops_on_sigterm(indexed, product, tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    bundle = tmp_path / "bundle"
    shutil.copytree(indexed, bundle)
    proc = subprocess.Popen([sys.executable, "-m", "shelfsight", "kiosk", str(bundle), "--source", str(product[1]),
                             "--loop", "--port", str(port), "--store", str(tmp_path / "fb"), "--sink",
                             f"jsonl:{tmp_path / 'e.jsonl'}"], stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "SHELFSIGHT_STAFF_TOKEN": ""})
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:
            try:
                state = _state_after(url, 1, timeout=1.0)
                break
            except (OSError, AssertionError):
                assert proc.poll() is None and time.monotonic() < deadline
        assert state["candidates"][0]["item_id"] == product[0]
        with urllib.request.urlopen(url + "/", timeout=5) as r:
            page = r.read().decode()
        assert "/static/kiosk.js" in page and "http" not in page.replace('"http-equiv"', "")
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert f"staff page: http://127.0.0.1:{port}/staff?token=" in err and "0 confirmed, 0 enrolments" in err


def test_the_latency_tool_reports_latency_and_the_uis_cpu_with_and_without_a_debugger(indexed, product):
    from shelfsight.tools.kiosk_latency import measure

    with ThreadPoolExecutor(1) as pool:  # a thread of its own: the `browser` fixture's Playwright holds this one
        report = pool.submit(measure, indexed, product[1], seconds=2.0, view_fps=15, chromium=str(CHROMIUM),
                             warmup_s=1.0, view_width=320).result()
    assert report["view_width"] == 320 and report["frames_rendered"] > 0 and report["live_view_fps"] > 0
    assert 0 < report["latency_ms"]["p50"] <= report["latency_ms"]["p95"] <= report["latency_ms"]["max"]
    cpu = report["cpu_pct_of_one_core"]
    plain = cpu["plain_browser"]
    for figures in (cpu, plain):  # each rounded to 0.1 on its own
        assert abs(figures["ui_total"] - figures["ui_server_side"] - figures["browser"]) <= 0.151
        assert "renderer" in figures["browser_by_process"]
        assert abs(sum(figures["browser_by_process"].values()) - figures["browser"]) <= 0.05 * 6
    assert report["live_view_element"] == "canvas" and report["live_view_drawn_fps"] > 0
    assert plain["live_view_fps"] > 0 and plain["browser"] > 0  # the plain browser showed the page

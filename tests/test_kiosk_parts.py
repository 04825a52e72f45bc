"""The kiosk's parts without a model or a browser: the products shown, the feedback store, teaching
under a flood, the staff token, the options and the thread -> asyncio bridge."""
from __future__ import annotations

import asyncio
import contextlib
import csv
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from shelfsight.edge.catalog.items import CatalogItem
from shelfsight.edge.catalog.search import Match
from shelfsight.edge.kiosk.candidates import choose, filter_items
from shelfsight.edge.kiosk.feedback import FeedbackStore
from shelfsight.edge.kiosk.live import Latest
from shelfsight.edge.kiosk.options import KioskOptions
from shelfsight.edge.kiosk.teach import Teacher
from shelfsight.edge.runtime.postprocess import Prediction, Recognition
from shelfsight.errors import ConfigError

ITEMS = {i.item_id: i for i in (CatalogItem("apple-1", label="Apple", sku="111", name="Green apple"),
                                CatalogItem("apple-2", label="Apple", sku="112", name="Red apple"),
                                CatalogItem("lemon", label="Lemon", name="Lemon"),
                                CatalogItem("kiwi", label="Kiwi", name="Kiwi"),
                                CatalogItem("new-tea", label="new-tea", name="House tea"))}


def _recognition(label, predictions, matches=()):
    return Recognition(label, predictions[0][1], tuple(Prediction(l, s, i) for i, (l, s) in enumerate(predictions)),
                       tuple(Match(m, ITEMS[m].sku, ITEMS[m].label, ITEMS[m].name, s) for m, s in matches), 3.0)


def test_classes_are_shown_as_their_best_matching_item_then_other_matches():
    r = _recognition("Apple", [("Apple", 0.7), ("Lemon", 0.2), ("Kiwi", 0.1)], [("apple-2", 0.97), ("new-tea", 0.96)])
    known, shown = choose(r, ITEMS, taught=())
    assert known is True
    assert [(c.item_id, c.confidence, c.why) for c in shown] == [("apple-2", 0.7, "model"), ("lemon", 0.2, "model"),
                                                                  ("kiwi", 0.1, "model")]
    _, shown = choose(_recognition("Apple", [("Apple", 0.9)], [("new-tea", 0.96)]), ITEMS, taught=())
    assert [(c.item_id, c.why) for c in shown] == [("apple-1", "model"), ("new-tea", "search")]


def test_a_taught_item_nearest_in_the_index_comes_first_and_makes_an_unknown_frame_known():
    r = _recognition(None, [("Lemon", 0.3), ("Apple", 0.2)], [("kiwi", 0.99), ("lemon", 0.9)])
    assert choose(r, ITEMS, taught=())[0] is False
    known, shown = choose(r, ITEMS, taught={"kiwi"})
    assert known is True and [(c.item_id, c.why) for c in shown] == [("kiwi", "taught"), ("lemon", "model"),
                                                                      ("apple-1", "model")]
    later = _recognition(None, [("Lemon", 0.3)], [("lemon", 0.99), ("kiwi", 0.9)])  # taught, but not the nearest
    assert choose(later, ITEMS, taught={"kiwi"})[1][0].item_id == "lemon"


def test_a_taught_item_wins_a_near_tie_with_the_item_the_model_thought_it_was():
    # the shop's photos and the catalog photo of the model's answer are about as near the same view
    tie = _recognition("Lemon", [("Lemon", 0.8), ("Kiwi", 0.1)], [("lemon", 0.991), ("kiwi", 0.975)])
    assert [(c.item_id, c.why) for c in choose(tie, ITEMS, taught={"kiwi"})[1][:2]] == [("kiwi", "taught"),
                                                                                        ("lemon", "model")]
    clear = _recognition("Lemon", [("Lemon", 0.8)], [("lemon", 0.991), ("kiwi", 0.969)])  # 0.022 apart: not a tie
    assert [(c.item_id, c.why) for c in choose(clear, ITEMS, taught={"kiwi"})[1][:2]] == [("lemon", "model"),
                                                                                          ("kiwi", "search")]


def test_the_name_filter_matches_every_word_in_name_label_or_sku():
    assert [c.item_id for c in filter_items(ITEMS, "APPLE")] == ["apple-1", "apple-2"]
    assert [c.item_id for c in filter_items(ITEMS, "red app")] == ["apple-2"]
    assert [c.item_id for c in filter_items(ITEMS, "112")] == ["apple-2"]
    assert filter_items(ITEMS, "banana") == [] and len(filter_items(ITEMS, "", limit=2)) == 2


def _add(store, n, item="lemon"):
    return [store.add(f"event-{item}-{i}", item, item, item, "Lemon", "Apple", 0.5, "bundle-1",
                      np.full((32, 32, 3), 10 * i, np.uint8)) for i in range(n)]


def test_the_store_moves_each_photo_once_and_exports_a_dataset(tmp_path):
    with FeedbackStore(tmp_path / "fb") as store:
        photos = _add(store, 4)
        with ThreadPoolExecutor(8) as pool:
            moved = list(pool.map(lambda _: store.move([p.id for p in photos], "enrolled", "pending"), range(8)))
        assert sorted(map(len, moved)) == [0] * 7 + [4]
        _add(store, 1, "kiwi")
        kiwi = store.photos("kiwi")[0]
        assert store.move([kiwi.id], "discarded", "pending") == [kiwi.id] and not store.path(kiwi).exists()
        report = store.export(tmp_path / "out")
        assert report == {"photos": 4, "items": 1, "missing_images": 0, "manifest": str(tmp_path / "out" / "manifest.csv")}
        with open(tmp_path / "out" / "manifest.csv", newline="") as f:
            rows = list(csv.DictReader(f))
        assert [(r["item_id"], r["predicted"], r["status"]) for r in rows] == [("lemon", "Apple", "enrolled")] * 4
        assert all((tmp_path / "out" / r["path"]).is_file() for r in rows)
        with pytest.raises(ConfigError, match="not an empty folder"):
            store.export(tmp_path / "out")
    with pytest.raises(ConfigError, match="no feedback store here"):
        FeedbackStore.open_existing(tmp_path / "nothing")


class _Index:
    def __init__(self):
        self.catalog, self.enrolled, self.calls = list(ITEMS.values()), (), []

    def enroll(self, item, vectors):
        self.calls.append((item.item_id, len(vectors)))


class _Recognizer:
    labels = ("Apple", "Lemon", "Kiwi")

    def __init__(self):
        self.index = _Index()

    def embed(self, image):
        return np.ones(4, np.float32)


def test_a_flood_of_kept_photos_enrols_each_batch_once(tmp_path):
    rec = _Recognizer()
    store = FeedbackStore(tmp_path / "fb")
    teacher = Teacher(store, lambda: contextlib.nullcontext(rec), teach_after=3, review=False, next_frame_id=lambda: 42)
    _add(store, 7)
    with ThreadPoolExecutor(8) as pool:
        results = [r for r in pool.map(lambda _: teacher.kept("lemon"), range(20)) if r]
    assert results == [{"enrolled": "lemon", "photos": 7, "from_frame": 42}]
    assert rec.index.calls == [("lemon", 7)] and store.counts()["enrolled"] == 7 and teacher.taught() == {"lemon"}
    store.close()


def test_review_mode_holds_photos_until_staff_approve_or_discard(tmp_path):
    rec = _Recognizer()
    store = FeedbackStore(tmp_path / "fb")
    teacher = Teacher(store, lambda: contextlib.nullcontext(rec), teach_after=2, review=True)
    _add(store, 1)
    assert teacher.kept("lemon") is None
    store.add("e-x", "lemon", "lemon", "lemon", "Lemon", None, 0.1, "b", np.zeros((8, 8, 3), np.uint8))
    assert teacher.kept("lemon") == {"held": "lemon", "photos": 2} and rec.index.calls == []
    assert [g["item_id"] for g in store.queue()] == ["lemon"]
    assert teacher.approve("lemon")["photos"] == 2 and rec.index.calls == [("lemon", 2)]
    with pytest.raises(KeyError):
        teacher.approve("lemon")
    with pytest.raises(KeyError):
        teacher.discard("kiwi")
    store.close()


def test_the_staff_token_is_required_and_compared_whole():
    from aiohttp import web
    from aiohttp.test_utils import make_mocked_request

    from shelfsight.edge.kiosk import staff

    app = web.Application()
    app[staff.TOKEN] = "right-token-123"

    def check(path, headers=None):
        return staff.authorised(make_mocked_request("GET", path, headers=headers or {}, app=app))

    assert check("/staff") is None
    assert check("/staff?token=right-token-123") is True
    assert check("/staff?token=right-token-12") is False
    assert check("/x", {"Authorization": "Bearer right-token-123"}) is True
    assert check("/x", {"Authorization": "Basic right-token-123"}) is False
    assert check("/x", {"Cookie": f"{staff.COOKIE}={staff._mac('right-token-123')}"}) is True
    assert check("/x", {"Cookie": f"{staff.COOKIE}=right-token-123"}) is False  # the cookie holds a MAC, not the token


@pytest.mark.parametrize("kwargs, message", [
    ({"staff_token": "short"}, "at least 8 characters"),
    ({"port": 70000}, "port must be a whole number 0..65535"),
    ({"view_fps": 0}, "view_fps must be a whole number 1..30"),
    ({"teach_after": -1}, "teach_after must be a whole number 0..1000"),
    ({"source_fps": 0}, "source_fps must be within"),
])
def test_bad_kiosk_options_are_refused_in_one_line(tmp_path, kwargs, message):
    with pytest.raises(ConfigError, match=message):
        KioskOptions(**{"store": tmp_path, "staff_token": "long-enough", **kwargs})


def test_the_kiosk_binds_loopback_by_default(tmp_path):
    assert KioskOptions(tmp_path, "long-enough").loopback is True
    assert KioskOptions(tmp_path, "long-enough", host="0.0.0.0").loopback is False


def test_latest_wakes_every_waiting_loop_with_the_newest_value_and_ends_on_close():
    latest = Latest()

    async def wait(seq):
        return await latest.newer(seq)

    async def both():
        first = asyncio.ensure_future(wait(0))
        await asyncio.sleep(0.01)
        threading.Thread(target=lambda: (latest.publish("a"), latest.publish("b"))).start()
        got = await asyncio.wait_for(first, 2)
        assert got in ((1, "a"), (2, "b"))
        assert await asyncio.wait_for(wait(1), 2) == (2, "b")
        later = asyncio.ensure_future(wait(2))
        await asyncio.sleep(0.01)
        latest.close()
        assert await asyncio.wait_for(later, 2) is None

    asyncio.run(both())


# ---- per-photo review and the photo sync setting --------------------------------------------

def _held(store, teacher, n, item="lemon"):
    photos = _add(store, n, item)
    assert teacher.kept(item) == {"held": item, "photos": n}
    return [p.id for p in photos]


def test_staff_approve_or_discard_single_held_photos_and_the_rest_stay_held(tmp_path):
    rec = _Recognizer()
    store = FeedbackStore(tmp_path / "fb")
    teacher = Teacher(store, lambda: contextlib.nullcontext(rec), teach_after=3, review=True, next_frame_id=lambda: 7)
    first, second, third = _held(store, teacher, 3)
    assert teacher.discard("lemon", [second]) == 1 and not store.path(store.photo(second)).exists()
    assert teacher.approve("lemon", [third]) == {"enrolled": "lemon", "photos": 1, "from_frame": 7}
    assert rec.index.calls == [("lemon", 1)] and [g["photos"] for g in store.queue()] == [[first]]
    assert [(p.id, p.status) for p in store.photos("lemon")] == [(first, "held"), (second, "discarded"),
                                                                  (third, "enrolled")]
    with pytest.raises(KeyError):
        teacher.approve("lemon", [second])  # discarded: not waiting any more
    with pytest.raises(KeyError):
        teacher.discard("kiwi", [first])  # a photo of another product
    assert teacher.approve("lemon") == {"enrolled": "lemon", "photos": 1, "from_frame": 7}  # approve all: the rest
    assert rec.index.calls == [("lemon", 1), ("lemon", 1)] and store.queue() == []
    store.close()


def test_the_staff_routes_decide_one_photo_or_all_photos_of_a_product(tmp_path):
    from types import SimpleNamespace

    from aiohttp import web
    from aiohttp.test_utils import TestClient, TestServer

    from shelfsight.edge.kiosk import staff

    rec = _Recognizer()
    store = FeedbackStore(tmp_path / "fb")
    teacher = Teacher(store, lambda: contextlib.nullcontext(rec), teach_after=2, review=True)
    one, two = _held(store, teacher, 2)
    kiwi = _held(store, teacher, 2, "kiwi")
    app = web.Application()
    app[staff.SCREENS] = SimpleNamespace(station=SimpleNamespace(store=store, teacher=teacher))
    staff.add_routes(app, "right-token-123")
    auth = {"Authorization": "Bearer right-token-123"}

    async def calls():
        async with TestClient(TestServer(app)) as client:
            async def post(path, headers=auth):
                r = await client.post(path, headers=headers)
                return r.status, await r.json()

            assert (await post(f"/api/staff/photo/{one}/approve", {}))[0] == 401
            assert await post(f"/api/staff/photo/{one}/discard") == (200, {"discarded": "lemon", "photos": 1})
            assert await post(f"/api/staff/photo/{one}/approve") == (
                404, {"error": f"photo {one} is not waiting for review (it is discarded)"})
            assert await post(f"/api/staff/photo/{two}/approve") == (
                200, {"enrolled": "lemon", "photos": 1, "from_frame": 0})
            assert await post("/api/staff/photo/999/approve") == (404, {"error": "no photo '999' on this device"})
            assert await post("/api/staff/photo/x/discard") == (404, {"error": "no photo 'x' on this device"})
            assert await post("/api/staff/queue/lemon/approve") == (
                404, {"error": "no photos of 'lemon' are waiting for review"})
            assert await post("/api/staff/queue/kiwi/discard") == (200, {"discarded": "kiwi", "photos": 2})

    asyncio.run(calls())
    assert rec.index.calls == [("lemon", 1)] and store.queue() == []
    assert [store.photo(i).status for i in (one, two, *kiwi)] == ["discarded", "enrolled", "discarded", "discarded"]
    store.close()


def test_a_feedback_event_carries_the_kept_photo_under_the_confirmed_events_id(tmp_path):
    import base64

    from shelfsight.edge.kiosk.feedback import feedback_event

    with FeedbackStore(tmp_path / "fb") as store:
        photo = _add(store, 1)[0]
        data = store.path(photo).read_bytes()
        event = feedback_event(photo, data)
    assert {k: v for k, v in event.items() if k not in ("time", "jpeg")} == {
        "id": "event-lemon-0-photo", "kind": "feedback", "confirmed_event": "event-lemon-0", "photo": photo.id,
        "item_id": "lemon", "sku": "lemon", "name": "lemon", "label": "Lemon", "predicted": "Apple", "score": 0.5,
        "bundle_id": "bundle-1"}
    assert base64.b64decode(event["jpeg"]) == data and event["time"].endswith("+00:00")


class _Bundle:
    bundle_id = "bundle-1"


class _TapRecognizer(_Recognizer):
    bundle = _Bundle()


def _confirmations(tmp_path, share, teach_after=0, review=False):
    from shelfsight.edge.kiosk.confirm import Confirmations
    from shelfsight.edge.kiosk.live import LiveView

    rec, view, events = _TapRecognizer(), LiveView(), []
    store = FeedbackStore(tmp_path / "fb")
    teacher = Teacher(store, lambda: contextlib.nullcontext(rec), teach_after=teach_after, review=review,
                      share=share)
    confirmations = Confirmations(view, lambda: contextlib.nullcontext(rec), teacher, events.append, share=share)

    def frame(label="Lemon"):
        frame_id = view.take_frame_id()
        view.answered(frame_id, np.zeros((16, 16, 3), np.uint8),
                      _recognition(label, [(label, 0.9), ("Kiwi", 0.1)]))
        return frame_id

    return confirmations, frame, events, store


def test_kept_photos_are_shared_once_each_and_only_where_the_model_was_wrong(tmp_path):
    shared = []
    confirmations, frame, events, store = _confirmations(tmp_path, shared.append)
    right = frame()
    assert confirmations.confirm(right, "lemon")["kept"] is False
    wrong = frame()
    assert confirmations.confirm(wrong, "kiwi")["kept"] is True
    assert confirmations.confirm(wrong, "kiwi")["duplicate"] is True  # a repeated tap shares nothing again
    assert [p.event_id for p in shared] == [events[1]["id"]] and len(events) == 2
    assert shared[0] == store.photos("kiwi")[0]
    store.close()


def test_in_review_mode_a_photo_is_shared_once_staff_approved_it_and_a_discarded_one_never(tmp_path):
    shared = []
    confirmations, frame, events, store = _confirmations(tmp_path, shared.append, teach_after=3, review=True)
    answers = [confirmations.confirm(frame(), "kiwi") for _ in range(3)]
    assert answers[-1]["taught"] == {"held": "kiwi", "photos": 3} and shared == []  # waiting for staff
    first, second, third = [p.id for p in store.photos("kiwi")]
    assert confirmations.teacher.discard("kiwi", [second]) == 1 and shared == []
    confirmations.teacher.approve("kiwi", [first])
    assert [p.id for p in shared] == [first]
    confirmations.teacher.approve("kiwi")
    assert [(p.id, p.status) for p in shared] == [(first, "enrolled"), (third, "enrolled")]
    store.close()


def test_a_photo_that_cannot_be_shared_is_still_kept_and_its_tap_still_confirmed(tmp_path):
    def full(photo):
        raise OSError("disk full")

    confirmations, frame, events, store = _confirmations(tmp_path, full)
    answer = confirmations.confirm(frame(), "kiwi")
    assert (answer["kept"], len(events), store.counts()["pending"]) == (True, 1, 1)
    store.close()


def test_sync_photos_without_an_outbox_is_refused_before_anything_starts(tmp_path):
    from shelfsight.edge.kiosk.station import KioskStation
    from shelfsight.edge.runtime.options import RecognizerOptions

    with pytest.raises(ConfigError, match="sync_photos sends kept photos through the sync outbox"):
        KioskStation(RecognizerOptions(tmp_path / "bundle"), "0",
                     KioskOptions(tmp_path / "fb", "long-enough", sync_photos=True))
    assert not (tmp_path / "fb").exists()


def test_the_kiosk_command_refuses_sync_photos_without_an_outbox_in_one_line(tmp_path, capsys):
    from cli_run import run_cli

    code, out, err = run_cli(["kiosk", tmp_path, "--source", "0", "--sync-photos", "--staff-token", "long-enough",
                              "--store", tmp_path / "fb"], capsys)
    assert code == 2 and out == "" and err.count("\n") == 1
    assert "--sync-photos sends the kept photos through the sync outbox: give --outbox DB" in err
    assert not (tmp_path / "fb").exists()


def test_the_live_view_is_scaled_down_bilinear_to_half_size_by_area_below_and_never_up():
    import cv2

    from shelfsight.edge.kiosk.live import view_image

    rng = np.random.default_rng(0)
    vga = rng.integers(0, 256, (480, 640, 3), np.uint8)
    assert np.array_equal(view_image(vga, 480), cv2.resize(vga, (480, 360), interpolation=cv2.INTER_LINEAR))
    assert np.array_equal(view_image(vga, 320), cv2.resize(vga, (320, 240), interpolation=cv2.INTER_LINEAR))
    full_hd = rng.integers(0, 256, (1080, 1920, 3), np.uint8)
    assert np.array_equal(view_image(full_hd, 480), cv2.resize(full_hd, (480, 270), interpolation=cv2.INTER_AREA))
    assert view_image(vga, 640) is vga and view_image(vga, 1024) is vga

"""RecognizerOptions and the running modes (image, video, live stream) on a real int8 bundle."""
from __future__ import annotations

import threading

import numpy as np
import pytest

from shelfsight.edge.runtime.options import RecognizerOptions, RunningMode
from shelfsight.edge.runtime.smoothing import SmoothingOptions
from shelfsight.errors import ConfigError


def _callback(*_):
    pass


@pytest.mark.parametrize("kwargs, message", [
    ({"smoothing": SmoothingOptions()}, "smoothing belongs to the video and live-stream modes"),
    ({"running_mode": RunningMode.VIDEO, "smoothing": 3}, "smoothing must be SmoothingOptions, got int"),
    ({"running_mode": RunningMode.LIVE_STREAM}, "the live-stream mode needs a result_callback"),
    ({"running_mode": RunningMode.VIDEO, "result_callback": _callback}, "result_callback is for the live-stream"),
    ({"running_mode": "video"}, "running_mode must be a RunningMode, got 'video'"),
    ({"top_k": 0}, "top_k must be a whole number >= 1, got 0"),
    ({"search_k": -1}, "search_k must be a whole number >= 0, got -1"),
    ({"threads": True}, "threads must be a whole number >= 1, got True"),
    ({"delegates": ["libedgetpu.so.1"]}, "delegates must be a tuple of library names, got list"),
    ({"unknown_threshold": 1.5}, "unknown_threshold must be within 0..1, got 1.5"),
])
def test_options_refuse_what_their_mode_cannot_use(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        RecognizerOptions("bundle", **kwargs)


def test_stream_modes_smooth_by_default_and_image_mode_does_not():
    assert RecognizerOptions("b").stream_smoothing is None
    assert RecognizerOptions("b", running_mode=RunningMode.VIDEO).stream_smoothing == SmoothingOptions()
    custom = SmoothingOptions(stable_frames=2, reset_frames=1)
    live = RecognizerOptions("b", running_mode=RunningMode.LIVE_STREAM, smoothing=custom, result_callback=_callback)
    assert live.stream_smoothing is custom


@pytest.fixture(scope="module")
def banana(sample_data):
    from shelfsight.images import read_image

    return read_image(sample_data / "val" / "Fruit" / "Banana" / "Banana_001.jpg")


@pytest.mark.slow
def test_video_mode_reports_once_per_appearance_with_the_image_mode_result(int8_bundle, banana):
    from shelfsight.edge.runtime.recognizer import Recognizer

    with Recognizer.create_from_bundle(int8_bundle, unknown_threshold=0.0) as image_rec:
        expected = image_rec.recognize(banana)
        with pytest.raises(ConfigError, match=r"recognize_for_video\(\) is for the video mode; .* image mode"):
            image_rec.recognize_for_video(banana, 0)
    options = RecognizerOptions(int8_bundle, running_mode=RunningMode.VIDEO, unknown_threshold=0.0,
                                smoothing=SmoothingOptions(stable_frames=3, reset_frames=2))
    rec = Recognizer.create_from_options(options)
    results = [rec.recognize_for_video(banana, t * 33) for t in range(6)]
    assert [r.reported for r in results] == [False, False, True, False, False, False]
    assert {r.label for r in results} == {expected.label}
    np.testing.assert_allclose([r.score for r in results], expected.score, atol=1e-6)
    assert [m.item_id for m in results[0].matches] == [m.item_id for m in expected.matches]
    with pytest.raises(ValueError, match="timestamp 165 ms is not after the previous frame's 165 ms"):
        rec.recognize_for_video(banana, 165)
    with pytest.raises(ConfigError, match=r"recognize\(\) is for the image mode"):
        rec.recognize(banana)
    rec.close()
    rec.close()  # idempotent


@pytest.mark.slow
def test_live_stream_delivers_through_the_callback_and_keeps_only_the_newest_waiting_frame(int8_bundle, banana):
    from shelfsight.edge.runtime.recognizer import Recognizer

    entered, release = threading.Event(), threading.Event()
    delivered: list[tuple[int, bool, tuple]] = []

    def on_result(result, frame, timestamp_ms):
        delivered.append((timestamp_ms, result.reported, frame.shape))
        entered.set()
        release.wait(10)

    options = RecognizerOptions(int8_bundle, running_mode=RunningMode.LIVE_STREAM, unknown_threshold=0.0,
                                smoothing=SmoothingOptions(stable_frames=2, reset_frames=2),
                                result_callback=on_result)
    rec = Recognizer.create_from_options(options)
    rec.recognize_async(banana, 0)
    assert entered.wait(30)  # the worker holds frame 0 inside the callback
    for t in (10, 20, 30):  # 10 and 20 are replaced while they wait; 30 is recognised
        rec.recognize_async(banana, t)
    release.set()
    rec.close()  # finishes the waiting frame, then stops
    assert delivered == [(0, False, banana.shape), (30, True, banana.shape)]
    assert rec.dropped == 2
    with pytest.raises(ConfigError, match="this recogniser is closed"):
        rec.recognize_async(banana, 40)
    rec.close()

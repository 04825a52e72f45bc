"""Capture thread: newest frame only for live sources, every frame for files, reopen with backoff."""
from __future__ import annotations

import functools
import threading
import time
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

import cv2
import pytest

from edge_fakes import ColourRecognizer, FlakySource, colour_frame
from shelfsight.backoff import BackoffOptions
from shelfsight.edge.pipeline.capture import LatestFrameCapture, Reopen
from shelfsight.edge.pipeline.sources import ArraySource, open_source
from shelfsight.errors import ConfigError, SourceError

FAST = BackoffOptions(initial_s=0.01, max_s=0.04, factor=2.0)


def wait_until(predicate, timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.005)


def test_backoff_delays_and_validation():
    options = BackoffOptions(initial_s=0.5, max_s=4.0, factor=2.0)
    assert [options.delay(a) for a in range(1, 6)] == [0.5, 1.0, 2.0, 4.0, 4.0]
    with pytest.raises(ConfigError, match="initial_s must be > 0 seconds, got 0"):
        BackoffOptions(initial_s=0)
    with pytest.raises(ConfigError, match=r"max_s must be >= initial_s \(1.0\), got 0.5"):
        BackoffOptions(initial_s=1.0, max_s=0.5)
    with pytest.raises(ConfigError, match="factor must be >= 1, got 0.5"):
        BackoffOptions(factor=0.5)


def test_file_source_delivers_every_frame_in_order_then_ends():
    source = ArraySource([colour_frame("apple")] * 30)
    with LatestFrameCapture(source) as capture:
        assert capture.drop is False
        indices = []
        while (frame := capture.next_frame(timeout=5)) is not None:
            indices.append(frame.index)
            time.sleep(0.001 if frame.index % 10 == 0 else 0)  # a consumer slower than the reader
        assert indices == list(range(30))
        assert capture.done and capture.dropped == 0 and capture.frames_read == 30
    assert not source.is_open


def test_latest_frame_mode_keeps_only_the_newest_and_counts_drops():
    source = ArraySource([colour_frame("apple")] * 50)
    with LatestFrameCapture(source, drop=True) as capture:
        wait_until(lambda: capture.frames_read == 50)
        frame = capture.next_frame(timeout=5)
        assert frame.index == 49
        assert capture.dropped == 49
        assert capture.next_frame(timeout=5) is None and capture.done


def test_next_frame_times_out_with_none_while_the_stream_is_alive():
    source = FlakySource([["end"]] * 100)
    with LatestFrameCapture(source, backoff=FAST) as capture:
        started = time.monotonic()
        assert capture.next_frame(timeout=0.05) is None
        assert time.monotonic() - started >= 0.04
        assert not capture.done


def test_live_source_that_fails_mid_run_is_reopened_with_backoff_and_reported():
    reports: list[Reopen] = []
    source = FlakySource([["frame", "frame", "raise"], "refuse", ["frame", "end"], ["frame"] * 3])
    capture = LatestFrameCapture(source, drop=False, backoff=FAST, on_reopen=reports.append)
    with capture:
        frames = [capture.next_frame(timeout=5) for _ in range(6)]
    assert all(f is not None for f in frames)
    assert [f.index for f in frames] == list(range(6))
    assert [(r.attempt, r.delay_s) for r in reports[:3]] == [(1, 0.01), (2, 0.02), (1, 0.01)]
    assert reports[0].reason == "read failed: OSError: flaky: cable pulled"
    assert reports[1].reason == "open failed: flaky: camera busy"
    assert reports[2].reason == "stream ended"
    assert capture.reopens == len(reports) >= 3
    assert source.opens >= 4
    assert not source.is_open


def test_live_source_that_does_not_open_at_start_is_retried():
    reports: list[Reopen] = []
    source = FlakySource(["refuse", "refuse", ["frame"] * 5])
    with LatestFrameCapture(source, backoff=FAST, on_reopen=reports.append) as capture:
        frame = capture.next_frame(timeout=5)
    assert frame is not None
    assert [r.attempt for r in reports[:1]] == [1]
    assert source.opens >= 3


def test_file_source_that_cannot_open_raises_at_start(tmp_path):
    bogus = tmp_path / "clip.mp4"
    bogus.write_bytes(b"x" * 100)
    capture = LatestFrameCapture(open_source(str(bogus)))
    with pytest.raises(SourceError, match="OpenCV could not open it"):
        capture.start()


def test_file_source_read_failure_surfaces_after_the_good_frames():
    class Broken(ArraySource):
        def _read(self):
            frame = super()._read()
            if frame is not None and frame.index == 2:
                raise OSError("disk gone")
            return frame

    with LatestFrameCapture(Broken([colour_frame("apple")] * 5)) as capture:
        assert capture.next_frame(timeout=5).index == 0
        assert capture.next_frame(timeout=5).index == 1
        with pytest.raises(SourceError, match="source array failed while reading: disk gone"):
            capture.next_frame(timeout=5)


def test_stop_is_prompt_during_backoff_and_safe_twice():
    source = FlakySource(["refuse"] * 100)
    capture = LatestFrameCapture(source, backoff=BackoffOptions(initial_s=30.0, max_s=30.0))
    capture.start()
    wait_until(lambda: capture.reopens == 1)
    started = time.monotonic()
    capture.stop()
    capture.stop()
    assert time.monotonic() - started < 2.0
    assert not any(t.name == "capture:flaky" for t in threading.enumerate())


def test_http_stream_through_opencv_is_reopened_when_it_ends_or_the_server_dies(tmp_path):
    writer = cv2.VideoWriter(str(tmp_path / "clip.avi"), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (320, 240))
    for label in ["apple"] * 3 + ["lime"] * 3:
        writer.write(colour_frame(label))
    writer.release()

    class Quiet(SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(tmp_path)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    source = open_source(f"http://127.0.0.1:{server.server_address[1]}/clip.avi")
    assert source.live
    reports: list[Reopen] = []
    recognizer = ColourRecognizer()
    with LatestFrameCapture(source, drop=False, backoff=FAST, on_reopen=reports.append) as capture:
        labels = [recognizer.recognize(capture.next_frame(timeout=10).image).label for _ in range(9)]
        assert labels == ["apple"] * 3 + ["lime"] * 3 + ["apple"] * 3
        assert reports[0].reason == "stream ended"
        server.shutdown()
        server.server_close()
        deadline = time.monotonic() + 20
        while not any(r.reason.startswith("open failed") for r in reports):
            assert time.monotonic() < deadline, reports
            capture.next_frame(timeout=0.05)  # keep taking frames: without drops the reader waits for us
    failed = next(r for r in reports if r.reason.startswith("open failed"))
    assert "OpenCV could not open it" in failed.reason and failed.attempt >= 2

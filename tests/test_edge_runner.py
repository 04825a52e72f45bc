"""The recognition loop end to end, with a colour-reading fake recogniser instead of a model."""
from __future__ import annotations

import base64
import json
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge_fakes import ColourRecognizer, FlakySource, colour_frame
from shelfsight.backoff import BackoffOptions
from shelfsight.edge.pipeline.health import Health
from shelfsight.edge.pipeline.quality import Roi
from shelfsight.edge.pipeline.runner import Preview, RunOptions, annotate, run
from shelfsight.edge.pipeline.sinks import JsonlSink
from shelfsight.edge.runtime.smoothing import SmoothingOptions
from shelfsight.edge.pipeline.sources import ArraySource, open_source
from shelfsight.errors import ConfigError

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent
PYTHON = sys.executable


class ListSink:
    def __init__(self):
        self.events, self.flushed, self.closed = [], 0, 0

    def emit(self, event):
        self.events.append(event)

    def flush(self):
        self.flushed += 1

    def close(self):
        self.closed += 1


def metric(health: Health, name: str) -> float:
    for line in health.render().splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    raise AssertionError(f"{name} not in metrics")


def write_video(path: Path, labels: list) -> Path:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 15.0, (320, 240))
    for label in labels:
        writer.write(colour_frame(label))
    writer.release()
    return path


def test_video_file_source_emits_one_event_per_appearance(tmp_path):
    labels = ["apple"] * 5 + [None] * 5 + ["lime"] * 5 + ["apple"] * 5 + ["lime"] + ["apple"] * 3
    video = write_video(tmp_path / "shelf.mp4", labels)
    out = tmp_path / "events.jsonl"
    health = Health(thermal_root=tmp_path)
    summary = run(open_source(str(video)), ColourRecognizer(), [JsonlSink(out)],
                  RunOptions(smoothing=SmoothingOptions(stable_frames=3, reset_frames=3)), health=health)

    events = [json.loads(line) for line in out.read_text().splitlines()]
    assert [(e["label"], e["frame"]) for e in events] == [("apple", 2), ("lime", 12), ("apple", 17)]
    assert {e["source"] for e in events} == {str(video)}
    assert all("jpeg" not in e for e in events)
    assert (summary.frames, summary.recognized, summary.events, summary.unknown) == (24, 24, 3, 5)
    assert summary.stopped_by == "end of source"
    assert summary.dropped == 0 and summary.skipped == {}
    assert summary.first_event_s is not None and summary.first_event_s < summary.duration_s
    assert 0 < summary.latency_p50_ms <= summary.latency_p99_ms
    assert metric(health, "shelfsight_frames_total") == 24
    assert metric(health, "shelfsight_events_total") == 3
    assert metric(health, "shelfsight_unknown_total") == 5
    assert metric(health, "shelfsight_fps") > 0


def test_image_folder_source_gives_the_expected_labels_and_counts_corrupt_files(tmp_path):
    folder = tmp_path / "shots"
    folder.mkdir()
    for i, label in enumerate(["apple", "apple", "lime", "plum", "plum"]):
        cv2.imwrite(str(folder / f"{i:02d}.png"), colour_frame(label))
    (folder / "02a.jpg").write_bytes(b"\xff\xd8\xff\xe0" + b"\x00" * 64)  # corrupt, sorted between
    sink = ListSink()
    health = Health(thermal_root=tmp_path)
    summary = run(open_source(str(folder)), ColourRecognizer(), [sink],
                  RunOptions(smoothing=SmoothingOptions(stable_frames=1)), health=health)
    assert [(e["label"], Path(e["source"]).name) for e in sink.events] == [
        ("apple", "00.png"), ("lime", "02.png"), ("plum", "03.png")]
    assert summary.frames == 5 and dict(summary.skipped) == {"corrupt": 1}
    assert metric(health, 'shelfsight_skipped_frames_total{reason="corrupt"}') == 1
    assert (sink.flushed, sink.closed) == (1, 1)


def test_quality_gate_skips_blurred_and_black_frames_and_counts_them(tmp_path):
    sharp = colour_frame("apple")
    frames = [sharp, cv2.GaussianBlur(sharp, (0, 0), 8), np.zeros_like(sharp), sharp]
    recognizer = ColourRecognizer()
    health = Health(thermal_root=tmp_path)
    summary = run(ArraySource(frames), recognizer, [ListSink()], health=health)
    assert len(recognizer.calls) == 2
    assert dict(summary.skipped) == {"blurry": 1, "dark": 1}
    assert (summary.frames, summary.recognized) == (4, 2)
    assert metric(health, 'shelfsight_skipped_frames_total{reason="blurry"}') == 1
    assert metric(health, 'shelfsight_skipped_frames_total{reason="dark"}') == 1
    assert metric(health, "shelfsight_recognitions_total") == 2


def test_skipped_frames_break_a_run_for_smoothing():
    sharp = colour_frame("lime")
    black = np.zeros_like(sharp)
    sink = ListSink()
    run(ArraySource([sharp, sharp, black, sharp, sharp, sharp]), ColourRecognizer(), [sink],
        RunOptions(smoothing=SmoothingOptions(stable_frames=3)))
    assert [e["frame"] for e in sink.events] == [5]


def test_a_live_source_that_fails_mid_run_is_reopened(tmp_path):
    source = FlakySource([["frame"] * 3 + ["raise"], "refuse", ["frame"] * 2 + ["end"], ["frame"] * 50])
    health = Health(thermal_root=tmp_path)
    sink = ListSink()
    summary = run(source, ColourRecognizer(), [sink],
                  RunOptions(backoff=BackoffOptions(initial_s=0.01, max_s=0.05), drop_frames=False,
                             max_frames=20, smoothing=SmoothingOptions(stable_frames=2)), health=health)
    assert summary.frames == 20 and summary.stopped_by == "max_frames"
    assert summary.reopens == 3
    assert metric(health, "shelfsight_source_reopens_total") == 3
    assert [e["label"] for e in sink.events] == ["apple"]  # the same product across reopens: one event
    assert not source.is_open


def test_recogniser_failures_are_counted_and_the_loop_goes_on(caplog):
    recognizer = ColourRecognizer(fail_on={2, 3})
    sink = ListSink()
    summary = run(ArraySource([colour_frame("plum")] * 6), recognizer, [sink],
                  RunOptions(smoothing=SmoothingOptions(stable_frames=2)))
    assert dict(summary.skipped) == {"error": 2}
    assert (summary.frames, summary.recognized) == (6, 4)
    assert [e["frame"] for e in sink.events] == [4]
    assert "recogniser failed on frame 1 of array" in caplog.text


def test_a_failing_sink_does_not_stop_the_others():
    class Broken(ListSink):
        def emit(self, event):
            raise OSError("disk full")

    good, broken = ListSink(), Broken()
    summary = run(ArraySource([colour_frame("apple")] * 3), ColourRecognizer(), [broken, good],
                  RunOptions(smoothing=SmoothingOptions(stable_frames=1)))
    assert len(good.events) == 1 and summary.events == 1 and summary.sink_errors == 1
    assert broken.closed == 1


def test_roi_is_what_the_recogniser_sees_and_jpeg_is_attached_when_asked():
    frame = colour_frame("lime", size=(240, 320))
    frame[:, :160] = colour_frame("apple", size=(240, 160))
    recognizer = ColourRecognizer()
    sink = ListSink()
    run(ArraySource([frame] * 2), recognizer, [sink],
        RunOptions(roi=Roi.parse("0.5,0.0,0.5,1.0"), jpeg_quality=70, smoothing=SmoothingOptions(stable_frames=1)))
    assert recognizer.calls[0] == ((240, 160, 3), "array")
    assert [e["label"] for e in sink.events] == ["lime"]
    jpeg = cv2.imdecode(np.frombuffer(base64.b64decode(sink.events[0]["jpeg"]), np.uint8), 1)
    assert jpeg.shape == (240, 320, 3)  # the whole frame, not the crop


def test_roi_outside_the_frame_is_a_config_error_and_sinks_are_still_closed():
    sink = ListSink()
    with pytest.raises(ConfigError, match=r"roi 300,0,100,100 .* outside the 320x240 frame"):
        run(ArraySource([colour_frame("apple")]), ColourRecognizer(), [sink], RunOptions(roi=Roi(300, 0, 100, 100)))
    assert sink.closed == 1


def test_stop_event_from_another_thread_ends_a_looping_run():
    stop = threading.Event()
    timer = threading.Timer(0.3, stop.set)
    timer.start()
    summary = run(ArraySource([colour_frame("apple")], loop=True), ColourRecognizer(delay_s=0.002),
                  [ListSink()], stop=stop)
    timer.join()
    assert summary.stopped_by == "stop requested" and summary.frames > 10 and summary.events == 1


def test_run_options_validation():
    with pytest.raises(ConfigError, match="jpeg_quality must be a whole number 1..100 or None, got 101"):
        RunOptions(jpeg_quality=101)
    with pytest.raises(ConfigError, match="max_frames must be a whole number >= 1 or None, got 0"):
        RunOptions(max_frames=0)
    with pytest.raises(ConfigError, match="run option roi must be a Roi or None, got str"):
        RunOptions(roi="0,0,10,10")
    with pytest.raises(ConfigError, match="run option quality must be QualityOptions, got dict"):
        RunOptions(quality={})


def test_show_without_a_display_is_refused_before_anything_runs(monkeypatch):
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    if not sys.platform.startswith("linux"):
        pytest.skip("display detection is for Linux")
    sink = ListSink()
    with pytest.raises(ConfigError, match="--show needs a display"):
        run(ArraySource([colour_frame("apple")]), ColourRecognizer(), [sink], RunOptions(show=True))
    assert sink.closed == 1
    with pytest.raises(ConfigError, match="DISPLAY"):
        Preview()


def test_annotate_draws_on_a_copy():
    image = colour_frame("apple")
    before = image.copy()
    out = annotate(image, "apple 0.97", (10, 10, 100, 80))
    assert np.array_equal(image, before)
    assert out.shape == image.shape and out.dtype == np.uint8
    assert not np.array_equal(out, image)
    assert tuple(out[89, 50]) == (0, 255, 255)  # the ROI's bottom edge


SIGNAL_SCRIPT = textwrap.dedent("""
    import json, sys
    sys.path.insert(0, {tests!r})
    from edge_fakes import ColourRecognizer, colour_frame
    from shelfsight.edge.pipeline.runner import RunOptions, run
    from shelfsight.edge.pipeline.sinks import JsonlSink
    from shelfsight.edge.runtime.smoothing import SmoothingOptions
    from shelfsight.edge.pipeline.sources import ArraySource

    frames = [colour_frame(label) for label in ["apple"] * 2 + [None] * 2 + ["lime"] * 2 + [None] * 2]
    summary = run(ArraySource(frames, loop=True), ColourRecognizer(delay_s=0.01), [JsonlSink(sys.argv[1])],
                  RunOptions(smoothing=SmoothingOptions(stable_frames=2, reset_frames=2)))
    print(json.dumps(summary.to_dict()))
""")


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_signal_finishes_the_frame_flushes_the_sinks_and_exits_0(tmp_path, signum):
    script = tmp_path / "device.py"
    script.write_text(SIGNAL_SCRIPT.format(tests=str(TESTS)))
    out = tmp_path / "events.jsonl"
    process = subprocess.Popen([PYTHON, str(script), str(out)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, cwd=tmp_path)
    try:
        deadline = time.monotonic() + 30
        while not (out.exists() and out.read_text().count("\n") >= 4):
            assert process.poll() is None, process.stderr.read()
            assert time.monotonic() < deadline, "no events within 30 s"
            time.sleep(0.05)
        process.send_signal(signum)
        stdout, stderr = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0, stderr
    summary = json.loads(stdout)
    assert summary["stopped_by"] == f"signal {signal.Signals(signum).name}"
    text = out.read_text()
    assert text.endswith("\n")
    events = [json.loads(line) for line in text.splitlines()]
    assert len(events) == summary["events"] >= 4
    assert [e["label"] for e in events[:4]] == ["apple", "lime", "apple", "lime"]
    assert len({e["id"] for e in events}) == len(events)


def test_runtime_runs_with_tensorflow_blocked(tmp_path):
    code = textwrap.dedent(f"""
        import sys
        for name in ("tensorflow", "tf_keras", "keras", "tensorflow_model_optimization"):
            sys.modules[name] = None  # any import of them now raises ImportError
        sys.path.insert(0, {str(TESTS)!r})
        from edge_fakes import ColourRecognizer, colour_frame
        from shelfsight.edge.pipeline import capture, events, health, quality, runner, sinks, sources
        from shelfsight.edge.runtime import smoothing
        summary = runner.run(sources.ArraySource([colour_frame("apple")] * 3), ColourRecognizer(),
                             sinks.make_sinks(["stdout"]),
                             runner.RunOptions(smoothing=smoothing.SmoothingOptions(stable_frames=3)))
        assert summary.events == 1, summary
        loaded = sorted(m for m in sys.modules if m.split(".")[0] in ("tensorflow", "keras", "tf_keras")
                        and sys.modules[m] is not None)
        assert not loaded, loaded
        assert "shelfsight.training" not in sys.modules and "shelfsight.export" not in sys.modules
    """)
    result = subprocess.run([PYTHON, "-c", code], capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["label"] == "apple"

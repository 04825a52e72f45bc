"""The long-running loop: capture -> ROI -> quality gate -> recognise -> smooth -> sinks.

`run()` takes a frame source, a recogniser (a `FrameRecognizer`: anything with
`recognize(frame_bgr, source="") -> Recognition`), and sinks; it owns them from then on: the
source is closed and the sinks are flushed and closed when it returns, whatever the reason.
SIGTERM and SIGINT (when run in the main thread) let the current frame finish, then stop;
a second SIGINT interrupts at once. Every frame is counted in `Health`; the return value is
a `RunSummary`.

Frames the quality gate rejects, and frames the recogniser fails on, count as "empty" for
smoothing: they break a run of the same label.
"""
from __future__ import annotations

import contextlib
import logging
import math
import os
import signal
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass, field, fields
from types import MappingProxyType
from typing import Iterator, Mapping, Protocol, Sequence

import cv2
import numpy as np

from shelfsight.backoff import BackoffOptions
from shelfsight.errors import ConfigError

from .capture import LatestFrameCapture, Reopen
from ..runtime.postprocess import FrameRecognizer, Recognition
from .events import build_event
from .health import Health
from .quality import QualityOptions, Roi, check_quality, crop
from .sinks import Sink
from ..runtime.smoothing import SmoothingOptions, TemporalSmoother
from .sources import Frame, FrameSource

log = logging.getLogger(__name__)

LATENCY_WINDOW = 10_000  # frames the summary's percentiles look back over (bounded memory for long runs)


@dataclass(frozen=True)
class RunOptions:
    """Options of the recognition loop.

    Attributes:
        roi: region of each frame to recognise; None for the whole frame.
        quality: the blur/exposure gate (`QualityOptions.off()` to recognise every frame).
        smoothing: frames a label must be stable for, and frames of "unknown" that end an appearance.
        drop_frames: True keeps only the newest frame, False processes every frame,
            None (default): drop for cameras and streams, every frame for files.
        backoff: delays between reopen attempts of a lost camera or stream.
        source_timeout_s: give up (`SourceError`, exit code 3) when a camera or stream has given
            no frame for this many seconds: for one-shot runs. None (default): retry until
            stopped, as a service does (the first failure is logged, the attempts counted).
        jpeg_quality: attach the frame to each event as a JPEG of this quality (1..100);
            None (default): no picture leaves the device.
        max_frames: stop after this many frames (None: until the source ends or a signal).
        show: open a preview window with the annotated frame (needs a display).
    """

    roi: Roi | None = None
    quality: QualityOptions = field(default_factory=QualityOptions)
    smoothing: SmoothingOptions = field(default_factory=SmoothingOptions)
    drop_frames: bool | None = None
    backoff: BackoffOptions = field(default_factory=BackoffOptions)
    source_timeout_s: float | None = None
    jpeg_quality: int | None = None
    max_frames: int | None = None
    show: bool = False

    def __post_init__(self) -> None:
        checks = ((self.roi, (Roi, type(None)), "roi", "a Roi or None"),
                  (self.quality, QualityOptions, "quality", "QualityOptions"),
                  (self.smoothing, SmoothingOptions, "smoothing", "SmoothingOptions"),
                  (self.backoff, BackoffOptions, "backoff", "BackoffOptions"))
        for value, kind, name, expected in checks:
            if not isinstance(value, kind):
                raise ConfigError(f"run option {name} must be {expected}, got {type(value).__name__}")
        timeout = self.source_timeout_s
        if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, (int, float))
                                    or not 0 < timeout < float("inf")):
            raise ConfigError(f"source_timeout_s must be a number of seconds > 0 or None, got {timeout!r}")
        if self.drop_frames not in (None, True, False):
            raise ConfigError(f"run option drop_frames must be True, False or None, got {self.drop_frames!r}")
        if self.jpeg_quality is not None and (isinstance(self.jpeg_quality, bool) or not isinstance(
                self.jpeg_quality, int) or not 1 <= self.jpeg_quality <= 100):
            raise ConfigError(f"jpeg_quality must be a whole number 1..100 or None, got {self.jpeg_quality!r}")
        if self.max_frames is not None and (isinstance(self.max_frames, bool) or not isinstance(
                self.max_frames, int) or self.max_frames < 1):
            raise ConfigError(f"max_frames must be a whole number >= 1 or None, got {self.max_frames!r}")


class FrameObjects(Protocol):
    """A per-object stage (`shelfsight.edge.objects.ObjectStage`), run instead of the recogniser.

    ``process(image, frame, origin, caption) -> (events, caption, inference ms)``: ``image`` is
    the ROI of ``frame``, whose top-left corner is at ``origin`` in the frame; the caption only
    when ``caption`` (a preview shows it); ``finish()`` gives the events of the objects still in
    view when the run ends.
    """

    def process(self, image: np.ndarray, frame: Frame, origin: tuple[int, int] = (0, 0),
                caption: bool = True) -> tuple[list[dict], str, float]: ...

    def finish(self) -> list[dict]: ...


@dataclass(frozen=True)
class RunSummary:
    """What a run did. Latency percentiles cover the last 10,000 frames; NaN when there were none.

    frames: frames processed (recognised + skipped); recognized: frames the recogniser ran on;
    skipped: by reason (dark, bright, blurry, error, corrupt); dropped: frames the capture
    overwrote; latency_*: whole per-frame processing time; inference_*: the recogniser's
    own latency_ms; first_event_s: seconds from the start of run() to the first event.
    """

    frames: int
    recognized: int
    events: int
    unknown: int
    skipped: Mapping[str, int]
    dropped: int
    reopens: int
    sink_errors: int
    duration_s: float
    fps: float
    latency_p50_ms: float
    latency_p99_ms: float
    inference_p50_ms: float
    inference_p99_ms: float
    first_event_s: float | None
    stopped_by: str

    def to_dict(self) -> dict:
        """Plain JSON: latencies of a run that read no frame are None (null), not NaN."""
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        out["skipped"] = dict(self.skipped)
        return {k: None if isinstance(v, float) and math.isnan(v) else v for k, v in out.items()}


def run(source: FrameSource, recognizer: FrameRecognizer, sinks: Sequence[Sink],
        options: RunOptions | None = None, *, health: Health | None = None, stop: threading.Event | None = None,
        handle_signals: bool = True, objects: FrameObjects | None = None) -> RunSummary:
    """Recognise frames from `source` until it ends, `max_frames`, a signal, or `stop` is set.

    Args:
        source: the frame source (opened and closed here).
        recognizer: object with `recognize(frame_bgr, source="")`.
        sinks: where events go; flushed and closed on return.
        options: loop options.
        health: metrics to update (a fresh `Health` if None).
        stop: set it from another thread to stop after the current frame.
        handle_signals: install SIGTERM/SIGINT handlers (only possible in the main thread).
        objects: a per-object stage: each frame that passes the gate goes to it (not to
            ``recognizer``) and its events go to the sinks.

    Raises:
        SourceError: a file source cannot be opened or fails while reading; a live one gave
            no frame for ``options.source_timeout_s``.
        ConfigError: the ROI does not fit the frames, or `show` without a display.
    """
    try:
        loop = _Loop(source, recognizer, list(sinks), options or RunOptions(), health or Health(),
                     stop or threading.Event(), objects)
    except BaseException:
        _close_sinks(sinks)
        raise
    with _stop_on_signals(loop.stop, enabled=handle_signals) as signalled:
        try:
            loop.run()
        finally:
            loop.close()
        if signalled:
            loop.stopped_by = f"signal {signalled[0]}"
    summary = loop.summary()
    log.info("run finished (%s): %d frames, %d events, %.1f fps", summary.stopped_by, summary.frames,
             summary.events, summary.fps)
    return summary


class _Loop:
    def __init__(self, source: FrameSource, recognizer: FrameRecognizer, sinks: list[Sink], options: RunOptions,
                 health: Health, stop: threading.Event, objects: FrameObjects | None = None) -> None:
        self.source, self.recognizer, self.sinks, self.objects = source, recognizer, sinks, objects
        self.options, self.health, self.stop = options, health, stop
        self.smoother = TemporalSmoother(options.smoothing)
        self.preview = Preview() if options.show else None
        self.capture = LatestFrameCapture(source, drop=options.drop_frames, backoff=options.backoff,
                                          on_reopen=self._on_reopen, give_up_after_s=options.source_timeout_s)
        self.frames = self.recognized = self.events = self.unknown = self.sink_errors = 0
        self.skipped: dict[str, int] = {}
        self.frame_ms: deque[float] = deque(maxlen=LATENCY_WINDOW)
        self.inference_ms: deque[float] = deque(maxlen=LATENCY_WINDOW)
        self.first_event_s: float | None = None
        self.stopped_by = "stop requested"
        self._seen_corrupt = self._seen_dropped = 0
        self._fps_mark = (0.0, 0)
        self._recent_fps = 0.0
        self._started = self._ended = time.perf_counter()

    def run(self) -> None:
        self._started = time.perf_counter()
        self._fps_mark = (self._started, 0)
        self.capture.start()
        while not self.stop.is_set():
            frame = self.capture.next_frame(timeout=0.25)
            self._sync_source_counters()
            if frame is None:
                if self.capture.done:
                    self.stopped_by = "end of source"
                    break
                continue
            self._process(frame)
            if self.options.max_frames is not None and self.frames >= self.options.max_frames:
                self.stopped_by = "max_frames"
                break
        if self.objects is not None:
            for event in self.objects.finish():
                self._emit(event)

    def close(self) -> None:
        self._ended = time.perf_counter()
        self.capture.stop()
        self._sync_source_counters()
        self.sink_errors += _close_sinks(self.sinks)
        if self.preview is not None:
            self.preview.close()
        duration = self._ended - self._started
        if duration > 0:
            self.health.set_fps(self.frames / duration)

    def summary(self) -> RunSummary:
        duration = max(self._ended - self._started, 1e-9)
        frame_ms = np.asarray(self.frame_ms) if self.frame_ms else np.full(1, np.nan)
        inference_ms = np.asarray(self.inference_ms) if self.inference_ms else np.full(1, np.nan)
        return RunSummary(
            frames=self.frames, recognized=self.recognized, events=self.events, unknown=self.unknown,
            skipped=MappingProxyType(dict(self.skipped)), dropped=self.capture.dropped,
            reopens=self.capture.reopens, sink_errors=self.sink_errors, duration_s=duration,
            fps=self.frames / duration,
            latency_p50_ms=float(np.percentile(frame_ms, 50)), latency_p99_ms=float(np.percentile(frame_ms, 99)),
            inference_p50_ms=float(np.percentile(inference_ms, 50)),
            inference_p99_ms=float(np.percentile(inference_ms, 99)),
            first_event_s=self.first_event_s, stopped_by=self.stopped_by)

    def _process(self, frame: Frame) -> None:
        started = time.perf_counter()
        self.frames += 1
        self.health.record_frame()
        image = crop(frame.image, self.options.roi)
        quality = check_quality(image, self.options.quality)
        if not quality.ok:
            self._skip(quality.reason)
            self.smoother.update(None)
            caption = f"skipped: {quality.reason}"
        elif self.objects is not None:
            caption = self._objects(image, frame)
        else:
            recognition = self._recognize(image, frame)
            if recognition is None:
                caption = "skipped: error"
            else:
                caption = f"{recognition.label or 'unknown'} {recognition.score:.2f}"
                label = self.smoother.update(recognition.label)
                if label is not None:
                    self._emit(build_event(recognition, frame, jpeg_quality=self.options.jpeg_quality))
        self.frame_ms.append((time.perf_counter() - started) * 1000.0)
        self._update_fps()
        if self.preview is not None and not self.preview.show(
                frame.image, f"{caption} | {self._recent_fps:.1f} fps", self._roi_rect(frame)):
            self.stopped_by = "preview closed"
            self.stop.set()

    def _recognize(self, image: np.ndarray, frame: Frame) -> Recognition | None:
        try:
            recognition = self.recognizer.recognize(image, source=frame.source)
        except Exception:  # one bad frame must not stop a device; counted and logged instead
            self._skip("error")
            self.smoother.update(None)
            errors = self.skipped["error"]
            if errors == 1 or errors % 100 == 0:
                log.exception("recogniser failed on frame %d of %s (%d failures so far)", frame.index,
                              frame.source, errors)
            return None
        self.recognized += 1
        unknown = recognition.label is None
        self.unknown += unknown
        self.inference_ms.append(float(recognition.latency_ms))
        self.health.record_recognition(float(recognition.latency_ms) / 1000.0, unknown)
        return recognition

    def _objects(self, image: np.ndarray, frame: Frame) -> str:
        try:
            rect = self._roi_rect(frame)
            events, caption, inference_ms = self.objects.process(image, frame, rect[:2] if rect else (0, 0),
                                                                 caption=self.preview is not None)
        except Exception:  # as for the recogniser: one bad frame must not stop a device
            self._skip("error")
            if self.skipped["error"] == 1 or self.skipped["error"] % 100 == 0:
                log.exception("object stage failed on frame %d of %s", frame.index, frame.source)
            return "skipped: error"
        self.recognized += 1
        self.inference_ms.append(inference_ms)
        for event in events:
            self._emit(event)
        return caption

    def _emit(self, event: dict) -> None:
        for sink in self.sinks:
            try:
                sink.emit(event)
            except Exception:
                self.sink_errors += 1
                log.exception("sink %r failed to take event %s", sink, event["id"])
        self.events += 1
        self.health.record_event()
        if self.first_event_s is None:
            self.first_event_s = time.perf_counter() - self._started

    def _skip(self, reason: str, count: int = 1) -> None:
        self.skipped[reason] = self.skipped.get(reason, 0) + count
        self.health.record_skip(reason, count)

    def _sync_source_counters(self) -> None:
        corrupt = getattr(self.source, "corrupt", 0)
        if corrupt > self._seen_corrupt:
            self._skip("corrupt", corrupt - self._seen_corrupt)
            self._seen_corrupt = corrupt
        dropped = self.capture.dropped
        if dropped > self._seen_dropped:
            self.health.record_dropped(dropped - self._seen_dropped)
            self._seen_dropped = dropped

    def _on_reopen(self, report: Reopen) -> None:
        self.health.record_reopen()

    def _update_fps(self) -> None:
        now = time.perf_counter()
        mark_time, mark_frames = self._fps_mark
        if now - mark_time >= 1.0:
            self._recent_fps = (self.frames - mark_frames) / (now - mark_time)
            self.health.set_fps(self._recent_fps)
            self._fps_mark = (now, self.frames)

    def _roi_rect(self, frame: Frame) -> tuple[int, int, int, int] | None:
        if self.options.roi is None:
            return None
        return self.options.roi.to_pixels(frame.image.shape[1], frame.image.shape[0])


def _close_sinks(sinks: Sequence[Sink]) -> int:
    """Flush and close every sink, even when one fails; returns how many failed."""
    failed = 0
    for sink in sinks:
        try:
            sink.flush()
            sink.close()
        except Exception:
            failed += 1
            log.exception("sink %r failed to flush/close", sink)
    return failed


@contextlib.contextmanager
def _stop_on_signals(stop: threading.Event, enabled: bool) -> Iterator[list[str]]:
    """Within the block, SIGTERM/SIGINT set `stop`; yields a list that gets the signal's name."""
    received: list[str] = []
    if not enabled or threading.current_thread() is not threading.main_thread():
        yield received
        return

    def handler(signum: int, _frame: object) -> None:
        name = signal.Signals(signum).name
        if received and signum == signal.SIGINT:
            raise KeyboardInterrupt
        if not received:
            log.info("%s received: finishing the current frame, then stopping", name)
            received.append(name)
        stop.set()

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield received
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


class Preview:
    """An OpenCV window showing each frame with its caption; 'q' or Esc closes it.

    Raises:
        ConfigError: no display to open a window on.
    """

    WINDOW = "shelfsight"

    def __init__(self) -> None:
        if sys.platform.startswith("linux") and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
            raise ConfigError("--show needs a display, but neither DISPLAY nor WAYLAND_DISPLAY is set")
        self._open = True

    def show(self, image: np.ndarray, caption: str, roi_rect: tuple[int, int, int, int] | None) -> bool:
        """Draw one frame; False once the user asked to stop."""
        cv2.imshow(self.WINDOW, annotate(image, caption, roi_rect))
        key = cv2.waitKey(1) & 0xFF
        return key not in (ord("q"), 27)

    def close(self) -> None:
        if self._open:
            self._open = False
            with contextlib.suppress(cv2.error):
                cv2.destroyWindow(self.WINDOW)


def annotate(image: np.ndarray, caption: str, roi_rect: tuple[int, int, int, int] | None = None) -> np.ndarray:
    """A copy of `image` with the ROI outlined and `caption` written in the top-left corner."""
    out = image.copy()
    if roi_rect is not None:
        x, y, w, h = roi_rect
        cv2.rectangle(out, (x, y), (x + w - 1, y + h - 1), (0, 255, 255), 2)
    scale = max(0.5, out.shape[1] / 960)
    thickness = max(1, round(scale * 2))
    (tw, th), base = cv2.getTextSize(caption, cv2.FONT_HERSHEY_SIMPLEX, scale, thickness)
    cv2.rectangle(out, (0, 0), (tw + 12, th + base + 12), (0, 0, 0), -1)
    cv2.putText(out, caption, (6, th + 6), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), thickness, cv2.LINE_AA)
    return out

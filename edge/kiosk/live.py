"""The frame broadcaster: what the camera sees and what the model said, from the device's
threads to every screen's event loop.

The run loop stays as `shelfsight run` has it (capture thread, quality gate, recogniser,
smoothing, sinks). The kiosk looks in at three places:

- `ViewSource` wraps the frame source: every captured frame becomes the live view (a file
  or folder is played at the camera's rate instead of as fast as it decodes);
- `TapRecognizer` wraps the recogniser: every recognition becomes the screen's top-3, under a
  kiosk frame id that a tap names (the run loop hands the recogniser the frame's own pixel
  array, so the frame it came from is found by identity);
- `KioskHealth` (the loop's metrics) learns of frames the quality gate turned away, so an
  empty or dark tray clears the top-3 instead of leaving the last product on screen.

`Latest` is the one bridge between threads and asyncio: a value published from any thread,
awaited by any number of screens; only the newest value matters (a slow screen skips frames).
"""
from __future__ import annotations

import asyncio
import threading
import time
from collections import OrderedDict, deque
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from shelfsight.errors import ConfigError

from ..pipeline.health import Health
from ..pipeline.sources import Frame, FrameSource
from ..runtime.postprocess import Recognition

HELD_FRAMES = 32  # recognised frames a tap may still name (about 2 s at 15 fps)
PINNED_FRAMES = 8  # frames held longer because a screen opened "none of these" on them


class Latest:
    """The newest value and its sequence number; `newer` waits for one past a given number."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._seq = 0
        self._value: Any = None
        self._waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Future]] = []
        self._closed = False

    def publish(self, value: Any) -> int:
        with self._lock:
            self._seq += 1
            self._value = value
            waiters, self._waiters = self._waiters, []
            seq = self._seq
        for loop, future in waiters:
            _wake(loop, future)
        return seq

    def get(self) -> tuple[int, Any]:
        with self._lock:
            return self._seq, self._value

    async def newer(self, seq: int) -> tuple[int, Any] | None:
        """The first value published after ``seq``; None once closed."""
        loop = asyncio.get_running_loop()
        while True:
            with self._lock:
                if self._closed:
                    return None
                if self._seq > seq:
                    return self._seq, self._value
                future = loop.create_future()
                self._waiters.append((loop, future))
            await future

    def close(self) -> None:
        with self._lock:
            self._closed = True
            waiters, self._waiters = self._waiters, []
        for loop, future in waiters:
            _wake(loop, future)


def _wake(loop: asyncio.AbstractEventLoop, future: asyncio.Future) -> None:
    def resolve() -> None:
        if not future.done():
            future.set_result(None)
    try:
        loop.call_soon_threadsafe(resolve)
    except RuntimeError:  # that screen's loop is gone
        pass


@dataclass(frozen=True, eq=False)
class Shown:
    """What the screen shows for one processed frame.

    ``recognition`` is None when the quality gate turned the frame away (``reason`` says why).
    ``image`` is what the recogniser saw (kept only while a tap may name the frame).
    """

    frame_id: int
    captured: float  # time.time() of the capture
    recognized: float  # time.time() when the recognition was ready
    source: str
    source_frame: int
    image: np.ndarray | None
    recognition: Recognition | None
    reason: str = ""


class LiveView:
    """The newest frame and the newest answer, and the recent frames a tap may name."""

    def __init__(self, view_width: int = 320, jpeg_quality: int = 75) -> None:
        self.view_width, self.jpeg_quality = view_width, jpeg_quality
        self.frames = Latest()  # Frame
        self.results = Latest()  # Shown
        self._lock = threading.Lock()
        self._next_id = 1
        self._recent: OrderedDict[int, Frame] = OrderedDict()  # id(pixels) -> Frame, the last few captured
        self._held: OrderedDict[int, Shown] = OrderedDict()
        self._pinned: OrderedDict[int, Shown] = OrderedDict()
        self._answers: deque[tuple[float, bool, float, float]] = deque(maxlen=300)  # time, unknown, ms, ms
        self._jpeg: tuple[int, bytes] = (0, b"")
        self._encode_lock = threading.Lock()
        self.encoded = 0  # frames encoded for the live view

    # ---- from the device's threads --------------------------------------------------------

    def saw(self, frame: Frame) -> None:
        """A frame was captured (the source's thread)."""
        with self._lock:
            self._recent[id(frame.image)] = frame
            while len(self._recent) > 8:
                self._recent.popitem(last=False)
        self.frames.publish(frame)

    def frame_of(self, pixels: np.ndarray) -> Frame | None:
        with self._lock:
            return self._recent.get(id(pixels)) or (self._recent.get(id(pixels.base))
                                                    if pixels.base is not None else None)

    def next_frame_id(self) -> int:
        """The id the next processed frame gets (frames from it on see every change made before)."""
        with self._lock:
            return self._next_id

    def take_frame_id(self) -> int:
        with self._lock:
            frame_id, self._next_id = self._next_id, self._next_id + 1
            return frame_id

    def answered(self, frame_id: int, pixels: np.ndarray, recognition: Recognition) -> None:
        frame = self.frame_of(pixels)
        now = time.time()
        shown = Shown(frame_id, frame.timestamp if frame else now, now, frame.source if frame else "",
                      frame.index if frame else -1, pixels, recognition)
        with self._lock:
            self._answers.append((now, recognition.label is None, float(recognition.latency_ms),
                                  (now - shown.captured) * 1000.0))
            self._held[frame_id] = shown
            while len(self._held) > HELD_FRAMES:
                self._held.popitem(last=False)
        self.results.publish(shown)

    def turned_away(self, reason: str) -> None:
        """The quality gate refused the frame being processed: nothing on the tray to name."""
        now = time.time()
        self.results.publish(Shown(self.take_frame_id(), now, now, "", -1, None, None, reason))

    # ---- from the screens -----------------------------------------------------------------

    def held(self, frame_id: int, pin: bool = False) -> Shown | None:
        """The recognised frame ``frame_id`` if it is still held; ``pin`` keeps it longer."""
        with self._lock:
            shown = self._held.get(frame_id) or self._pinned.get(frame_id)
            if shown is not None and pin:
                self._pinned[frame_id] = shown
                self._pinned.move_to_end(frame_id)
                while len(self._pinned) > PINNED_FRAMES:
                    self._pinned.popitem(last=False)
            return shown

    def rates(self, window_s: float = 5.0) -> dict[str, float | None]:
        """Over the recent answers: fps (last ``window_s``), unknown rate, inference and
        capture -> answer latency percentiles (ms)."""
        with self._lock:
            answers = list(self._answers)
        if not answers:
            return {"fps": 0.0, "unknown_rate": None, "inference_p50_ms": None, "answer_p50_ms": None,
                    "answer_p95_ms": None}
        now = time.time()
        recent = [a for a in answers if now - a[0] <= window_s]
        inference, answer = np.array([a[2] for a in answers]), np.array([a[3] for a in answers])
        return {"fps": round(len(recent) / window_s, 2),
                "unknown_rate": round(sum(a[1] for a in answers) / len(answers), 4),
                "inference_p50_ms": round(float(np.percentile(inference, 50)), 2),
                "answer_p50_ms": round(float(np.percentile(answer, 50)), 2),
                "answer_p95_ms": round(float(np.percentile(answer, 95)), 2)}

    def jpeg(self, seq: int, frame: Frame) -> bytes:
        """The live-view JPEG of frame number ``seq`` (of `frames`), encoded once for every screen."""
        with self._encode_lock:
            if self._jpeg[0] != seq:
                image = view_image(frame.image, self.view_width)
                ok, data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, self.jpeg_quality])
                if not ok:
                    raise ValueError(f"OpenCV could not encode a {image.shape} frame as JPEG")
                self._jpeg = (seq, data.tobytes())
                self.encoded += 1
            return self._jpeg[1]

    def close(self) -> None:
        self.frames.close()
        self.results.close()


def view_image(image: np.ndarray, width: int) -> np.ndarray:
    """``image`` scaled down to ``width`` pixels wide (never up) for the live view.

    Bilinear down to half size, area averaging below (no aliasing): OpenCV's area resize at a
    fractional scale such as 640 -> 480 costs ~5x the bilinear one (1.5 vs 0.3 ms a frame here),
    which at 15 frames a second is 2 % of a core for a picture the screen shows at its own scale.
    """
    if image.shape[1] <= width:
        return image
    height = max(1, round(image.shape[0] * width / image.shape[1]))
    scale = width / image.shape[1]
    return cv2.resize(image, (width, height), interpolation=cv2.INTER_LINEAR if scale >= 0.5 else cv2.INTER_AREA)


class ViewSource:
    """A `FrameSource` that shows every frame it reads, and plays files at ``fps``."""

    def __init__(self, source: FrameSource, view: LiveView, fps: float = 15.0) -> None:
        if not fps > 0:
            raise ConfigError(f"source fps must be > 0, got {fps!r}")
        self._source, self._view = source, view
        self._period = 1.0 / fps
        self._due = 0.0
        self.name, self.live = source.name, source.live

    @property
    def corrupt(self) -> int:
        return self._source.corrupt

    @property
    def is_open(self) -> bool:
        return self._source.is_open

    def open(self) -> None:
        self._source.open()

    def close(self) -> None:
        self._source.close()

    def read(self) -> Frame | None:
        if not self.live:  # a camera has its own pace
            now = time.monotonic()
            if self._due > now:
                time.sleep(self._due - now)
            self._due = max(self._due + self._period, time.monotonic())
        frame = self._source.read()
        if frame is not None:
            self._view.saw(frame)
        return frame

    def __enter__(self) -> "ViewSource":
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"ViewSource({self._source!r})"


class TapRecognizer:
    """A recogniser whose every answer goes to the screen (and everything else to the wrapped one)."""

    def __init__(self, recognizer: Any, view: LiveView) -> None:
        self._recognizer, self._view = recognizer, view

    def recognize(self, frame_bgr: np.ndarray, source: str = "", search: bool = True) -> Recognition:
        frame_id = self._view.take_frame_id()
        recognition = self._recognizer.recognize(frame_bgr, source)
        self._view.answered(frame_id, frame_bgr, recognition)
        return recognition

    def __getattr__(self, name: str) -> Any:  # bundle, index, embed, close, ...
        return getattr(self._recognizer, name)


class KioskHealth(Health):
    """The run loop's metrics, telling the screen about frames the quality gate refused."""

    def __init__(self, view: LiveView, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._view = view

    def record_skip(self, reason: str, count: int = 1) -> None:
        super().record_skip(reason, count)
        if reason != "corrupt" and count:  # corrupt: an unreadable input the source skipped, not this frame
            self._view.turned_away(reason)


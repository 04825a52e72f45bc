"""Capture in its own thread, keeping only the newest frame.

A camera delivers frames at its own pace; a recogniser slower than the camera must see the
newest frame, not a queue of old ones. `LatestFrameCapture` holds one slot: a frame that was
not taken before the next one arrived is overwritten and counted in `dropped`. For files,
where every frame matters (benchmarks, tests, batch runs), the thread instead waits until the
consumer has taken the slot, so nothing is dropped and results are deterministic.

A live source (camera, stream) that fails to open, raises or ends is closed and reopened
with exponential backoff; each attempt is reported to `on_reopen` and counted in `reopens`.
A file source ending ends the capture (`done`), unless the source itself loops.
"""
from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Callable

from shelfsight.backoff import BackoffOptions
from shelfsight.errors import SourceError

from .sources import Frame, FrameSource

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Reopen:
    """A report that a live source was lost and is being reopened."""

    source: str
    attempt: int
    delay_s: float
    reason: str


class LatestFrameCapture:
    """Read a source in a background thread; `next_frame()` returns the newest frame.

    Args:
        source: the frame source; the capture opens and closes it.
        drop: True keeps only the newest frame (overwritten frames count as dropped);
            False hands over every frame (the reader waits for the consumer).
            None (default): drop for live sources, keep every frame for files.
        backoff: delays between reopen attempts of a live source.
        on_reopen: called from the capture thread with a `Reopen` before each attempt.

    Use as a context manager, or call `start()` and `stop()` (safe to call twice).
    """

    def __init__(self, source: FrameSource, *, drop: bool | None = None, backoff: BackoffOptions | None = None,
                 on_reopen: Callable[[Reopen], None] | None = None) -> None:
        self.source = source
        self.drop = source.live if drop is None else drop
        self.backoff = backoff or BackoffOptions()
        self._on_reopen = on_reopen
        self.frames_read = 0
        self.dropped = 0
        self.reopens = 0
        self._cond = threading.Condition()
        self._pending: Frame | None = None
        self._ended = False
        self._error: BaseException | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def done(self) -> bool:
        """True once the stream has ended and its last frame has been taken."""
        with self._cond:
            return self._ended and self._pending is None

    def start(self) -> "LatestFrameCapture":
        """Open the source and start the capture thread.

        Raises:
            SourceError: a file source cannot be opened. (A live source that cannot be
                opened is retried in the background with backoff.)
        """
        if self._thread is not None:
            return self
        try:
            self.source.open()
        except SourceError as err:
            if not self.source.live:
                raise
            log.warning("source %s did not open, will retry: %s", self.source.name, err)
        self._thread = threading.Thread(target=self._run, name=f"capture:{self.source.name}", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout_s: float = 5.0) -> None:
        """Stop the thread and close the source. Safe to call more than once."""
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout_s)
            if thread.is_alive():
                log.warning("capture thread for %s did not stop within %.1f s", self.source.name, timeout_s)

    def __enter__(self) -> "LatestFrameCapture":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def next_frame(self, timeout: float | None = None) -> Frame | None:
        """The newest frame not yet returned; None on timeout or once the stream has ended.

        Raises:
            SourceError: a file source failed while reading (after its good frames were taken).
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while self._pending is None and not self._ended:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return None
                self._cond.wait(remaining)
            frame, self._pending = self._pending, None
            self._cond.notify_all()
            if frame is None and self._error is not None:
                error, self._error = self._error, None
                raise SourceError(f"source {self.source.name} failed while reading: {error}") from error
            return frame

    def _run(self) -> None:
        attempt = 0
        try:
            while not self._stop.is_set():
                if not self.source.is_open:
                    try:
                        self.source.open()
                    except SourceError as err:
                        attempt += 1
                        self._wait_before_reopen(attempt, f"open failed: {err}")
                        continue
                try:
                    frame = self.source.read()
                    reason = "stream ended"
                except Exception as err:  # a camera driver can raise anything; a live source must survive it
                    if not self.source.live:
                        self._error = err
                        return
                    frame, reason = None, f"read failed: {type(err).__name__}: {err}"
                if frame is None:
                    if not self.source.live:
                        return
                    self.source.close()
                    attempt += 1
                    self._wait_before_reopen(attempt, reason)
                    continue
                attempt = 0
                self.frames_read += 1
                self._publish(frame)
        finally:
            self.source.close()
            with self._cond:
                self._ended = True
                self._cond.notify_all()

    def _publish(self, frame: Frame) -> None:
        with self._cond:
            if self.drop:
                if self._pending is not None:
                    self.dropped += 1
            else:
                while self._pending is not None and not self._stop.is_set():
                    self._cond.wait()
                if self._stop.is_set():
                    return
            self._pending = frame
            self._cond.notify_all()

    def _wait_before_reopen(self, attempt: int, reason: str) -> None:
        delay = self.backoff.delay(attempt)
        self.reopens += 1
        report = Reopen(source=self.source.name, attempt=attempt, delay_s=delay, reason=reason)
        log.warning("source %s lost (%s); reopen attempt %d in %.2f s", report.source, reason, attempt, delay)
        if self._on_reopen is not None:
            try:
                self._on_reopen(report)
            except Exception:
                log.exception("on_reopen callback failed")
        self._stop.wait(delay)

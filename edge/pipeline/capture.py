"""Capture in its own thread, keeping only the newest frame.

A camera delivers frames at its own pace; a recogniser slower than the camera must see the
newest frame, not a queue of old ones. `LatestFrameCapture` holds one slot: a frame that was
not taken before the next one arrived is overwritten and counted in `dropped`. For files,
where every frame matters (benchmarks, tests, batch runs), the thread instead waits until the
consumer has taken the slot, so nothing is dropped and results are deterministic.

A live source (camera, stream) that fails to open, raises or ends is closed and reopened
with exponential backoff; each attempt is reported to `on_reopen` and counted in `reopens`.
The first attempt of an outage is logged as a warning, the rest only at debug level (a
camera missing for a week must not fill the journal), and the source's return at info.
With ``give_up_after_s`` (one-shot commands), a live source that gives no frame for that
long ends the capture and `next_frame` raises `SourceError` (exit code 3).
A file source ending ends the capture (`done`), unless the source itself loops.
"""
from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Callable

from shelfsight.backoff import BackoffOptions
from shelfsight.errors import ConfigError, SourceError

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
        give_up_after_s: a live source that gives no frame for this many seconds (since
            `start`, or since its last frame) is given up; None (default): retry until stopped.

    Use as a context manager, or call `start()` and `stop()` (safe to call twice).
    """

    def __init__(self, source: FrameSource, *, drop: bool | None = None, backoff: BackoffOptions | None = None,
                 on_reopen: Callable[[Reopen], None] | None = None, give_up_after_s: float | None = None) -> None:
        if give_up_after_s is not None and not give_up_after_s > 0:
            raise ConfigError(f"give_up_after_s must be > 0 seconds or None, got {give_up_after_s!r}")
        self.source = source
        self.give_up_after_s = give_up_after_s
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
        self._gave_up: SourceError | None = None
        self._start_error: str | None = None  # why a live source did not open in start()
        self._last_frame_at = time.monotonic()
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
        self._last_frame_at = time.monotonic()
        try:
            self.source.open()
        except SourceError as err:
            if not self.source.live:
                raise
            self._start_error = self._open_failed(err)  # the capture thread reports it and retries
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
            SourceError: a file source failed while reading (after its good frames were taken),
                or a live source gave no frame for ``give_up_after_s``.
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
            if frame is None and self._gave_up is not None:
                raise self._gave_up
            if frame is None and self._error is not None:
                error, self._error = self._error, None
                raise SourceError(f"source {self.source.name} failed while reading: {error}") from error
            return frame

    def _run(self) -> None:
        attempt = 0
        try:
            while not self._stop.is_set():
                if not self.source.is_open:
                    failed, self._start_error = self._start_error or self._try_open(), None
                    if failed is not None:
                        attempt += 1
                        if not self._wait_before_reopen(attempt, failed):
                            return
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
                    if not self._wait_before_reopen(attempt, reason):
                        return
                    continue
                if attempt:
                    log.info("source %s is back after %d reopen attempts", self.source.name, attempt)
                attempt = 0
                self._last_frame_at = time.monotonic()
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

    def _try_open(self) -> str | None:
        """Open the source; why it failed, or None."""
        try:
            self.source.open()
        except SourceError as err:
            return self._open_failed(err)
        return None

    def _open_failed(self, err: SourceError) -> str:
        text, name = str(err), f"source {self.source.name}: "
        return f"open failed: {text[len(name):] if text.startswith(name) else text}"

    def _wait_before_reopen(self, attempt: int, reason: str) -> bool:
        """Wait before reopen attempt ``attempt``; False when the source is given up instead."""
        delay = self.backoff.delay(attempt)
        if self.give_up_after_s is not None:
            left = self.give_up_after_s - (time.monotonic() - self._last_frame_at)
            if left <= 0:
                self._gave_up = SourceError(f"source {self.source.name}: no frame for {self.give_up_after_s:g} s "
                                            f"({reason})")
                return False
            delay = min(delay, left)
        self.reopens += 1
        report = Reopen(source=self.source.name, attempt=attempt, delay_s=delay, reason=reason)
        if attempt == 1:
            until = ("until it is back" if self.give_up_after_s is None
                     else f"for up to {self.give_up_after_s:g} s")
            log.warning("source %s unavailable (%s); retrying with backoff %s "
                        "(attempts are counted as reopens, logged at debug level)", report.source, reason, until)
        else:
            log.debug("source %s still unavailable (%s); reopen attempt %d in %.2f s", report.source, reason,
                      attempt, delay)
        if self._on_reopen is not None:
            try:
                self._on_reopen(report)
            except Exception:
                log.exception("on_reopen callback failed")
        self._stop.wait(delay)
        return True

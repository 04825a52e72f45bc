"""Where events go: JSON lines (stdout or a file) and an HTTP POST hook.

A sink has `emit(event)`, `flush()` and `close()` (safe to call twice). `make_sinks(specs)`
is the one place a `--sink` string becomes a sink:

    "stdout" (or "-")   JSON lines on standard output
    "jsonl:PATH"        JSON lines appended to PATH (parent folders created)
    "http(s)://..."     each event POSTed as JSON to the URL

The HTTP sink posts from its own thread through a bounded queue, so a slow or dead server
never stalls or crashes the recognition loop: failures are counted and logged, and when
the queue is full the oldest event is dropped and counted. Durable delivery through
network outages is the sync component's job, not this hook's.
"""
from __future__ import annotations

import json
import logging
import os
import queue
import sys
import threading
import time
from pathlib import Path
from typing import Protocol, Sequence, TextIO, runtime_checkable

import requests

from shelfsight.atomic import DEVICE_DATA_MODE
from shelfsight.errors import ConfigError
from shelfsight.redact import redact_url

log = logging.getLogger(__name__)


@runtime_checkable
class Sink(Protocol):
    """Receives events (JSON-ready dicts)."""

    def emit(self, event: dict) -> None: ...

    def flush(self) -> None: ...

    def close(self) -> None: ...


class JsonlSink:
    """One JSON object per line, flushed after every line, on stdout or appended to a file.

    Args:
        path: file to append to (created readable by its owner only: events name what the
            device saw, and may carry its pictures); None writes to `stream` (default: standard output).
        stream: a text stream used when path is None; it is flushed but never closed.
    """

    def __init__(self, path: str | Path | None = None, stream: TextIO | None = None) -> None:
        self.path = None if path is None else Path(path)
        self.count = 0
        if self.path is not None:
            if self.path.is_dir():
                raise ConfigError(f"jsonl sink {self.path} is a folder; expected a file path")
            self.path.parent.mkdir(parents=True, exist_ok=True)
            torn = _ends_mid_line(self.path)
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, DEVICE_DATA_MODE)  # a new file
            self._stream: TextIO | None = open(fd, "a", encoding="utf-8", buffering=1)
            if torn:  # a crash cut the last event short: start on a fresh line, do not glue onto it
                self._stream.write("\n")
            self._owned = True
        else:
            self._stream = stream if stream is not None else sys.stdout
            self._owned = False

    @classmethod
    def stdout(cls) -> "JsonlSink":
        return cls(stream=sys.stdout)

    def __repr__(self) -> str:
        return f"JsonlSink({str(self.path) if self.path else '<stdout>'})"

    def emit(self, event: dict) -> None:
        if self._stream is None:
            raise ValueError(f"{self!r} is closed")
        self._stream.write(json.dumps(event, ensure_ascii=False, separators=(",", ":")) + "\n")
        self._stream.flush()
        self.count += 1

    def flush(self) -> None:
        if self._stream is None:
            return
        self._stream.flush()
        if self._owned:
            os.fsync(self._stream.fileno())

    def close(self) -> None:
        if self._stream is None:
            return
        try:
            self.flush()
        finally:
            if self._owned:
                self._stream.close()
            self._stream = None


class HttpSink:
    """POST each event as JSON to a hook URL, from a background thread.

    Args:
        url: http:// or https:// URL.
        timeout_s: per-request timeout (connect and read).
        max_pending: events queued while the server is slow; beyond it the oldest is dropped.
        flush_timeout_s: how long flush()/close() wait for the queue to drain.

    Counters: `sent`, `failures` (errors and non-2xx answers; the event is not retried)
    and `dropped` (queue overflow, or still queued at close).
    """

    def __init__(self, url: str, timeout_s: float = 2.0, max_pending: int = 256, flush_timeout_s: float = 10.0,
                 session: requests.Session | None = None) -> None:
        if not url.lower().startswith(("http://", "https://")):
            raise ConfigError(f"http sink needs an http:// or https:// URL, got {redact_url(url)!r}")
        if not timeout_s > 0 or not flush_timeout_s >= 0:
            raise ConfigError(f"http sink timeouts must be > 0, got timeout_s={timeout_s}, "
                              f"flush_timeout_s={flush_timeout_s}")
        if max_pending < 1:
            raise ConfigError(f"http sink max_pending must be >= 1, got {max_pending}")
        self.url = url
        self.shown_url = redact_url(url)  # what logs and repr show
        self.timeout_s = timeout_s
        self.flush_timeout_s = flush_timeout_s
        self.sent = 0
        self.failures = 0
        self.dropped = 0
        self._failing = 0
        self._session = session or requests.Session()
        self._queue: queue.Queue[dict] = queue.Queue(maxsize=max_pending)
        self._stop = threading.Event()
        self._closed = False
        self._thread = threading.Thread(target=self._work, name="http-sink", daemon=True)
        self._thread.start()

    def __repr__(self) -> str:
        return f"HttpSink({self.shown_url})"

    def emit(self, event: dict) -> None:
        if self._closed:
            raise ValueError(f"{self!r} is closed")
        while True:
            try:
                self._queue.put_nowait(event)
                return
            except queue.Full:
                try:
                    self._queue.get_nowait()
                    self._queue.task_done()
                    self.dropped += 1
                    log.warning("http sink %s: queue full, dropped the oldest event (%d dropped)",
                                self.shown_url, self.dropped)
                except queue.Empty:
                    pass

    def flush(self) -> None:
        """Wait (up to flush_timeout_s) until every queued event has been posted or has failed."""
        deadline = time.monotonic() + self.flush_timeout_s
        with self._queue.all_tasks_done:
            while self._queue.unfinished_tasks:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    log.warning("http sink %s: %d events still pending after %.1f s",
                                self.shown_url, self._queue.unfinished_tasks, self.flush_timeout_s)
                    return
                self._queue.all_tasks_done.wait(remaining)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self.flush()
        self._stop.set()
        self._thread.join(self.timeout_s + 1.0)
        left = self._queue.qsize()
        if left:
            self.dropped += left
            log.warning("http sink %s: %d events not delivered at close", self.shown_url, left)
        self._session.close()

    def _work(self) -> None:
        while not self._stop.is_set():
            try:
                event = self._queue.get(timeout=0.1)
            except queue.Empty:
                continue
            try:
                self._post(event)
            finally:
                self._queue.task_done()

    def _post(self, event: dict) -> None:
        try:
            response = self._session.post(self.url, json=event, timeout=self.timeout_s)
            problem = None if 200 <= response.status_code < 300 else f"HTTP {response.status_code}"
        except requests.RequestException as err:
            problem = redact_url(f"{type(err).__name__}: {err}")  # requests quotes the URL
        if problem is None:
            self.sent += 1
            if self._failing:
                log.info("http sink %s: delivering again after %d failures", self.shown_url, self._failing)
            self._failing = 0
            return
        self.failures += 1
        self._failing += 1
        if self._failing == 1 or self._failing % 100 == 0:
            log.warning("http sink %s: post failed (%s); %d failures in a row", self.shown_url, problem, self._failing)


def _ends_mid_line(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            if f.seek(0, 2) == 0:
                return False
            f.seek(-1, 2)
            return f.read(1) != b"\n"
    except FileNotFoundError:
        return False


def make_sinks(specs: Sequence[str], http_timeout_s: float = 2.0) -> list[Sink]:
    """Build sinks from `--sink` strings ("stdout", "jsonl:PATH", "http(s)://URL").

    Raises:
        ConfigError: a spec matches none of those forms.
    """
    sinks: list[Sink] = []
    try:
        for spec in specs:
            sinks.append(_make_sink(spec.strip(), http_timeout_s))
    except BaseException:
        for sink in sinks:
            sink.close()
        raise
    return sinks


def _make_sink(spec: str, http_timeout_s: float) -> Sink:
    if spec in ("stdout", "-"):
        return JsonlSink.stdout()
    if spec.startswith("jsonl:"):
        path = spec[len("jsonl:"):]
        if not path:
            raise ConfigError("sink 'jsonl:' needs a file path, e.g. jsonl:events.jsonl")
        return JsonlSink(Path(path).expanduser())
    if spec.lower().startswith(("http://", "https://")):
        return HttpSink(spec, timeout_s=http_timeout_s)
    raise ConfigError(f"sink {spec!r}: expected 'stdout', 'jsonl:PATH' or an http(s):// URL")

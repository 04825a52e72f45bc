"""Send outbox events to the sync server in batches, acknowledging only what it holds.

Protocol (served by ``shelfsight sync-server``)::

    POST {endpoint}/v1/events   {"events": [{"id": ..., ...}, ...]}
      200 -> {"held": [ids of this batch the server now holds],
              "rejected": {id: reason}}          (malformed events, or an id the server holds
                                                 with other content; never retried)

Only ids in ``held`` leave the outbox, so a batch that times out, a dropped connection
or a 500 after the server stored it is simply sent again; the server keys events by id,
which makes the resend harmless. Failures wait with exponential backoff and full jitter.
"""
from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field

import requests

from shelfsight.backoff import Backoff, BackoffOptions
from shelfsight.errors import ConfigError
from shelfsight.redact import redact_url
from .outbox import Outbox
from .http import AuthError, HttpOptions, SyncError, SyncSession, check_url
from .worker import SyncWorker

log = logging.getLogger(__name__)

EVENTS_PATH = "/v1/events"


@dataclass(frozen=True)
class UploadOptions:
    """How the uploader sends batches.

    Attributes:
        endpoint: base URL of the sync server (``https://host:port``).
        http: token, TLS and timeout settings.
        batch_events, batch_bytes: most events / JSON bytes per request.
        idle_s: how long the worker waits before looking at an empty outbox again.
        backoff: delays between failed attempts.
    """

    endpoint: str
    http: HttpOptions = field(default_factory=HttpOptions)
    batch_events: int = 500
    batch_bytes: int = 1024**2
    idle_s: float = 0.5
    backoff: BackoffOptions = field(default_factory=BackoffOptions.for_retries)

    def __post_init__(self) -> None:
        object.__setattr__(self, "endpoint", check_url(self.endpoint, self.http.allow_http))
        if self.batch_events < 1 or self.batch_bytes < 1:
            raise ConfigError(f"batch limits must be >= 1, got {self.batch_events} events, "
                              f"{self.batch_bytes} bytes")
        if self.idle_s <= 0:
            raise ConfigError(f"idle_s must be > 0, got {self.idle_s}")

    @property
    def events_url(self) -> str:
        return self.endpoint + EVENTS_PATH


@dataclass(frozen=True)
class SendResult:
    """One request: how many events were sent, acknowledged and dead-lettered."""

    sent: int
    acked: int
    rejected: int


@dataclass(frozen=True)
class UploaderStats:
    batches_ok: int
    batches_failed: int
    events_acked: int
    consecutive_failures: int
    last_error: str | None


def parse_answer(answer: object, batch_ids: tuple[str, ...]) -> tuple[list[str], dict[str, str]]:
    """(held ids, rejected id -> reason) of a server answer, restricted to this batch.

    Raises:
        SyncError: the answer is not the documented JSON shape.
    """
    if not isinstance(answer, dict) or not isinstance(answer.get("held", None), list):
        raise SyncError(f"server answer is not {{'held': [...], 'rejected': {{...}}}}: {str(answer)[:200]}")
    rejected = answer.get("rejected") or {}
    if not isinstance(rejected, dict):
        raise SyncError(f"server answer 'rejected' is {type(rejected).__name__}, expected an object")
    wanted = set(batch_ids)
    held = [i for i in answer["held"] if isinstance(i, str) and i in wanted]
    return held, {str(k): str(v) for k, v in rejected.items() if k in wanted and k not in held}


class Uploader(SyncWorker):
    """Moves events from an outbox to the server; `send_once` for one batch, or
    `start` / `stop` for a background worker thread. ``stop()`` is idempotent.
    """

    thread_name = "shelfsight-uploader"

    def __init__(self, outbox: Outbox, options: UploadOptions, session: SyncSession | None = None,
                 backoff: Backoff | None = None) -> None:
        super().__init__(session or SyncSession(options.http), own_session=session is None)
        self.outbox = outbox
        self.options = options
        self.backoff = backoff or Backoff(options.backoff)
        self._lock = threading.Lock()
        self._ok = self._failed = self._acked = 0
        self._last_error: str | None = None

    def send_once(self) -> SendResult:
        """Claim one batch and post it. Returns zeros when the outbox is empty.

        Raises:
            AuthError: the server refused the token.
            SyncError: the server could not be reached or answered badly; the batch
                stays in the outbox.
        """
        batch = self.outbox.claim(self.options.batch_events, self.options.batch_bytes)
        if not batch:
            return SendResult(0, 0, 0)
        try:
            log.info("posting batch of %d events (%s .. %s)", len(batch), batch.ids[0], batch.ids[-1])
            held, rejected = parse_answer(self._post({"events": list(batch.events)}), batch.ids)
            acked = self.outbox.ack(held)
            dead = self.outbox.reject(rejected) if rejected else 0
            log.info("batch done: %d of %d acknowledged", acked, len(batch))
            if dead:
                first = next(iter(rejected.items()))  # malformed, or an id reused with other content
                log.warning("server rejected %d events (kept as dead letters), e.g. %s: %s", dead, *first)
        finally:
            self.outbox.release(batch)
        with self._lock:
            self._ok += 1
            self._acked += acked
        return SendResult(sent=len(batch), acked=acked, rejected=dead)

    def _post(self, payload: dict) -> object:
        try:
            response = self.session.request("POST", self.options.events_url, json=payload)
        except requests.RequestException as e:
            raise SyncError(f"POST {self.options.events_url} failed: {type(e).__name__}: {e}") from None
        if response.status_code in (401, 403):
            raise AuthError(f"server refused the sync token (HTTP {response.status_code})")
        if response.status_code != 200:
            raise SyncError(f"POST {self.options.events_url}: HTTP {response.status_code} "
                            f"{response.text[:200]!r}")
        try:
            return response.json()
        except ValueError:
            raise SyncError(f"POST {self.options.events_url}: answer is not JSON: {response.text[:200]!r}") from None

    def drain(self, timeout_s: float) -> bool:
        """Send until the outbox is empty (True) or ``timeout_s`` passed (False),
        backing off after failures. For `shelfsight sync --once` and tests."""
        deadline = time.monotonic() + timeout_s
        while not self._stop.is_set():
            if self.outbox.stats().pending == 0:
                return True
            delay = self._step()
            if delay is None:
                continue
            if time.monotonic() + delay > deadline:
                return self.outbox.stats().pending == 0
            self._stop.wait(delay)
        return self.outbox.stats().pending == 0

    def _step(self) -> float | None:
        """Send one batch; None to go on at once, else seconds to wait."""
        try:
            result = self.send_once()
        except AuthError as e:
            self._record_failure(e)
            self.session.refresh_token()
            return self.backoff.next_delay()
        except SyncError as e:
            self._record_failure(e)
            return self.backoff.next_delay()
        self.backoff.reset()
        return None if result.sent else self.options.idle_s

    def _record_failure(self, error: Exception) -> None:
        log.warning("sync upload: %s", redact_url(str(error)))
        with self._lock:
            self._failed += 1
            self._last_error = str(error)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                delay = self._step()
            except Exception as e:  # a bug here must not stop the device; it is logged in full
                log.exception("sync upload failed")
                self._record_failure(e)
                delay = self.backoff.next_delay()
            if delay is not None:
                self._stop.wait(delay)

    @property
    def stats(self) -> UploaderStats:
        with self._lock:
            return UploaderStats(self._ok, self._failed, self._acked, self.backoff.attempt, self._last_error)

"""The device's heartbeat: how it is doing, posted to the sync server on an interval, so the
fleet view and a rollout's health checks see a device that has no events to send.

Protocol (served by ``shelfsight sync-server``)::

    POST {endpoint}/v1/health   {"bundle_id": ..., "fps": ..., "unknown_rate": ...,
                                 "errors": ..., "outbox_backlog": ...}   (any subset)
      200 -> {"ok": true, "rolled_back": rollout id or null}

It goes through the uploader's session (the same token, TLS settings and timeouts). A
heartbeat that fails is not retried: the next one is due an interval later anyway, and a
streak of failures is logged once, not every time.
"""
from __future__ import annotations

import logging
import math
import threading
from dataclasses import dataclass
from typing import Callable

import requests

from shelfsight.errors import ConfigError
from shelfsight.redact import redact_url
from .http import AuthError, SyncError, SyncSession
from .worker import SyncWorker

log = logging.getLogger(__name__)

HEALTH_PATH = "/v1/health"
FIELDS = {"bundle_id": str, "fps": float, "unknown_rate": float, "errors": int, "outbox_backlog": int}

HealthReport = Callable[[], dict]


@dataclass(frozen=True)
class HeartbeatOptions:
    """How often the device reports its health.

    Attributes:
        interval_s: seconds between heartbeats (the first is sent when sync starts).
    """

    interval_s: float = 60.0

    def __post_init__(self) -> None:
        if isinstance(self.interval_s, bool) or not isinstance(self.interval_s, (int, float)) \
                or not math.isfinite(self.interval_s) or self.interval_s <= 0:
            raise ConfigError(f"heartbeat interval must be a number of seconds > 0, got {self.interval_s!r}")


def clean_report(report: dict) -> dict:
    """The known fields of ``report`` the server accepts: None, NaN, negative numbers and
    unknown keys are left out (the server keeps a field's last value when it is missing)."""
    clean = {}
    for name, kind in FIELDS.items():
        value = report.get(name)
        if kind is str:
            if isinstance(value, str) and value:
                clean[name] = value
        elif isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value >= 0:
            clean[name] = kind(value)
    return clean


@dataclass(frozen=True)
class HeartbeatStats:
    sent: int
    failed: int
    last_error: str | None


class Heartbeat(SyncWorker):
    """Posts ``report()`` to ``endpoint``/v1/health every ``options.interval_s``; `send_once`
    for one, or `start` / `stop` for a background thread. ``stop()`` is idempotent.

    Args:
        session: the device's sync session (the uploader's).
        endpoint: base URL of the sync server (already checked, as `UploadOptions` does).
        options: the interval.
        report: ``f() -> dict`` with any of bundle_id, fps, unknown_rate, errors, outbox_backlog.
    """

    thread_name = "shelfsight-heartbeat"

    def __init__(self, session: SyncSession, endpoint: str, options: HeartbeatOptions, report: HealthReport) -> None:
        super().__init__(session, own_session=False)
        self.url = endpoint.rstrip("/") + HEALTH_PATH
        self.options = options
        self.report = report
        self._lock = threading.Lock()
        self._sent = self._failed = 0
        self._last_error: str | None = None

    def send_once(self) -> dict:
        """Post one heartbeat; returns the report sent.

        Raises:
            AuthError: the server refused the token.
            SyncError: the server could not be reached or refused the report.
        """
        report = clean_report(self.report())
        try:
            response = self.session.request("POST", self.url, json=report)
        except requests.RequestException as e:
            raise SyncError(f"POST {self.url} failed: {type(e).__name__}: {e}") from None
        if response.status_code in (401, 403):
            raise AuthError(f"server refused the sync token (HTTP {response.status_code})")
        if response.status_code != 200:
            raise SyncError(f"POST {self.url}: HTTP {response.status_code} {response.text[:200]!r}")
        with self._lock:
            self._sent += 1
        return report

    def _beat(self) -> None:
        try:
            self.send_once()
        except SyncError as e:
            with self._lock:
                self._failed += 1
                first = self._last_error is None
                self._last_error = str(e)
            if first:
                log.warning("heartbeat: %s (says so again only after one gets through)", redact_url(str(e)))
            if isinstance(e, AuthError):
                self.session.refresh_token()
            return
        except Exception:  # a bug here (or in the report) must not stop the device; logged in full
            log.exception("heartbeat failed")
            return
        with self._lock:
            recovered, self._last_error = self._last_error is not None, None
        if recovered:
            log.info("heartbeat: sent again")

    def _run(self) -> None:
        while not self._stop.is_set():
            self._beat()
            self._stop.wait(self.options.interval_s)

    @property
    def stats(self) -> HeartbeatStats:
        with self._lock:
            return HeartbeatStats(self._sent, self._failed, self._last_error)

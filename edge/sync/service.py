"""Sync as one service: outbox, uploader and update poller started and stopped together.

`shelfsight sync` runs it alone; `shelfsight run` can run it beside the camera loop and
send its events through `SyncService.sink()`. Update results worth knowing about
(refused, unhealthy, rolled back, updated) are themselves queued as events, so the
server learns about them. With an uploader and ``heartbeat`` set, a heartbeat (bundle,
outbox backlog, and the run loop's FPS, unknown rate and errors through ``device_health``)
goes to the server on an interval, events or not.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from shelfsight.errors import ConfigError
from .bundle_store import BundleStore
from .heartbeat import Heartbeat, HeartbeatOptions
from .http import read_token
from .outbox import Outbox, OutboxOptions, OutboxSink
from .updates import HealthCheck, UpdateOptions, Updater, UpdateResult
from .uploader import UploadOptions, Uploader

log = logging.getLogger(__name__)

REPORTED_STATUSES = ("updated", "failed", "refused", "unhealthy", "rolled_back")


@dataclass(frozen=True)
class SyncConfig:
    """What to run: an outbox (and uploader when ``upload`` is set) and/or an update
    poller keeping ``store_dir`` on the offered bundle; ``heartbeat`` (with an uploader):
    how often to report the device's health to the same server."""

    outbox: Path | None = None
    outbox_options: OutboxOptions = field(default_factory=OutboxOptions)
    upload: UploadOptions | None = None
    store_dir: Path | None = None
    updates: UpdateOptions | None = None
    heartbeat: HeartbeatOptions | None = None

    def __post_init__(self) -> None:
        if self.heartbeat is not None and self.upload is None:
            raise ConfigError("a heartbeat goes to the upload endpoint: it needs an outbox and an endpoint")
        if self.upload is not None and self.outbox is None:
            raise ConfigError("uploading needs an outbox path")
        if (self.updates is None) != (self.store_dir is None):
            raise ConfigError("updates need both a manifest URL and a bundle store directory")
        if self.outbox is None and self.updates is None:
            raise ConfigError("nothing to sync: give an outbox and/or a bundle store")


class SyncService:
    """Owns the sync objects of one device process. ``stop()`` is idempotent.

    Args:
        config: what to run.
        health_check: passed to the `Updater` (default: load and probe the bundle).
        on_update: ``f(bundle_dir)`` to reload the running recogniser after a switch.
    """

    def __init__(self, config: SyncConfig, health_check: HealthCheck | None = None,
                 on_update: Callable[[Path], None] | None = None) -> None:
        self.config = config
        for talks_to_server in (config.upload, config.updates):
            if talks_to_server is not None:
                read_token(talks_to_server.http)  # no token: refused before any file or folder is made
        self.outbox = Outbox(config.outbox, config.outbox_options) if config.outbox else None
        self.uploader = Uploader(self.outbox, config.upload) if config.upload else None
        self.store = BundleStore(config.store_dir) if config.store_dir else None
        self.updater = (Updater(self.store, config.updates, health_check=health_check, on_update=on_update,
                                on_result=self._report) if config.updates else None)
        self.heartbeat = (Heartbeat(self.uploader.session, config.upload.endpoint, config.heartbeat, self.health)
                          if config.heartbeat and self.uploader else None)
        self.device_health: Callable[[], dict] | None = None  # the run loop's fps, unknown_rate, errors, bundle_id
        self._stopped = False

    def health(self) -> dict:
        """What a heartbeat reports: the bundle store's current bundle, the outbox backlog,
        and what ``device_health`` adds (it wins where both say)."""
        report: dict = {}
        if self.store is not None:
            report["bundle_id"] = self.store.current_id
        if self.outbox is not None:
            report["outbox_backlog"] = self.outbox.stats().pending
        if self.device_health is not None:
            report.update(self.device_health())
        return report

    def _report(self, result: UpdateResult) -> None:
        if self.outbox is not None and result.status in REPORTED_STATUSES:
            self.outbox.put(result.to_event())

    def sink(self) -> OutboxSink:
        """A Sink writing into this service's outbox (closing it leaves the outbox open)."""
        if self.outbox is None:
            raise ConfigError("this sync service has no outbox")
        return OutboxSink(self.outbox, close_outbox=False)

    def check_updates_once(self) -> UpdateResult:
        """One update check in the calling thread, reported like the poller's."""
        if self.updater is None:
            raise ConfigError("this sync service has no update poller")
        result = self.updater.check_once()
        self._report(result)
        return result

    def start(self) -> "SyncService":
        for worker in (self.uploader, self.updater, self.heartbeat):
            if worker is not None:
                worker.start()
        return self

    def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        for worker in (self.heartbeat, self.updater, self.uploader):  # the uploader's session last
            if worker is not None:
                worker.stop()
        if self.outbox is not None:
            self.outbox.close()

    def __enter__(self) -> "SyncService":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

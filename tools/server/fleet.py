"""The fleet's rules between HTTP and storage: what a device's batch does beyond storing
(health reports, update failures that stop a rollout) and which bundle a device is offered."""
from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path

from .bundles import BundleStore
from .rollouts import health_from_event, offered_bundle, unhealthy_reason, update_failure_reason
from .storage import HealthReport, Rollout, SqlStorage

log = logging.getLogger(__name__)


class Fleet:
    def __init__(self, storage: SqlStorage, bundles: BundleStore) -> None:
        self.storage = storage
        self.bundles = bundles

    def ingest(self, device: str, valid: list[tuple[str, str]]) -> tuple[list[str], dict[str, str]]:
        """Store a batch of (id, json) for ``device``; returns (held ids, rejected id -> reason)."""
        result = self.storage.store_events(device, valid)
        conflicts = set(result.conflicts)
        held = [i for i, _ in valid if i not in conflicts]
        rejected = {i: "id already held with different content" for i in result.conflicts}
        health, failures = None, []
        for i, body in valid:
            if i in conflicts or ('"health"' not in body and '"bundle_update"' not in body):
                continue  # the cheap test first: most events are neither
            event = json.loads(body)
            try:
                health = health_from_event(event) or health
            except ValueError as e:
                log.warning("device %s: health event %s ignored: %s", device, i, e)
            if event.get("type") == "bundle_update":
                failures.append(event)
                running = event.get("running_id")
                if isinstance(running, str) and (health is None or health.bundle_id is None):
                    health = dataclasses.replace(health or HealthReport(), bundle_id=running)
        if health is not None:
            self.report_health(device, health)
        if failures:
            self._check_failures(device, failures)
        return held, rejected

    def report_health(self, device: str, report: HealthReport) -> Rollout | None:
        """Keep ``report``; returns the rollout it rolled back, if it did."""
        self.storage.record_health(device, report)
        active = self.storage.active_rollout()
        if active is None:
            return None
        reason = unhealthy_reason(active, report)
        return self._roll_back(active, device, reason) if reason else None

    def _check_failures(self, device: str, events: list[dict]) -> None:
        active = self.storage.active_rollout()
        if active is None:
            return
        for event in events:
            reason = update_failure_reason(active, event)
            if reason:
                self._roll_back(active, device, reason)
                return

    def _roll_back(self, active: Rollout, device: str, reason: str) -> Rollout | None:
        ended = self.storage.end_rollout("rolled_back", f"{device}: {reason}", rollout_id=active.id)
        if ended is not None:
            log.warning("rollout %d of %s rolled back: %s: %s", active.id, active.bundle, device, reason)
        return ended

    def offer_for(self, device: str) -> Path | None:
        """The bundle ``device`` is offered (directory or archive), or None."""
        record = self.storage.device(device)
        bundle_id = offered_bundle(device, record.group if record else "", self.storage.active_rollout(),
                                   self.storage.stable_bundle())
        return None if bundle_id is None else self.bundles.path(bundle_id)

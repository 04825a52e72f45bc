"""Staged rollouts as plain functions: which bundle a device is offered, and whether a
health report from a device in a rollout calls for rolling it back.

A device's place in a percentage rollout is a stable hash of (rollout id, device id) into
0..99, so the same 10 % keep the canary while it runs, every worker agrees without shared
state, and a new rollout draws a different 10 %.
"""
from __future__ import annotations

import hashlib

from .storage.records import DeviceRecord, HealthReport, Rollout


BUNDLE_REFUSALS = ("unhealthy", "refused", "rolled_back")  # edge/sync/updates.py STATUSES that blame the bundle


def bucket(rollout_id: int, device: str) -> int:
    digest = hashlib.sha256(f"{rollout_id}:{device}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % 100


def in_rollout(rollout: Rollout, device: str, group: str) -> bool:
    if rollout.group is not None:
        return group == rollout.group
    return bucket(rollout.id, device) < (rollout.percent or 0)


def offered_bundle(device: str, group: str, active: Rollout | None, stable: str | None) -> str | None:
    """The bundle ``device`` should run: the active rollout's when it is in it, else the stable one."""
    if active is not None and in_rollout(active, device, group):
        return active.bundle
    return stable


def unhealthy_reason(rollout: Rollout, report: HealthReport) -> str | None:
    """Why ``report`` (from a device running the rollout's bundle) fails the rollout's limits, or None."""
    if report.bundle_id != rollout.bundle:
        return None
    if rollout.min_fps is not None and report.fps is not None and report.fps < rollout.min_fps:
        return f"fps {report.fps:g} below {rollout.min_fps:g}"
    if (rollout.max_unknown_rate is not None and report.unknown_rate is not None
            and report.unknown_rate > rollout.max_unknown_rate):
        return f"unknown rate {report.unknown_rate:g} above {rollout.max_unknown_rate:g}"
    if rollout.max_errors is not None and report.errors is not None and report.errors > rollout.max_errors:
        return f"{report.errors} errors above {rollout.max_errors}"
    return None


def update_failure_reason(rollout: Rollout, event: dict) -> str | None:
    """A device's own refusal of the rollout's bundle (its "bundle_update" event: the health
    check failed, the signature or manifest did not verify, the reload failed and it rolled
    back) fails the rollout too. "failed" (a local I/O error, such as a full disk) is the
    device's trouble, not the bundle's, and does not."""
    if event.get("type") != "bundle_update" or event.get("bundle_id") != rollout.bundle:
        return None
    if event.get("status") in BUNDLE_REFUSALS:
        return f"device update {event['status']}: {event.get('reason') or 'no reason given'}"
    return None


def health_from_event(event: dict) -> HealthReport | None:
    """The HealthReport a ``{"type": "health", ...}`` event carries, or None for other events."""
    if event.get("type") != "health":
        return None
    return parse_health(event)


def parse_health(payload: dict) -> HealthReport:
    """A HealthReport from JSON fields; wrong types raise ValueError naming the field."""
    def number(name: str, kind):
        value = payload.get(name)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value or value < 0:
            raise ValueError(f"health field {name!r} must be a number >= 0, got {value!r}")
        return kind(value)

    bundle_id = payload.get("bundle_id")
    if bundle_id is not None and not isinstance(bundle_id, str):
        raise ValueError(f"health field 'bundle_id' must be a string, got {bundle_id!r}")
    try:
        bundle_id is None or bundle_id.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate: valid as a JSON escape, storable in no database
        raise ValueError(f"health field 'bundle_id' is not valid Unicode, got {bundle_id!r}") from None
    return HealthReport(bundle_id=bundle_id, fps=number("fps", float), unknown_rate=number("unknown_rate", float),
                        errors=number("errors", int), outbox_backlog=number("outbox_backlog", int))


def status_row(device: DeviceRecord, now: float) -> dict:
    """One device in `fleet status`: the record plus how long ago it was seen."""
    return dict(device.to_dict(), seen_s_ago=None if device.last_seen is None else round(now - device.last_seen, 1))

"""The storage interface, written once in SQL that PostgreSQL and SQLite both run.

Every query is parameterised (``%s`` placeholders; the SQLite backend turns them into
``?``). A backend supplies ``transaction()`` (a cursor inside one transaction) and the one
statement whose efficient form differs, the bulk insert of a batch of events.
"""
from __future__ import annotations

import abc
import contextlib
import os
import time

from shelfsight.errors import ConfigError

from shelfsight.edge.sync.http import DEVICE_ID

from ..tokens import hash_token, new_token, same_hash
from .records import DeviceRecord, HealthReport, Principal, Rollout, StoreResult

COUNTERS = ("batches", "received", "redeliveries", "conflicts", "stored")
ROLLOUT_STATES = ("active", "promoted", "rolled_back")
_DEVICE_COLUMNS = ("id, grp, created, revoked, last_seen, bundle_id, fps, unknown_rate, errors, outbox_backlog, "
                   "health_at, stored")
_ROLLOUT_COLUMNS = ("id, bundle, grp, percent, state, min_fps, max_unknown_rate, max_errors, "
                    "started, ended, reason")


class FleetError(ConfigError):
    """A fleet command that cannot be done as asked (unknown device, a rollout already running ...)."""


DEVICE_NAME = DEVICE_ID  # the device side checks its --device-id by the same rule


def check_device_name(name: str) -> str:
    """``name`` if it is a usable device id (letters, digits, . _ -, 1..128, e.g. STORE-12-CAM-3)."""
    if not isinstance(name, str) or not DEVICE_NAME.fullmatch(name):
        shown = repr(name) if not isinstance(name, str) or len(name) <= 140 else repr(name[:140]) + "..."
        raise FleetError(f"device name {shown}: expected 1..128 letters, digits, '.', '_' or '-' "
                         "starting with a letter or digit (e.g. STORE-12-CAM-3)")
    return name


class SqlStorage(abc.ABC):
    """Events, devices, tokens, bundles and rollouts of one fleet. Thread-safe.

    The SQL is shared; a backend (sqlite.py, postgres.py) provides its connections, its
    idempotent insert and its close."""

    url: str

    # -- what a backend provides ------------------------------------------------------------
    @abc.abstractmethod
    def transaction(self) -> contextlib.AbstractContextManager:
        """A context manager giving a cursor inside one transaction (committed on success)."""

    @abc.abstractmethod
    def _insert_events(self, cur, device: str, events: list[tuple[str, str]], now: float) -> int:
        """Insert (id, body) rows keeping existing ones; returns how many were new."""

    @abc.abstractmethod
    def close(self) -> None:
        """Close the connections."""

    # -- events -----------------------------------------------------------------------------
    def store_events(self, device: str, events: list[tuple[str, str]]) -> StoreResult:
        """Store a batch for ``device``: ids are scoped per device, a resend of an id with the
        same content is harmless, and one with different content is reported, not stored."""
        now = time.time()
        with self.transaction() as cur:
            new = self._insert_events(cur, device, events, now) if events else 0
            conflicts: tuple[str, ...] = ()
            if new < len(events):  # some were held already: the same event, or an id reused?
                sent = dict(events)
                marks = ", ".join(["%s"] * len(sent))
                cur.execute(f"SELECT id, body FROM events WHERE device = %s AND id IN ({marks})", (device, *sent))
                conflicts = tuple(sorted(i for i, body in cur.fetchall() if body != sent[i]))
            self._count(cur, {"batches": 1, "received": len(events), "conflicts": len(conflicts),
                              "redeliveries": len(events) - new - len(conflicts), "stored": new})
            cur.execute("INSERT INTO devices (id, created, last_seen, stored) VALUES (%s, %s, %s, %s) "
                        "ON CONFLICT (id) DO UPDATE SET last_seen = excluded.last_seen, "
                        "stored = devices.stored + excluded.stored", (device, now, now, new))
        return StoreResult(new, conflicts)

    def _count(self, cur, increments: dict[str, int]) -> None:
        shard = os.getpid()
        for name, n in increments.items():
            cur.execute("INSERT INTO counters (name, shard, value) VALUES (%s, %s, %s) ON CONFLICT (name, shard) "
                        "DO UPDATE SET value = counters.value + excluded.value", (name, shard, n))

    def stats(self) -> dict[str, int]:
        with self.transaction() as cur:
            # from the counters, kept in each batch's transaction: no scan of the events table
            # on every /v1/stats or /metrics scrape
            cur.execute("SELECT name, SUM(value) FROM counters GROUP BY name")
            counters = {name: int(value) for name, value in cur.fetchall()}
            cur.execute("SELECT COUNT(*) FROM devices WHERE stored > 0")
            (devices,) = cur.fetchone()
        stats = dict({name: 0 for name in COUNTERS}, **counters, devices=devices)
        stats["events"] = stats.pop("stored")
        return stats

    def events(self, device: str | None = None) -> list[tuple[str, str, str]]:
        """(device, id, body) of every event held (of one device), in id order."""
        with self.transaction() as cur:
            if device is None:
                cur.execute("SELECT device, id, body FROM events ORDER BY device, id")
            else:
                cur.execute("SELECT device, id, body FROM events WHERE device = %s ORDER BY id", (device,))
            return [tuple(row) for row in cur.fetchall()]

    # -- devices and tokens -----------------------------------------------------------------
    def add_device(self, device: str, group: str = "") -> str:
        """Register ``device`` (or re-issue for a revoked one); returns its new token.

        Raises:
            FleetError: the device exists and is not revoked.
        """
        check_device_name(device)
        now, token = time.time(), new_token()
        with self.transaction() as cur:
            cur.execute("SELECT revoked FROM devices WHERE id = %s", (device,))
            row = cur.fetchone()
            if row is not None and row[0] is None:
                cur.execute("SELECT COUNT(*) FROM tokens WHERE device = %s AND revoked IS NULL", (device,))
                if cur.fetchone()[0]:
                    raise FleetError(f"device {device!r} already has a token (revoke it first)")
            cur.execute("INSERT INTO devices (id, grp, created) VALUES (%s, %s, %s) ON CONFLICT (id) "
                        "DO UPDATE SET grp = excluded.grp, revoked = NULL", (device, group, now))
            cur.execute("INSERT INTO tokens (hash, role, device, name, created) VALUES (%s, 'device', %s, %s, %s)",
                        (hash_token(token), device, device, now))
        return token

    def revoke_device(self, device: str) -> None:
        """Revoke every token of ``device``. Raises FleetError if it is unknown."""
        now = time.time()
        with self.transaction() as cur:
            cur.execute("UPDATE devices SET revoked = %s WHERE id = %s", (now, device))
            if cur.rowcount == 0:
                raise FleetError(f"no device {device!r}")
            cur.execute("UPDATE tokens SET revoked = %s WHERE device = %s AND revoked IS NULL", (now, device))

    def add_admin_token(self, name: str) -> str:
        token = new_token()
        with self.transaction() as cur:
            cur.execute("INSERT INTO tokens (hash, role, name, created) VALUES (%s, 'admin', %s, %s)",
                        (hash_token(token), name, time.time()))
        return token

    def principal(self, token: str) -> Principal | None:
        """Who holds ``token``, or None (unknown or revoked)."""
        digest = hash_token(token)
        with self.transaction() as cur:
            cur.execute("SELECT hash, role, device, name FROM tokens WHERE hash = %s AND revoked IS NULL", (digest,))
            row = cur.fetchone()
        if row is None or not same_hash(row[0], digest):
            return None
        return Principal(role=row[1], device=row[2], name=row[3])

    def devices(self) -> list[DeviceRecord]:
        with self.transaction() as cur:
            cur.execute(f"SELECT {_DEVICE_COLUMNS} FROM devices ORDER BY id")
            return [DeviceRecord(*row) for row in cur.fetchall()]

    def device(self, device: str) -> DeviceRecord | None:
        with self.transaction() as cur:
            cur.execute(f"SELECT {_DEVICE_COLUMNS} FROM devices WHERE id = %s", (device,))
            row = cur.fetchone()
        return DeviceRecord(*row) if row else None

    def record_health(self, device: str, report: HealthReport) -> None:
        """Keep the latest health report of ``device`` (fields it left out stay as they were)."""
        now = time.time()
        with self.transaction() as cur:
            cur.execute("INSERT INTO devices (id, created, last_seen) VALUES (%s, %s, %s) "
                        "ON CONFLICT (id) DO UPDATE SET last_seen = excluded.last_seen", (device, now, now))
            cur.execute("UPDATE devices SET bundle_id = COALESCE(%s, bundle_id), fps = COALESCE(%s, fps), "
                        "unknown_rate = COALESCE(%s, unknown_rate), errors = COALESCE(%s, errors), "
                        "outbox_backlog = COALESCE(%s, outbox_backlog), health_at = %s WHERE id = %s",
                        (report.bundle_id, report.fps, report.unknown_rate, report.errors, report.outbox_backlog,
                         now, device))

    # -- bundles and rollouts ---------------------------------------------------------------
    def add_bundle(self, bundle_id: str, location: str) -> None:
        with self.transaction() as cur:
            cur.execute("INSERT INTO bundles (id, location, added) VALUES (%s, %s, %s) "
                        "ON CONFLICT (id) DO UPDATE SET location = excluded.location", (bundle_id, location, time.time()))

    def bundle_location(self, bundle_id: str) -> str | None:
        with self.transaction() as cur:
            cur.execute("SELECT location FROM bundles WHERE id = %s", (bundle_id,))
            row = cur.fetchone()
        return row[0] if row else None

    def start_rollout(self, bundle_id: str, group: str | None = None, percent: int | None = None,
                      min_fps: float | None = None, max_unknown_rate: float | None = None,
                      max_errors: int | None = None) -> Rollout:
        """Offer ``bundle_id`` to ``group`` or ``percent`` % of devices.

        Raises:
            FleetError: not exactly one of group / percent, an unknown bundle, or a rollout in progress.
        """
        if (group is None) == (percent is None):
            raise FleetError("a rollout targets either a device group or a percentage of devices, not both")
        if percent is not None and not 0 < percent <= 100:
            raise FleetError(f"rollout percent must be 1..100, got {percent}")
        with self.transaction() as cur:
            cur.execute("SELECT 1 FROM bundles WHERE id = %s", (bundle_id,))
            if cur.fetchone() is None:
                raise FleetError(f"no bundle {bundle_id!r} in the fleet (add it first)")
            cur.execute("SELECT id, bundle FROM rollouts WHERE state = 'active'")
            active = cur.fetchone()
            if active is not None:
                raise FleetError(f"rollout {active[0]} of {active[1]} is in progress: promote or roll it back first")
            cur.execute("INSERT INTO rollouts (bundle, grp, percent, state, min_fps, max_unknown_rate, max_errors, "
                        f"started) VALUES (%s, %s, %s, 'active', %s, %s, %s, %s) RETURNING {_ROLLOUT_COLUMNS}",
                        (bundle_id, group, percent, min_fps, max_unknown_rate, max_errors, time.time()))
            return Rollout(*cur.fetchone())

    def end_rollout(self, state: str, reason: str = "", rollout_id: int | None = None) -> Rollout | None:
        """Promote or roll back the active rollout (only if it is ``rollout_id``, when given);
        returns it, or None if there was none (or another one is active)."""
        if state not in ("promoted", "rolled_back"):
            raise FleetError(f"a rollout ends promoted or rolled_back, got {state!r}")
        with self.transaction() as cur:
            query = ("UPDATE rollouts SET state = %s, ended = %s, reason = %s WHERE state = 'active'"
                     + (" AND id = %s" if rollout_id is not None else "") + f" RETURNING {_ROLLOUT_COLUMNS}")
            cur.execute(query, (state, time.time(), reason) + ((rollout_id,) if rollout_id is not None else ()))
            row = cur.fetchone()
        return Rollout(*row) if row else None

    def rollouts(self) -> list[Rollout]:
        with self.transaction() as cur:
            cur.execute(f"SELECT {_ROLLOUT_COLUMNS} FROM rollouts ORDER BY id")
            return [Rollout(*row) for row in cur.fetchall()]

    def active_rollout(self) -> Rollout | None:
        with self.transaction() as cur:
            cur.execute(f"SELECT {_ROLLOUT_COLUMNS} FROM rollouts WHERE state = 'active'")
            row = cur.fetchone()
        return Rollout(*row) if row else None

    def stable_bundle(self) -> str | None:
        """The bundle every device outside a rollout gets: the last one promoted."""
        with self.transaction() as cur:
            cur.execute("SELECT bundle FROM rollouts WHERE state = 'promoted' ORDER BY ended DESC, id DESC LIMIT 1")
            row = cur.fetchone()
        return row[0] if row else None

"""The server's event store (SQLite, keyed by event id: a resend is harmless) and the
parsing of a POST /v1/events body."""
from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path

from aiohttp import web

from shelfsight.edge.sync.outbox import MAX_ID_CHARS

MAX_BATCH_EVENTS = 10_000


class EventStore:
    """Events keyed by id in SQLite; storing an id twice keeps the first copy."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")
        self.db.executescript("""
            CREATE TABLE IF NOT EXISTS events (id TEXT PRIMARY KEY, body TEXT NOT NULL,
                                               device TEXT NOT NULL, received REAL NOT NULL);
            CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
        """)

    def store(self, events: list[tuple[str, str]], device: str) -> int:
        """Store (id, json) pairs; returns how many were new."""
        now = time.time()
        self.db.execute("BEGIN IMMEDIATE")
        try:
            before = self.db.total_changes
            self.db.executemany("INSERT OR IGNORE INTO events VALUES (?, ?, ?, ?)",
                                [(i, body, device, now) for i, body in events])
            new = self.db.total_changes - before
            for name, n in (("batches", 1), ("received", len(events)), ("redeliveries", len(events) - new)):
                self.db.execute("INSERT INTO counters VALUES (?, ?) ON CONFLICT(name) "
                                "DO UPDATE SET value = value + excluded.value", (name, n))
            self.db.execute("COMMIT")
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        return new

    def stats(self) -> dict[str, int]:
        stats = {"events": self.db.execute("SELECT COUNT(*) FROM events").fetchone()[0],
                 "devices": self.db.execute("SELECT COUNT(DISTINCT device) FROM events").fetchone()[0],
                 "batches": 0, "received": 0, "redeliveries": 0}
        stats.update(self.db.execute("SELECT name, value FROM counters").fetchall())
        return stats

    def close(self) -> None:
        self.db.close()


def parse_batch(body: bytes) -> tuple[list[tuple[str, str]], dict[str, str]]:
    """(valid (id, json) pairs, rejected id -> reason) of a POST /v1/events body.

    Raises:
        web.HTTPBadRequest: not JSON, no "events" list, too many events, or an event
            without a string id (it could not be reported back).
    """
    try:
        payload = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise bad_request("body is not JSON") from None
    events = payload.get("events") if isinstance(payload, dict) else None
    if not isinstance(events, list):
        raise bad_request('expected {"events": [...]}')
    if len(events) > MAX_BATCH_EVENTS:
        raise bad_request(f"{len(events)} events in one batch, limit {MAX_BATCH_EVENTS}")
    valid, rejected = [], {}
    for n, event in enumerate(events):
        event_id = event.get("id") if isinstance(event, dict) else None
        if not isinstance(event_id, str):
            raise bad_request(f"event {n} has no string id")
        if not 0 < len(event_id) <= MAX_ID_CHARS:
            rejected[event_id] = f"id must be 1..{MAX_ID_CHARS} characters"
            continue
        valid.append((event_id, json.dumps(event, separators=(",", ":"), ensure_ascii=False)))
    return valid, rejected


def bad_request(reason: str) -> web.HTTPBadRequest:
    return web.HTTPBadRequest(text=json.dumps({"error": reason}), content_type="application/json")

"""A durable, bounded on-disk outbox of events waiting for the sync server.

Events are JSON objects with a string ``id`` (the idempotency key). `put` commits each
event to SQLite (WAL) before returning, so a crash or power cut after `put` loses
nothing. A sender `claim`s the oldest events in a batch and `ack`s them only once the
server said it holds them; unacknowledged events stay and are claimed again.

The outbox is bounded by event count, total bytes and age. When full, the drop policy
decides: ``"oldest"`` drops the oldest events to make room, ``"refuse-new"`` refuses the
new one. Every drop is counted (`counters()`), also across restarts. Events the server
rejects as malformed move to a small dead-letter table instead of being retried forever.

Several processes may share one outbox file (e.g. `shelfsight run` producing and
`shelfsight sync` sending); run one sender per file.
"""
from __future__ import annotations

import json
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

from shelfsight.atomic import create_private
from shelfsight.errors import ConfigError, ShelfsightError

DROP_POLICIES = ("oldest", "refuse-new")
MAX_ID_CHARS = 200
COUNTERS = ("enqueued", "duplicate", "acked", "dropped_oldest", "refused", "expired", "rejected")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    body TEXT NOT NULL,
    size INTEGER NOT NULL,
    created REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS events_created ON events(created);
CREATE TABLE IF NOT EXISTS totals (one INTEGER PRIMARY KEY CHECK (one = 1),
                                   count INTEGER NOT NULL, bytes INTEGER NOT NULL);
INSERT OR IGNORE INTO totals VALUES (1, 0, 0);
CREATE TRIGGER IF NOT EXISTS events_ins AFTER INSERT ON events BEGIN
    UPDATE totals SET count = count + 1, bytes = bytes + NEW.size WHERE one = 1; END;
CREATE TRIGGER IF NOT EXISTS events_del AFTER DELETE ON events BEGIN
    UPDATE totals SET count = count - 1, bytes = bytes - OLD.size WHERE one = 1; END;
CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS dead (seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL,
                                 body TEXT NOT NULL, reason TEXT NOT NULL, at REAL NOT NULL);
"""


class OutboxError(ShelfsightError):
    """An event cannot be stored: not a JSON object, no usable id, or the outbox file is unusable."""


@dataclass(frozen=True)
class OutboxOptions:
    """Bounds and durability of an outbox.

    Attributes:
        max_events: most events held; beyond it the drop policy applies.
        max_bytes: most bytes of event JSON held.
        max_age_s: events older than this are dropped (counted as ``expired``); None keeps them.
        drop_policy: ``"oldest"`` (make room by dropping the oldest) or ``"refuse-new"``.
        durable: fsync every commit (SQLite synchronous=FULL); False survives a process
            crash but not a power cut (synchronous=NORMAL).
        max_dead: most dead-letter events kept (oldest removed first).
    """

    max_events: int = 100_000
    max_bytes: int = 256 * 1024**2
    max_age_s: float | None = 7 * 24 * 3600.0
    drop_policy: str = "oldest"
    durable: bool = True
    max_dead: int = 10_000

    def __post_init__(self) -> None:
        if self.max_events < 1 or self.max_bytes < 1 or self.max_dead < 0:
            raise ConfigError(f"outbox bounds must be positive, got max_events {self.max_events}, "
                              f"max_bytes {self.max_bytes}, max_dead {self.max_dead}")
        if self.max_age_s is not None and self.max_age_s <= 0:
            raise ConfigError(f"outbox max_age_s must be > 0 or None, got {self.max_age_s}")
        if self.drop_policy not in DROP_POLICIES:
            raise ConfigError(f"drop policy {self.drop_policy!r} unknown, expected one of {DROP_POLICIES}")


@dataclass(frozen=True)
class Batch:
    """Events claimed for one upload, oldest first."""

    ids: tuple[str, ...]
    events: tuple[dict[str, Any], ...]
    nbytes: int

    def __len__(self) -> int:
        return len(self.ids)


@dataclass(frozen=True)
class OutboxStats:
    """What the outbox holds now and what happened to events over its lifetime."""

    pending: int
    pending_bytes: int
    dead: int
    counters: Mapping[str, int]


def encode_event(event: Mapping[str, Any]) -> tuple[str, str]:
    """(id, compact JSON) of an event. Raises OutboxError if it cannot be stored."""
    if not isinstance(event, Mapping):
        raise OutboxError(f"an event must be a dict, got {type(event).__name__}")
    event_id = event.get("id")
    if not isinstance(event_id, str) or not 0 < len(event_id) <= MAX_ID_CHARS:
        raise OutboxError(f"event id must be a non-empty string of at most {MAX_ID_CHARS} chars, "
                          f"got {event_id!r}")
    try:
        body = json.dumps(event, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError) as e:
        raise OutboxError(f"event {event_id}: not JSON-serialisable ({e})") from None
    return event_id, body


class Outbox:
    """A SQLite-backed outbox (see module docstring). Thread-safe; ``close()`` is idempotent.

    Args:
        path: the database file (created with its parent directory if missing).
        options: bounds, drop policy and durability.
        clock: seconds since the epoch, for ages (tests pass a fake one).
    """

    def __init__(self, path: str | Path, options: OutboxOptions | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.path = Path(path)
        self.options = options = options or OutboxOptions()
        self._clock = clock
        self._lock = threading.Lock()
        self._inflight: set[str] = set()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        create_private(self.path)
        try:
            self._db = sqlite3.connect(self.path, timeout=30.0, isolation_level=None,
                                       check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute(f"PRAGMA synchronous={'FULL' if options.durable else 'NORMAL'}")
            self._db.executescript(_SCHEMA)
        except sqlite3.DatabaseError as e:
            raise OutboxError(f"outbox {self.path}: not a usable SQLite database ({e})") from None
        self._closed = False

    # -- writing -----------------------------------------------------------------------
    def put(self, event: Mapping[str, Any]) -> bool:
        """Store one event durably. Returns False when it was refused (full outbox with
        ``refuse-new``, or larger than ``max_bytes``); an id already waiting is ignored
        (True, counted as ``duplicate``). Raises OutboxError for an unstorable event."""
        return self.put_many([event]) == 1

    def put_many(self, events: Iterable[Mapping[str, Any]]) -> int:
        """Store events in one transaction; returns how many are now waiting or were
        already waiting (i.e. not refused)."""
        encoded = [encode_event(e) for e in events]
        accepted = 0
        with self._transaction() as db:
            self._expire(db)
            for event_id, body in encoded:
                size = len(body.encode("utf-8"))
                if db.execute("SELECT 1 FROM events WHERE id = ?", (event_id,)).fetchone():
                    self._bump(db, "duplicate")
                    accepted += 1
                    continue
                if not self._make_room(db, size):
                    self._bump(db, "refused")
                    continue
                db.execute("INSERT INTO events (id, body, size, created) VALUES (?, ?, ?, ?)",
                           (event_id, body, size, self._clock()))
                self._bump(db, "enqueued")
                accepted += 1
        return accepted

    def _make_room(self, db: sqlite3.Connection, size: int) -> bool:
        o = self.options
        if size > o.max_bytes:
            return False
        count, nbytes = db.execute("SELECT count, bytes FROM totals").fetchone()
        if count + 1 <= o.max_events and nbytes + size <= o.max_bytes:
            return True
        if o.drop_policy == "refuse-new":
            return False
        dropped = 0
        while count + 1 > o.max_events or nbytes + size > o.max_bytes:
            seq, old_size, old_id = db.execute("SELECT seq, size, id FROM events ORDER BY seq LIMIT 1").fetchone()
            db.execute("DELETE FROM events WHERE seq = ?", (seq,))
            self._inflight.discard(old_id)
            count, nbytes, dropped = count - 1, nbytes - old_size, dropped + 1
        self._bump(db, "dropped_oldest", dropped)
        return True

    def _expire(self, db: sqlite3.Connection) -> None:
        if self.options.max_age_s is None:
            return
        cutoff = self._clock() - self.options.max_age_s
        n = db.execute("DELETE FROM events WHERE created < ?", (cutoff,)).rowcount
        self._bump(db, "expired", n)

    # -- sending -----------------------------------------------------------------------
    def claim(self, max_events: int = 500, max_bytes: int = 1024**2) -> Batch:
        """The oldest waiting events not already claimed, up to ``max_events`` and
        ``max_bytes`` (at least one event if any waits). Claims last until `ack` or
        `release`, or until this Outbox object is closed (a crash releases everything)."""
        if max_events < 1 or max_bytes < 1:
            raise ConfigError(f"claim needs max_events >= 1 and max_bytes >= 1, got {max_events}, {max_bytes}")
        ids: list[str] = []
        events: list[dict[str, Any]] = []
        total = 0
        with self._transaction() as db:
            self._expire(db)
            cursor = db.execute("SELECT id, body, size FROM events ORDER BY seq")
            for event_id, body, size in cursor:
                if event_id in self._inflight:
                    continue
                if len(ids) >= max_events or (ids and total + size > max_bytes):
                    break
                ids.append(event_id)
                events.append(json.loads(body))
                total += size
            cursor.close()
            self._inflight.update(ids)
        return Batch(ids=tuple(ids), events=tuple(events), nbytes=total)

    def ack(self, ids: Iterable[str]) -> int:
        """Remove events the server holds; returns how many were removed."""
        ids = list(ids)
        with self._transaction() as db:
            removed = 0
            for event_id in ids:
                removed += db.execute("DELETE FROM events WHERE id = ?", (event_id,)).rowcount
            self._bump(db, "acked", removed)
            self._inflight.difference_update(ids)
        return removed

    def reject(self, reasons: Mapping[str, str]) -> int:
        """Move events the server refused as malformed (id -> reason) to the dead-letter
        table; returns how many were moved."""
        moved = 0
        with self._transaction() as db:
            for event_id, reason in reasons.items():
                row = db.execute("SELECT body FROM events WHERE id = ?", (event_id,)).fetchone()
                if row is None:
                    continue
                db.execute("INSERT INTO dead (id, body, reason, at) VALUES (?, ?, ?, ?)",
                           (event_id, row[0], str(reason)[:500], self._clock()))
                db.execute("DELETE FROM events WHERE id = ?", (event_id,))
                moved += 1
            db.execute("DELETE FROM dead WHERE seq NOT IN (SELECT seq FROM dead ORDER BY seq DESC LIMIT ?)",
                       (self.options.max_dead,))
            self._bump(db, "rejected", moved)
            self._inflight.difference_update(reasons)
        return moved

    def release(self, batch: Batch | Iterable[str]) -> None:
        """Give claimed events back so the next `claim` returns them again."""
        ids = batch.ids if isinstance(batch, Batch) else tuple(batch)
        with self._lock:
            self._inflight.difference_update(ids)

    # -- inspection --------------------------------------------------------------------
    def stats(self) -> OutboxStats:
        with self._lock:
            self._check_open()
            count, nbytes = self._db.execute("SELECT count, bytes FROM totals").fetchone()
            dead = self._db.execute("SELECT COUNT(*) FROM dead").fetchone()[0]
            counters = dict.fromkeys(COUNTERS, 0)
            counters.update(self._db.execute("SELECT name, value FROM counters").fetchall())
        return OutboxStats(pending=count, pending_bytes=nbytes, dead=dead, counters=counters)

    def counters(self) -> dict[str, int]:
        return dict(self.stats().counters)

    def __len__(self) -> int:
        return self.stats().pending

    def dead_letters(self) -> list[tuple[str, str]]:
        """(id, reason) of dead-letter events, oldest first."""
        with self._lock:
            self._check_open()
            return self._db.execute("SELECT id, reason FROM dead ORDER BY seq").fetchall()

    # -- plumbing ----------------------------------------------------------------------
    def _bump(self, db: sqlite3.Connection, name: str, n: int = 1) -> None:
        if n:
            db.execute("INSERT INTO counters VALUES (?, ?) "
                       "ON CONFLICT(name) DO UPDATE SET value = value + excluded.value", (name, n))

    def _transaction(self):
        return _Transaction(self)

    def _check_open(self) -> None:
        if self._closed:
            raise OutboxError(f"outbox {self.path} is closed")

    def close(self) -> None:
        with self._lock:
            if not self._closed:
                self._closed = True
                self._inflight.clear()
                self._db.close()

    def __enter__(self) -> "Outbox":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class _Transaction:
    """``with``: take the lock, BEGIN IMMEDIATE, COMMIT or ROLLBACK."""

    def __init__(self, outbox: Outbox) -> None:
        self.outbox = outbox

    def __enter__(self) -> sqlite3.Connection:
        self.outbox._lock.acquire()
        try:
            self.outbox._check_open()
            self.outbox._db.execute("BEGIN IMMEDIATE")
        except BaseException:
            self.outbox._lock.release()
            raise
        return self.outbox._db

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            self.outbox._db.execute("COMMIT" if exc_type is None else "ROLLBACK")
        finally:
            self.outbox._lock.release()


class OutboxSink:
    """A `shelfsight.edge.pipeline.sinks` Sink that writes events into an outbox.

    ``emit`` returns once the event is on disk; a refused event is counted by the
    outbox, not raised, so a full outbox never stops the camera loop.
    """

    def __init__(self, outbox: Outbox, close_outbox: bool = True) -> None:
        self.outbox = outbox
        self._close_outbox = close_outbox

    def emit(self, event: dict) -> None:
        self.outbox.put(event)

    def flush(self) -> None:
        """Nothing to do: every `emit` is already committed."""

    def close(self) -> None:
        if self._close_outbox:
            self.outbox.close()

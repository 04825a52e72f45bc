"""SQLite storage: one file, one connection behind a lock (a single store or a dev setup;
one server worker)."""
from __future__ import annotations

import contextlib
import sqlite3
import threading
from pathlib import Path
from typing import Iterator

from shelfsight.errors import ConfigError

from .base import SqlStorage
from .migrate import migrate


class _Cursor:
    """A sqlite3 cursor that takes the ``%s`` placeholders of the shared SQL."""

    def __init__(self, cur: sqlite3.Cursor) -> None:
        self._cur = cur

    def execute(self, query: str, params=()) -> None:
        self._cur.execute(query.replace("%s", "?"), params)

    def fetchone(self):
        return self._cur.fetchone()

    def fetchall(self):
        return self._cur.fetchall()

    @property
    def rowcount(self) -> int:
        return self._cur.rowcount


class SqliteStorage(SqlStorage):
    def __init__(self, path: Path) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        self.url = f"sqlite:///{path}"
        _refuse_reference_schema(path)
        migrate(self.url, "sqlite")
        self.db = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")
        self.db.execute("PRAGMA foreign_keys=ON")
        self._lock = threading.Lock()

    @contextlib.contextmanager
    def transaction(self) -> Iterator[_Cursor]:
        with self._lock:
            self.db.execute("BEGIN IMMEDIATE")
            try:
                yield _Cursor(self.db.cursor())
            except BaseException:
                self.db.execute("ROLLBACK")
                raise
            self.db.execute("COMMIT")

    def _insert_events(self, cur: _Cursor, device: str, events: list[tuple[str, str]], now: float) -> int:
        raw = cur._cur
        raw.executemany("INSERT INTO events (device, id, body, received) VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING",
                        [(device, i, body, now) for i, body in events])
        return raw.rowcount

    def close(self) -> None:
        self.db.close()


def _refuse_reference_schema(path: Path) -> None:
    """The reference server (before the fleet schema) kept events keyed by id alone, without
    migrations; its database cannot be migrated in place (the events have no device key)."""
    if not path.exists():
        return
    with contextlib.closing(sqlite3.connect(path)) as db:
        tables = {name for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    if "events" in tables and "_yoyo_migration" not in tables:
        raise ConfigError(f"{path} is an event database of the old reference server (no fleet schema): "
                          "move it away or start with another --data-dir")

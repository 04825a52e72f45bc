"""Where the fleet server keeps its state: one interface (`SqlStorage`), two backends,
chosen in `open_storage` from the database URL."""
from __future__ import annotations

from pathlib import Path

from shelfsight.errors import ConfigError

from .base import FleetError, SqlStorage
from .records import DeviceRecord, HealthReport, Principal, Rollout, StoreResult

__all__ = ["DeviceRecord", "FleetError", "HealthReport", "Principal", "Rollout", "SqlStorage", "StoreResult",
           "open_storage"]


def open_storage(url: str, pool_size: int = 8) -> SqlStorage:
    """``postgresql://...`` (PostgreSQL) or ``sqlite:///PATH`` / a plain file path (SQLite),
    migrated to the current schema."""
    if url.startswith(("postgresql://", "postgres://")):
        from .postgres import PostgresStorage
        return PostgresStorage(url, pool_size)
    if url.startswith("sqlite:///"):
        url = url[len("sqlite:///"):]
    elif "://" in url:
        raise ConfigError(f"database URL {url!r}: expected postgresql://... or sqlite:///PATH")
    from .sqlite import SqliteStorage
    return SqliteStorage(Path(url))

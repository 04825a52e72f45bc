"""Schema migrations with yoyo-migrations: plain SQL files per dialect in ``migrations/``,
applied under yoyo's lock, so workers starting together migrate once."""
from __future__ import annotations

from pathlib import Path

MIGRATIONS = Path(__file__).with_name("migrations")


def migrate(yoyo_url: str, dialect: str) -> int:
    """Apply the migrations ``dialect`` ("sqlite" or "postgresql") still lacks; returns how many."""
    from yoyo import get_backend, read_migrations

    backend = get_backend(yoyo_url)
    try:
        migrations = read_migrations(str(MIGRATIONS / dialect))
        with backend.lock():
            pending = backend.to_apply(migrations)
            backend.apply_migrations(pending)
        return len(pending)
    finally:
        backend.connection.close()

"""PostgreSQL storage: a psycopg 3 connection pool per server process, so any number of
workers share one database."""
from __future__ import annotations

import contextlib
from typing import Iterator

from shelfsight.errors import ConfigError
from shelfsight.redact import redact_url

from .base import SqlStorage
from .migrate import migrate


class PostgresStorage(SqlStorage):
    """Args:
        url: ``postgresql://user:password@host:port/dbname`` (libpq's forms).
        pool_size: most connections this process opens.
    """

    def __init__(self, url: str, pool_size: int = 8) -> None:
        import psycopg
        from psycopg_pool import ConnectionPool

        self.url = url
        try:
            migrate("postgresql+psycopg" + url[url.index("://"):], "postgresql")
        except psycopg.OperationalError as e:
            first_line = (str(e).strip().splitlines() or [type(e).__name__])[0]
            raise ConfigError(f"cannot reach PostgreSQL at {redact_url(url)}: {first_line}") from None
        self.pool = ConnectionPool(url, min_size=1, max_size=pool_size, open=True, timeout=30)

    @contextlib.contextmanager
    def transaction(self) -> Iterator:
        with self.pool.connection() as conn, conn.transaction(), conn.cursor() as cur:
            yield cur

    def _insert_events(self, cur, device: str, events: list[tuple[str, str]], now: float) -> int:
        # one statement for the whole batch: the ids and bodies as two arrays, inserted in id
        # order so that two workers taking overlapping batches (a resend) cannot deadlock
        ids, bodies = zip(*sorted(events))
        cur.execute("INSERT INTO events (device, id, body, received) "
                    "SELECT %s, i, b, %s FROM unnest(%s::text[], %s::text[]) AS t(i, b) ON CONFLICT DO NOTHING",
                    (device, now, list(ids), list(bodies)))
        return cur.rowcount

    def close(self) -> None:
        self.pool.close()


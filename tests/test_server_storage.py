"""The fleet server's storage, the same tests on SQLite and on a real PostgreSQL."""
from __future__ import annotations

import sqlite3

import pytest

from fleet_support import database_url, postgres, storage  # noqa: F401  (fixtures)
from shelfsight.errors import ConfigError
from shelfsight.tools.server.storage import FleetError, HealthReport, Principal, StoreResult, open_storage
from shelfsight.tools.server.storage.migrate import migrate


def test_events_are_keyed_by_device_and_id(storage):
    assert storage.store_events("cam-1", [("a", '{"id":"a"}'), ("b", '{"id":"b"}')]) == StoreResult(2)
    # a resend: the same content is harmless, other content under a held id is a conflict
    assert storage.store_events("cam-1", [("a", '{"id":"a"}'), ("b", '{"id":"b","x":1}'), ("c", '{"id":"c"}')]) \
        == StoreResult(1, ("b",))
    assert storage.store_events("cam-2", [("a", '{"id":"a","d":2}')]) == StoreResult(1)  # another device's "a"
    assert storage.events() == [("cam-1", "a", '{"id":"a"}'), ("cam-1", "b", '{"id":"b"}'),
                                ("cam-1", "c", '{"id":"c"}'), ("cam-2", "a", '{"id":"a","d":2}')]
    assert storage.stats() == {"events": 4, "devices": 2, "batches": 3, "received": 6, "redeliveries": 1,
                               "conflicts": 1}


def test_queries_are_parameterised(storage):
    hostile = "x'); DROP TABLE events; --"
    storage.store_events(hostile, [(hostile, '{"id":"\'"}')])
    assert storage.events(hostile) == [(hostile, hostile, '{"id":"\'"}')]
    assert storage.principal("' OR '1'='1") is None


def test_device_tokens_are_hashed_and_revocable(storage):
    token = storage.add_device("STORE-12-CAM-3", group="north")
    assert storage.principal(token) == Principal(role="device", device="STORE-12-CAM-3", name="STORE-12-CAM-3")
    with pytest.raises(FleetError, match="already has a token"):
        storage.add_device("STORE-12-CAM-3")
    with storage.transaction() as cur:
        cur.execute("SELECT hash FROM tokens")
        (stored,) = cur.fetchone()
    assert token not in stored and len(stored) == 64
    storage.revoke_device("STORE-12-CAM-3")
    assert storage.principal(token) is None
    again = storage.add_device("STORE-12-CAM-3", group="north")  # re-issued after revoking
    assert storage.principal(again).device == "STORE-12-CAM-3" and storage.principal(token) is None
    with pytest.raises(FleetError, match="no device 'nope'"):
        storage.revoke_device("nope")
    with pytest.raises(FleetError, match="device name 'a b'"):
        storage.add_device("a b")
    admin = storage.add_admin_token("ops")
    assert storage.principal(admin) == Principal(role="admin", device=None, name="ops")


def test_health_keeps_fields_not_reported(storage):
    storage.add_device("cam-1")
    storage.record_health("cam-1", HealthReport(bundle_id="b1", fps=14.5, unknown_rate=0.1, outbox_backlog=3))
    storage.record_health("cam-1", HealthReport(fps=12.0))
    record = storage.device("cam-1")
    assert (record.bundle_id, record.fps, record.unknown_rate, record.errors, record.outbox_backlog) == \
        ("b1", 12.0, 0.1, None, 3)
    assert record.last_seen is not None and record.health_at is not None


def test_migrations_apply_once(database_url):  # noqa: F811
    open_storage(database_url, 1).close()
    if database_url.startswith("sqlite"):
        assert migrate(database_url, "sqlite") == 0
    else:
        assert migrate("postgresql+psycopg" + database_url[database_url.index("://"):], "postgresql") == 0


def test_old_reference_database_is_refused(tmp_path):
    path = tmp_path / "events.db"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE events (id TEXT PRIMARY KEY, body TEXT, device TEXT, received REAL)")
    with pytest.raises(ConfigError, match="old reference server"):
        open_storage(f"sqlite:///{path}")


def test_unknown_database_url_is_one_line():
    with pytest.raises(ConfigError, match=r"database URL 'mysql://x': expected postgresql://\.\.\. or sqlite:///PATH"):
        open_storage("mysql://x")


def test_unreachable_postgres_is_one_line_without_password():
    with pytest.raises(ConfigError, match=r"cannot reach PostgreSQL at postgresql://\*\*\*@127\.0\.0\.1:1/db"):
        open_storage("postgresql://u:secret@127.0.0.1:1/db")


def test_migration_0002_counts_the_events_already_held(tmp_path):
    from yoyo import get_backend, read_migrations

    from shelfsight.tools.server.storage.migrate import MIGRATIONS

    path = tmp_path / "fleet.db"
    backend = get_backend(f"sqlite:///{path}")
    with backend.lock():
        backend.apply_migrations(backend.to_apply(read_migrations(str(MIGRATIONS / "sqlite")))[:1])
    backend.connection.close()
    with sqlite3.connect(path) as db:  # a database at 0001 holding events
        db.execute("INSERT INTO devices (id, created) VALUES ('cam-1', 0)")
        db.executemany("INSERT INTO events VALUES ('cam-1', ?, '{}', 0)", [("a",), ("b",), ("c",)])
    store = open_storage(f"sqlite:///{path}")
    try:
        assert (store.stats()["events"], store.stats()["devices"], store.device("cam-1").events) == (3, 1, 3)
        store.store_events("cam-1", [("d", "{}")])
        assert (store.stats()["events"], store.device("cam-1").events) == (4, 4)
    finally:
        store.close()

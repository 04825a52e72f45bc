"""Helpers for the fleet server tests: a throwaway PostgreSQL server (one per test session,
a fresh database per test) and the storage backends to run a test against."""
from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from shelfsight.tools.server.pgtemp import TempPostgres, find_binaries
from shelfsight.tools.server.storage import open_storage

NO_POSTGRES = "PostgreSQL binaries not found (initdb, pg_ctl; Debian: apt-get install postgresql)"
_names = itertools.count()


@pytest.fixture(scope="session")
def postgres():
    """A PostgreSQL server on loopback for the whole session, stopped and removed at its end."""
    if find_binaries() is None:
        pytest.skip(NO_POSTGRES)
    with TempPostgres() as pg:
        yield pg


def fresh_database(pg: TempPostgres) -> str:
    return pg.database(f"test_{next(_names)}")


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request, tmp_path: Path) -> str:
    """The URL of an empty database of each backend."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'fleet.db'}"
    return fresh_database(request.getfixturevalue("postgres"))


@pytest.fixture
def storage(database_url):
    store = open_storage(database_url, 2)
    yield store
    store.close()

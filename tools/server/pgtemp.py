"""A throwaway PostgreSQL server for tests and the load test: initdb into a temp dir, listen
on loopback at a free port, ``trust`` auth for that one address, everything removed on stop.

Run as root (a CI container), the server runs as the ``postgres`` user, which initdb requires.
"""
from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
from pathlib import Path

from shelfsight.errors import ShelfsightError

BIN_DIRS = sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)  # Debian's layout, newest first


def find_binaries() -> Path | None:
    """The directory holding initdb and pg_ctl, or None when PostgreSQL is not installed."""
    on_path = shutil.which("initdb")
    if on_path:
        return Path(on_path).parent
    return next((d for d in BIN_DIRS if (d / "initdb").is_file() and (d / "pg_ctl").is_file()), None)


class TempPostgres:
    """``with TempPostgres() as pg: pg.url`` -- a fresh database on 127.0.0.1.

    Raises:
        ShelfsightError: the binaries are missing, or the server does not start.
    """

    def __init__(self, port: int | None = None) -> None:
        from .faults import free_port

        self.bin = find_binaries()
        if self.bin is None:
            raise ShelfsightError("PostgreSQL is not installed (no initdb/pg_ctl; apt-get install postgresql)")
        self.port = port or free_port()
        self.root = Path(tempfile.mkdtemp(prefix="shelfsight-pg-"))
        self.data = self.root / "data"
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"
        self._user = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []

    def _run(self, *args: str) -> None:
        done = subprocess.run(self._user + [str(self.bin / args[0]), *args[1:]], capture_output=True, text=True)
        if done.returncode != 0:
            raise ShelfsightError(f"{args[0]} failed ({done.returncode}): {(done.stderr or done.stdout).strip()[-500:]}")

    def start(self) -> "TempPostgres":
        if self._user:
            pw = pwd.getpwnam("postgres")
            os.chown(self.root, pw.pw_uid, pw.pw_gid)
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync")
        options = (f"-c listen_addresses=127.0.0.1 -p {self.port} -c unix_socket_directories={self.root} "
                   "-c fsync=off -c max_connections=200 -c shared_buffers=64MB")
        self._run("pg_ctl", "-D", str(self.data), "-o", options, "-l", str(self.root / "log"), "-w", "-t", "60", "start")
        return self

    def database(self, name: str) -> str:
        """Create an empty database ``name`` on this server; returns its URL."""
        import psycopg
        from psycopg import sql

        with psycopg.connect(self.url, autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return self.url.rsplit("/", 1)[0] + "/" + name

    def stop(self) -> None:
        if (self.data / "postmaster.pid").exists():
            self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> "TempPostgres":
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc) -> None:
        self.stop()

"""The server's settings: its database, tokens, the offered bundle or the fleet's bundle store,
TLS, workers, and fault injection that tests and /v1/admin/faults can change while it runs."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from shelfsight.errors import ConfigError


@dataclass
class Faults:
    """Fault injection settings; mutable so a test or /v1/admin/faults can change them live.

    Each server worker process holds its own copy (and its own random stream): a change
    through /v1/admin/faults applies to the worker that answered it, named in its answer.

    Attributes:
        error_rate: share of event batches answered HTTP 500.
        drop_rate: share of event batches whose connection is closed without an answer.
        slow_rate: share of event batches answered after ``slow_s`` seconds.
        truncate_downloads: the next N bundle file downloads stop halfway.
        truncate_name: only downloads of this file count ("" for any).
    """

    error_rate: float = 0.0
    drop_rate: float = 0.0
    slow_rate: float = 0.0
    slow_s: float = 0.0
    truncate_downloads: int = 0
    truncate_name: str = ""

    def __post_init__(self) -> None:
        self.check()

    def check(self) -> None:
        rates = (self.error_rate, self.drop_rate, self.slow_rate)
        if any(not 0.0 <= r <= 1.0 for r in rates) or sum(rates) > 1.0:
            raise ConfigError(f"fault rates must be in 0..1 and sum to <= 1, got error {self.error_rate}, "
                              f"drop {self.drop_rate}, slow {self.slow_rate}")
        if self.slow_s < 0 or self.truncate_downloads < 0:
            raise ConfigError(f"slow_s and truncate_downloads must be >= 0, got {self.slow_s}, "
                              f"{self.truncate_downloads}")

    def update(self, values: dict[str, Any]) -> None:
        names = {f.name for f in fields(self)}
        unknown = set(values) - names
        if unknown:
            raise ConfigError(f"unknown fault settings {sorted(unknown)}, expected some of {sorted(names)}")
        old = asdict(self)
        try:
            for name, value in values.items():
                kind = {"truncate_downloads": int, "truncate_name": str}.get(name, float)
                setattr(self, name, kind(value))
            self.check()
        except (TypeError, ValueError, ConfigError):
            for name, value in old.items():
                setattr(self, name, value)
            raise


@dataclass(frozen=True)
class ServerConfig:
    """How to run the server.

    Attributes:
        data_dir: where events.db (SQLite) and the bundle store live (created if missing).
        token: a bearer token shared by every device (the reference setup: devices name
            themselves with X-Shelfsight-Device), or None: only per-device tokens from
            `shelfsight fleet device add` and admin tokens are accepted.
        database: ``postgresql://...`` or ``sqlite:///PATH``; None: SQLite in data_dir.
        bundle: bundle directory or .tar.gz offered to every device, or None: each device
            is offered its rollout's bundle from the bundle store.
        bundle_store: the fleet's bundle directory (default data_dir/bundles), or ``s3://BUCKET/PREFIX``
            (S3-compatible, credentials and endpoint from the environment; the copies served are
            kept in data_dir/bundle-cache).
        workers: server processes sharing the port (SO_REUSEPORT); more than one needs PostgreSQL.
        pool_size: database connections per worker.
        signing_key: Ed25519 private key (PEM) to sign the manifest on the fly; without
            it a signature file beside the bundle is served if present.
        tls_cert, tls_key: serve https with this certificate chain and key.
        admin: enable /v1/admin/faults.
        seed: random seed of fault injection (None: unseeded).
    """

    data_dir: Path
    token: str | None = None
    database: str | None = None
    host: str = "127.0.0.1"
    port: int = 8765
    bundle: Path | None = None
    bundle_store: Path | str | None = None
    workers: int = 1
    pool_size: int = 8
    signing_key: Path | None = None
    tls_cert: Path | None = None
    tls_key: Path | None = None
    admin: bool = False
    seed: int | None = None
    faults: Faults = field(default_factory=Faults)

    def __post_init__(self) -> None:
        if self.token is not None and not self.token:
            raise ConfigError("the server token is empty")
        if self.workers < 1 or self.pool_size < 1:
            raise ConfigError(f"workers and pool_size must be >= 1, got {self.workers}, {self.pool_size}")
        if self.workers > 1 and not str(self.database or "").startswith(("postgresql://", "postgres://")):
            raise ConfigError(f"{self.workers} workers need a PostgreSQL database (--database postgresql://...); "
                              "SQLite serves one worker")
        if not 0 <= self.port <= 65535:
            raise ConfigError(f"port {self.port} is out of range 0..65535")
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ConfigError("https needs both a certificate and a key")
        if self.bundle is not None and not Path(self.bundle).exists():
            raise ConfigError(f"bundle {self.bundle} not found (expected a directory or .tar.gz)")

    @property
    def database_url(self) -> str:
        return self.database or f"sqlite:///{Path(self.data_dir) / 'events.db'}"

    @property
    def bundle_location(self) -> Path | str:
        """The bundle store: a directory, or an ``s3://`` URL."""
        if self.bundle_store is None:
            return Path(self.data_dir) / "bundles"
        return self.bundle_store if str(self.bundle_store).startswith("s3://") else Path(self.bundle_store)

    @property
    def bundle_cache(self) -> Path:
        """Where local copies of an object store's bundles are kept to be served."""
        return Path(self.data_dir) / "bundle-cache"


MIN_TOKEN_CHARS = 12  # a shared secret short enough to guess is no secret


def read_token_file(path: str | Path) -> str:
    """First line of a token file. Raises ConfigError if missing or empty."""
    try:
        lines = Path(path).read_text(encoding="utf-8").strip().splitlines()
    except OSError as e:
        raise ConfigError(f"token file {path}: {e.strerror or e}") from None
    if not lines or not lines[0].strip():
        raise ConfigError(f"token file {path} is empty (expected the token on line 1)")
    token = lines[0].strip()
    if len(token) < MIN_TOKEN_CHARS:
        raise ConfigError(f"token file {path}: the token has {len(token)} characters, at least {MIN_TOKEN_CHARS} "
                          f"are needed (e.g. python -c 'import secrets; print(secrets.token_urlsafe(32))')")
    return token

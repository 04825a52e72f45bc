"""HTTP plumbing shared by the uploader and the update poller.

One place decides how the device talks to the sync server: the bearer token (from a
file or an environment variable), TLS verification (always on; a custom CA bundle is
allowed), plain http only for loopback unless asked for, and timeouts. The retry delays
are `shelfsight.backoff.BackoffOptions.for_retries` (exponential backoff with full jitter).
"""
from __future__ import annotations

import ipaddress
import logging
import os
import re
import threading
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import requests

from shelfsight.errors import ConfigError, ShelfsightError
from shelfsight.redact import redact_url

log = logging.getLogger(__name__)

TOKEN_ENV = "SHELFSIGHT_SYNC_TOKEN"
LOOPBACK_NAMES = ("localhost",)
DEVICE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")  # the server's rule for a device's name


class SyncError(ShelfsightError):
    """The sync server cannot be reached or answered something unusable."""


class AuthError(SyncError):
    """The server refused the token (HTTP 401/403)."""


@dataclass(frozen=True)
class HttpOptions:
    """How to reach the sync server.

    Attributes:
        token_file: file whose first line is the bearer token; read again after a 401.
        token_env: environment variable holding the token when no file is given.
        ca_bundle: PEM file of CA certificates to trust instead of the system store.
        allow_http: permit plain http to hosts other than loopback (the token travels in clear).
        connect_timeout_s, read_timeout_s: per-request timeouts.
        device_id: sent as X-Shelfsight-Device so the server can tell devices apart.
    """

    token_file: Path | None = None
    token_env: str = TOKEN_ENV
    ca_bundle: Path | None = None
    allow_http: bool = False
    connect_timeout_s: float = 5.0
    read_timeout_s: float = 30.0
    device_id: str = ""

    def __post_init__(self) -> None:
        if self.token_file is not None:
            object.__setattr__(self, "token_file", Path(self.token_file))
        if self.ca_bundle is not None:
            object.__setattr__(self, "ca_bundle", Path(self.ca_bundle))
            if not self.ca_bundle.is_file():
                raise ConfigError(f"CA bundle {self.ca_bundle} not found (expected a PEM file)")
        if self.connect_timeout_s <= 0 or self.read_timeout_s <= 0:
            raise ConfigError(f"timeouts must be > 0 s, got connect {self.connect_timeout_s}, "
                              f"read {self.read_timeout_s}")
        if not self.token_env:
            raise ConfigError("token_env must name an environment variable")
        if self.device_id and not DEVICE_ID.fullmatch(self.device_id):
            raise ConfigError(f"device id {self.device_id!r}: expected 1..128 letters, digits, '.', '_' or '-' "
                              "starting with a letter or digit (e.g. STORE-12-CAM-3)")

    @property
    def timeout(self) -> tuple[float, float]:
        return (self.connect_timeout_s, self.read_timeout_s)


def read_token(options: HttpOptions) -> str:
    """The bearer token from ``options.token_file`` or else ``$token_env``.

    Raises:
        ConfigError: the file is missing or empty, or neither source is set.
    """
    if options.token_file is not None:
        try:
            token = options.token_file.read_text(encoding="utf-8").strip().splitlines()
        except OSError as e:
            raise ConfigError(f"token file {options.token_file}: {e.strerror or e}") from None
        if not token or not token[0].strip():
            raise ConfigError(f"token file {options.token_file} is empty (expected the token on line 1)")
        return token[0].strip()
    token = os.environ.get(options.token_env, "").strip()
    if not token:
        raise ConfigError(f"no sync token: pass a token file or set ${options.token_env}")
    return token


def is_loopback(host: str) -> bool:
    if host.lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_url(url: str, allow_http: bool = False) -> str:
    """Return ``url`` without a trailing slash if it is usable for sync.

    Raises:
        ConfigError: not http(s), no host, or plain http to a non-loopback host
            without ``allow_http``.
    """
    parts = urlsplit(url)
    shown = redact_url(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"sync URL {shown!r} is not an http(s) URL with a host")
    if parts.scheme == "http" and not is_loopback(parts.hostname):
        if not allow_http:
            raise ConfigError(f"sync URL {shown!r} uses plain http to {parts.hostname}; use https "
                              f"(or --allow-http, which sends the device token in clear)")
        log.warning("sync URL %s is plain http (--allow-http): the device token travels in clear", shown)
    return url.rstrip("/")


class SyncSession:
    """A requests session carrying the token, TLS settings and timeouts; thread-safe
    for the one-request-at-a-time use of each worker."""

    def __init__(self, options: HttpOptions) -> None:
        self.options = options
        self._lock = threading.Lock()
        self._session = requests.Session()
        self._session.verify = str(options.ca_bundle) if options.ca_bundle else True
        self._session.trust_env = False  # no proxies or netrc picked up behind the user's back
        if options.device_id:
            self._session.headers["X-Shelfsight-Device"] = options.device_id
        self.refresh_token()

    def refresh_token(self) -> None:
        """Read the token again after a 401 (it may have been rotated on disk); one that cannot
        be read now is logged and the old one kept (the device goes on; the next 401 retries)."""
        try:
            self._session.headers["Authorization"] = f"Bearer {read_token(self.options)}"
        except ConfigError as e:
            log.error("sync token: %s", e)

    def request(self, method: str, url: str, **kwargs) -> requests.Response:
        kwargs.setdefault("timeout", self.options.timeout)
        with self._lock:
            return self._session.request(method, url, **kwargs)

    def close(self) -> None:
        self._session.close()

"""Model updates: poll a manifest, download, verify, health-check, swap, roll back.

Protocol (served by ``shelfsight sync-server``)::

    GET {manifest_url}              the manifest.json bytes of the offered bundle
                                    (ETag; optional X-Shelfsight-Archive: NAME, -Size: BYTES)
    GET {manifest_url}.sig          base64 Ed25519 signature over those bytes (404 if unsigned)
    GET {files_url}NAME             each file of the manifest, or the archive; Range supported

One `Updater.check_once` takes a bundle from offer to running, and each step that fails
leaves the running bundle untouched:

1. fetch the manifest; with a public key configured, verify its signature first;
2. download every file the manifest covers (`shelfsight.bundle.bundle_files`: those listed,
   and index.json for a bundle written before it was listed) or the archive into
   ``staging/<bundle_id>/``, resuming an interrupted download with HTTP Range;
3. verify sha256 and size of every file (`shelfsight.bundle.load_bundle`); an archive is
   unpacked with `shelfsight.bundle.unpack_archive` and its manifest must be the signed one;
4. move it to ``versions/<bundle_id>/`` and run the health check on it;
5. switch ``current`` atomically and call ``on_update(bundle_dir)`` so the running
   process reloads; if that raises, switch back (``rolled_back``).

A bundle that fails its health check or reload is remembered and not tried again.
"""
from __future__ import annotations

import json
import logging
import shutil
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable
from urllib.parse import quote, urljoin

import requests

from shelfsight.atomic import write_bytes
from shelfsight.bundle import (MANIFEST, MAX_ARCHIVE_BYTES, SCHEMA, SCHEMA_VERSION, bundle_files,
                               unpack_archive)
from shelfsight.errors import BundleError, ConfigError
from shelfsight.manifest_schema import check_manifest
from shelfsight.redact import redact_url
from .bundle_store import BundleStore, check_bundle_id, verify_covered
from .download import DownloadError, fetch_resumable
from .signature import SIGNATURE_SUFFIX, SignatureError, load_public_key, verify
from .http import HttpOptions, SyncError, SyncSession, check_url
from .worker import SyncWorker

log = logging.getLogger(__name__)

ARCHIVE_HEADER = "X-Shelfsight-Archive"
ARCHIVE_SIZE_HEADER = "X-Shelfsight-Archive-Size"
MAX_MANIFEST_BYTES = 4 * 1024**2
STATUSES = ("current", "skipped", "updated", "unavailable", "failed", "refused", "unhealthy", "rolled_back")

HealthCheck = Callable[[Path], None]


def default_health_check(bundle_dir: Path) -> None:
    """Load the bundle with the TFLite interpreter and run the built-in probe image."""
    from ..runtime.recognizer import health_check
    health_check(bundle_dir)


@dataclass(frozen=True)
class UpdateOptions:
    """Where and how often to look for a new bundle.

    Attributes:
        manifest_url: URL of the offered manifest (``{endpoint}/v1/manifest``).
        http: token, TLS and timeout settings.
        public_key: Ed25519 public key (PEM); when set, unsigned or badly signed
            manifests are refused.
        interval_s: seconds between polls of the background worker.
        max_bundle_bytes: refuse bundles larger than this.
        files_url: where bundle files are served; default ``bundles/`` beside the manifest.
    """

    manifest_url: str
    http: HttpOptions = field(default_factory=HttpOptions)
    public_key: Path | None = None
    interval_s: float = 300.0
    max_bundle_bytes: int = MAX_ARCHIVE_BYTES
    files_url: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "manifest_url", check_url(self.manifest_url, self.http.allow_http))
        files_url = self.files_url or urljoin(self.manifest_url, "bundles/")
        object.__setattr__(self, "files_url", check_url(files_url, self.http.allow_http) + "/")
        if self.public_key is not None:
            object.__setattr__(self, "public_key", Path(self.public_key))
            if not self.public_key.is_file():
                raise ConfigError(f"public key {self.public_key} not found (expected a PEM file)")
        if self.interval_s <= 0 or self.max_bundle_bytes <= 0:
            raise ConfigError(f"interval_s and max_bundle_bytes must be > 0, got {self.interval_s}, "
                              f"{self.max_bundle_bytes}")


@dataclass(frozen=True)
class UpdateResult:
    """What one check did. ``status`` is one of STATUSES; ``running_id`` is the bundle
    current afterwards; ``reason`` says why for anything but current/updated."""

    status: str
    bundle_id: str | None
    running_id: str | None
    reason: str = ""

    def to_event(self) -> dict[str, Any]:
        """An event for the outbox, so the server learns about refusals and rollbacks."""
        return {"id": uuid.uuid4().hex, "type": "bundle_update", "status": self.status,
                "bundle_id": self.bundle_id, "running_id": self.running_id, "reason": self.reason,
                "time": datetime.now(timezone.utc).isoformat(timespec="milliseconds")}


class _Refused(Exception):
    def __init__(self, status: str, reason: str) -> None:
        super().__init__(reason)
        self.status = status


@dataclass(frozen=True)
class _Offer:
    raw: bytes
    manifest: dict[str, Any]
    bundle_id: str
    etag: str | None
    archive: str | None
    archive_size: int | None


class Updater(SyncWorker):
    """Keeps a `BundleStore` on the bundle the server offers (see module docstring).

    Args:
        store: where versions live and ``current`` points.
        options: manifest URL, HTTP settings, public key, interval.
        health_check: ``f(bundle_dir)`` that raises if the bundle is unusable; default
            `default_health_check` (loads the model and runs a probe image).
        on_update: ``f(bundle_dir)`` called after the switch so the running process
            reloads; it should load fully before replacing what runs, and raise on failure.
        on_result: ``f(UpdateResult)`` after every check of the background worker
            (e.g. ``lambda r: outbox.put(r.to_event())`` for the notable ones).
    """

    thread_name = "shelfsight-updates"

    def __init__(self, store: BundleStore, options: UpdateOptions, health_check: HealthCheck | None = None,
                 on_update: Callable[[Path], None] | None = None,
                 on_result: Callable[[UpdateResult], None] | None = None,
                 session: SyncSession | None = None) -> None:
        super().__init__(session or SyncSession(options.http), own_session=session is None)
        self.store = store
        self.options = options
        self.health_check = health_check or default_health_check
        self.on_update = on_update
        self.on_result = on_result
        self._public_key = load_public_key(options.public_key) if options.public_key else None
        self._etag: str | None = None

    # -- one check ---------------------------------------------------------------------
    def check_once(self) -> UpdateResult:
        """Look for a new bundle and install it; never raises for network or bundle
        problems (they are the result's status and reason)."""
        running = self.store.current_id
        try:
            offer = self._fetch_offer()
        except SyncError as e:
            return self._result("unavailable", None, str(e))
        except _Refused as e:
            return self._result(e.status, None, str(e))
        if offer is None:
            return self._result("current", running)
        try:
            result = self._install(offer)
        except DownloadError as e:
            return self._result("unavailable", offer.bundle_id, str(e))
        except SyncError as e:
            self.store.clear_staging(offer.bundle_id)
            return self._result("unavailable", offer.bundle_id, str(e))
        except (_Refused, BundleError) as e:
            self.store.clear_staging(offer.bundle_id)
            status = e.status if isinstance(e, _Refused) else "refused"
            return self._result(status, offer.bundle_id, str(e))
        except OSError as e:  # disk full, permissions: the download is kept for next time
            return self._result("failed", offer.bundle_id, f"local I/O error: {e}")
        if result.status in ("current", "skipped", "updated", "unhealthy", "rolled_back"):
            self._etag = offer.etag  # this exact manifest is settled; ask with If-None-Match
        return result

    def _result(self, status: str, bundle_id: str | None, reason: str = "") -> UpdateResult:
        reason = redact_url(reason)  # reasons quote URLs and go to logs and the server
        result = UpdateResult(status, bundle_id, self.store.current_id, reason)
        level = logging.WARNING if status in ("failed", "refused", "unhealthy", "rolled_back") else logging.INFO
        log.log(level, "bundle update: %s %s %s", status, bundle_id or "", reason)
        return result

    def _get(self, url: str, **kwargs) -> requests.Response:
        try:
            return self.session.request("GET", url, **kwargs)
        except requests.RequestException as e:
            raise SyncError(f"GET {url} failed: {type(e).__name__}: {e}") from None

    def _fetch_offer(self) -> _Offer | None:
        url = self.options.manifest_url
        headers = {"If-None-Match": self._etag} if self._etag else {}
        with self._get(url, headers=headers, stream=True) as response:
            if response.status_code == 304:
                return None
            if response.status_code == 404:
                raise SyncError(f"GET {url}: the server offers no bundle (HTTP 404)")
            if response.status_code != 200:
                raise SyncError(f"GET {url}: HTTP {response.status_code}")
            raw = self._read_capped(response, url)
        if self._public_key is not None:
            self._verify_signature(raw)
        manifest = _parse_manifest(raw, self.options.max_bundle_bytes)
        bundle_id = manifest["bundle_id"]
        if bundle_id == self.store.current_id:
            self._etag = response.headers.get("ETag")
            return None
        archive = response.headers.get(ARCHIVE_HEADER)
        if archive is not None and not _plain_name(archive):
            raise _Refused("refused", f"archive name {archive!r} is not a plain file name")
        size = response.headers.get(ARCHIVE_SIZE_HEADER)
        return _Offer(raw, manifest, bundle_id, response.headers.get("ETag"), archive,
                      int(size) if size and size.isdigit() else None)

    @staticmethod
    def _read_capped(response: requests.Response, url: str) -> bytes:
        """The body, refusing more than MAX_MANIFEST_BYTES (a manifest is a few KB)."""
        body = bytearray()
        try:
            for chunk in response.iter_content(64 * 1024):
                body += chunk
                if len(body) > MAX_MANIFEST_BYTES:
                    raise _Refused("refused", f"manifest from {url} is over {MAX_MANIFEST_BYTES} bytes")
        except requests.RequestException as e:
            raise SyncError(f"GET {url} interrupted: {type(e).__name__}") from None
        return bytes(body)

    def _verify_signature(self, raw: bytes) -> None:
        url = self.options.manifest_url + SIGNATURE_SUFFIX
        with self._get(url, stream=True) as response:
            if response.status_code == 404:
                raise _Refused("refused", "manifest is not signed but a public key is configured")
            if response.status_code != 200:
                raise SyncError(f"GET {url}: HTTP {response.status_code}")
            signature = self._read_capped(response, url)
        try:
            verify(raw, signature, self._public_key)
        except SignatureError as e:
            raise _Refused("refused", str(e)) from None

    def _install(self, offer: _Offer) -> UpdateResult:
        bundle_id = offer.bundle_id
        if bundle_id in self.store.refused():
            return self._result("skipped", bundle_id, f"refused earlier: {self.store.refused()[bundle_id]}")
        version = self.store.version_dir(bundle_id)
        if (version / MANIFEST).is_file() and (version / MANIFEST).read_bytes() == offer.raw:
            verify_covered(version)  # a version kept from before: verify it again and switch
        else:
            bundle_dir = self._download(offer)
            verify_covered(bundle_dir)
            version = self.store.add_version(bundle_dir, bundle_id)
            self.store.clear_staging(bundle_id)
        try:
            self.health_check(version)
        except Exception as e:  # any failure of pluggable check code means "not healthy"
            return self._give_up("unhealthy", bundle_id, version, f"health check failed: {type(e).__name__}: {e}")
        before = self.store.links()
        self.store.activate(bundle_id)
        if self.on_update is not None:
            try:
                self.on_update(version)
            except Exception as e:  # the running process could not reload: switch back
                self.store.restore(before)
                return self._give_up("rolled_back", bundle_id, version,
                                     f"reload failed: {type(e).__name__}: {e}")
        self.store.prune()
        return self._result("updated", bundle_id)

    def _give_up(self, status: str, bundle_id: str, version: Path, reason: str) -> UpdateResult:
        self.store.mark_refused(bundle_id, reason)
        if version not in (self.store.current, self.store.previous):
            shutil.rmtree(version, ignore_errors=True)
        return self._result(status, bundle_id, reason)

    def _download(self, offer: _Offer) -> Path:
        staging = self.store.staging_dir(offer.bundle_id)
        staging.mkdir(parents=True, exist_ok=True)
        limit = self.options.max_bundle_bytes
        if offer.archive is None:
            listed = offer.manifest["files"]
            for name in bundle_files(offer.manifest):  # an unlisted index.json's size is unknown
                size = int(listed[name]["size"]) if name in listed else None
                fetch_resumable(self.session, self.options.files_url + quote(name), staging / name, size, limit)
            write_bytes(staging / MANIFEST, offer.raw)
            return staging
        archive = staging / offer.archive
        fetch_resumable(self.session, self.options.files_url + quote(offer.archive), archive,
                        offer.archive_size, limit)
        unpacked = unpack_archive(archive, staging / "unpacked", max_bytes=limit)
        if not (unpacked / MANIFEST).is_file() or (unpacked / MANIFEST).read_bytes() != offer.raw:
            raise _Refused("refused", f"archive {offer.archive}: its manifest.json differs from the offered manifest")
        extra = sorted(p.relative_to(unpacked).as_posix() for p in unpacked.rglob("*")
                       if p.relative_to(unpacked).as_posix() not in {MANIFEST, *bundle_files(offer.manifest)}
                       and not p.is_dir())
        if extra:
            raise _Refused("refused", f"archive {offer.archive} holds files its signed manifest does not cover: "
                                      f"{', '.join(extra[:5])}")
        return unpacked

    # -- background worker -------------------------------------------------------------
    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                result = self.check_once()
                if self.on_result is not None:
                    self.on_result(result)
            except Exception:  # a bug here must not stop the device; it is logged in full
                log.exception("bundle update check failed")
            self._stop.wait(self.options.interval_s)



def _plain_name(name: str) -> bool:
    return bool(name) and "/" not in name and "\\" not in name and name not in (".", "..") \
        and not name.startswith(".") and "\x00" not in name


def _parse_manifest(raw: bytes, max_bytes: int) -> dict[str, Any]:
    """The manifest as a dict after the checks that must pass before downloading."""
    try:
        manifest = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise _Refused("refused", f"offered manifest is not JSON ({e})") from None
    except RecursionError:
        raise _Refused("refused", "offered manifest is nested too deeply") from None
    if not isinstance(manifest, dict) or manifest.get("schema") != SCHEMA \
            or manifest.get("schema_version") != SCHEMA_VERSION:
        raise _Refused("refused", f"offered manifest is not a {SCHEMA} v{SCHEMA_VERSION} manifest")
    try:
        check_bundle_id(manifest.get("bundle_id"))
    except BundleError as e:
        raise _Refused("refused", str(e)) from None
    files = manifest.get("files")
    if not isinstance(files, dict) or not files:
        raise _Refused("refused", "offered manifest lists no files")
    total = 0
    for name, entry in files.items():
        if not _plain_name(name) or name == MANIFEST:
            raise _Refused("refused", f"offered manifest names file {name!r}; expected plain file names")
        if not isinstance(entry, dict) or not isinstance(entry.get("size"), int) or entry["size"] < 0:
            raise _Refused("refused", f"offered manifest: file {name!r} has no valid size")
        total += entry["size"]
    try:
        check_manifest(manifest, "offered manifest")
    except BundleError as e:
        raise _Refused("refused", str(e)) from None
    if total > max_bytes:
        raise _Refused("refused", f"offered bundle is {total} bytes, limit {max_bytes}")
    return manifest

"""The fleet's bundles in an S3-compatible object store (AWS S3, MinIO, Ceph RGW, ...).

``s3://BUCKET/PREFIX`` holds each bundle as it was given (a directory's files, or a .tar.gz
and its signature) under a generation of its own, and a small record naming that
generation, written last::

    PREFIX/<bundle_id>/stored.json              {"generation", "kind", "files": {name: {size, sha256}}}
    PREFIX/<bundle_id>/<generation>/bundle/...  a directory bundle (its manifest.json.sig inside)
    PREFIX/<bundle_id>/<generation>/<bundle_id>.tar.gz(.sig)

A reader never sees half a bundle: until the record is replaced it names the old generation,
whose objects are deleted only after the new record is in place. The server serves from a
local copy (``cache_dir/<bundle_id>/<generation>``), fetched once per generation and checked
against the record's sizes and SHA-256; several workers may fetch at once (each into its own
folder, then one rename wins).

Endpoint, region and credentials come from the usual environment (boto3 reads
``AWS_ENDPOINT_URL_S3`` or ``AWS_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``,
``AWS_DEFAULT_REGION``, ``AWS_PROFILE`` ...). Needs the ``[s3]`` extra (boto3).
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import secrets
import shutil
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from shelfsight.errors import BundleError, ConfigError

from .bundles import bundle_id_of
from .keys import signature_path

log = logging.getLogger(__name__)

RECORD = "stored.json"
KINDS = ("directory", "archive")


@dataclass(frozen=True)
class S3Location:
    """``s3://bucket/prefix`` split; ``prefix`` has no slash at either end ("" for the bucket's root)."""

    bucket: str
    prefix: str

    @classmethod
    def parse(cls, url: str) -> "S3Location":
        parts = urlsplit(url)
        if parts.scheme != "s3" or not parts.netloc or parts.query or parts.fragment:
            raise ConfigError(f"bundle store {url!r}: expected s3://BUCKET or s3://BUCKET/PREFIX")
        return cls(parts.netloc, parts.path.strip("/"))

    def key(self, *parts: str) -> str:
        return "/".join(p for p in (self.prefix, *parts) if p)

    def __str__(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}".rstrip("/")


def _client():
    try:
        import boto3
        from botocore.exceptions import BotoCoreError
    except ImportError:
        raise ConfigError("an s3:// bundle store needs boto3: pip install 'shelfsight[s3]'") from None
    try:
        return boto3.client("s3")
    except (BotoCoreError, ValueError) as e:  # a bad AWS_ENDPOINT_URL_S3, an unknown profile ...
        raise ConfigError(f"cannot set up the S3 client from the environment: {e}") from None


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class S3BundleStore:
    """The `BundleStore` interface on ``s3://BUCKET/PREFIX``.

    Args:
        url: ``s3://BUCKET`` or ``s3://BUCKET/PREFIX``.
        cache_dir: where `path` keeps local copies to serve from; None: `path` is refused
            (enough for `put`, `ids` and `location`, as `shelfsight fleet bundle add` uses it).
        client: a boto3 S3 client (default: one made from the environment).
        refresh_s: how long `path` trusts the record it read last before reading it again
            (a bundle stored again under the same id is served within this time).
    """

    def __init__(self, url: str, cache_dir: Path | None = None, client=None, refresh_s: float = 10.0) -> None:
        if refresh_s < 0:
            raise ConfigError(f"refresh_s must be >= 0, got {refresh_s}")
        self.where = S3Location.parse(url)
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        self.client = client or _client()
        self.refresh_s = refresh_s
        self._records: dict[str, tuple[float, dict]] = {}
        self._lock = threading.Lock()

    # -- the interface ----------------------------------------------------------------------
    def put(self, bundle: Path) -> str:
        """Upload ``bundle`` under a new generation, then point its record at it; returns its bundle_id."""
        bundle = Path(bundle)
        bundle_id = bundle_id_of(bundle)
        generation = f"{time.time_ns():x}-{secrets.token_hex(4)}"
        if bundle.is_dir():
            kind = "directory"
            files = {"bundle/" + p.relative_to(bundle).as_posix(): p for p in sorted(bundle.rglob("*")) if p.is_file()}
        else:
            kind = "archive"
            files = {f"{bundle_id}.tar.gz": bundle}
            if signature_path(bundle).is_file():
                files[f"{bundle_id}.tar.gz.sig"] = signature_path(bundle)
        record = {"bundle_id": bundle_id, "generation": generation, "kind": kind,
                  "files": {name: {"size": p.stat().st_size, "sha256": _sha256(p)} for name, p in files.items()}}
        with self._errors(f"storing {bundle_id}"):
            for name, path in files.items():  # one PUT each: bundle files are far below S3's 5 GB limit
                with open(path, "rb") as body:
                    self.client.put_object(Bucket=self.where.bucket, Key=self.where.key(bundle_id, generation, name),
                                           Body=body)
            self.client.put_object(Bucket=self.where.bucket, Key=self.where.key(bundle_id, RECORD),
                                   Body=json.dumps(record, indent=1).encode(), ContentType="application/json")
            self._delete_other_generations(bundle_id, generation)
        with self._lock:
            self._records.pop(bundle_id, None)
        return bundle_id

    def path(self, bundle_id: str) -> Path:
        """A local copy of the stored bundle (directory or .tar.gz), fetched once per generation.

        Raises:
            BundleError: not in the store, the store cannot be reached, or a fetched file
                does not match its record.
        """
        if self.cache_dir is None:
            raise ConfigError(f"{self.where}: serving a bundle needs a local cache directory")
        record = self._record(bundle_id)
        local = self.cache_dir / bundle_id / record["generation"]
        if not local.is_dir():
            try:
                self._fetch(bundle_id, record, local)
            except GenerationGone:  # stored again since the record was read: read it again
                record = self._record(bundle_id, fresh=True)
                local = self.cache_dir / bundle_id / record["generation"]
                if not local.is_dir():
                    self._fetch(bundle_id, record, local)
        return local / ("bundle" if record["kind"] == "directory" else f"{bundle_id}.tar.gz")

    def ids(self) -> list[str]:
        """Every bundle_id with a record under the prefix."""
        found = []
        with self._errors("listing bundles"):
            pages = self.client.get_paginator("list_objects_v2").paginate(
                Bucket=self.where.bucket, Prefix=(self.where.prefix + "/") if self.where.prefix else "", Delimiter="/")
            for page in pages:
                for common in page.get("CommonPrefixes", []):
                    bundle_id = common["Prefix"].rstrip("/").rsplit("/", 1)[-1]
                    if self._has_record(bundle_id):
                        found.append(bundle_id)
        return sorted(found)

    def location(self, bundle_id: str) -> str:
        """Where the bundle lives, as the fleet database records it."""
        return f"{self.where}/{bundle_id}/"

    # -- the parts --------------------------------------------------------------------------
    def _record(self, bundle_id: str, fresh: bool = False) -> dict:
        with self._lock:
            cached = None if fresh else self._records.get(bundle_id)
        if cached is not None and time.monotonic() - cached[0] < self.refresh_s:
            return cached[1]
        key = self.where.key(bundle_id, RECORD)
        with self._errors(f"reading {bundle_id}", missing=f"bundle {bundle_id!r} is not in the bundle store "
                                                          f"{self.where}"):
            body = self.client.get_object(Bucket=self.where.bucket, Key=key)["Body"].read()
        try:
            record = json.loads(body)
            if (record.get("kind") not in KINDS or not isinstance(record.get("files"), dict)
                    or not isinstance(record.get("generation"), str) or "/" in record["generation"]):
                raise ValueError("fields missing")
        except (ValueError, AttributeError) as e:
            raise BundleError(f"{self.where}/{key} is not a bundle record ({e})") from None
        with self._lock:
            self._records[bundle_id] = (time.monotonic(), record)
        return record

    def _has_record(self, bundle_id: str) -> bool:
        try:
            self.client.head_object(Bucket=self.where.bucket, Key=self.where.key(bundle_id, RECORD))
            return True
        except Exception as e:  # botocore's ClientError; a 404 means a bundle still being stored
            if _status(e) == 404:
                return False
            raise

    def _fetch(self, bundle_id: str, record: dict, local: Path) -> None:
        staging = local.parent / f".{local.name}.{os.getpid()}.{secrets.token_hex(4)}"
        staging.mkdir(parents=True)
        try:
            with self._errors(f"fetching {bundle_id}", missing=f"generation {record['generation']} of {bundle_id} "
                                                                  f"is gone from {self.where}", gone=GenerationGone):
                for name, facts in record["files"].items():
                    target = staging / name
                    if ".." in Path(name).parts or Path(name).is_absolute():
                        raise BundleError(f"{self.where}: the record of {bundle_id} names {name!r}")
                    target.parent.mkdir(parents=True, exist_ok=True)
                    size, digest = self._download(self.where.key(bundle_id, record["generation"], name), target)
                    if (size, digest) != (facts.get("size"), facts.get("sha256")):
                        raise BundleError(f"{self.where}: {bundle_id}/{name} is {size} bytes sha256 {digest[:12]}, "
                                          f"its record says {facts.get('size')} bytes sha256 "
                                          f"{str(facts.get('sha256'))[:12]}")
            try:
                staging.rename(local)
            except OSError:  # another worker put the same generation there first
                if not local.is_dir():
                    raise
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        for old in local.parent.iterdir():  # earlier generations of this bundle
            if old.name != local.name and not old.name.startswith("."):
                shutil.rmtree(old, ignore_errors=True)
        log.info("fetched bundle %s (generation %s) from %s", bundle_id, record["generation"], self.where)

    def _download(self, key: str, target: Path) -> tuple[int, str]:
        """Stream ``key`` into ``target``; returns its (size, sha256)."""
        body = self.client.get_object(Bucket=self.where.bucket, Key=key)["Body"]
        digest, size = hashlib.sha256(), 0
        with open(target, "wb") as f:
            for block in body.iter_chunks(1 << 20):
                digest.update(block)
                size += len(block)
                f.write(block)
        return size, digest.hexdigest()

    def _delete_other_generations(self, bundle_id: str, keep: str) -> None:
        stale = []
        for page in self.client.get_paginator("list_objects_v2").paginate(
                Bucket=self.where.bucket, Prefix=self.where.key(bundle_id) + "/"):
            for obj in page.get("Contents", []):
                rest = obj["Key"][len(self.where.key(bundle_id)) + 1:]
                if rest != RECORD and not rest.startswith(keep + "/"):
                    stale.append({"Key": obj["Key"]})
        for start in range(0, len(stale), 1000):
            self.client.delete_objects(Bucket=self.where.bucket, Delete={"Objects": stale[start:start + 1000]})

    def _errors(self, doing: str, missing: str | None = None, gone: type[BundleError] = BundleError):
        return _S3Errors(f"{self.where}: {doing}", missing, gone)


def _status(error: BaseException) -> int | None:
    response = getattr(error, "response", None)
    if isinstance(response, dict):
        return response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    return None


class GenerationGone(BundleError):
    """A generation's object is no longer there: the bundle was stored again meanwhile."""


class _S3Errors:
    """Turns what boto3 raises into one BundleError line (a 404 into ``gone(missing)`` when given)."""

    def __init__(self, context: str, missing: str | None, gone: type[BundleError] = BundleError) -> None:
        self.context, self.missing, self.gone = context, missing, gone

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind, error, tb) -> bool:
        if error is None or isinstance(error, (BundleError, ConfigError)):
            return False
        from botocore.exceptions import BotoCoreError, ClientError
        if isinstance(error, ClientError):
            if self.missing is not None and _status(error) == 404:
                raise self.gone(self.missing) from None
            info = error.response.get("Error", {})
            raise BundleError(f"{self.context}: {info.get('Code', 'error')}: {info.get('Message', '')}".rstrip(": ")) \
                from None
        if isinstance(error, (BotoCoreError, OSError)):
            raise BundleError(f"{self.context}: {error}") from None
        return False

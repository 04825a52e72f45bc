"""Where the fleet's bundles live: an interface (`BundleStore`), its directory backend, and
`open_bundle_store`, which picks the backend from the location (a directory, or
``s3://BUCKET/PREFIX`` for `s3bundles.S3BundleStore`).

A bundle is stored under its ``bundle_id`` (from the manifest) exactly as given, a directory
or a .tar.gz, with its signature file beside it when there is one; the server offers it
from a local path (the object store's backend keeps a local copy).
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Protocol

from shelfsight.errors import BundleError, ConfigError

from .keys import manifest_bytes, signature_path


class BundleStore(Protocol):
    def put(self, bundle: Path) -> str:
        """Store ``bundle``; returns its bundle_id (storing the same id again replaces it)."""

    def path(self, bundle_id: str) -> Path:
        """A local path of the stored bundle (directory or .tar.gz) to serve from."""

    def ids(self) -> list[str]:
        """Every stored bundle_id."""

    def location(self, bundle_id: str) -> str:
        """Where the stored bundle lives, as the fleet database records it."""


def open_bundle_store(location: str | Path, cache_dir: Path | None = None) -> BundleStore:
    """The store at ``location``: ``s3://BUCKET[/PREFIX]`` (S3-compatible; ``cache_dir`` holds
    the local copies served) or a directory."""
    if str(location).startswith("s3://"):
        from .s3bundles import S3BundleStore
        return S3BundleStore(str(location), cache_dir)
    if "://" in str(location):
        raise ConfigError(f"bundle store {str(location)!r}: expected a directory or s3://BUCKET/PREFIX")
    return DirectoryBundleStore(Path(location))


def bundle_id_of(bundle: Path) -> str:
    try:
        manifest = json.loads(manifest_bytes(bundle))
    except json.JSONDecodeError as e:
        raise BundleError(f"{bundle}: manifest.json is not JSON ({e})") from None
    bundle_id = manifest.get("bundle_id") if isinstance(manifest, dict) else None
    if not isinstance(bundle_id, str) or not bundle_id or "/" in bundle_id or bundle_id.startswith("."):
        raise BundleError(f"{bundle}: the manifest has no usable bundle_id (got {bundle_id!r})")
    return bundle_id


class DirectoryBundleStore:
    """``ROOT/<bundle_id>/`` holding the bundle directory ``bundle/`` or ``<bundle_id>.tar.gz``."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def put(self, bundle: Path) -> str:
        bundle = Path(bundle)
        bundle_id = bundle_id_of(bundle)
        staging = self.root / f".{bundle_id}.tmp"
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        signature = signature_path(bundle)
        if bundle.is_dir():
            shutil.copytree(bundle, staging / "bundle")  # the signature file is inside
        else:
            archive = staging / f"{bundle_id}.tar.gz"
            shutil.copy2(bundle, archive)
            if signature.is_file():
                shutil.copy2(signature, signature_path(archive))
        target = self.root / bundle_id
        shutil.rmtree(target, ignore_errors=True)
        staging.rename(target)
        return bundle_id

    def path(self, bundle_id: str) -> Path:
        for name in ("bundle", f"{bundle_id}.tar.gz"):
            candidate = self.root / bundle_id / name
            if candidate.exists():
                return candidate
        raise BundleError(f"bundle {bundle_id!r} is not in the bundle store {self.root}")

    def location(self, bundle_id: str) -> str:
        return str(self.path(bundle_id))

    def ids(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if p.is_dir() and not p.name.startswith("."))

"""Bundle versions on the device, switched atomically.

Layout of a store directory::

    versions/<bundle_id>/   one verified bundle per directory
    current -> versions/<bundle_id>    the bundle the device runs (a relative symlink)
    previous -> versions/<bundle_id>   the one before, kept for rollback
    staging/<bundle_id>/    downloads in progress (resumable)
    state.json              bundle ids refused after a failed health check, and why

Switching replaces the ``current`` symlink atomically (`shelfsight.atomic`), so a reader (or a power
cut) sees either the old or the new bundle, never a mix. Readers should resolve
``current`` once (`BundleStore.current`) and load from the resolved directory.
"""
from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

from shelfsight.atomic import publish, replace_symlink, write_bytes
from shelfsight.bundle import (DEVICE_STATE_FILES, INDEX_SPEC_FILE, MANIFEST, Bundle, bundle_files, check_index_covered,
                               load_bundle)
from shelfsight.errors import BundleError, ConfigError

BUNDLE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
CURRENT, PREVIOUS = "current", "previous"


def check_bundle_id(bundle_id: object) -> str:
    """Return ``bundle_id`` if it is safe as a directory name. Raises BundleError otherwise."""
    if not isinstance(bundle_id, str) or not BUNDLE_ID.match(bundle_id):
        raise BundleError(f"bundle_id {bundle_id!r} is not a plain name (letters, digits, '._-', up to 128)")
    return bundle_id


def verify_covered(bundle_dir: Path) -> Bundle:
    """`load_bundle`, and an index.json covered by the manifest itself (an index rebuilt and
    sealed by a device stays with that bundle directory: `shelfsight index --rebuild` puts it
    into the manifest). Raises BundleError otherwise."""
    bundle = load_bundle(bundle_dir)
    if bundle.index or (bundle.root / INDEX_SPEC_FILE).exists():
        check_index_covered(bundle.root, bundle.manifest)
    return bundle


class BundleStore:
    """A directory of bundle versions with ``current`` and ``previous`` links (see module)."""

    def __init__(self, root: str | Path, keep_versions: int = 2) -> None:
        if keep_versions < 2:
            raise ConfigError(f"keep_versions must be >= 2 (current and previous), got {keep_versions}")
        self.root = Path(root)
        self.keep_versions = keep_versions
        self.versions = self.root / "versions"
        self.staging = self.root / "staging"
        for d in (self.versions, self.staging):
            d.mkdir(parents=True, exist_ok=True)

    # -- reading -----------------------------------------------------------------------
    def _link(self, name: str) -> Path | None:
        link = self.root / name
        if not link.is_symlink():
            return None
        target = link.resolve()
        return target if target.is_dir() else None

    @property
    def current(self) -> Path | None:
        """The directory of the running bundle, resolved; None before the first install."""
        return self._link(CURRENT)

    @property
    def previous(self) -> Path | None:
        return self._link(PREVIOUS)

    @property
    def current_id(self) -> str | None:
        current = self.current
        return current.name if current else None

    def version_dir(self, bundle_id: str) -> Path:
        return self.versions / check_bundle_id(bundle_id)

    def staging_dir(self, bundle_id: str) -> Path:
        return self.staging / check_bundle_id(bundle_id)

    # -- refused bundles ---------------------------------------------------------------
    def refused(self) -> dict[str, str]:
        """bundle id -> reason, for bundles that failed their health check here."""
        state = self.root / "state.json"
        if not state.is_file():
            return {}
        try:
            return dict(json.loads(state.read_text()).get("refused", {}))
        except (json.JSONDecodeError, AttributeError):
            return {}

    def mark_refused(self, bundle_id: str, reason: str) -> None:
        refused = self.refused()
        refused[bundle_id] = reason
        write_bytes(self.root / "state.json", json.dumps({"refused": refused}, indent=2).encode())

    # -- changing ----------------------------------------------------------------------
    def add_version(self, bundle_dir: Path, bundle_id: str) -> Path:
        """Move a verified bundle directory (on the same filesystem) into versions/."""
        target = self.version_dir(bundle_id)
        if target.exists():
            shutil.rmtree(target)
        publish(bundle_dir, target)
        return target

    def install(self, source: str | Path) -> Path:
        """Copy a local bundle (directory or .tar.gz) into the store, verified, and make it
        current: its manifest and the files it covers, nothing else. Returns its version
        directory. Raises BundleError if it does not verify."""
        bundle = verify_covered(Path(source))
        bundle_id = check_bundle_id(bundle.bundle_id)
        tmp = self.staging_dir(bundle_id).with_name(bundle_id + ".install")
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir(parents=True)
        device_state = [n for n in DEVICE_STATE_FILES if (bundle.root / n).is_file()]  # sealed by this device
        for name in (MANIFEST, *bundle_files(bundle.manifest), *device_state):
            shutil.copy2(bundle.root / name, tmp / name)
        verify_covered(tmp)
        self.add_version(tmp, bundle_id)
        self.activate(bundle_id)
        return self.version_dir(bundle_id)

    def activate(self, bundle_id: str) -> None:
        """Make ``bundle_id`` current (atomically); the old current becomes previous."""
        target = self.version_dir(bundle_id)
        if not target.is_dir():
            raise BundleError(f"bundle {bundle_id} is not in {self.versions}")
        old = self.current_id
        if old == bundle_id:
            return
        if old is not None:
            replace_symlink(self.root / PREVIOUS, Path("versions") / old)
        replace_symlink(self.root / CURRENT, Path("versions") / bundle_id)

    def rollback(self) -> str:
        """Make ``previous`` current again; returns its id. Raises BundleError without one."""
        previous, current = self.previous, self.current_id
        if previous is None:
            raise BundleError(f"{self.root}: no previous bundle to roll back to")
        replace_symlink(self.root / CURRENT, Path("versions") / previous.name)
        if current is not None and current != previous.name:
            replace_symlink(self.root / PREVIOUS, Path("versions") / current)
        return previous.name

    def links(self) -> tuple[str | None, str | None]:
        """(current id, previous id), for `restore`."""
        previous = self.previous
        return self.current_id, previous.name if previous else None

    def restore(self, links: tuple[str | None, str | None]) -> None:
        """Point ``current`` and ``previous`` back to what `links` returned earlier."""
        for name, bundle_id in ((PREVIOUS, links[1]), (CURRENT, links[0])):
            if bundle_id is None:
                (self.root / name).unlink(missing_ok=True)
            else:
                replace_symlink(self.root / name, Path("versions") / check_bundle_id(bundle_id))

    def prune(self) -> list[str]:
        """Delete versions other than current and previous beyond ``keep_versions``,
        oldest first; returns the ids removed."""
        keep = {self.current_id, self.previous.name if self.previous else None}
        others = sorted((d for d in self.versions.iterdir() if d.is_dir() and d.name not in keep),
                        key=lambda d: d.stat().st_mtime)
        excess = len(others) + len(keep - {None}) - self.keep_versions
        removed = []
        for d in others[:max(excess, 0)]:
            shutil.rmtree(d, ignore_errors=True)
            removed.append(d.name)
        return removed

    def clear_staging(self, bundle_id: str) -> None:
        shutil.rmtree(self.staging_dir(bundle_id), ignore_errors=True)



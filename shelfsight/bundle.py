"""The bundle: the one thing the device knows about training.

A bundle is a directory (optionally packed as .tar.gz for transport)::

    manifest.json   schema version, ids, every file with sha256 and size, input spec,
                    outputs, labels, index spec, thresholds, metrics, provenance
    model.tflite    the model (class scores + embedding from one inference)
    labels.txt      one label per line, in output order
    index.ann, catalog.json, ...   the search index, once built

`load_bundle` verifies every checksum and refuses anything missing, altered or of an
unknown schema version. Writers go through `write_manifest`, which computes the checksums.
"""
from __future__ import annotations

import hashlib
import json
import shutil
import tarfile
import tempfile
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from .atomic import write_text
from .errors import BundleError
from .preprocess import PreprocessSpec

SCHEMA = "shelfsight.bundle"
SCHEMA_VERSION = 1
MANIFEST = "manifest.json"
MODEL_FILE = "model.tflite"
LABELS_FILE = "labels.txt"
MAX_ARCHIVE_BYTES = 2 * 1024**3  # unpacked size limit for a transported bundle
ARCHIVE_SUFFIXES = (".tar.gz", ".tgz")


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def file_entry(path: Path) -> dict[str, Any]:
    return {"sha256": sha256_file(path), "size": path.stat().st_size}


@dataclass(frozen=True)
class Bundle:
    """A verified bundle on disk."""

    root: Path
    manifest: dict[str, Any]
    labels: tuple[str, ...] = field(repr=False)

    @property
    def model_path(self) -> Path:
        return self.root / self.manifest["model"]["file"]

    @property
    def model_sha256(self) -> str:
        return self.manifest["files"][self.manifest["model"]["file"]]["sha256"]

    @property
    def preprocess(self) -> PreprocessSpec:
        return PreprocessSpec.from_dict(self.manifest["preprocess"])

    @property
    def index(self) -> dict[str, Any] | None:
        return self.manifest.get("index")

    @property
    def thresholds(self) -> dict[str, float]:
        return self.manifest.get("thresholds", {})

    @property
    def bundle_id(self) -> str:
        return self.manifest["bundle_id"]

    def path(self, name: str) -> Path:
        return self.root / name

    def with_index(self, spec: dict[str, Any], index_files: list[str], **sections: Any) -> dict[str, Any]:
        """Write the manifest with a new index section: the old index's files leave the
        checksummed list, ``index_files`` join it; ``sections`` (thresholds, metrics) replace
        theirs. The one place an index is swapped into a bundle. Returns the manifest written."""
        old = set((self.index or {}).get("checksums", {}))
        kept = {n: e for n, e in self.manifest["files"].items() if n not in old}
        return write_manifest(self.root, dict(self.manifest, index=spec, files=kept, **sections), index_files)


def load_bundle(path: str | Path, verify: bool = True) -> Bundle:
    """Open a bundle directory (or .tar.gz) and verify it.

    Raises:
        BundleError: missing manifest or file, size or sha256 mismatch, unknown schema.
    """
    root = Path(path)
    if root.is_file() and root.name.endswith(ARCHIVE_SUFFIXES):
        root = unpack_archive(root, Path(tempfile.mkdtemp(prefix="shelfsight-bundle-")))
    if not root.is_dir():
        raise BundleError(f"bundle {path} not found (expected a directory or .tar.gz)")
    manifest_path = root / MANIFEST
    if not manifest_path.is_file():
        raise BundleError(f"{root} is not a bundle: no {MANIFEST}")
    try:
        manifest = json.loads(manifest_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise BundleError(f"{manifest_path}: not valid JSON ({e})") from None
    if manifest.get("schema") != SCHEMA:
        raise BundleError(f"{manifest_path}: schema {manifest.get('schema')!r}, expected {SCHEMA!r}")
    version = manifest.get("schema_version")
    if version != SCHEMA_VERSION:
        raise BundleError(f"{manifest_path}: schema_version {version}, this shelfsight reads {SCHEMA_VERSION}")
    if verify:
        verify_files(root, manifest)
    labels = tuple((root / manifest["labels"]["file"]).read_text(encoding="utf-8").splitlines())
    if len(labels) != manifest["labels"]["count"]:
        raise BundleError(f"{root}: {len(labels)} labels in {manifest['labels']['file']}, "
                          f"manifest says {manifest['labels']['count']}")
    return Bundle(root=root, manifest=manifest, labels=labels)


def verify_files(root: Path, manifest: dict[str, Any]) -> None:
    for name, entry in manifest.get("files", {}).items():
        f = root / name
        if not f.is_file():
            raise BundleError(f"bundle {root}: file {name} is missing")
        size = f.stat().st_size
        if size != entry["size"]:
            raise BundleError(f"bundle {root}: {name} is {size} bytes, manifest says {entry['size']}")
        if sha256_file(f) != entry["sha256"]:
            raise BundleError(f"bundle {root}: {name} does not match its sha256 (altered or corrupt)")
    for required in (manifest.get("model", {}).get("file"), manifest.get("labels", {}).get("file")):
        if not required or required not in manifest.get("files", {}):
            raise BundleError(f"bundle {root}: manifest lists no checksum for {required!r}")


def new_manifest(**sections: Any) -> dict[str, Any]:
    """A manifest skeleton with schema, a fresh bundle id and the creation time."""
    return {"schema": SCHEMA, "schema_version": SCHEMA_VERSION, "bundle_id": uuid.uuid4().hex,
            "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"), **sections}


def write_manifest(root: Path, manifest: dict[str, Any], files: list[str] | None = None) -> dict[str, Any]:
    """Checksum ``files`` (default: those already listed, plus model and labels) and write
    manifest.json atomically. Returns the manifest written."""
    root = Path(root)
    names = set(files or []) | set(manifest.get("files", {}))
    names |= {manifest["model"]["file"], manifest["labels"]["file"]}
    manifest = dict(manifest, files={n: file_entry(root / n) for n in sorted(names)})
    write_text(root / MANIFEST, json.dumps(manifest, indent=2, sort_keys=False) + "\n")
    return manifest


def pack_archive(root: Path, archive: Path) -> Path:
    """Pack a bundle directory into one .tar.gz (files at the archive's top level)."""
    with tarfile.open(archive, "w:gz") as tar:
        for f in sorted(Path(root).iterdir()):
            if f.is_file():
                tar.add(f, arcname=f.name)
    return archive


def unpack_archive(archive: Path, dest: Path, max_bytes: int = MAX_ARCHIVE_BYTES) -> Path:
    """Unpack a bundle archive safely: regular files only, no absolute paths, no '..',
    no links, a size limit. Raises BundleError for anything else."""
    dest.mkdir(parents=True, exist_ok=True)
    try:
        with tarfile.open(archive, "r:gz") as tar:
            members = tar.getmembers()
            total = 0
            for m in members:
                p = Path(m.name)
                if p.is_absolute() or ".." in p.parts or not (m.isfile() or m.isdir()):
                    raise BundleError(f"{archive}: refusing unsafe member {m.name!r}")
                total += m.size
                if total > max_bytes:
                    raise BundleError(f"{archive}: unpacks to more than {max_bytes} bytes")
            tar.extractall(dest, members=members, filter="data")
    except (tarfile.TarError, EOFError, OSError) as e:
        shutil.rmtree(dest, ignore_errors=True)
        raise BundleError(f"{archive}: not a readable bundle archive ({e})") from None
    return dest

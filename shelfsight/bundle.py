"""The bundle: the one thing the device knows about training.

A bundle is a directory (optionally packed as .tar.gz for transport)::

    manifest.json   schema version, ids, every file with sha256 and size, input spec,
                    outputs, labels, index spec, thresholds, metrics, provenance
    model.tflite    the model (class scores + embedding from one inference)
    labels.txt      one label per line, in output order
    index.json      the search index spec, once built; it names the index data files
    index.ann, catalog.json, ...   with their sha256 (and they are listed here too)

`load_bundle` verifies every checksum and refuses anything missing, altered or of an
unknown schema version. Writers go through `write_manifest`, which computes the checksums.

Every file the device reads is covered by the manifest (and so by its signature): listed
in ``files``, or named with its sha256 in a listed file (``index.json`` names the index's
generation files). Bundles written before ``index.json`` was listed are accepted only when
its content is the manifest's ``index`` section. On-device enrolments (``enrolled.npz``)
are not part of the bundle: the device seals them with its own key (edge.catalog.seal).
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import tarfile
import tempfile
import uuid
import weakref
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

from .atomic import write_text
from .errors import BundleError
from .manifest_schema import check_manifest
from .preprocess import PreprocessSpec

SCHEMA = "shelfsight.bundle"
SCHEMA_VERSION = 1
MANIFEST = "manifest.json"
MODEL_FILE = "model.tflite"
LABELS_FILE = "labels.txt"
INDEX_SPEC_FILE = "index.json"  # the search index's spec (edge.catalog.spec reads and writes it)
ENROLLED_FILE = "enrolled.npz"  # on-device enrolments (edge.catalog.enroll), sealed by the device
DEVICE_STATE_FILES = (ENROLLED_FILE,)  # what a device writes beside a bundle: never listed, never packed
MAX_ARCHIVE_BYTES = 2 * 1024**3  # unpacked size limit for a transported bundle
ARCHIVE_SUFFIXES = (".tar.gz", ".tgz")
UNPACKED_PREFIX = "shelfsight-bundle-"  # temp folders of loaded archives: shelfsight-bundle-<pid>-<random>


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
    """A verified bundle on disk.

    A bundle loaded from an archive lives in a temporary folder that is removed by `close()`
    (also on leaving a ``with`` block), when the Bundle is garbage collected, or when the
    process exits, whichever comes first. ``close()`` is safe to call twice and does nothing
    for a directory bundle.
    """

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

    @property
    def unpacked(self) -> bool:
        """True for an archive's temporary copy (`close` removes it)."""
        return getattr(self, "_cleanup", None) is not None

    def close(self) -> None:
        """Remove the temporary copy of an archive bundle now; nothing for a directory."""
        cleanup = getattr(self, "_cleanup", None)
        if cleanup is not None:
            cleanup()

    def __enter__(self) -> "Bundle":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def with_index(self, spec: dict[str, Any], index_files: list[str], **sections: Any) -> dict[str, Any]:
        """Write the manifest with a new index section: the old index's files leave the
        checksummed list, ``index_files`` join it; ``sections`` (thresholds, metrics) replace
        theirs. ``index.json`` (which must hold ``spec``) is listed too, so the manifest, and a
        signature over it, covers the index and, through its checksums, every generation file.
        The one place an index is swapped into a bundle. Returns the manifest written.

        Raises:
            BundleError: index.json is missing or is not ``spec``.
        """
        if _read_json(self.root / INDEX_SPEC_FILE) != spec:
            raise BundleError(f"bundle {self.root}: {INDEX_SPEC_FILE} is not the index being written into the manifest")
        old = set((self.index or {}).get("checksums", {})) | {INDEX_SPEC_FILE}
        kept = {n: e for n, e in self.manifest["files"].items() if n not in old}
        return write_manifest(self.root, dict(self.manifest, index=spec, files=kept, **sections),
                              [*index_files, INDEX_SPEC_FILE])


def bundle_files(manifest: dict[str, Any]) -> list[str]:
    """The files a bundle is made of besides manifest.json: those listed, and index.json
    where a manifest written before it was listed has an index section (what an update
    downloads, a server offers and an archive packs)."""
    names = list(manifest.get("files", {}))
    if manifest.get("index") and INDEX_SPEC_FILE not in names:
        names.append(INDEX_SPEC_FILE)
    return names


def check_index_covered(root: Path, manifest: dict[str, Any],
                        device_sealed: Callable[[Any], bool] = lambda spec: False) -> None:
    """Refuse an index.json neither the manifest nor the device covers. Covered: listed in the
    manifest's files with its sha256; in a manifest written before it was listed, equal to
    the ``index`` section; or sealed by this device (``device_sealed(spec)``: an index the
    device rebuilt itself, see edge.catalog.seal). Called by whatever reads index.json.

    Raises:
        BundleError: index.json is missing or not covered.
    """
    path = Path(root) / INDEX_SPEC_FILE
    if not path.is_file():
        raise BundleError(f"bundle {root}: {INDEX_SPEC_FILE} is missing")
    on_disk = _read_json(path)
    if INDEX_SPEC_FILE in manifest.get("files", {}):
        entry = manifest["files"][INDEX_SPEC_FILE]
        if path.stat().st_size == entry["size"] and sha256_file(path) == entry["sha256"]:
            return
    elif manifest.get("index") and _canonical_sha256(on_disk) == _canonical_sha256(manifest["index"]):
        return
    if device_sealed(on_disk):
        return
    raise BundleError(f"bundle {root}: {INDEX_SPEC_FILE} is not covered by the manifest "
                      f"(altered or replaced; rebuild the index with `shelfsight index`)")


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_bytes())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        return None


def _canonical_sha256(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def load_bundle(path: str | Path, verify: bool = True) -> Bundle:
    """Open a bundle directory (or .tar.gz) and verify it.

    Raises:
        BundleError: missing manifest or file, size or sha256 mismatch, unknown schema, a
            manifest that does not follow its JSON Schema (`manifest_schema`).
    """
    root, unpacked = Path(path), None
    if root.is_file() and root.name.endswith(ARCHIVE_SUFFIXES):
        remove_orphaned_copies()
        unpacked = Path(tempfile.mkdtemp(prefix=f"{UNPACKED_PREFIX}{os.getpid()}-"))
        root = unpack_archive(root, unpacked)
    try:
        bundle = _open(path, root, verify)
    except BaseException as e:
        if unpacked is not None:
            shutil.rmtree(unpacked, ignore_errors=True)
            if isinstance(e, BundleError):  # name the archive, not a temporary folder that is gone
                raise BundleError(str(e).replace(str(unpacked), str(path))) from None
        raise
    if unpacked is not None:  # close(), garbage collection or the process's exit removes it
        object.__setattr__(bundle, "_cleanup", weakref.finalize(bundle, shutil.rmtree, unpacked, True))
    return bundle


def remove_orphaned_copies(temp_dir: str | Path | None = None) -> list[Path]:
    """Remove archive copies (`UNPACKED_PREFIX` folders) whose process is gone: killed before
    it could clean up (SIGKILL, power loss). Copies of running processes are left alone.
    Returns the folders removed. POSIX only (elsewhere a process cannot be probed safely)."""
    if os.name != "posix":
        return []
    removed = []
    for folder in Path(temp_dir or tempfile.gettempdir()).glob(f"{UNPACKED_PREFIX}*-*"):
        pid = folder.name[len(UNPACKED_PREFIX):].split("-", 1)[0]
        if pid.isdigit() and int(pid) > 0 and not _process_alive(int(pid)) and not folder.is_symlink():
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder)
    return removed


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # PermissionError: it runs, as another user
        return True
    return True


def _open(path: str | Path, root: Path, verify: bool = True) -> Bundle:
    if not root.is_dir():
        raise BundleError(f"bundle {path} not found (expected a directory or .tar.gz)")
    manifest_path = root / MANIFEST
    if not manifest_path.is_file():
        raise BundleError(f"{root} is not a bundle: no {MANIFEST}")
    try:
        manifest = json.loads(manifest_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise BundleError(f"{manifest_path}: not valid JSON ({e})") from None
    except RecursionError:
        raise BundleError(f"{manifest_path}: nested too deeply to be a manifest") from None
    if isinstance(manifest, dict) and manifest.get("schema") != SCHEMA:
        raise BundleError(f"{manifest_path}: schema {manifest.get('schema')!r}, expected {SCHEMA!r}")
    version = manifest.get("schema_version") if isinstance(manifest, dict) else None
    if isinstance(manifest, dict) and version != SCHEMA_VERSION:
        raise BundleError(f"{manifest_path}: schema_version {version}, this shelfsight reads {SCHEMA_VERSION}")
    check_manifest(manifest, str(manifest_path))
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
    """Pack a bundle directory into one .tar.gz (files at the archive's top level): its
    manifest and the files it covers (`bundle_files`), nothing else (no device state)."""
    root = Path(root)
    manifest = json.loads((root / MANIFEST).read_text(encoding="utf-8"))
    with tarfile.open(archive, "w:gz") as tar:
        for name in (MANIFEST, *sorted(bundle_files(manifest))):
            tar.add(root / name, arcname=name)
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

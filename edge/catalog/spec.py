"""The index spec, ``index.json``: its format, the file names of each generation, and how it
is read, checked, built and committed.

The spec names every data file of the current generation with its size and sha256, and is
written last (atomically), so it is the one commit point of a build or a rebuild. Its content
goes into the bundle manifest's "index" section; the spec file itself and the files it names
into the manifest's checksums (`shelfsight.bundle.Bundle.with_index`), so a signed manifest
covers the index through this digest chain.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from shelfsight.atomic import write_text
from shelfsight.bundle import ENROLLED_FILE, INDEX_SPEC_FILE, MANIFEST, sha256_file
from shelfsight.errors import IndexMismatchError

from .ann import METRIC
from .items import Catalog
from .projection import Projection
from .seal import json_sealed, seal_json
from .tuning import TuningOptions, TuningReport

FORMAT, VERSION = "shelfsight.index", 1
SPEC_FILE = INDEX_SPEC_FILE
REQUIRED = ("backend", "dimension", "embedding_dimension", "vector_count", "item_count", "model_sha256",
            "files", "checksums", "generation", "folded_through", "options", "k")
# names `file_names` gives, and the temporary names they are written under (tuning candidates
# ``NAME.<n>trees.tmp``, `shelfsight.atomic.temp_path` ``.NAME.<pid>.tmp``, and the
# ``NAME.tmp`` of earlier versions)
_GENERATION = (r"(index(\.\d+)?\.ann|index_(rows|vectors)(\.\d+)?\.npy|catalog(\.\d+)?\.json"
               r"|pca(\.\d+)?\.npz)")
_GENERATION_FILE = re.compile(rf"{_GENERATION}(\.\d+trees)?(\.tmp)?|\.{_GENERATION}(\.\d+trees)?\.\d+\.tmp")


@dataclass(frozen=True)
class Generation:
    """What one generation of index files is made of (written by `files.write_generation`).

    Attributes:
        number: 0 for the first build; each rebuild or build over an index adds one.
        unit: (N, dimension) unit vectors as searched (after the PCA projection, if any).
        rows: (N,) int32 catalog position of each vector.
        catalog: the items.
        projection: the PCA projection applied to queries, or None.
        model_sha256: the model that made the vectors.
        embedding_dimension: the model's embedding length (before PCA).
        tuning: how the backend is chosen and tuned.
        folded_through: the last enrolment sequence number folded into these vectors.
        kept_pca: the previous generation's projection file, when the projection stays the same.
    """

    number: int
    unit: np.ndarray
    rows: np.ndarray
    catalog: Catalog
    projection: Projection | None
    model_sha256: str
    embedding_dimension: int
    tuning: TuningOptions
    folded_through: int
    kept_pca: str | None = None


def file_names(generation: int) -> dict[str, str]:
    """The data file names of one generation (generation 0 has no number in them)."""
    tag = "" if generation == 0 else f".{generation}"
    return {"ann": f"index{tag}.ann", "vectors": f"index_vectors{tag}.npy", "rows": f"index_rows{tag}.npy",
            "catalog": f"catalog{tag}.json", "pca": f"pca{tag}.npz"}


def make_spec(gen: Generation, report: TuningReport, checksums: dict[str, Any], seconds: float) -> dict[str, Any]:
    """The spec of a written generation; ``checksums`` are the `file_entry` of each of its files."""
    annoy = report.backend == "annoy"
    names, projection = file_names(gen.number), gen.projection
    pca_file = gen.kept_pca or (names["pca"] if projection is not None else None)
    return {
        "format": FORMAT, "version": VERSION,
        "backend": report.backend, "backend_reason": report.reason,
        "metric": METRIC if annoy else "cosine", "similarity": "cosine",
        "dimension": int(gen.unit.shape[1]), "embedding_dimension": int(gen.embedding_dimension),
        "vector_count": int(gen.unit.shape[0]), "item_count": len(gen.catalog),
        "model_sha256": gen.model_sha256,
        "n_trees": report.n_trees if annoy else None, "search_k": report.search_k if annoy else None,
        "k": report.k, "target_recall": report.target_recall,
        "recall": report.recall if annoy else 1.0,
        "build_seconds": round(seconds, 3),
        "pca": None if projection is None else {
            "file": pca_file, "input_dimension": projection.input_dimension,
            "output_dimension": projection.output_dimension, "retained": round(projection.retained, 6)},
        "files": {"catalog": names["catalog"], "rows": names["rows"],
                  ("ann" if annoy else "vectors"): names["ann" if annoy else "vectors"]},
        "checksums": checksums,
        "tuning": report.to_dict(), "options": gen.tuning.to_dict(),
        "generation": gen.number, "folded_through": int(gen.folded_through),
        "built_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def seal_spec(spec: dict[str, Any]) -> dict[str, Any]:
    """The spec with this device's seal: how an index rebuilt on the device (and not yet in
    the manifest) stays covered here and nowhere else."""
    return seal_json(FORMAT, spec)


def rebuilt_here(spec: Any) -> bool:
    """Whether ``spec`` carries this device's seal (`seal_spec`)."""
    return json_sealed(FORMAT, spec)


def commit_spec(out: Path, spec: dict[str, Any]) -> None:
    """Write the spec atomically (the commit point), then remove files no longer used."""
    write_text(out / SPEC_FILE, json.dumps(spec, indent=1) + "\n")
    remove_unused(out, spec)


def remove_unused(directory: Path, spec: dict[str, Any]) -> list[str]:
    """Delete generation files neither ``spec`` nor the bundle's manifest.json lists; their names."""
    keep = set(spec["checksums"])
    try:
        keep |= set(json.loads((directory / MANIFEST).read_text(encoding="utf-8")).get("files", {}))
    except FileNotFoundError:
        pass
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, AttributeError):
        return []  # an unreadable manifest: keep everything rather than guess
    removed = sorted(p.name for p in directory.iterdir() if _GENERATION_FILE.fullmatch(p.name) and p.name not in keep)
    for name in removed:
        (directory / name).unlink(missing_ok=True)
    return removed


def read_spec(directory: Path) -> dict[str, Any]:
    """The spec in ``directory``.

    Raises:
        IndexMismatchError: no spec, an unreadable one, another format or version, or missing keys.
    """
    path = directory / SPEC_FILE
    try:
        spec = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise IndexMismatchError(f"{directory}: no search index ({SPEC_FILE} missing); build it with "
                                 f"`shelfsight index`") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise IndexMismatchError(f"{path}: not a readable index spec ({e})") from None
    if not isinstance(spec, dict) or spec.get("format") != FORMAT or spec.get("version") != VERSION:
        got = (spec.get("format"), spec.get("version")) if isinstance(spec, dict) else type(spec).__name__
        raise IndexMismatchError(f"{path}: index format {got}, this shelfsight reads ({FORMAT!r}, {VERSION})")
    missing = [key for key in REQUIRED if key not in spec]
    if missing:
        raise IndexMismatchError(f"{path}: index spec lacks {', '.join(missing)}")
    return spec


def read_spec_quietly(directory: Path) -> dict[str, Any] | None:
    """`read_spec`, or None where there is no usable spec (a first build)."""
    try:
        return read_spec(directory)
    except IndexMismatchError:
        return None


def check_files(directory: Path, spec: dict[str, Any], verify: bool) -> None:
    """Every file the spec names exists with its size (and, with ``verify``, its sha256).

    Raises:
        IndexMismatchError: a file is missing, truncated, replaced or altered.
    """
    for name, entry in spec["checksums"].items():
        path = directory / name
        if not path.is_file():
            raise IndexMismatchError(f"{directory}: index file {name} is missing")
        size = path.stat().st_size
        if size != entry["size"]:
            raise IndexMismatchError(f"{directory}: index file {name} is {size} bytes, the index spec says "
                                     f"{entry['size']} (truncated or replaced)")
        if verify and sha256_file(path) != entry["sha256"]:
            raise IndexMismatchError(f"{directory}: index file {name} does not match its sha256 (altered or corrupt)")

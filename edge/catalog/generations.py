"""One generation of index files: written beside the current one, then opened as the state
every query reads.

Writing leaves nothing behind when it fails (the files written so far are removed); the spec
that makes a generation current is committed by the caller (`spec.commit_spec`). Opening
checks each file against the spec: the catalog's item count, the row map's dtype, shape and
coverage, the vectors' shape, the PCA projection's dimensions, and the enrolment delta's model.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from shelfsight.atomic import write_with
from shelfsight.bundle import file_entry
from shelfsight.errors import ConfigError, IndexMismatchError

from .ann import AnnoyBackend, open_ann
from .enroll import EnrolledDelta
from .items import Catalog, CatalogItem
from .projection import Projection
from .spec import ENROLLED_FILE, Generation, file_names, make_spec
from .tuning import tune
from .vectors import ExactSearch


@dataclass(frozen=True)
class IndexState:
    """Everything a query reads, swapped as one object (readers take no lock)."""

    spec: dict[str, Any]
    catalog: Catalog
    rows: np.ndarray  # (N,) int32 catalog position of each vector
    backend: AnnoyBackend | ExactSearch
    per_item: int  # most vectors any one item has in the main index
    delta: EnrolledDelta
    delta_search: ExactSearch | None

    def item(self, item_id: str) -> CatalogItem:
        """The record of an item of the catalog or the delta (search results name only these)."""
        if item_id in self.catalog:
            return self.catalog.get(item_id)
        found = self.delta.item(item_id)
        if found is None:
            raise KeyError(f"item {item_id!r} is in neither the catalog nor the enrolled items")
        return found


def row_positions(item_ids: Sequence[str], catalog: Catalog, n: int) -> np.ndarray:
    """(n,) int32 catalog position of each vector's item.

    Raises:
        ConfigError: not one id per vector, ids not in the catalog, or items without vectors.
    """
    if len(item_ids) != n:
        raise ConfigError(f"{len(item_ids)} item_ids for {n} vectors; expected one id per vector")
    missing = [i for i in dict.fromkeys(item_ids) if i not in catalog]
    if missing:
        raise ConfigError(f"{len(missing)} item_ids are not in the catalog: {', '.join(map(str, missing[:5]))}")
    rows = np.asarray([catalog.position(i) for i in item_ids], dtype=np.int32)
    empty = np.flatnonzero(np.bincount(rows, minlength=len(catalog)) == 0)
    if empty.size:
        raise ConfigError(f"{empty.size} catalog items have no vectors: "
                          f"{', '.join(catalog[int(i)].item_id for i in empty[:5])}")
    return rows


def _save_npy(path: Path, array: np.ndarray) -> None:
    write_with(path, lambda f: np.save(f, array, allow_pickle=False))


def write_generation(out: Path, gen: Generation, queries: np.ndarray | None,
                     progress: Callable[[str], None] | None) -> dict[str, Any]:
    """Write one generation's data files (not the spec) into ``out`` and return its spec.

    Args:
        queries: held-out unit query vectors to tune with (None: a sample of the vectors).
        progress: called with one line per tuning step.
    """
    t0 = time.perf_counter()
    names = file_names(gen.number)
    written: list[str] = []
    try:
        report = tune(gen.unit, out / names["ann"], gen.tuning, queries, progress)
        if report.backend == "annoy":
            written.append(names["ann"])
        else:
            _save_npy(out / names["vectors"], gen.unit)
            written.append(names["vectors"])
        _save_npy(out / names["rows"], gen.rows)
        written.append(names["rows"])
        gen.catalog.save(out / names["catalog"])
        written.append(names["catalog"])
        if gen.projection is not None and not gen.kept_pca:
            gen.projection.save(out / names["pca"])
            written.append(names["pca"])
    except BaseException:
        for name in written:
            (out / name).unlink(missing_ok=True)
        raise
    checksums = {name: file_entry(out / name) for name in (*written, *([gen.kept_pca] if gen.kept_pca else []))}
    return make_spec(gen, report, checksums, time.perf_counter() - t0)


def fold_delta(st: IndexState) -> tuple[np.ndarray, np.ndarray, Catalog]:
    """The main index's vectors with the enrolled ones after them, each one's catalog position,
    and the catalog extended by the enrolled items it lacks: what a rebuild indexes."""
    delta = st.delta
    catalog = st.catalog.extended([it for it in delta.items().values() if it.item_id not in st.catalog])
    main = (st.backend.vectors() if isinstance(st.backend, AnnoyBackend)
            else np.array(st.backend.vectors, dtype=np.float32))
    vectors = np.concatenate([main, delta.matrix]) if len(delta) else main
    rows = np.concatenate([st.rows, np.asarray([catalog.position(i) for i in delta.item_of_row], dtype=np.int32)])
    return vectors, rows, catalog


def open_state(directory: Path, spec: dict[str, Any], projection: Projection | None = None,
               delta: EnrolledDelta | None = None) -> tuple[IndexState, Projection | None]:
    """Open a generation's files (sizes already checked) and check them against the spec.

    Raises:
        IndexMismatchError: a file does not match what the spec says of it.
    """
    files, n = spec["files"], int(spec["vector_count"])
    catalog = Catalog.load(directory / files["catalog"])
    if len(catalog) != spec["item_count"]:
        raise IndexMismatchError(f"{directory}: catalog {files['catalog']} has {len(catalog)} items, "
                                 f"the index spec says {spec['item_count']}")
    rows = _load_npy(directory / files["rows"])
    if rows.dtype != np.int32 or rows.shape != (n,):
        raise IndexMismatchError(f"{directory}: row map {files['rows']} is {rows.dtype} {rows.shape}, "
                                 f"expected int32 ({n},)")
    counts = np.bincount(rows, minlength=len(catalog)) if n and rows.min() >= 0 else np.zeros(0, int)
    if len(counts) != len(catalog) or (len(counts) and counts.min() == 0):
        raise IndexMismatchError(f"{directory}: row map {files['rows']} does not cover the {len(catalog)} "
                                 f"catalog items exactly once or more")
    backend = _open_backend(directory, spec)
    if spec.get("pca") and projection is None:
        projection = Projection.load(directory / spec["pca"]["file"])
    expected = (int(spec["embedding_dimension"]), int(spec["dimension"])) if spec.get("pca") else None
    got = None if projection is None else (projection.input_dimension, projection.output_dimension)
    if got != expected:
        raise IndexMismatchError(f"{directory}: PCA projection {got} (in, out), the index spec says {expected}")
    if delta is None:
        delta = _load_delta(directory, spec)
    state = IndexState(spec=spec, catalog=catalog, rows=rows, backend=backend, per_item=int(counts.max()),
                       delta=delta, delta_search=ExactSearch(delta.matrix) if len(delta) else None)
    return state, projection


def _open_backend(directory: Path, spec: dict[str, Any]) -> AnnoyBackend | ExactSearch:
    files, dim, n = spec["files"], int(spec["dimension"]), int(spec["vector_count"])
    if spec["backend"] == "annoy":
        return open_ann(directory / files["ann"], dim, n, int(spec["search_k"]), int(spec["k"]))
    if spec["backend"] == "exact":
        vectors = _load_npy(directory / files["vectors"], mmap=True)
        if vectors.dtype != np.float32 or vectors.shape != (n, dim):
            raise IndexMismatchError(f"{directory}: vectors {files['vectors']} are {vectors.dtype} "
                                     f"{vectors.shape}, the index spec says float32 ({n}, {dim})")
        return ExactSearch(vectors)
    raise IndexMismatchError(f"{directory}: index backend {spec['backend']!r}, expected 'annoy' or 'exact'")


def _load_npy(path: Path, mmap: bool = False) -> np.ndarray:
    try:
        return np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
    except (OSError, ValueError) as e:
        raise IndexMismatchError(f"{path}: not a readable array ({e})") from None


def _load_delta(directory: Path, spec: dict[str, Any]) -> EnrolledDelta:
    empty = EnrolledDelta(spec["model_sha256"], int(spec["dimension"]))
    found = EnrolledDelta.load(directory / ENROLLED_FILE)
    if found is None:
        return empty
    live = found.after(int(spec["folded_through"]))
    if not len(live):
        return empty
    if live.model_sha256 != spec["model_sha256"] or live.dimension != spec["dimension"]:
        raise IndexMismatchError(
            f"{directory / ENROLLED_FILE}: {len(live.items())} enrolled items come from model "
            f"{live.model_sha256[:12]}... ({live.dimension} values), the index from {spec['model_sha256'][:12]}... "
            f"({spec['dimension']} values); re-enrol their photos")
    return live

"""Visual search of the catalog: embedding in, most similar catalog items out.

    index = CatalogIndex.build(vectors, item_ids, catalog, bundle_dir, model_sha256)
    manifest["index"] = index.spec                       # the caller checksums index.files
    index = CatalogIndex.load(bundle_dir, model_sha256)   # refuses a stale or damaged index
    index.search(embedding, k=5, min_similarity=0.6)      # [] means "unknown"
    index.enroll(CatalogItem("new-01", sku="123"), photo_embeddings)   # searchable at once
    index.rebuild_in_background()                         # folds enrolments into a new Annoy file

Shapes: ``vectors`` (N, D) float embeddings from the bundle's model (any norm; they are
L2-normalised here), one row per catalog image, ``item_ids`` (N,) naming each row's item;
queries are (D,) or (B, D). Similarities are cosines of unit vectors (after the optional
PCA projection), in [-1, 1]; several vectors of one item count once, with their best.

Files beside each other (the index spec ``index.json`` names the others and is written
last, so it is the one commit point; a rebuild writes a new generation of files and
then replaces the spec)::

    index.json        spec: backend and why, dimension, counts, model sha256, tuning, checksums
    index.ann         Annoy angular index (backend "annoy"), memory-mapped on load
    index_vectors.npy unit vectors (backend "exact"), memory-mapped on load
    index_rows.npy    int32 catalog position of each vector
    catalog.json      the items (see catalog.py)
    pca.npz           the projection, when built with pca_dim
    enrolled.npz      items enrolled on the device (device state, not in the manifest)

Later generations (a rebuild, or a build over an existing index) name their files
``index.1.ann``, ``catalog.1.json``, ...; ``index.json`` always names the current ones.
"""
from __future__ import annotations

import json
import math
import re
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from shelfsight.atomic import write_text, write_with
from shelfsight.bundle import MANIFEST, file_entry, sha256_file
from shelfsight.errors import ConfigError, IndexMismatchError

from .ann import METRIC, AnnoyBackend
from .items import Catalog, CatalogItem
from .enroll import EnrolledDelta
from .projection import Projection, fit_projection
from .tuning import TuningOptions, TuningReport, tune
from .vectors import ExactSearch, unit_rows

FORMAT, VERSION = "shelfsight.index", 1
SPEC_FILE, ENROLLED_FILE = "index.json", "enrolled.npz"
_SHA256 = re.compile(r"[0-9a-f]{64}")
# names `_names` gives, and the temporary names they are written under (tuning candidates
# ``NAME.<n>trees.tmp``, `shelfsight.atomic.temp_path` ``.NAME.<pid>.tmp``, and the
# ``NAME.tmp`` of earlier versions)
_GENERATION = (r"(index(\.\d+)?\.ann|index_(rows|vectors)(\.\d+)?\.npy|catalog(\.\d+)?\.json"
               r"|pca(\.\d+)?\.npz)")
_GENERATION_FILE = re.compile(rf"{_GENERATION}(\.\d+trees)?(\.tmp)?|\.{_GENERATION}(\.\d+trees)?\.\d+\.tmp")


@dataclass(frozen=True)
class Match:
    """One catalog item similar to the query."""

    item_id: str
    sku: str
    label: str
    name: str
    similarity: float


def _group_best(rows: np.ndarray, sims: np.ndarray, item_of_row: Callable[[int], str],
                best: dict[str, float]) -> None:
    """Fold (rows, sims), best first, into ``best``: item_id -> highest similarity."""
    for r, s in zip(rows.tolist(), sims.tolist()):
        item = item_of_row(r)
        if s > best.get(item, -math.inf):
            best[item] = s


@dataclass(frozen=True)
class _State:
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


class CatalogIndex:
    """The catalog's search index: an Annoy file or exact vectors, the item map, the
    enrolment delta, and the facts that tie them to one model. Create with `build` or
    `load`; thread-safe (queries never wait; enrol and rebuild serialise)."""

    def __init__(self, directory: Path, state: _State, projection: Projection | None):
        self.directory = Path(directory)
        self._state: _State | None = state
        self._projection = projection
        self._lock = threading.Lock()
        self._rebuilding = False

    # ---- building ---------------------------------------------------------------------

    @classmethod
    def build(cls, vectors: np.ndarray, item_ids: Sequence[str], catalog: Catalog, out_dir: str | Path,
              model_sha256: str, *, target_recall: float = 0.95, pca_dim: int | None = None, seed: int = 0,
              queries: np.ndarray | None = None, backend: str = "auto", max_index_mb: float | None = None,
              progress: Callable[[str], None] | None = None) -> "CatalogIndex":
        """Index catalog vectors and write every file into ``out_dir`` (spec last).

        Args:
            vectors: (N, D) embeddings of the catalog images, made by the model ``model_sha256``.
            item_ids: (N,) the catalog item each row belongs to.
            catalog: every item, each with at least one row.
            out_dir: directory (usually the bundle root) to write into.
            model_sha256: sha256 of the model file that produced ``vectors``.
            target_recall: recall@10 against exact search that Annoy must reach.
            pca_dim: project to this many dimensions (fitted on ``vectors``) first.
            seed: Annoy and sampling seed (the build is reproducible for a seed).
            queries: held-out (Q, D) embeddings (e.g. validation images) to tune with;
                default: a held-out sample of ``vectors``.
            backend: "auto" (measured), "annoy" or "exact".
            max_index_mb: upper limit on the Annoy file in MB, besides the default limit (the
                trees may add 15% to the vectors, see `TuningOptions.max_overhead`).
            progress: called with one line per tuning step.

        Raises:
            ConfigError: bad vectors, ids not in the catalog, items without vectors, bad options,
                or items enrolled in ``out_dir`` that the new catalog lacks (they would be lost).
        """
        if not isinstance(model_sha256, str) or not _SHA256.fullmatch(model_sha256):
            raise ConfigError(f"model_sha256 must be 64 lowercase hex digits, got {model_sha256!r}")
        options = TuningOptions(target_recall=target_recall, seed=seed, backend=backend,
                                max_index_mb=max_index_mb)
        unit = unit_rows(vectors, "catalog vectors")
        embedding_dimension = unit.shape[1]
        rows = _row_positions(item_ids, catalog, unit.shape[0])
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        previous = _read_spec_quietly(out)
        folded = previous["folded_through"] if previous else 0
        delta = EnrolledDelta.load(out / ENROLLED_FILE)
        lost = sorted(set(delta.after(folded).items()) - {it.item_id for it in catalog}) if delta else []
        if lost:
            raise ConfigError(f"{out}: {len(lost)} enrolled items are not in the new catalog "
                              f"({', '.join(lost[:5])}); add them (re-embedded) or move {ENROLLED_FILE} away")
        projection = fit_projection(unit, pca_dim) if pca_dim is not None else None
        query_unit = None if queries is None else unit_rows(queries, "tuning queries", unit.shape[1])
        if projection is not None:
            unit = projection.apply(unit)
            query_unit = None if query_unit is None else projection.apply(query_unit)
        generation = previous["generation"] + 1 if previous else 0
        spec = _write_generation(out, generation, unit, rows, catalog, projection, model_sha256,
                                 embedding_dimension, options, query_unit,
                                 folded_through=max(folded, delta.last_seq if delta else 0), progress=progress)
        _commit_spec(out, spec)
        if delta:
            (out / ENROLLED_FILE).unlink(missing_ok=True)
        return cls.load(out, model_sha256, verify=False)

    # ---- loading ----------------------------------------------------------------------

    @classmethod
    def load(cls, directory: str | Path, model_sha256: str, dimension: int | None = None,
             verify: bool = True) -> "CatalogIndex":
        """Open the index in ``directory`` (a bundle root) for the model ``model_sha256``.

        Args:
            dimension: the model's embedding length, checked against the index when given.
            verify: also check every file's sha256 (sizes are always checked; skip the
                hashing when the bundle loader has just verified the same files).

        Raises:
            IndexMismatchError: no or unreadable spec, a different model, a different
                embedding length, a missing, truncated or altered file, a catalog or row map
                that does not match the spec's counts, or an unreadable enrolment delta.
        """
        directory = Path(directory)
        spec = _read_spec(directory)
        if spec["model_sha256"] != model_sha256:
            raise IndexMismatchError(
                f"{directory}: the index was built from model sha256 {spec['model_sha256'][:12]}..., this "
                f"bundle's model is {str(model_sha256)[:12]}...; re-embed the catalog (shelfsight index --rebuild)")
        if dimension is not None and spec["embedding_dimension"] != dimension:
            raise IndexMismatchError(f"{directory}: the index holds {spec['embedding_dimension']}-value "
                                     f"embeddings, the model gives {dimension}")
        _check_files(directory, spec, verify)
        state, projection = _open_state(directory, spec)
        return cls(directory, state, projection)

    # ---- querying ---------------------------------------------------------------------

    @property
    def spec(self) -> dict[str, Any]:
        """The index spec (a copy): what goes into manifest["index"]."""
        return json.loads(json.dumps(self._live().spec))

    @property
    def files(self) -> list[str]:
        """Names of the current generation's data files, for the bundle manifest's checksums.

        Neither ``index.json`` (its content goes into manifest["index"]) nor the enrolment
        delta is among them: both change on the device, and a rebuild there must not
        invalidate a (possibly signed) manifest."""
        return list(self._live().spec["checksums"])

    def remove_unused_files(self) -> list[str]:
        """Delete index files of earlier generations (and leftovers of interrupted builds)
        that neither the current spec nor the bundle's manifest.json lists; returns their
        names. Call it after rewriting the manifest for a new generation. Assumes no
        other process is building into this directory."""
        return _remove_unused(self.directory, self._live().spec)

    @property
    def catalog(self) -> Catalog:
        """The indexed catalog (without items enrolled since the last rebuild)."""
        return self._live().catalog

    @property
    def enrolled(self) -> tuple[CatalogItem, ...]:
        """Items enrolled on the device and not yet folded into the index."""
        return tuple(self._live().delta.items().values())

    @property
    def dimension(self) -> int:
        """Length of the embeddings this index takes (before any PCA)."""
        return int(self._live().spec["embedding_dimension"])

    def search(self, embedding: np.ndarray, k: int = 5, min_similarity: float | None = None) -> list[Match]:
        """The ``k`` catalog items most similar to one (D,) embedding, best first.

        Items under ``min_similarity`` are dropped, so an empty list means "unknown".
        Raises IndexMismatchError if the embedding's length is not the index's.
        """
        return self.search_batch(self._query_matrix(embedding, single=True), k, min_similarity)[0]

    def search_batch(self, embeddings: np.ndarray, k: int = 5,
                     min_similarity: float | None = None) -> list[list[Match]]:
        """`search` for each row of a (B, D) matrix."""
        if k < 1:
            raise ConfigError(f"k must be >= 1, got {k}")
        st = self._live()
        queries = self._query_matrix(embeddings, single=False)
        if self._projection is not None:
            queries = self._projection.apply(queries)
        delta_hits = (st.delta_search.query_batch(queries, len(st.delta_search))
                      if st.delta_search is not None else [None] * len(queries))
        out = []
        for q, hits in zip(queries, delta_hits):
            best = self._main_best(st, q, k)
            if hits is not None:
                _group_best(hits[0], hits[1], st.delta.item_of_row.__getitem__, best)
            ranked = sorted(best.items(), key=lambda kv: (-kv[1], kv[0]))[:k]
            out.append([self._match(st, item_id, s) for item_id, s in ranked
                        if min_similarity is None or s >= min_similarity])
        return out

    def _main_best(self, st: _State, q: np.ndarray, k: int) -> dict[str, float]:
        """Best similarity per item from the main index, for at least k items (or all).

        Asks for k rows per item slot up to the most vectors an item has, and more only
        when duplicates of one item crowd the first results."""
        total = len(st.rows)
        n = min(total, k * min(st.per_item, 4))
        catalog, rows_map = st.catalog, st.rows
        while True:
            rows, sims = st.backend.query(q, n)
            best: dict[str, float] = {}
            _group_best(rows, sims, lambda r: catalog[int(rows_map[r])].item_id, best)
            if len(best) >= k or n >= total:
                return best
            n = min(total, n * 4)

    @staticmethod
    def _match(st: _State, item_id: str, similarity: float) -> Match:
        it = st.item(item_id)
        return Match(item_id=it.item_id, sku=it.sku, label=it.label, name=it.name,
                     similarity=float(similarity))

    def _query_matrix(self, x: np.ndarray, single: bool) -> np.ndarray:
        a = np.asarray(x)
        if single and a.ndim != 1:
            raise ConfigError(f"search takes one (D,) embedding, got shape {a.shape}; use search_batch")
        d = self.dimension
        if a.shape[-1:] != (d,):
            got = a.shape[-1] if a.ndim else 0
            raise IndexMismatchError(f"embedding has {got} values (shape {a.shape}), the index expects {d} "
                                     f"(the embedding length of model {self._live().spec['model_sha256'][:12]}...)")
        return unit_rows(a, "query embedding")

    # ---- enrolment --------------------------------------------------------------------

    def enroll(self, item: CatalogItem, embeddings: np.ndarray) -> None:
        """Add an item (or more photos of an enrolled or catalog item with the same record),
        searchable at once and kept across restarts in ``enrolled.npz``.

        Args:
            item: the item record; its id must be new, or name an item with an equal record.
            embeddings: (n, D) or (D,) embeddings of its photos, from this index's model.

        Raises:
            ConfigError: the id exists with a different record, or the embeddings are invalid.
            IndexMismatchError: the embeddings' length is not the index's.
        """
        unit = self._query_matrix(np.atleast_2d(embeddings), single=False)
        if self._projection is not None:
            unit = self._projection.apply(unit)
        with self._lock:
            st = self._live()
            known = st.catalog.get(item.item_id) if item.item_id in st.catalog else st.delta.item(item.item_id)
            if known is not None and known != item:
                raise ConfigError(f"item_id {item.item_id!r} is already in the catalog as {known}; "
                                  f"enrol more photos with the same record, or choose a new item_id")
            delta = st.delta.added(item, unit, after_seq=st.spec["folded_through"])
            delta.save(self.directory / ENROLLED_FILE)
            self._state = replace(st, delta=delta, delta_search=ExactSearch(delta.matrix))

    # ---- rebuilding -------------------------------------------------------------------

    def rebuild(self, progress: Callable[[str], None] | None = None) -> dict[str, Any]:
        """Fold the enrolled items into a new index generation and swap it in.

        New files are written beside the current ones; the spec is replaced last
        (atomically), then files of older generations are removed unless the bundle's
        manifest.json lists them (so the bundle still verifies; processes that have them
        mapped keep reading them). Queries keep using the old index until the swap; items
        enrolled meanwhile stay in the delta. A caller that rewrites the manifest with the
        new `spec` and `files` then calls `remove_unused_files`.

        Returns:
            The new spec.

        Raises:
            ConfigError: another rebuild of this index is running.
        """
        with self._lock:
            if self._rebuilding:
                raise ConfigError(f"{self.directory}: a rebuild of this index is already running")
            self._rebuilding = True
            st = self._live()
        try:
            delta = st.delta
            new_items = [it for it in delta.items().values() if it.item_id not in st.catalog]
            catalog = st.catalog.extended(new_items)
            main = (st.backend.vectors() if isinstance(st.backend, AnnoyBackend)
                    else np.array(st.backend.vectors, dtype=np.float32))
            vectors = np.concatenate([main, delta.matrix]) if len(delta) else main
            rows = np.concatenate([st.rows, np.asarray([catalog.position(i) for i in delta.item_of_row],
                                                       dtype=np.int32)])
            old = st.spec
            options = TuningOptions(**old["options"])
            spec = _write_generation(self.directory, old["generation"] + 1, vectors, rows, catalog,
                                     self._projection, old["model_sha256"], old["embedding_dimension"], options,
                                     None, folded_through=delta.last_seq or old["folded_through"],
                                     progress=progress, kept_pca=old["pca"] and old["pca"]["file"])
            new_state, _ = _open_state(self.directory, spec, projection=self._projection, delta=EnrolledDelta(
                old["model_sha256"], int(old["dimension"])))
            with self._lock:
                _commit_spec(self.directory, spec)
                remaining = self._live().delta.after(spec["folded_through"])
                remaining.save(self.directory / ENROLLED_FILE)
                self._state = replace(new_state, delta=remaining, delta_search=(
                    ExactSearch(remaining.matrix) if len(remaining) else None))
            return json.loads(json.dumps(spec))
        finally:
            with self._lock:
                self._rebuilding = False

    def rebuild_in_background(self, progress: Callable[[str], None] | None = None) -> "Future[dict[str, Any]]":
        """`rebuild` in a new (non-daemon) thread; the future gives the new spec or the error."""
        future: Future[dict[str, Any]] = Future()
        future.set_running_or_notify_cancel()

        def run() -> None:
            try:
                future.set_result(self.rebuild(progress))
            except BaseException as e:  # handed to whoever waits on the future
                future.set_exception(e)

        threading.Thread(target=run, name=f"shelfsight-rebuild-{self.directory.name}").start()
        return future

    # ---- lifetime ---------------------------------------------------------------------

    def close(self) -> None:
        """Drop the index (the memory map goes when no query uses it any more); idempotent."""
        self._state = None

    def __enter__(self) -> "CatalogIndex":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        if self._state is None:
            return f"CatalogIndex({self.directory}, closed)"
        s = self._state.spec
        return (f"CatalogIndex({self.directory}, backend={s['backend']}, {s['item_count']} items, "
                f"{s['vector_count']} vectors, {len(self._state.delta)} enrolments)")

    def _live(self) -> _State:
        st = self._state
        if st is None:
            raise ConfigError(f"the index in {self.directory} is closed")
        return st


# ---- files ---------------------------------------------------------------------------


def _names(generation: int) -> dict[str, str]:
    tag = "" if generation == 0 else f".{generation}"
    return {"ann": f"index{tag}.ann", "vectors": f"index_vectors{tag}.npy", "rows": f"index_rows{tag}.npy",
            "catalog": f"catalog{tag}.json", "pca": f"pca{tag}.npz"}


def _row_positions(item_ids: Sequence[str], catalog: Catalog, n: int) -> np.ndarray:
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


def _write_generation(out: Path, generation: int, unit: np.ndarray, rows: np.ndarray, catalog: Catalog,
                      projection: Projection | None, model_sha256: str, embedding_dimension: int,
                      options: TuningOptions, queries: np.ndarray | None, folded_through: int,
                      progress: Callable[[str], None] | None, kept_pca: str | None = None) -> dict[str, Any]:
    """Write one generation's data files (not the spec) and return its spec. ``kept_pca``
    names the projection file of the previous generation when it stays the same."""
    t0 = time.perf_counter()
    names = _names(generation)
    written: list[str] = []
    try:
        report = tune(unit, out / names["ann"], options, queries, progress)
        if report.backend == "annoy":
            written.append(names["ann"])
        else:
            _save_npy(out / names["vectors"], unit)
            written.append(names["vectors"])
        _save_npy(out / names["rows"], rows)
        written.append(names["rows"])
        catalog.save(out / names["catalog"])
        written.append(names["catalog"])
        if projection is not None and not kept_pca:
            projection.save(out / names["pca"])
            written.append(names["pca"])
    except BaseException:
        for name in written:
            (out / name).unlink(missing_ok=True)
        raise
    pca_file = kept_pca or (names["pca"] if projection is not None else None)
    checksums = {name: file_entry(out / name) for name in (*written, *([kept_pca] if kept_pca else []))}
    return _spec(report, generation, names, checksums, unit, catalog, projection, pca_file, model_sha256,
                 embedding_dimension, options, folded_through, time.perf_counter() - t0)


def _spec(report: TuningReport, generation: int, names: dict[str, str], checksums: dict[str, Any],
          unit: np.ndarray, catalog: Catalog, projection: Projection | None,
          pca_file: str | None, model_sha256: str, embedding_dimension: int, options: TuningOptions, folded_through: int,
          seconds: float) -> dict[str, Any]:
    annoy = report.backend == "annoy"
    return {
        "format": FORMAT, "version": VERSION,
        "backend": report.backend, "backend_reason": report.reason,
        "metric": METRIC if annoy else "cosine", "similarity": "cosine",
        "dimension": int(unit.shape[1]), "embedding_dimension": int(embedding_dimension),
        "vector_count": int(unit.shape[0]), "item_count": len(catalog),
        "model_sha256": model_sha256,
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
        "tuning": report.to_dict(), "options": options.to_dict(),
        "generation": generation, "folded_through": int(folded_through),
        "built_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def _commit_spec(out: Path, spec: dict[str, Any]) -> None:
    """Write the spec atomically (the commit point), then remove files no longer used."""
    write_text(out / SPEC_FILE, json.dumps(spec, indent=1) + "\n")
    _remove_unused(out, spec)


def _remove_unused(directory: Path, spec: dict[str, Any]) -> list[str]:
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


def _read_spec(directory: Path) -> dict[str, Any]:
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
    required = ("backend", "dimension", "embedding_dimension", "vector_count", "item_count", "model_sha256",
                "files", "checksums", "generation", "folded_through", "options", "k")
    missing = [key for key in required if key not in spec]
    if missing:
        raise IndexMismatchError(f"{path}: index spec lacks {', '.join(missing)}")
    return spec


def _read_spec_quietly(directory: Path) -> dict[str, Any] | None:
    try:
        return _read_spec(directory)
    except IndexMismatchError:
        return None


def _check_files(directory: Path, spec: dict[str, Any], verify: bool) -> None:
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


def _open_state(directory: Path, spec: dict[str, Any], projection: Projection | None = None,
                delta: EnrolledDelta | None = None) -> tuple[_State, Projection | None]:
    """Open a generation's files (sizes already checked) and check them against the spec."""
    files, dim, n = spec["files"], int(spec["dimension"]), int(spec["vector_count"])
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
    if spec["backend"] == "annoy":
        backend: AnnoyBackend | ExactSearch = AnnoyBackend(directory / files["ann"], dim, n,
                                                           int(spec["search_k"]), int(spec["k"]))
    elif spec["backend"] == "exact":
        vectors = _load_npy(directory / files["vectors"], mmap=True)
        if vectors.dtype != np.float32 or vectors.shape != (n, dim):
            raise IndexMismatchError(f"{directory}: vectors {files['vectors']} are {vectors.dtype} "
                                     f"{vectors.shape}, the index spec says float32 ({n}, {dim})")
        backend = ExactSearch(vectors)
    else:
        raise IndexMismatchError(f"{directory}: index backend {spec['backend']!r}, expected 'annoy' or 'exact'")
    if spec.get("pca") and projection is None:
        projection = Projection.load(directory / spec["pca"]["file"])
    expected = (int(spec["embedding_dimension"]), dim) if spec.get("pca") else None
    got = None if projection is None else (projection.input_dimension, projection.output_dimension)
    if got != expected:
        raise IndexMismatchError(f"{directory}: PCA projection {got} (in, out), the index spec says {expected}")
    if delta is None:
        delta = _load_delta(directory, spec)
    state = _State(spec=spec, catalog=catalog, rows=rows, backend=backend, per_item=int(counts.max()),
                   delta=delta, delta_search=ExactSearch(delta.matrix) if len(delta) else None)
    return state, projection


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

"""Visual search of the catalog: embedding in, most similar catalog items out.

    index = CatalogIndex.build(vectors, item_ids, catalog, bundle_dir, model_sha256, IndexOptions(pca_dim=64))
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
    enrolled.npz      items enrolled on the device (device state, not in the manifest:
                      sealed with the device's key instead, see `seal`)

Later generations (a rebuild, or a build over an existing index) name their files
``index.1.ann``, ``catalog.1.json``, ...; ``index.json`` always names the current ones.

The spec and the file names are in `spec`, writing and opening a generation in
`generations`, the backend choice in `tuning`; this module is the index as a whole.
"""
from __future__ import annotations

import json
import math
import re
import threading
from concurrent.futures import Future
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from shelfsight.bundle import MANIFEST, check_index_covered
from shelfsight.errors import BundleError, ConfigError, IndexMismatchError

from .enroll import EnrolledDelta
from .generations import IndexState, fold_delta, open_state, row_positions, write_generation
from .items import Catalog, CatalogItem
from .projection import Projection, fit_projection
from .spec import (ENROLLED_FILE, Generation, check_files, commit_spec, read_spec, read_spec_quietly, rebuilt_here,
                   remove_unused, seal_spec)
from .tuning import TuningOptions
from .vectors import ExactSearch, unit_rows

_SHA256 = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class IndexOptions:
    """How `CatalogIndex.build` indexes the catalog.

    Attributes:
        tuning: the backend policy and Annoy's tuning (target recall@k against exact search,
            seed, size limits such as ``max_index_mb``; see `TuningOptions`).
        pca_dim: project the embeddings to this many dimensions (fitted on the catalog
            vectors) first; None keeps them as they are.
    """

    tuning: TuningOptions = field(default_factory=TuningOptions)
    pca_dim: int | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.tuning, TuningOptions):
            raise ConfigError(f"index option tuning must be TuningOptions, got {type(self.tuning).__name__}")
        if self.pca_dim is not None and (isinstance(self.pca_dim, bool) or not isinstance(self.pca_dim, int)):
            raise ConfigError(f"pca_dim must be a whole number or None, got {self.pca_dim!r}")


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


class CatalogIndex:
    """The catalog's search index: an Annoy file or exact vectors, the item map, the
    enrolment delta, and the facts that tie them to one model. Create with `build` or
    `load`; thread-safe (queries never wait; enrol and rebuild serialise)."""

    def __init__(self, directory: Path, state: IndexState, projection: Projection | None):
        self.directory = Path(directory)
        self._state: IndexState | None = state
        self._projection = projection
        self._lock = threading.Lock()
        self._rebuilding = False

    # ---- building ---------------------------------------------------------------------

    @classmethod
    def build(cls, vectors: np.ndarray, item_ids: Sequence[str], catalog: Catalog, out_dir: str | Path,
              model_sha256: str, options: IndexOptions | None = None, *, queries: np.ndarray | None = None,
              progress: Callable[[str], None] | None = None) -> "CatalogIndex":
        """Index catalog vectors and write every file into ``out_dir`` (spec last).

        Args:
            vectors: (N, D) embeddings of the catalog images, made by the model ``model_sha256``.
            item_ids: (N,) the catalog item each row belongs to.
            catalog: every item, each with at least one row.
            out_dir: directory (usually the bundle root) to write into.
            model_sha256: sha256 of the model file that produced ``vectors``.
            options: backend, tuning and PCA (default `IndexOptions()`).
            queries: held-out (Q, D) embeddings (e.g. validation images) to tune with;
                default: a held-out sample of ``vectors``.
            progress: called with one line per tuning step.

        Raises:
            ConfigError: bad vectors, ids not in the catalog, items without vectors, bad options,
                or items enrolled in ``out_dir`` that the new catalog lacks (they would be lost).
        """
        options = options or IndexOptions()
        if not isinstance(model_sha256, str) or not _SHA256.fullmatch(model_sha256):
            raise ConfigError(f"model_sha256 must be 64 lowercase hex digits, got {model_sha256!r}")
        unit = unit_rows(vectors, "catalog vectors")
        embedding_dimension = unit.shape[1]
        rows = row_positions(item_ids, catalog, unit.shape[0])
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        previous = read_spec_quietly(out)
        folded = previous["folded_through"] if previous else 0
        delta = EnrolledDelta.load(out / ENROLLED_FILE)
        lost = sorted(set(delta.after(folded).items()) - {it.item_id for it in catalog}) if delta else []
        if lost:
            raise ConfigError(f"{out}: {len(lost)} enrolled items are not in the new catalog "
                              f"({', '.join(lost[:5])}); add them (re-embedded) or move {ENROLLED_FILE} away")
        projection = fit_projection(unit, options.pca_dim) if options.pca_dim is not None else None
        query_unit = None if queries is None else unit_rows(queries, "tuning queries", unit.shape[1])
        if projection is not None:
            unit = projection.apply(unit)
            query_unit = None if query_unit is None else projection.apply(query_unit)
        gen = Generation(number=previous["generation"] + 1 if previous else 0, unit=unit, rows=rows,
                         catalog=catalog, projection=projection, model_sha256=model_sha256,
                         embedding_dimension=embedding_dimension, tuning=options.tuning,
                         folded_through=max(folded, delta.last_seq if delta else 0))
        commit_spec(out, write_generation(out, gen, query_unit, progress))
        if delta:
            (out / ENROLLED_FILE).unlink(missing_ok=True)
        return cls._open(out, read_spec(out), verify=False)  # not yet in the manifest: the caller adds it

    # ---- loading ----------------------------------------------------------------------

    @classmethod
    def load(cls, directory: str | Path, model_sha256: str, dimension: int | None = None,
             verify: bool = True) -> "CatalogIndex":
        """Open the index in ``directory`` (a bundle root) for the model ``model_sha256``.

        Args:
            dimension: the model's embedding length, checked against the index when given.
            verify: also check every file's sha256 (sizes are always checked; skip the
                hashing when the bundle loader has just verified the same files).

        In a bundle root (a manifest.json beside it), index.json must be covered by the
        manifest (`shelfsight.bundle.check_index_covered`); the files it names are checked
        against its sha256s, and the enrolment delta against the device's seal.

        Raises:
            BundleError: index.json is not covered by the bundle's manifest.
            IndexMismatchError: no or unreadable spec, a different model, a different
                embedding length, a missing, truncated or altered file, a catalog or row map
                that does not match the spec's counts, or an unreadable or foreign enrolment delta.
        """
        directory = Path(directory)
        manifest = directory / MANIFEST
        if manifest.is_file():
            try:
                check_index_covered(directory, json.loads(manifest.read_bytes()), rebuilt_here)
            except (UnicodeDecodeError, json.JSONDecodeError, AttributeError, KeyError, TypeError) as e:
                raise BundleError(f"{manifest}: not a readable manifest ({type(e).__name__}: {e})") from None
        spec = read_spec(directory)
        if spec["model_sha256"] != model_sha256:
            raise IndexMismatchError(
                f"{directory}: the index was built from model sha256 {spec['model_sha256'][:12]}..., this "
                f"bundle's model is {str(model_sha256)[:12]}...; re-embed the catalog (shelfsight index --rebuild)")
        if dimension is not None and spec["embedding_dimension"] != dimension:
            raise IndexMismatchError(f"{directory}: the index holds {spec['embedding_dimension']}-value "
                                     f"embeddings, the model gives {dimension}")
        return cls._open(directory, spec, verify)

    @classmethod
    def _open(cls, directory: Path, spec: dict[str, Any], verify: bool) -> "CatalogIndex":
        check_files(directory, spec, verify)
        state, projection = open_state(directory, spec)
        return cls(directory, state, projection)

    # ---- querying ---------------------------------------------------------------------

    @property
    def spec(self) -> dict[str, Any]:
        """The index spec (a copy): what goes into manifest["index"]."""
        return json.loads(json.dumps(self._live().spec))

    @property
    def files(self) -> list[str]:
        """Names of the current generation's data files, for the bundle manifest's checksums
        (`Bundle.with_index` adds index.json itself). The enrolment delta is not among them:
        it is device state, sealed by the device (`seal`)."""
        return list(self._live().spec["checksums"])

    def remove_unused_files(self) -> list[str]:
        """Delete index files of earlier generations (and leftovers of interrupted builds)
        that neither the current spec nor the bundle's manifest.json lists; returns their
        names. Call it after rewriting the manifest for a new generation. Assumes no
        other process is building into this directory."""
        return remove_unused(self.directory, self._live().spec)

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

    def _main_best(self, st: IndexState, q: np.ndarray, k: int) -> dict[str, float]:
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
    def _match(st: IndexState, item_id: str, similarity: float) -> Match:
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
            vectors, rows, catalog = fold_delta(st)
            old = st.spec
            gen = Generation(number=old["generation"] + 1, unit=vectors, rows=rows, catalog=catalog,
                             projection=self._projection, model_sha256=old["model_sha256"],
                             embedding_dimension=old["embedding_dimension"],
                             tuning=TuningOptions(**old["options"]),
                             folded_through=delta.last_seq or old["folded_through"],
                             kept_pca=old["pca"] and old["pca"]["file"])
            spec = seal_spec(write_generation(self.directory, gen, None, progress))  # device state until the
            # manifest lists it (`shelfsight index --rebuild`): a signed manifest stays untouched
            new_state, _ = open_state(self.directory, spec, projection=self._projection, delta=EnrolledDelta(
                old["model_sha256"], int(old["dimension"])))
            with self._lock:
                commit_spec(self.directory, spec)
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

    def _live(self) -> IndexState:
        st = self._state
        if st is None:
            raise ConfigError(f"the index in {self.directory} is closed")
        return st

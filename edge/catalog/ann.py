"""Annoy (angular) over unit vectors: build to a file, open it memory-mapped, query.

Annoy stores integer ids only and records neither its dimension nor its tree count; the
caller (`search.CatalogIndex`) keeps those facts and the id -> item map beside the file.
`AnnoyBackend.open` memory-maps the file (``prefault=False``), so every process that
opens the same index shares one copy of it in the page cache.

Annoy publishes no wheels (it needs a compiler), so it is the optional [annoy] extra.
Without it, `open_ann` — the one place the choice is made — reads the item vectors straight
out of the same file (an angular node is n_descendants, two children, the vector; items
are nodes 0..n-1) and searches them exactly: recall 1.0, the same answers as a fully
searched Annoy index, at exact-search speed. Building an Annoy index needs annoy.
"""
from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np

from shelfsight.atomic import write_via
from shelfsight.errors import ConfigError, IndexMismatchError

from .vectors import ExactSearch, cosine_from_angular

try:
    from annoy import AnnoyIndex
except ImportError:  # a device without the [annoy] extra: see open_ann
    AnnoyIndex = None

log = logging.getLogger(__name__)

METRIC = "angular"


def annoy_node_bytes(dimension: int) -> int:
    """Bytes of one Annoy angular node: n_descendants + 2 children (int32) + float32 vector."""
    return 12 + 4 * dimension


def build_annoy(unit_vectors: np.ndarray, n_trees: int, path: Path, seed: int = 0, n_jobs: int = 1) -> int:
    """Build an angular index of (N, D) unit vectors with ids 0..N-1 and save it to ``path``.

    The file is written atomically (`shelfsight.atomic`), so a reader never sees half a
    file. Returns the file size in bytes.
    """
    if n_trees < 1:
        raise ConfigError(f"n_trees must be >= 1, got {n_trees}")
    if AnnoyIndex is None:
        raise ConfigError("building an Annoy index needs annoy, which is not installed: "
                          "pip install 'shelfsight[annoy]' (or index with --backend exact)")
    n, d = unit_vectors.shape
    index = AnnoyIndex(d, METRIC)
    index.set_seed(int(seed))
    for i in range(n):
        index.add_item(i, unit_vectors[i])
    index.build(int(n_trees), n_jobs=int(n_jobs))
    path = Path(path)
    try:
        write_via(path, lambda tmp: index.save(str(tmp)))
    finally:
        index.unload()
    return path.stat().st_size


def annoy_available() -> bool:
    return AnnoyIndex is not None


def open_ann(path: Path, dimension: int, count: int, search_k: int, k: int = 10) -> "AnnoyBackend | ExactSearch":
    """A saved Annoy index: through annoy where installed, else its vectors searched exactly."""
    if AnnoyIndex is not None:
        return AnnoyBackend(path, dimension, count, search_k, k)
    log.info("annoy is not installed: searching %s exactly (%d vectors)", path, count)
    return ExactSearch(read_annoy_items(path, dimension, count))


def read_annoy_items(path: Path, dimension: int, count: int) -> np.ndarray:
    """The (count, dimension) item vectors of an angular Annoy file, memory-mapped, without annoy.

    Raises:
        IndexMismatchError: the file is missing, not a whole number of nodes, or its roots
            (the last nodes) say it holds another number of items.
    """
    path = Path(path)
    node_bytes = _check_size(path, dimension)
    nodes = np.memmap(path, dtype=np.float32, mode="r").reshape(-1, node_bytes // 4)
    found = int(nodes[-1:, :1].view(np.int32)[0, 0])  # a root's n_descendants is the item count
    if found != count or len(nodes) < count:
        raise IndexMismatchError(f"{path}: holds {found} vectors, the index spec says {count}")
    return nodes[:count, 3:]


def _check_size(path: Path, dimension: int) -> int:
    try:
        size = path.stat().st_size
    except OSError as e:
        raise IndexMismatchError(f"{path}: Annoy index not readable ({e.strerror})") from None
    node = annoy_node_bytes(dimension)
    if size == 0 or size % node:
        raise IndexMismatchError(
            f"{path}: {size} bytes is not a whole number of {node}-byte nodes of a "
            f"{dimension}-dimensional angular index (truncated, or built for another dimension)")
    return node


class AnnoyBackend:
    """A saved Annoy index opened read-only (memory-mapped).

    Args:
        path: the .ann file.
        dimension: vector length the file was built with.
        count: number of vectors (ids 0..count-1) it must hold.
        search_k: nodes inspected for ``k`` results (scaled up linearly for more results,
            as Annoy's own default ``n_trees * n`` is).
        k: the result count ``search_k`` was tuned for.

    Raises:
        IndexMismatchError: the file is missing, its size is not a whole number of nodes of
            this dimension (truncated or built for another dimension), Annoy cannot load it,
            or it holds a different number of vectors.
    """

    def __init__(self, path: Path, dimension: int, count: int, search_k: int, k: int = 10):
        self.path = Path(path)
        self.dimension, self.search_k, self.k = int(dimension), int(search_k), int(k)
        _check_size(self.path, self.dimension)
        self._index = AnnoyIndex(self.dimension, METRIC)
        try:
            self._index.load(str(self.path), prefault=False)
        except OSError as e:
            raise IndexMismatchError(f"{self.path}: Annoy cannot load it ({e})") from None
        found = self._index.get_n_items()
        if found != count:
            self._index.unload()
            raise IndexMismatchError(f"{self.path}: holds {found} vectors, the index spec says {count}")
        self.n_trees = self._index.get_n_trees()

    def __len__(self) -> int:
        return self._index.get_n_items()

    def effective_search_k(self, n: int) -> int:
        return self.search_k * max(1, math.ceil(n / self.k))

    def query(self, unit_query: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
        """The ``n`` (approximately) most similar rows to one unit vector: (rows, cosines)."""
        rows, dist = self._index.get_nns_by_vector(unit_query, int(n), search_k=self.effective_search_k(n),
                                                    include_distances=True)
        return np.asarray(rows, np.int64), cosine_from_angular(np.asarray(dist, np.float32))

    def query_batch(self, unit_queries: np.ndarray, n: int) -> list[tuple[np.ndarray, np.ndarray]]:
        return [self.query(q, n) for q in unit_queries]

    def close(self) -> None:
        """Unmap the file now. Only when no other thread may still query this object;
        otherwise drop the reference and let it unmap when the last user is done."""
        self._index.unload()

    def vectors(self) -> np.ndarray:
        """All stored vectors as float32 (N, D), in id order (for rebuilding)."""
        get = self._index.get_item_vector
        return np.asarray([get(i) for i in range(len(self))], dtype=np.float32).reshape(-1, self.dimension)

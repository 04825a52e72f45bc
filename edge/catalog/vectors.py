"""Embedding matrices and exact cosine search, as plain numpy.

Every vector the search layer stores or queries with is float32, finite and of unit
length, so that cosine similarity is a dot product and Annoy's angular distance ``d``
maps back to it exactly: ``cos = 1 - d**2 / 2``.
"""
from __future__ import annotations

import numpy as np

from shelfsight.embeddings import MIN_NORM, l2_normalize
from shelfsight.errors import ConfigError

_QUERY_CHUNK = 256  # queries per matrix product in batch search: bounds the (B, N) score matrix


def as_matrix(x: np.ndarray, what: str = "vectors", dim: int | None = None) -> np.ndarray:
    """``x`` as a C-contiguous float32 (n, d) matrix; a single (d,) vector becomes (1, d).

    Raises:
        ConfigError: not 1-D or 2-D, empty, non-finite values, or ``dim`` given and different.
    """
    a = np.asarray(x, dtype=np.float32)
    if a.ndim == 1:
        a = a[None, :]
    if a.ndim != 2 or a.shape[0] == 0 or a.shape[1] == 0:
        raise ConfigError(f"{what}: expected a non-empty (n, d) matrix, got shape {np.shape(x)}")
    if dim is not None and a.shape[1] != dim:
        raise ConfigError(f"{what}: {a.shape[1]} values per vector, expected {dim}")
    if not np.all(np.isfinite(a)):
        raise ConfigError(f"{what}: contains NaN or infinite values")
    return np.ascontiguousarray(a)


def unit_rows(x: np.ndarray, what: str = "vectors", dim: int | None = None) -> np.ndarray:
    """Rows of ``x`` scaled to unit L2 norm (float32, C-contiguous).

    Raises:
        ConfigError: as `as_matrix`, or a row of zero length (it has no direction to search by).
    """
    a = as_matrix(x, what, dim)
    zero = np.flatnonzero(np.linalg.norm(a, axis=1) < MIN_NORM)
    if zero.size:
        raise ConfigError(f"{what}: row {int(zero[0])} has zero length; an embedding needs a direction")
    return np.ascontiguousarray(l2_normalize(a, axis=1), dtype=np.float32)


def cosine_from_angular(distance: np.ndarray | float) -> np.ndarray:
    """Cosine similarity of unit vectors from Annoy's angular distance sqrt(2 - 2 cos)."""
    d = np.asarray(distance, dtype=np.float32)
    return 1.0 - 0.5 * d * d


def top_rows(similarities: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``n`` highest similarities of a 1-D array, best first (ties: lower row first).

    Returns:
        (rows int64, similarities float32), each of length min(n, len(similarities)).
    """
    s = np.asarray(similarities, dtype=np.float32)
    n = min(int(n), s.shape[0])
    if n <= 0:
        return np.empty(0, np.int64), np.empty(0, np.float32)
    if n < s.shape[0]:
        part = np.argpartition(-s, n - 1)[:n]
        part.sort()  # row order first, so that the stable sort below breaks ties by row
    else:
        part = np.arange(s.shape[0])
    order = part[np.argsort(-s[part], kind="stable")]
    return order.astype(np.int64), s[order]


class ExactSearch:
    """Brute-force cosine search over unit-length float32 rows (N, D).

    The matrix may be a read-only memory map (np.load(..., mmap_mode="r")), which several
    processes then share like an Annoy file.
    """

    def __init__(self, vectors: np.ndarray):
        if vectors.ndim != 2 or vectors.dtype != np.float32:
            raise ConfigError(f"exact search needs a float32 (N, D) matrix, got {vectors.dtype} {vectors.shape}")
        self.vectors = vectors

    @property
    def dimension(self) -> int:
        return int(self.vectors.shape[1])

    def __len__(self) -> int:
        return int(self.vectors.shape[0])

    def query(self, unit_query: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
        """The ``n`` most similar rows to one unit vector (D,): (rows, cosines), best first."""
        return top_rows(self.vectors @ unit_query, n)

    def query_batch(self, unit_queries: np.ndarray, n: int) -> list[tuple[np.ndarray, np.ndarray]]:
        """`query` for each row of a (B, D) matrix, computed in chunks of matrix products."""
        out: list[tuple[np.ndarray, np.ndarray]] = []
        for start in range(0, unit_queries.shape[0], _QUERY_CHUNK):
            scores = unit_queries[start:start + _QUERY_CHUNK] @ self.vectors.T
            out.extend(top_rows(row, n) for row in scores)
        return out

"""Optional PCA projection of embeddings to fewer dimensions, for a smaller index.

The projection is fitted on the catalog's unit vectors without centring them: the top
eigenvectors of the second-moment matrix ``X^T X`` keep as much of each vector (and so
of every dot product) as any linear map to that dimension can, which is what cosine
search in the projected space needs. Projected vectors are re-normalised to unit length.
Stored as a small .npz beside the index; its sha256 is recorded in the index spec.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from shelfsight.atomic import write_with
from shelfsight.errors import ConfigError, IndexMismatchError

from .vectors import unit_rows


@dataclass(frozen=True)
class Projection:
    """A linear map from D to P dimensions followed by re-normalisation.

    Attributes:
        components: float32 (D, P), orthonormal columns, strongest direction first.
        retained: share of the catalog vectors' energy (sum of squares) kept, 0..1.
    """

    components: np.ndarray
    retained: float

    def __post_init__(self) -> None:
        c = self.components
        if c.ndim != 2 or c.dtype != np.float32 or not 0 < c.shape[1] <= c.shape[0]:
            raise ConfigError(f"projection components must be float32 (D, P) with 0 < P <= D, "
                              f"got {c.dtype} {c.shape}")

    @property
    def input_dimension(self) -> int:
        return int(self.components.shape[0])

    @property
    def output_dimension(self) -> int:
        return int(self.components.shape[1])

    def apply(self, vectors: np.ndarray) -> np.ndarray:
        """Project (n, D) or (D,) vectors to unit-length float32 (n, P)."""
        x = unit_rows(vectors, "vectors to project", self.input_dimension)
        return unit_rows(x @ self.components, "projected vectors")

    def save(self, path: Path) -> None:
        """Write the projection as .npz atomically (`shelfsight.atomic`)."""
        write_with(path, lambda f: np.savez(f, components=self.components, retained=np.float64(self.retained)))

    @classmethod
    def load(cls, path: Path) -> "Projection":
        """Read a projection written by `save`.

        Raises:
            IndexMismatchError: the file is missing, unreadable or not a projection.
        """
        try:
            with np.load(path, allow_pickle=False) as z:
                return cls(components=np.ascontiguousarray(z["components"]), retained=float(z["retained"]))
        except (OSError, KeyError, ValueError, ConfigError) as e:
            raise IndexMismatchError(f"{path}: not a readable PCA projection ({e})") from None


def fit_projection(vectors: np.ndarray, dim: int) -> Projection:
    """Fit a `Projection` to ``dim`` dimensions on (N, D) catalog vectors (normalised first).

    Raises:
        ConfigError: ``dim`` not in 1..D-1, or fewer vectors than ``dim``.
    """
    x = unit_rows(vectors, "catalog vectors")
    n, d = x.shape
    if not 1 <= dim < d:
        raise ConfigError(f"pca_dim {dim} must be between 1 and {d - 1} (the embedding has {d} values)")
    if n < dim:
        raise ConfigError(f"pca_dim {dim} needs at least {dim} catalog vectors, got {n}")
    second_moment = (x.T.astype(np.float64) @ x.astype(np.float64)) / n
    eigenvalues, eigenvectors = np.linalg.eigh(second_moment)  # ascending
    order = np.argsort(eigenvalues)[::-1][:dim]
    components = np.ascontiguousarray(eigenvectors[:, order], dtype=np.float32)
    retained = float(np.clip(eigenvalues[order].sum() / eigenvalues.sum(), 0.0, 1.0))
    return Projection(components=components, retained=retained)

"""L2 normalisation and cosine similarity of embeddings, plain numpy: the one implementation
every side uses (the runtime, the catalog's strict `unit_rows`, the ONNX import check)."""
from __future__ import annotations

import numpy as np

MIN_NORM = 1e-12  # a vector shorter than this is left as it is (zero stays zero)


def l2_normalize(v: np.ndarray, axis: int = -1) -> np.ndarray:
    """``v`` as float32 scaled to unit L2 norm along ``axis``."""
    v = np.asarray(v, np.float32)
    n = np.linalg.norm(v, axis=axis, keepdims=True)
    return v / np.maximum(n, MIN_NORM)


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cosine similarity of vectors a (..., D) and b (..., D)."""
    return np.sum(l2_normalize(a) * l2_normalize(b), axis=-1)

"""How closely a converted model reproduces its ONNX original, as plain numpy.

Both sides are compared as the bundle gives them: scores as probabilities (softmax applied
to the ONNX logits when the converted model adds one) and unit-norm embeddings.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from shelfsight.embeddings import cosine

# A float32 conversion that differs more than this from onnxruntime is wrong, not imprecise.
FLOAT_MAX_SCORE_DIFF = 1e-3
FLOAT_MIN_COSINE = 0.999


@dataclass(frozen=True)
class Agreement:
    """ONNX (onnxruntime) vs TFLite (edge interpreter) on the same images."""

    images: int
    top1_agreement: float        # share of images with the same top-1 class
    max_abs_score_diff: float    # largest |p_onnx - p_tflite| over all images and classes
    embedding_cosine_min: float
    embedding_cosine_mean: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def faithful(self) -> bool:
        """Close enough for a float32 conversion (see the module constants)."""
        return (self.top1_agreement == 1.0 and self.max_abs_score_diff <= FLOAT_MAX_SCORE_DIFF
                and self.embedding_cosine_min >= FLOAT_MIN_COSINE)

    def summary(self) -> str:
        return (f"top-1 agreement {self.top1_agreement:.3f}, max |score diff| {self.max_abs_score_diff:.2e}, "
                f"embedding cosine min {self.embedding_cosine_min:.4f} / mean {self.embedding_cosine_mean:.4f} "
                f"on {self.images} images")


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax of N x C logits, computed stably in float64."""
    z = logits.astype(np.float64) - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return (e / e.sum(axis=1, keepdims=True)).astype(np.float32)


def looks_like_probabilities(scores: np.ndarray, tolerance: float = 1e-3) -> bool:
    """True when every row is non-negative and sums to 1 (within ``tolerance``)."""
    return bool(scores.min() >= -tolerance and np.all(np.abs(scores.sum(axis=1) - 1.0) <= tolerance))


def agreement(ref_scores: np.ndarray, ref_embedding: np.ndarray, scores: np.ndarray,
              embedding: np.ndarray) -> Agreement:
    """Compare N x C scores and N x D embeddings, rows aligned (embeddings are normalised here)."""
    if ref_scores.shape != scores.shape or ref_embedding.shape != embedding.shape:
        raise ValueError(f"shapes differ: scores {ref_scores.shape} vs {scores.shape}, "
                         f"embedding {ref_embedding.shape} vs {embedding.shape}")
    similarity = cosine(ref_embedding, embedding)
    return Agreement(images=len(scores),
                     top1_agreement=float(np.mean(ref_scores.argmax(1) == scores.argmax(1))),
                     max_abs_score_diff=float(np.max(np.abs(ref_scores.astype(np.float64) - scores))),
                     embedding_cosine_min=float(similarity.min()), embedding_cosine_mean=float(similarity.mean()))

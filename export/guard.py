"""The int8 regression guard: how a quantized model differs from its float original on val."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np


@dataclass(frozen=True)
class GuardReport:
    top1_float: float
    top1_quant: float
    agreement: float               # share of images where both give the same top-1 class
    embedding_cosine_mean: float
    embedding_cosine_min: float
    per_class_drop: dict[str, float]  # points (percent) lost per class, negative = gained
    margin: float
    failing: tuple[str, ...]       # classes that lost more than ``margin`` points

    @property
    def top1_drop_points(self) -> float:
        return 100.0 * (self.top1_float - self.top1_quant)

    def to_dict(self) -> dict[str, Any]:
        return {"top1_float": self.top1_float, "top1_quant": self.top1_quant,
                "top1_drop_points": round(self.top1_drop_points, 3), "top1_agreement": self.agreement,
                "embedding_cosine_mean": self.embedding_cosine_mean,
                "embedding_cosine_min": self.embedding_cosine_min,
                "per_class_drop_points": self.per_class_drop, "margin_points": self.margin,
                "classes_over_margin": list(self.failing)}


def compare(float_scores: np.ndarray, quant_scores: np.ndarray, float_emb: np.ndarray, quant_emb: np.ndarray,
            y_true: np.ndarray, labels: Sequence[str], margin: float = 10.0) -> GuardReport:
    """Compare float and quantized outputs on the same images (rows aligned)."""
    pf, pq = float_scores.argmax(1), quant_scores.argmax(1)
    fe = float_emb / np.maximum(np.linalg.norm(float_emb, axis=1, keepdims=True), 1e-12)
    qe = quant_emb / np.maximum(np.linalg.norm(quant_emb, axis=1, keepdims=True), 1e-12)
    cos = np.sum(fe * qe, axis=1)
    drops = {}
    for c in np.unique(y_true):
        m = y_true == c
        drops[labels[c]] = round(100.0 * (float(np.mean(pf[m] == c)) - float(np.mean(pq[m] == c))), 3)
    failing = tuple(sorted((k for k, v in drops.items() if v > margin), key=lambda k: -drops[k]))
    return GuardReport(float(np.mean(pf == y_true)), float(np.mean(pq == y_true)), float(np.mean(pf == pq)),
                       float(cos.mean()), float(cos.min()), drops, margin, failing)

"""Classification metrics on plain numpy arrays, shared by Keras and TFLite evaluation.

No TensorFlow here: `shelfsight eval` runs the same code for a training run and for a
bundle through the edge interpreter.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .errors import ConfigError
from .lazy import have_optional


def top_k_accuracy(scores: np.ndarray, y_true: np.ndarray, k: int) -> float:
    """Share of rows whose true class is among the k highest scores."""
    if len(y_true) == 0:
        return float("nan")
    k = min(k, scores.shape[1])
    top = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return float(np.mean(np.any(top == y_true[:, None], axis=1)))


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> np.ndarray:
    """num_classes x num_classes counts, rows = true class, columns = predicted class."""
    cm = np.zeros((num_classes, num_classes), np.int64)
    np.add.at(cm, (y_true, y_pred), 1)
    return cm


def per_class(cm: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Precision, recall, F1 and support per class (0 where undefined)."""
    tp = np.diag(cm).astype(np.float64)
    predicted, support = cm.sum(axis=0), cm.sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = np.where(predicted > 0, tp / predicted, 0.0)
        recall = np.where(support > 0, tp / support, 0.0)
        f1 = np.where(precision + recall > 0, 2 * precision * recall / (precision + recall), 0.0)
    return precision, recall, f1, support


def calibrate_threshold(scores: Sequence[float] | np.ndarray, accept_share: float) -> float:
    """The highest threshold that still accepts ``accept_share`` of the given scores.

    Feed it the top-1 class score (or top-1 catalog similarity) of validation images whose
    answer is known; an image scoring under the threshold is then answered "unknown". Both
    the class threshold (`classification_report`) and the search threshold
    (`shelfsight.edge.indexing`) are calibrated here.

    Returns:
        ``t`` such that at least ``ceil(accept_share * n)`` (and at least one) of the scores are >= t.

    Raises:
        ConfigError: no scores, non-finite values, or ``accept_share`` not in (0, 1].
    """
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    if s.size == 0 or not np.all(np.isfinite(s)):
        raise ConfigError(f"calibration needs finite scores, got {s.size} values"
                          + ("" if s.size == 0 else " with NaN or infinity"))
    if not 0.0 < accept_share <= 1.0:
        raise ConfigError(f"accept_share {accept_share} must be in (0, 1]")
    needed = max(1, math.ceil(accept_share * s.size - 1e-9))
    return float(np.sort(s)[::-1][needed - 1])


def hit_rate_at_k(ranked: Sequence[Sequence[Any]], truth: Sequence[Any], ks: Sequence[int] = (1, 5)) -> dict[int, float]:
    """Share of queries whose true answer is among their first k answers, for each k.

    Args:
        ranked: each query's answers, best first (item ids, labels, ...).
        truth: each query's right answer, of the same kind.

    Raises:
        ConfigError: lengths differ, no queries, or a k < 1.
    """
    if len(ranked) != len(truth) or not len(truth) or min(ks, default=0) < 1:
        raise ConfigError(f"hit_rate_at_k: {len(ranked)} results for {len(truth)} answers, ks {tuple(ks)} "
                          f"(expected equal non-zero lengths and ks >= 1)")
    return {k: sum(t in list(r[:k]) for r, t in zip(ranked, truth)) / len(truth) for k in ks}


def classification_report(scores: np.ndarray, y_true: np.ndarray, labels: tuple[str, ...] | list[str],
                          coarse_of: dict[str, str] | None = None, accept_share: float = 0.95) -> dict[str, Any]:
    """Everything `shelfsight eval` reports, as a JSON-ready dict.

    Args:
        scores: N x C class scores (probabilities or logits; only their order matters
            except for the unknown threshold, which is in score units).
        y_true: N class indices into ``labels``.
        coarse_of: fine label -> coarse label, for hierarchical datasets.
        accept_share: share of samples the calibrated "unknown" threshold accepts.
    """
    y_true = np.asarray(y_true, np.int64)
    y_pred = np.argmax(scores, axis=1)
    cm = confusion_matrix(y_true, y_pred, len(labels))
    precision, recall, f1, support = per_class(cm)
    present = support > 0
    top1 = scores[np.arange(len(y_pred)), y_pred]
    report: dict[str, Any] = {
        "samples": int(len(y_true)),
        "top1": top_k_accuracy(scores, y_true, 1),
        "top3": top_k_accuracy(scores, y_true, 3),
        "top5": top_k_accuracy(scores, y_true, 5),
        "macro_f1": float(np.mean(f1[present])) if present.any() else float("nan"),
        "per_class": {labels[i]: {"precision": float(precision[i]), "recall": float(recall[i]),
                                  "f1": float(f1[i]), "support": int(support[i])}
                      for i in range(len(labels)) if support[i] > 0 or cm[:, i].sum() > 0},
        # no samples, no calibration: 0.0 accepts everything (the report says samples: 0)
        "unknown_threshold": calibrate_threshold(top1, accept_share) if len(top1) else 0.0,
        "unknown_accept_share": accept_share,
        "confusion_matrix": cm.tolist(),
    }
    if coarse_of:
        coarse_true = [coarse_of.get(labels[i], labels[i]) for i in y_true]
        coarse_pred = [coarse_of.get(labels[i], labels[i]) for i in y_pred]
        report["coarse_top1"] = float(np.mean([a == b for a, b in zip(coarse_true, coarse_pred)]))
    return report


def plot_confusion(cm: np.ndarray, labels: tuple[str, ...] | list[str], path: Path, title: str = "") -> Path | None:
    """Draw a confusion matrix as PNG (rows normalised to recall); None without matplotlib."""
    if not have_optional("matplotlib", "plots", "confusion plot"):
        return None
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cm = np.asarray(cm, np.float64)
    rows = cm.sum(axis=1, keepdims=True)
    norm = np.divide(cm, rows, out=np.zeros_like(cm), where=rows > 0)
    n = len(labels)
    side = max(6.0, 0.18 * n + 3)
    fig, ax = plt.subplots(figsize=(side, side))
    ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(n), labels, rotation=90, fontsize=max(4, 9 - n // 20))
    ax.set_yticks(range(n), labels, fontsize=max(4, 9 - n // 20))
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title or "confusion matrix (row-normalised)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return Path(path)

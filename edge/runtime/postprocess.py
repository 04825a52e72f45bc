"""Post-processing as plain functions over numpy arrays, and the records they return.

`Recognition` is the one result contract of the device side: the `Recognizer` returns it,
the pipeline's run loop and its events read it, and `FrameRecognizer` is the shape of
anything that makes one from a frame (the Recognizer, the hot-reloading wrapper, test fakes).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol, Sequence

import numpy as np

from .results import result_record


@dataclass(frozen=True)
class Prediction:
    """One class and its score."""

    label: str
    score: float
    index: int


def top_k(scores: np.ndarray, labels: Sequence[str], k: int = 5, threshold: float = 0.0) -> tuple[Prediction, ...]:
    """The k best classes of one score vector, best first, those below ``threshold`` dropped.

    Ties keep the lower class index first (stable order).
    """
    scores = np.asarray(scores, np.float32).reshape(-1)
    if len(scores) != len(labels):
        raise ValueError(f"{len(scores)} scores for {len(labels)} labels")
    k = max(0, min(k, len(scores)))
    order = np.argsort(-scores, kind="stable")[:k]
    return tuple(Prediction(labels[i], float(scores[i]), int(i)) for i in order if scores[i] >= threshold)


@dataclass(frozen=True)
class Recognition:
    """What one frame showed.

    ``label`` is None when the best score is under the bundle's unknown threshold.
    ``reported`` (video and live-stream modes only) is True on the frame where ``label``
    became stable: once per appearance, as the temporal smoothing decides.
    """

    label: str | None
    score: float
    predictions: tuple[Prediction, ...]
    matches: tuple[Any, ...]  # catalog Match records
    latency_ms: float
    reported: bool = False

    def to_dict(self) -> dict[str, Any]:
        """The result record (results.py: the schema classify, search and events share)."""
        return result_record(self.label, self.score, self.predictions, self.matches, self.latency_ms)


class FrameRecognizer(Protocol):
    """Anything that turns one BGR frame into a `Recognition` (what the run loop needs)."""

    def recognize(self, frame_bgr: np.ndarray, source: str = "") -> Recognition: ...

"""Retrieval fusion: the classifier's scores blended with votes of the nearest catalog items.

The two-stage systems of this field (PP-ShiTu, retail detect-then-retrieve) name a product
by its nearest labelled photos; a classifier alone forgets the individual photos it was
trained on. With an index of the training photos (`shelfsight index`, natural photos
included), each class gets a vote from its best-matching item among the ``k`` nearest,
``exp(similarity / temperature)`` normalised over the k, and the answer is
``(1 - weight) * scores + weight * votes``. The constants are one rule for every catalog,
written into the manifest by `shelfsight index` (section ``fusion``) so the device, `eval`
and the benchmark all apply the same one; a bundle without that section classifies as before.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Mapping, Sequence

import numpy as np

from shelfsight.errors import BundleError


@dataclass(frozen=True)
class FusionSpec:
    """How much the nearest catalog items count (manifest section ``fusion``).

    Attributes:
        weight: share of the answer from the catalog votes (0: the classifier alone).
        temperature: softness of the votes over cosine similarities (smaller: the nearest dominates).
        k: catalog items consulted per query.
    """

    weight: float = 0.5
    temperature: float = 0.1
    k: int = 5

    def __post_init__(self) -> None:
        if not (0.0 <= self.weight <= 1.0 and self.temperature > 0 and isinstance(self.k, int) and self.k >= 1):
            raise BundleError(f"fusion {asdict(self)}: expected 0 <= weight <= 1, temperature > 0, k >= 1")

    @classmethod
    def from_manifest(cls, section: Mapping[str, Any] | None) -> "FusionSpec | None":
        if not section:
            return None
        if not isinstance(section, Mapping) or set(section) - {"weight", "temperature", "k"}:
            raise BundleError(f"manifest fusion section {section!r}: expected weight, temperature, k")
        return cls(**section)

    def to_manifest(self) -> dict[str, Any]:
        return asdict(self)


def fuse(scores: np.ndarray, matches: Sequence[Any], class_of: Mapping[str, int], spec: FusionSpec) -> np.ndarray:
    """Scores (C,) blended with the class votes of ``matches`` (catalog `Match`es, best first).

    Matches whose label is not one of the model's classes (enrolled products the classifier
    never saw) do not vote here; search still reports them.
    """
    best: dict[int, float] = {}
    for m in matches[:spec.k]:
        c = class_of.get(m.label)
        if c is not None and m.similarity > best.get(c, -np.inf):
            best[c] = float(m.similarity)
    if not best or spec.weight == 0:
        return np.asarray(scores, np.float32)
    sims = np.array(list(best.values()))
    votes = np.exp((sims - sims.max()) / spec.temperature)
    fused = (1.0 - spec.weight) * np.asarray(scores, np.float64)
    fused[list(best)] += spec.weight * votes / votes.sum()
    return fused.astype(np.float32)


def fuse_batch(scores: np.ndarray, embeddings: np.ndarray, index: Any, labels: Sequence[str],
               spec: FusionSpec) -> np.ndarray:
    """`fuse` for each row of (N, C) scores and their (N, D) embeddings, searching ``index``."""
    class_of = {label: i for i, label in enumerate(labels)}
    found = index.search_batch(embeddings, k=spec.k)
    return np.stack([fuse(s, m, class_of, spec) for s, m in zip(scores, found)]) if len(scores) else scores

"""Accuracy and search quality of a bundle for `shelfsight bench --data`, through the edge runtime.

Top-1/top-5 come from `shelfsight.app.evaluation.evaluate` (the metrics `shelfsight eval`
reports); search recall@k is measured on the bundle's own catalog index. A bare .tflite
has no labels or preprocessing, so it gets neither.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from .targets import BenchTarget

SEARCH_KS = (1, 5)


def accuracy(target: BenchTarget, data: Path, split: str) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """Top-1/top-5 through the edge runtime (shelfsight.app.evaluation) and, with an index,
    search recall@k. (None, None) for a bare .tflite (no labels or preprocessing)."""
    if target.bundle is None:
        return None, None
    from shelfsight.app.evaluation import evaluate

    r = evaluate(target.bundle.root, data, split, progress=False)
    acc = {"data": str(data), "split": split, "samples": r["samples"], "top1": r["top1"], "top5": r["top5"],
           "macro_f1": r["macro_f1"], "coarse_top1": r.get("coarse_top1"), "skipped_images": len(r["skipped"])}
    if not target.bundle.index:
        return acc, None
    return acc, search_recall(target, data, split)


def search_recall(target: BenchTarget, data: Path, split: str) -> dict[str, Any]:
    """Share of the split's images whose true label is among the labels of the first k
    catalog matches (hit rate at k), searching the bundle's own index."""
    from shelfsight.datasets import load_dataset, load_images
    from shelfsight.edge.catalog.search import CatalogIndex
    from shelfsight.metrics import hit_rate_at_k
    from shelfsight.edge.runtime import predict_tflite

    bundle = target.bundle
    loaded = load_images(load_dataset(data, split).samples, bundle.preprocess, bundle.labels, progress=False)
    _, embeddings = predict_tflite(bundle.model_path, loaded.images)
    with CatalogIndex.load(bundle.root, bundle.model_sha256) as index:
        results = index.search_batch(embeddings, k=max(SEARCH_KS))
    truth = [bundle.labels[i] for i in loaded.label_ids]
    hits = hit_rate_at_k([[m.label for m in r] for r in results], truth, SEARCH_KS)
    return {"queries": len(truth), "recall_at_k": {str(k): v for k, v in hits.items()},
            "definition": "share of queries whose true label is among the labels of the first k matches"}

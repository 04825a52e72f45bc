"""`shelfsight eval`: the same metrics for a training run (Keras) and a bundle (TFLite).

A bundle is evaluated through the edge interpreter, so this path never imports
TensorFlow; a run directory needs the training extra. This is the one place that
dispatches between the two sides, which is why it sits in the application layer.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from shelfsight.atomic import write_text
from shelfsight.datasets import LoadedImages, load_dataset, load_images
from shelfsight.errors import DatasetError
from shelfsight.metrics import classification_report, plot_confusion
from shelfsight.target import Target, open_target


def predict_target(target: Target, images: np.ndarray, progress: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Scores and embeddings of prepared images, through the edge runtime (bundle) or Keras (run)."""
    if target.bundle is not None:
        from shelfsight.edge.runtime import predict_tflite

        return predict_tflite(target.bundle.model_path, images, progress=progress)
    from shelfsight.training.model import load_model, predict

    return predict(load_model(target.run.model_path), images)


def fused_scores(target: Target, scores: np.ndarray, embeddings: np.ndarray) -> np.ndarray | None:
    """A bundle's scores as its device gives them: blended with its catalog index when the
    manifest has a fusion section (`shelfsight.edge.runtime.fusion`); None otherwise."""
    bundle = target.bundle
    if bundle is None or not bundle.index or not bundle.manifest.get("fusion"):
        return None
    from shelfsight.edge.catalog.search import CatalogIndex
    from shelfsight.edge.runtime.fusion import FusionSpec, fuse_batch

    with CatalogIndex.load(bundle.root, model_sha256=bundle.model_sha256) as index:
        return fuse_batch(scores, embeddings, index, target.labels, FusionSpec.from_manifest(bundle.manifest["fusion"]))


def evaluate(path: str | Path, data: str | Path, split: str = "val", out_dir: str | Path | None = None,
             accept_share: float = 0.95, progress: bool = True) -> dict[str, Any]:
    """Evaluate a run or bundle on one split of a dataset.

    Returns:
        The report of `metrics.classification_report`, plus what was skipped. With
        ``out_dir``, also writes report.json and confusion.png there.
    """
    target = open_target(path)
    ds = load_dataset(data, split)
    unknown = sorted(set(ds.labels) - set(target.labels))
    if unknown:
        raise DatasetError(f"{data}: labels the model does not know: {', '.join(unknown[:5])}")
    loaded: LoadedImages = load_images(ds.samples, target.spec, target.labels, progress, f"{split} images")
    if len(loaded.images) == 0:
        raise DatasetError(f"{data}: no readable images in split {split}")
    scores, embeddings = predict_target(target, loaded.images, progress)
    fused = fused_scores(target, scores, embeddings)
    report = classification_report(scores if fused is None else fused, loaded.label_ids, target.labels,
                                   ds.coarse_of, accept_share)
    if fused is not None:  # what the device answers is the fused score; the classifier alone beside it
        alone = classification_report(scores, loaded.label_ids, target.labels, ds.coarse_of, accept_share)
        report["classifier_alone"] = {k: alone[k] for k in ("top1", "top3", "top5", "coarse_top1") if k in alone}
    report.update(target=str(target.path), kind=target.kind, split=split,
                  skipped=[{"path": str(p), "reason": r} for p, r in loaded.skipped])
    if out_dir:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        write_text(out / "report.json", json.dumps(report, indent=2) + "\n")
        plot_confusion(np.array(report["confusion_matrix"]), target.labels, out / "confusion.png", f"{split}: {target.path.name}")
    return report

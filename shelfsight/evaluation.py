"""`shelfsight eval`: the same metrics for a training run (Keras) and a bundle (TFLite).

A bundle is evaluated through the edge interpreter, so this path never imports
TensorFlow; a run directory needs the training extra.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from .bundle import MANIFEST, load_bundle
from .datasets import LoadedImages, load_dataset, load_images
from .errors import DatasetError, ModelError
from .metrics import classification_report, plot_confusion
from .preprocess import PreprocessSpec

RUN_MODEL = "model.keras"


@dataclass(frozen=True)
class Target:
    """A thing to evaluate: its labels, preprocessing and kind ("bundle" or "run")."""

    path: Path
    kind: str
    labels: tuple[str, ...]
    spec: PreprocessSpec


def open_target(path: str | Path) -> Target:
    p = Path(path)
    if (p / MANIFEST).is_file() or p.name.endswith((".tar.gz", ".tgz")):
        b = load_bundle(p)
        return Target(b.root, "bundle", b.labels, b.preprocess)
    if (p / RUN_MODEL).is_file():
        labels = tuple((p / "labels.txt").read_text(encoding="utf-8").splitlines())
        spec = PreprocessSpec.from_dict(json.loads((p / "preprocess.json").read_text()))
        return Target(p, "run", labels, spec)
    raise ModelError(f"{p}: neither a bundle (manifest.json) nor a training run ({RUN_MODEL})")


def predict_tflite(model_path: Path, images: np.ndarray, runtime: str = "auto", threads: int | None = None,
                   progress: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Scores and embeddings for prepared uint8 images, one inference each, through the edge runtime."""
    from shelfsight.edge.runtime.interpreter import TFLiteModel

    model = TFLiteModel(model_path, runtime, threads)
    scores, embs = [], []
    for img in tqdm(images, desc="inference", disable=not progress, leave=False):
        out = model.run(img)
        scores.append(out["scores"][0])
        embs.append(out["embedding"][0])
    model.close()
    return np.stack(scores), np.stack(embs)


def predict_target(target: Target, images: np.ndarray, progress: bool = False) -> tuple[np.ndarray, np.ndarray]:
    if target.kind == "bundle":
        return predict_tflite(load_bundle(target.path).model_path, images, progress=progress)
    from shelfsight.training.model import load_model, predict

    return predict(load_model(target.path / RUN_MODEL), images)


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
    scores, _ = predict_target(target, loaded.images, progress)
    report = classification_report(scores, loaded.label_ids, target.labels, ds.coarse_of, accept_share)
    report.update(target=str(target.path), kind=target.kind, split=split,
                  skipped=[{"path": str(p), "reason": r} for p, r in loaded.skipped])
    if out_dir:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        (out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
        plot_confusion(np.array(report["confusion_matrix"]), target.labels, out / "confusion.png", f"{split}: {target.path.name}")
    return report

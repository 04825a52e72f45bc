"""Whole image sets through a bundle's model, for evaluation and export checks (no TensorFlow)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from tqdm import tqdm

from .interpreter import TFLiteModel


def predict_tflite(model_path: Path, images: np.ndarray, runtime: str = "auto", threads: int | None = None,
                   progress: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Scores (N, C) and embeddings (N, D) for prepared uint8 images (N, S, S, 3), one inference each."""
    model = TFLiteModel(model_path, runtime, threads)
    scores, embs = [], []
    for img in tqdm(images, desc="inference", disable=not progress, leave=False):
        out = model.run(img)
        scores.append(out["scores"][0])
        embs.append(out["embedding"][0])
    model.close()
    return np.stack(scores), np.stack(embs)

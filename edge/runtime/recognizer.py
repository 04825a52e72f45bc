"""The recogniser: a bundle in, products out. No TensorFlow.

    with Recognizer.create_from_bundle("bundle/") as rec:
        result = rec.recognize(frame_bgr)      # Recognition(label, score, predictions, matches, latency_ms)

Input: one BGR uint8 frame of any size (OpenCV's layout); it is cropped and resized
exactly as the bundle's manifest says. The model gives ``scores`` (1 x C) and
``embedding`` (1 x D, unit norm) from one inference; classes under the bundle's unknown
threshold give ``label=None``; the embedding is searched in the bundle's catalog index
when it has one, and items under the bundle's similarity threshold are left out (no
match at all is search's "unknown").
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from shelfsight.bundle import Bundle, load_bundle
from shelfsight.embeddings import l2_normalize
from shelfsight.errors import BundleError
from shelfsight.preprocess import prepare

from .interpreter import TFLiteModel
from .postprocess import Recognition, top_k

SCORES, EMBEDDING = "scores", "embedding"


class Recognizer:
    """Classify and search frames with a verified bundle.

    Args:
        bundle: a loaded Bundle (see `create_from_bundle` for a path).
        runtime, threads, delegates: passed to `TFLiteModel`.
        top_k: classes reported per frame.
        search_k: similar catalog items reported per frame (0 turns search off).
        unknown_threshold: overrides the bundle's calibrated score threshold.
    """

    def __init__(self, bundle: Bundle, runtime: str = "auto", threads: int | None = None,
                 delegates: tuple[str, ...] = (), top_k: int = 5, search_k: int = 5,
                 unknown_threshold: float | None = None):
        self.bundle = bundle
        self.spec = bundle.preprocess
        self.model = TFLiteModel(bundle.model_path, runtime, threads, delegates)
        expected = (self.spec.size, self.spec.size)
        if self.model.input_size != expected:
            raise BundleError(f"{bundle.model_path}: model input {self.model.input_size}, manifest says {expected}")
        missing = {SCORES, EMBEDDING} - set(self.model.outputs)
        if missing:
            raise BundleError(f"{bundle.model_path}: outputs {sorted(self.model.outputs)}, missing {sorted(missing)}")
        if self.model.outputs[SCORES].shape[-1] != len(bundle.labels):
            raise BundleError(f"{bundle.model_path}: {self.model.outputs[SCORES].shape[-1]} class scores "
                              f"for {len(bundle.labels)} labels")
        self.top_k, self.search_k = top_k, search_k
        self.unknown_threshold = (unknown_threshold if unknown_threshold is not None
                                  else float(bundle.thresholds.get("unknown_score", 0.0)))
        self.similarity_threshold = float(bundle.thresholds.get("unknown_similarity", -1.0))
        self.index = None
        if bundle.index and search_k > 0:
            from ..catalog.search import CatalogIndex

            self.index = CatalogIndex.load(bundle.root, model_sha256=bundle.model_sha256)

    @classmethod
    def create_from_bundle(cls, path: str | Path, **options) -> "Recognizer":
        return cls(load_bundle(path), **options)

    @property
    def labels(self) -> tuple[str, ...]:
        return self.bundle.labels

    def infer(self, pixels_rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Scores (C,) and unit-norm embedding (D,) for prepared RGB pixels (S x S x 3)."""
        out = self.model.run(pixels_rgb)
        return out[SCORES][0], l2_normalize(out[EMBEDDING][0])

    def recognize(self, frame_bgr: np.ndarray, source: str = "", search: bool = True) -> Recognition:
        """Classify one frame and, if the bundle has an index, find similar catalog items.

        ``source`` names where the frame came from (the runner passes it; unused here).
        """
        t0 = time.perf_counter()
        scores, embedding = self.infer(prepare(frame_bgr, self.spec))
        predictions = top_k(scores, self.labels, self.top_k)
        best = predictions[0]
        matches = (tuple(self.index.search(embedding, self.search_k, min_similarity=self.similarity_threshold))
                   if (search and self.index) else ())
        label = best.label if best.score >= self.unknown_threshold else None
        return Recognition(label, best.score, predictions, matches, (time.perf_counter() - t0) * 1000.0)

    def classify(self, frame_bgr: np.ndarray) -> Recognition:
        return self.recognize(frame_bgr, search=False)

    def embed(self, frame_bgr: np.ndarray) -> np.ndarray:
        return self.infer(prepare(frame_bgr, self.spec))[1]

    def close(self) -> None:
        if self.model is not None:
            self.model.close()
            self.model = None
        if self.index is not None:
            self.index.close()
            self.index = None

    def __enter__(self) -> "Recognizer":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def probe_image(size: int = 256) -> np.ndarray:
    """A fixed synthetic BGR frame (gradients and shapes) for health checks."""
    y, x = np.mgrid[0:size, 0:size].astype(np.float32) / size
    img = np.stack([x * 255, y * 255, (1 - x) * y * 255], axis=-1).astype(np.uint8)
    img[size // 4: size // 2, size // 4: 3 * size // 4] = (40, 180, 240)
    return img


def health_check(bundle_path: str | Path, runtime: str = "auto") -> dict:
    """Load a bundle and run the probe image through it; raise BundleError if anything is off.

    Returns:
        A small report (label, score, latency) for logs.
    """
    with Recognizer.create_from_bundle(bundle_path, runtime=runtime, threads=1) as rec:
        out = rec.model.run(prepare(probe_image(), rec.spec))
        scores, embedding = out[SCORES][0], out[EMBEDDING][0]
        if not (np.all(np.isfinite(scores)) and np.all(np.isfinite(embedding))):
            raise BundleError(f"{bundle_path}: model gives non-finite outputs on the probe image")
        if not 0.98 <= float(scores.sum()) <= 1.02 or scores.min() < -1e-3:
            raise BundleError(f"{bundle_path}: scores sum to {scores.sum():.3f} on the probe image, expected 1")
        norm = float(np.linalg.norm(embedding))
        if not 0.9 <= norm <= 1.1:
            raise BundleError(f"{bundle_path}: embedding norm {norm:.3f} on the probe image, expected 1")
        result = rec.classify(probe_image())
        return {"bundle_id": rec.bundle.bundle_id, "label": result.predictions[0].label,
                "score": result.score, "latency_ms": result.latency_ms}

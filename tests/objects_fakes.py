"""Test doubles for the per-object mode: a crop recogniser that names sample products by colour.

`HistogramCrops` keeps an HSV colour histogram of each catalog photo and names a crop after
the nearest one (cosine); the histogram is the crop's embedding too, so tracking compares
something real. It is exact on the generated videos, whose products are those photos.
"""
from __future__ import annotations

import dataclasses
import time
from typing import Sequence

import cv2
import numpy as np

from shelfsight.edge.objects.crops import CropResult
from shelfsight.edge.runtime.postprocess import Prediction, Recognition
from shelfsight.embeddings import l2_normalize
from shelfsight.images import read_image


def histogram(image_bgr: np.ndarray) -> np.ndarray:
    hsv = cv2.cvtColor(image_bgr, cv2.COLOR_BGR2HSV)
    h = cv2.calcHist([hsv], [0, 1, 2], None, [18, 4, 4], [0, 180, 0, 256, 0, 256]).reshape(-1)
    return l2_normalize(np.sqrt(h).astype(np.float32))


class HistogramCrops:
    def __init__(self, products, unknown_below: float = 0.0) -> None:
        self.labels = [label for label, _ in products]
        self.templates = np.stack([histogram(read_image(path)) for _, path in products])
        self.unknown_below = unknown_below
        self.batches: list[int] = []

    def recognize_crops(self, crops: Sequence[np.ndarray]) -> list[CropResult]:
        self.batches.append(len(crops))
        out = []
        for crop in crops:
            t0 = time.perf_counter()
            h, w = crop.shape[:2]
            emb = histogram(crop[h // 8: h - h // 8, w // 8: w - w // 8])  # the centre: less of the margin
            sims = self.templates @ emb
            recognition = self.decide(sims, emb, float(sims.max()))
            out.append(CropResult(dataclasses.replace(recognition, latency_ms=(time.perf_counter() - t0) * 1e3),
                                  emb, sims))
        return out

    def decide(self, scores: np.ndarray, embedding: np.ndarray, top_score: float) -> Recognition:
        order = np.argsort(-scores, kind="stable")[:3]
        preds = tuple(Prediction(self.labels[i], float(scores[i]), int(i)) for i in order)
        return Recognition(preds[0].label if top_score >= self.unknown_below else None, preds[0].score, preds, (), 0.0)

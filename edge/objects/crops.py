"""Per-object recognition: each box's square window (`square_window`) run through the bundle's recogniser.

Crops get exactly the bundle's preprocessing (`shelfsight.preprocess.prepare`), and the
same post-processing as a whole frame (retrieval fusion, top-k, unknown threshold, similar
catalog items); so does a track's mean of its crops' outputs (`BundleCrops.decide`), except
that "unknown" is decided there on the mean of the crops' top class scores.
Where the interpreter can resize its batch dimension, the crops of one frame go through in
one inference of exactly that many rows; otherwise one inference per crop. Not padded to a
power of two to spare re-allocations: with int8 Lite0 at 224 px on 2 threads a batch of 4
took ~24 ms where 3 took ~19 ms, and re-allocating for every change of count (2, 3, 2, ...)
cost less than the padded row (~15 ms a batch on average).
"""
from __future__ import annotations

import contextlib
import dataclasses
import logging
import time
from dataclasses import dataclass
from typing import Callable, ContextManager, Protocol, Sequence

import numpy as np

from shelfsight.embeddings import l2_normalize
from shelfsight.errors import ConfigError, IndexMismatchError
from shelfsight.preprocess import prepare

from ..catalog.items import Catalog
from ..runtime.postprocess import Recognition
from ..runtime.recognizer import EMBEDDING, SCORES, Recognizer
from .boxes import Box

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CropResult:
    """One crop's recognition, its unit-norm embedding (D,), which tracking compares, and the
    model's class scores (C,) before any fusion, which a track averages."""

    recognition: Recognition
    embedding: np.ndarray
    scores: np.ndarray


class CropRecognizer(Protocol):
    """Anything that names a list of BGR crops (the bundle's recogniser, test fakes)."""

    def recognize_crops(self, crops: Sequence[np.ndarray]) -> list[CropResult]: ...

    def decide(self, scores: np.ndarray, embedding: np.ndarray, top_score: float) -> Recognition:
        """A track's recognition from its crops' mean class scores (C,), mean unit-norm embedding
        (D,) and mean top class score (the one "unknown" is decided on)."""


def crop_with_margin(image: np.ndarray, box: Box, margin: float) -> np.ndarray:
    """The box grown by ``margin`` of its width / height on each side, clipped to the image."""
    height, width = image.shape[:2]
    dx, dy = round(box.w * margin), round(box.h * margin)
    x0, y0 = max(0, box.x - dx), max(0, box.y - dy)
    x1, y1 = min(width, box.x + box.w + dx), min(height, box.y + box.h + dy)
    return image[y0:y1, x0:x1]


def square_window(image: np.ndarray, box: Box, margin: float) -> np.ndarray:
    """What the model sees of a box: the square around it (side: its longer side, grown by
    ``margin``), centred on it and moved inside the image where it fits.

    The bundle's preprocessing centre-crops to a square, which would cut a long product (a
    bottle lying on a conveyor, a parcel) down to its middle; the square window keeps all of it,
    with scene around its short sides, as a product photo does. Only a box longer than the
    image's short side gets a window that is not square (the image's whole height or width),
    whose ends the preprocessing then crops.
    """
    height, width = image.shape[:2]
    side = max(box.w * (1 + 2 * margin), box.h * (1 + 2 * margin))
    sw, sh = min(round(side), width), min(round(side), height)
    cx, cy = box.x + box.w / 2, box.y + box.h / 2
    x0 = int(round(min(max(cx - sw / 2, 0), width - sw)))
    y0 = int(round(min(max(cy - sh / 2, 0), height - sh)))
    return image[y0:y0 + sh, x0:x0 + sw]


class BundleCrops:
    """`CropRecognizer` over a bundle's `Recognizer`.

    Args:
        current: a recogniser, or returns a context manager holding the one to use now for
            the block (`ReloadableRecognizer.using`: a hot reload waits until the frame's crops
            are done instead of closing the interpreter under them).
        max_batch: crops per inference at most (1 turns batching off).
    """

    def __init__(self, current: Recognizer | Callable[[], ContextManager[Recognizer]], max_batch: int = 8) -> None:
        if isinstance(max_batch, bool) or not isinstance(max_batch, int) or max_batch < 1:
            raise ConfigError(f"max_batch must be a whole number >= 1, got {max_batch!r}")
        self._current = current if callable(current) else (lambda: contextlib.nullcontext(current))
        self.max_batch = max_batch
        self._catalog: tuple[object, Catalog | None] | None = None  # (the recogniser it is of, catalog)

    def catalog(self) -> Catalog | None:
        """The catalog of the recogniser in use (where barcodes are looked up); None without an index.

        Read once per recogniser (a hot reload brings its bundle's), from its open index or,
        with search off, from the bundle's index files. Items enrolled on the device since the
        last rebuild are not in it (enrolment takes no barcodes).
        """
        with self._current() as recognizer:
            if self._catalog is None or self._catalog[0] is not recognizer:
                self._catalog = (recognizer, _catalog_of(recognizer))
            return self._catalog[1]

    def recognize_crops(self, crops: Sequence[np.ndarray]) -> list[CropResult]:
        with self._current() as recognizer:
            return self._recognize(recognizer, crops)

    def decide(self, scores: np.ndarray, embedding: np.ndarray, top_score: float) -> Recognition:
        """The recogniser's post-processing of a track's mean outputs (retrieval fusion on the mean
        embedding, top-k, similar items), "unknown" where ``top_score`` is under its threshold.

        The threshold was calibrated on one image's top class score, so it is held against the
        mean of that score over the crops: the top of the mean scores is lower wherever the crops
        disagree a little, and would reject tracks whose crops it accepts one by one.
        """
        with self._current() as recognizer:
            recognition = recognizer.postprocess(scores, embedding)
            known = top_score >= recognizer.unknown_threshold
        return dataclasses.replace(recognition, label=recognition.predictions[0].label if known else None)

    def _recognize(self, recognizer: Recognizer, crops: Sequence[np.ndarray]) -> list[CropResult]:
        if recognizer.model is None:
            raise ConfigError("this recogniser is closed")
        batched = self.max_batch > 1 and recognizer.model.batch_resizable
        results: list[CropResult] = []
        step = self.max_batch if batched else 1
        for start in range(0, len(crops), step):
            chunk = crops[start:start + step]
            t0 = time.perf_counter()
            pixels = np.stack([prepare(c, recognizer.spec) for c in chunk])
            if batched:
                out = recognizer.model.run_batch(pixels)
            else:
                out = recognizer.model.run(pixels)
            per_crop_ms = (time.perf_counter() - t0) * 1000.0 / len(chunk)
            for row in range(len(chunk)):
                results.append(_result(recognizer, out[SCORES][row], out[EMBEDDING][row], per_crop_ms))
        return results


def _catalog_of(recognizer: Recognizer) -> Catalog | None:
    if recognizer.index is not None:
        return recognizer.index.catalog
    if not recognizer.bundle.index:
        return None
    from ..catalog.spec import read_spec  # only with search off: the catalog without the index

    root = recognizer.bundle.root
    try:
        return Catalog.load(root / read_spec(root)["files"]["catalog"])
    except (IndexMismatchError, KeyError, TypeError) as e:
        log.warning("barcodes are checked against no catalog: %s", e)
        return None


def _result(recognizer: Recognizer, scores: np.ndarray, embedding: np.ndarray, latency_ms: float) -> CropResult:
    """The recogniser's post-processing of one row, exactly as `Recognizer.recognize` does for a
    frame (retrieval fusion included where the bundle has it)."""
    recognition = recognizer.postprocess(scores, embedding)
    return CropResult(dataclasses.replace(recognition, latency_ms=latency_ms), l2_normalize(embedding),
                      np.array(scores, np.float32))

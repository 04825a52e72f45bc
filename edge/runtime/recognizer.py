"""The recogniser: a bundle in, products out. No TensorFlow.

    with Recognizer.create_from_bundle("bundle/") as rec:
        result = rec.recognize(frame_bgr)      # Recognition(label, score, predictions, matches, latency_ms)

    options = RecognizerOptions("bundle/", running_mode=RunningMode.VIDEO)
    with Recognizer.create_from_options(options) as rec:
        for t, frame in enumerate(frames):
            result = rec.recognize_for_video(frame, timestamp_ms=t * 33)   # .reported: once per appearance

Input: one BGR uint8 frame of any size (OpenCV's layout); it is cropped and resized
exactly as the bundle's manifest says. The model gives ``scores`` (1 x C) and
``embedding`` (1 x D, unit norm) from one inference; classes under the bundle's unknown
threshold give ``label=None``; the embedding is searched in the bundle's catalog index
when it has one, and items under the bundle's similarity threshold are left out (no
match at all is search's "unknown"). When the manifest has a ``fusion`` section, the class
scores are blended with the nearest items' votes (`fusion`); the unknown threshold still
applies to the model's own best score, the scale it was calibrated on. The running modes are described in `options`.
"""
from __future__ import annotations

import dataclasses
import logging
import threading
import time
from pathlib import Path

import numpy as np

from shelfsight.bundle import Bundle, load_bundle
from shelfsight.embeddings import l2_normalize
from shelfsight.errors import BundleError, ConfigError, ShelfsightError
from shelfsight.preprocess import prepare

from .interpreter import TFLiteModel
from .fusion import FusionSpec, fuse
from .options import RecognizerOptions, RunningMode
from .postprocess import Recognition, top_k
from .smoothing import TemporalSmoother

SCORES, EMBEDDING = "scores", "embedding"
log = logging.getLogger(__name__)


class Recognizer:
    """Classify and search frames with a verified bundle.

    Tensors: the model takes 1 x S x S x 3 (S and the dtype from the manifest) and gives
    ``scores`` 1 x C (C = the bundle's labels) and ``embedding`` 1 x D.

    The constructor is the image-mode shorthand over a `Bundle` already loaded (indexing
    opens one before its index exists); `create_from_options` covers every running mode and
    `create_from_bundle` is image mode from a path. ``close()`` is safe to call twice.

    Args:
        bundle: a loaded Bundle.
        runtime, threads, delegates: passed to `TFLiteModel`.
        top_k: classes reported per frame.
        search_k: similar catalog items reported per frame (0 turns search off).
        unknown_threshold: overrides the bundle's calibrated score threshold.
    """

    def __init__(self, bundle: Bundle, runtime: str = "auto", threads: int | None = None,
                 delegates: tuple[str, ...] = (), top_k: int = 5, search_k: int = 5,
                 unknown_threshold: float | None = None):
        self._open(bundle, RecognizerOptions(bundle.root, runtime=runtime, threads=threads, delegates=delegates,
                                             top_k=top_k, search_k=search_k, unknown_threshold=unknown_threshold))

    @classmethod
    def create_from_options(cls, options: RecognizerOptions) -> "Recognizer":
        """A recogniser in ``options.running_mode`` for the bundle at ``options.bundle``.

        Raises:
            BundleError: the bundle is missing, tampered with, or its model does not match it.
        """
        recognizer = cls.__new__(cls)
        bundle = load_bundle(options.bundle)
        try:
            recognizer._open(bundle, options)
        except BaseException as e:
            bundle.close()
            if bundle.unpacked and isinstance(e, ShelfsightError):  # name the archive, not a folder that is gone
                raise type(e)(str(e).replace(str(bundle.root), str(options.bundle))) from None
            raise
        recognizer._owned_bundle = bundle  # loaded here: close() removes an archive's unpacked copy
        return recognizer

    @classmethod
    def create_from_bundle(cls, path: str | Path, *, runtime: str = "auto", threads: int | None = None,
                           delegates: tuple[str, ...] = (), top_k: int = 5, search_k: int = 5,
                           unknown_threshold: float | None = None) -> "Recognizer":
        """An image-mode recogniser for the bundle at ``path``."""
        return cls.create_from_options(RecognizerOptions(
            path, runtime=runtime, threads=threads, delegates=delegates, top_k=top_k, search_k=search_k,
            unknown_threshold=unknown_threshold))

    def _open(self, bundle: Bundle, options: RecognizerOptions) -> None:
        self.bundle, self.options = bundle, options
        self._owned_bundle: Bundle | None = None
        self.spec = bundle.preprocess
        self.index, self.fusion = None, None
        self._class_of = {label: i for i, label in enumerate(bundle.labels)}
        self.model = TFLiteModel(bundle.model_path, options.runtime, options.threads, options.delegates)
        expected = (self.spec.size, self.spec.size)
        if self.model.input_size != expected:
            raise BundleError(f"{bundle.model_path}: model input {self.model.input_size}, manifest says {expected}")
        missing = {SCORES, EMBEDDING} - set(self.model.outputs)
        if missing:
            raise BundleError(f"{bundle.model_path}: outputs {sorted(self.model.outputs)}, missing {sorted(missing)}")
        if self.model.outputs[SCORES].shape[-1] != len(bundle.labels):
            raise BundleError(f"{bundle.model_path}: {self.model.outputs[SCORES].shape[-1]} class scores "
                              f"for {len(bundle.labels)} labels")
        self.top_k, self.search_k = options.top_k, options.search_k
        self.unknown_threshold = (options.unknown_threshold if options.unknown_threshold is not None
                                  else float(bundle.thresholds.get("unknown_score", 0.0)))
        self.similarity_threshold = float(bundle.thresholds.get("unknown_similarity", -1.0))
        if bundle.index and options.search_k > 0:
            from ..catalog.search import CatalogIndex

            self.index = CatalogIndex.load(bundle.root, model_sha256=bundle.model_sha256)
            if options.fusion:
                self.fusion = FusionSpec.from_manifest(bundle.manifest.get("fusion"))
        smoothing = options.stream_smoothing
        self._smoother = TemporalSmoother(smoothing) if smoothing is not None else None
        self._last_timestamp_ms: int | None = None
        self._model_lock = threading.Lock()  # live stream: the worker and classify() share one interpreter
        self._live = _LiveStream(self) if options.running_mode is RunningMode.LIVE_STREAM else None

    @property
    def running_mode(self) -> RunningMode:
        return self.options.running_mode

    @property
    def labels(self) -> tuple[str, ...]:
        return self.bundle.labels

    def infer(self, pixels_rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Scores (C,) and unit-norm embedding (D,) for prepared RGB pixels (S x S x 3)."""
        if self.model is None:
            raise ConfigError("this recogniser is closed")
        with self._model_lock:
            out = self.model.run(pixels_rgb)
        return out[SCORES][0], l2_normalize(out[EMBEDDING][0])

    def recognize(self, frame_bgr: np.ndarray, source: str = "", search: bool = True) -> Recognition:
        """Image mode: classify one frame and, if the bundle has an index, find similar catalog items.

        ``source`` names where the frame came from (the runner passes it; unused here).
        """
        self._expect(RunningMode.IMAGE, "recognize")
        return self._recognize(frame_bgr, search)

    def recognize_for_video(self, frame_bgr: np.ndarray, timestamp_ms: int) -> Recognition:
        """Video mode: one frame of a video, in order; ``reported`` is True once per appearance.

        Raises:
            ValueError: ``timestamp_ms`` is not later than the previous frame's.
        """
        self._expect(RunningMode.VIDEO, "recognize_for_video")
        self._advance(timestamp_ms)
        return self._smoothed(self._recognize(frame_bgr))

    def recognize_async(self, frame_bgr: np.ndarray, timestamp_ms: int) -> None:
        """Live-stream mode: queue a frame; its result reaches ``result_callback``.

        While the model is busy only the newest frame waits (older waiting ones are dropped and
        counted in ``dropped``), so a slow model never falls behind the camera.

        Raises:
            ValueError: ``timestamp_ms`` is not later than the previous frame's.
        """
        self._expect(RunningMode.LIVE_STREAM, "recognize_async")
        self._advance(timestamp_ms)
        self._live.put(frame_bgr, timestamp_ms)

    @property
    def dropped(self) -> int:
        """Live-stream frames replaced by a newer one before the model got to them."""
        return self._live.dropped if self._live is not None else 0

    def _expect(self, mode: RunningMode, method: str) -> None:
        if self.options.running_mode is not mode:
            raise ConfigError(f"{method}() is for the {mode.value} mode; this recogniser runs in "
                              f"{self.options.running_mode.value} mode")

    def _advance(self, timestamp_ms: int) -> None:
        if self._last_timestamp_ms is not None and timestamp_ms <= self._last_timestamp_ms:
            raise ValueError(f"timestamp {timestamp_ms} ms is not after the previous frame's "
                             f"{self._last_timestamp_ms} ms; frames must come in order")
        self._last_timestamp_ms = timestamp_ms

    def _smoothed(self, result: Recognition) -> Recognition:
        return dataclasses.replace(result, reported=self._smoother.update(result.label) is not None)

    def _recognize(self, frame_bgr: np.ndarray, search: bool = True) -> Recognition:
        t0 = time.perf_counter()
        scores, embedding = self.infer(prepare(frame_bgr, self.spec))
        result = self.postprocess(scores, embedding, search)
        return dataclasses.replace(result, latency_ms=(time.perf_counter() - t0) * 1000.0)

    def postprocess(self, scores: np.ndarray, embedding: np.ndarray, search: bool = True) -> Recognition:
        """One inference's (C,) class scores and (D,) embedding as a `Recognition` (latency 0):
        fusion with the nearest catalog items where the bundle says so, top-k, unknown under the
        threshold, similar items when ``search``. What `recognize` does after its inference, and
        the per-object mode for each crop of a batch."""
        confident = float(scores.max()) >= self.unknown_threshold
        matches: tuple = ()
        if self.index is not None and (search or self.fusion):
            k = max(self.search_k, self.fusion.k if self.fusion else 0)
            found = self.index.search(embedding, k)
            if self.fusion:
                scores = fuse(scores, found, self._class_of, self.fusion)
            if search:
                matches = tuple(m for m in found[:self.search_k] if m.similarity >= self.similarity_threshold)
        predictions = top_k(scores, self.labels, self.top_k)
        best = predictions[0]
        label = best.label if confident else None
        return Recognition(label, best.score, predictions, matches, 0.0)

    def classify(self, frame_bgr: np.ndarray) -> Recognition:
        """The classes of one frame, no search (any mode: it keeps no state)."""
        return self._recognize(frame_bgr, search=False)

    def embed(self, frame_bgr: np.ndarray) -> np.ndarray:
        return self.infer(prepare(frame_bgr, self.spec))[1]

    def close(self) -> None:
        """Stop the live-stream worker (the frame it holds is finished), free the interpreter (and
        the unpacked copy of an archive bundle this recogniser loaded)."""
        if self._live is not None:
            self._live.close()
        if self.model is not None:
            self.model.close()
            self.model = None
        if self.index is not None:
            self.index.close()
            self.index = None
        if self._owned_bundle is not None:
            self._owned_bundle.close()

    def __enter__(self) -> "Recognizer":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class _LiveStream:
    """The live-stream worker: one thread, one waiting frame (the newest)."""

    def __init__(self, recognizer: Recognizer) -> None:
        self._recognizer = recognizer
        self._callback = recognizer.options.result_callback
        self._ready = threading.Condition()
        self._waiting: tuple[np.ndarray, int] | None = None
        self._closed = False
        self.dropped = 0
        self._thread = threading.Thread(target=self._work, name="recognizer-live-stream", daemon=True)
        self._thread.start()

    def put(self, frame_bgr: np.ndarray, timestamp_ms: int) -> None:
        with self._ready:
            if self._closed:
                raise ConfigError("this recogniser is closed")
            if self._waiting is not None:
                self.dropped += 1
            self._waiting = (frame_bgr, timestamp_ms)
            self._ready.notify()

    def _work(self) -> None:
        while True:
            with self._ready:
                while self._waiting is None and not self._closed:
                    self._ready.wait()
                if self._waiting is None:
                    return
                (frame, timestamp_ms), self._waiting = self._waiting, None
            try:
                result = self._recognizer._smoothed(self._recognizer._recognize(frame))
                self._callback(result, frame, timestamp_ms)
            except Exception:  # a bad frame or callback must not end the stream; logged instead
                log.exception("live-stream recognition of the frame at %d ms failed", timestamp_ms)

    def close(self) -> None:
        with self._ready:
            self._closed = True
            self._ready.notify()
        if threading.current_thread() is not self._thread:
            self._thread.join()


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

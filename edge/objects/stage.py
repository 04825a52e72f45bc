"""The per-object stage of the run loop: proposals -> crops -> recognition -> tracks -> events.

    stage = ObjectStage(ObjectsOptions(backend="background"), BundleCrops(recognizer))
    events, caption, latency_ms = stage.process(roi_image, frame, roi_origin)   # per frame
    events = stage.finish()                                                     # the source ended

It is what `run(..., objects=stage)` calls instead of the single-object recogniser. Per
frame it emits one event per newly confirmed track and one per track that left; the
count line's crossings are counted when a track leaves, under its final label
(``counts[(label, direction)]``), and so is a decoded barcode's agreement with the visual
match (``agreements[agreement]``, see `agreement`).
"""
from __future__ import annotations

import dataclasses
from collections import Counter
from typing import Callable

import numpy as np

from ..catalog.items import Catalog
from ..pipeline.health import Health
from ..pipeline.sources import Frame
from .barcodes import BarcodeReader
from .boxes import overlapping
from .counting import LineState
from .crops import CropRecognizer, crop_with_margin, square_window
from .events import CONFIRMED, LEFT, object_event
from .metrics import ObjectMetrics
from .options import ObjectsOptions
from .proposals import Proposer, make_proposer
from .tracking import Track, Tracker

BARCODE_BACKOFF = 5  # a track tried `barcode_tries` times without a code is tried this many times less often


class ObjectStage:
    """Args:
        options: the per-object mode's options.
        crops: names the crops (`BundleCrops` over the bundle's recogniser, or a fake).
        health: the device's metrics; the per-object ones are added to its registry.
        jpeg_quality: attach each track's best crop as JPEG (None: no picture leaves the device).
        proposer: overrides the backend's proposer (tests).
        catalog: where decoded barcodes are looked up: a `Catalog`, or returns the one to use
            now (None: ``crops.catalog`` where the crops have one, as `BundleCrops` does, which
            follows a hot reload; else barcodes are checked against no catalog: "unlisted").
    """

    def __init__(self, options: ObjectsOptions, crops: CropRecognizer, health: Health | None = None,
                 jpeg_quality: int | None = None, proposer: Proposer | None = None,
                 catalog: Catalog | Callable[[], Catalog | None] | None = None) -> None:
        self.options, self.crops, self.jpeg_quality = options, crops, jpeg_quality
        self.proposer = proposer or make_proposer(options.backend, options.background, options.detector)
        self.tracker = Tracker(crops.decide, options.tracking)
        self.metrics = ObjectMetrics(health.registry) if health is not None else None
        self.barcodes = BarcodeReader() if options.barcodes else None
        self.counts: Counter[tuple[str | None, str]] = Counter()
        self.agreements: Counter[str] = Counter()
        self._catalog: Catalog | Callable[[], Catalog | None] | None = (
            catalog if catalog is not None else getattr(crops, "catalog", None))
        self.proposals = 0
        self._capped = 0
        self._last_frame: Frame | None = None

    def process(self, image: np.ndarray, frame: Frame, origin: tuple[int, int] = (0, 0),
                caption: bool = True) -> tuple[list[dict], str, float]:
        """One frame: ``(events, caption, inference ms)``.

        Proposals come from ``image`` (the run's ROI of ``frame``, its top-left corner at
        ``origin``); boxes, tracks, the count line and events are in pixels of the whole frame,
        and crops (with their margin) are cut from the whole frame. The caption names every
        confirmed track in view, which decides each track's label (a search of the index per
        track): ``caption=False`` (no preview window) skips it and returns "".
        """
        self._last_frame = frame
        boxes = self.proposer.propose(image)
        if origin != (0, 0):
            boxes = [dataclasses.replace(b, x=b.x + int(origin[0]), y=b.y + int(origin[1])) for b in boxes]
        self.proposals += len(boxes)
        (left, top), (height, width) = origin, image.shape[:2]  # the ROI's edges: partly out of view beyond them
        at_edge = [b.x <= left or b.y <= top or b.x + b.w >= left + width or b.y + b.h >= top + height for b in boxes]
        crops = [crop_with_margin(frame.image, b, self.options.margin) for b in boxes]  # barcodes, event photo
        # The model sees a whole object's square window; a box cut by the edge is a part of one,
        # which a window would only widen with scene on one side.
        windows = [c if edge else square_window(frame.image, b, self.options.margin)
                   for b, c, edge in zip(boxes, crops, at_edge)]
        results = self.crops.recognize_crops(windows) if windows else []
        update = self.tracker.update(boxes, results, frame.index, frame.timestamp, at_edge, overlapping(boxes))
        crop_of = {id(b): c for b, c in zip(boxes, crops)}
        for track in update.seen:
            self._follow(track, crop_of[id(track.box)])
        events = [self._event(CONFIRMED, t, frame) for t in update.confirmed]
        events += self._leave(update.left, frame)
        in_view = sum(t.confirmed for t in update.seen)
        self._update_metrics(len(update.confirmed), in_view)
        text = (f"{in_view} objects: " + ", ".join(f"#{t.id} {t.label or 'unknown'}"
                                                   for t in update.seen if t.confirmed)) if caption else ""
        return events, text, float(sum(r.recognition.latency_ms for r in results))

    def finish(self) -> list[dict]:
        """The source ended: a "left" event for every confirmed track still open."""
        left = self.tracker.finish()
        if not left or self._last_frame is None:
            return []
        events = self._leave(left, self._last_frame)
        self._update_metrics(0, 0)
        return events

    def close(self) -> None:
        close = getattr(self.proposer, "close", None)
        if close is not None:
            close()

    def _follow(self, track: Track, crop: np.ndarray) -> None:
        """Per-track work of one sighting: count line, barcode, the best crop."""
        line = self.options.count_line
        if line is not None:
            state = track.state.setdefault("line", LineState(line))
            direction = state.update(track.box.center)
            if direction is not None:
                track.crossings.append({"direction": direction, "frame": track.last.frame, "time": track.last.time})
        if self.barcodes is not None and track.barcode is None and track.hits >= track.state.get("barcode_next", 1):
            track.barcode = self.barcodes.read(crop)
            tries = track.state["barcode_tries"] = track.state.get("barcode_tries", 0) + 1
            slower = BARCODE_BACKOFF if tries >= self.options.barcode_tries else 1
            track.state["barcode_next"] = track.hits + self.options.barcode_every * slower
        if self.jpeg_quality is not None and track.best_sighting is track.last:
            track.state["best_crop"] = crop.copy()

    def _event(self, kind: str, track: Track, frame: Frame) -> dict:
        catalog = None
        if track.barcode is not None:  # only a decoded code is looked up
            catalog = self._catalog() if callable(self._catalog) else self._catalog
        return object_event(kind, track, frame, crop_jpeg=track.state.get("best_crop"),
                            jpeg_quality=self.jpeg_quality, catalog=catalog)

    def _leave(self, tracks: tuple[Track, ...], frame: Frame) -> list[dict]:
        for track in tracks:
            for crossing in track.crossings:
                self.counts[(track.label, crossing["direction"])] += 1
                if self.metrics is not None:
                    self.metrics.crossings.labels(label=str(track.label), direction=crossing["direction"]).inc()
            if self.metrics is not None:
                self.metrics.closed.inc()
                self.metrics.barcodes.labels(decoded=str(track.barcode is not None).lower()).inc()
        events = [self._event(LEFT, t, frame) for t in tracks]
        for event in events:
            if event["barcode"] is not None:
                self.agreements[event["barcode"]["agreement"]] += 1
                if self.metrics is not None:
                    self.metrics.checks.labels(agreement=event["barcode"]["agreement"]).inc()
        return events

    def _update_metrics(self, opened: int, in_view: int) -> None:
        if self.metrics is None:
            return
        self.metrics.opened.inc(opened)
        self.metrics.in_view.set(in_view)
        capped = self.proposer.capped
        if capped > self._capped:
            self.metrics.capped.inc(capped - self._capped)
            self._capped = capped

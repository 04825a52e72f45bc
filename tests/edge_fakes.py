"""Test doubles for the edge runtime: colour-coded frames and a recogniser that reads the colour.

A frame for a label is filled with that label's colour and crossed by a dark grid (so the
quality gate finds it sharp); `ColourRecognizer` takes the median colour of the frame and
names the nearest palette colour, so it survives JPEG/MPEG-4 compression. Grey is "unknown".
"""
from __future__ import annotations

import time

import numpy as np

from shelfsight.edge.runtime.postprocess import Prediction, Recognition
from shelfsight.edge.catalog.search import Match
from shelfsight.edge.pipeline.sources import BaseSource, Frame
from shelfsight.errors import SourceError

PALETTE = {  # BGR
    "apple": (40, 40, 200),
    "lime": (40, 200, 40),
    "plum": (200, 60, 60),
    None: (128, 128, 128),
}


def colour_frame(label: str | None, size: tuple[int, int] = (240, 320), grid: int = 16) -> np.ndarray:
    """A BGR frame of height x width in the label's colour with a 1-pixel dark grid."""
    image = np.empty((*size, 3), np.uint8)
    image[:] = PALETTE[label]
    image[::grid, :] = 20
    image[:, ::grid] = 20
    return image


class ColourRecognizer:
    """Names the palette colour nearest to the frame's median colour; records what it saw."""

    def __init__(self, delay_s: float = 0.0, fail_on: set[int] | None = None) -> None:
        self.delay_s = delay_s
        self.fail_on = fail_on or set()
        self.calls: list[tuple[tuple[int, ...], str]] = []

    def recognize(self, frame_bgr: np.ndarray, source: str = "") -> Recognition:
        started = time.perf_counter()
        self.calls.append((frame_bgr.shape, source))
        if len(self.calls) in self.fail_on:
            raise RuntimeError(f"fake failure on call {len(self.calls)}")
        if self.delay_s:
            time.sleep(self.delay_s)
        median = np.median(frame_bgr.reshape(-1, 3), axis=0)
        names = list(PALETTE)
        distances = [float(np.abs(median - np.array(PALETTE[n])).sum()) for n in names]
        order = np.argsort(distances)
        best = names[order[0]]
        score = float(np.float32(1.0 - distances[order[0]] / 765.0))
        predictions = tuple(Prediction(label=str(names[i]), score=round(1.0 - distances[i] / 765.0, 4), index=int(i))
                            for i in order[:2])
        matches = () if best is None else (Match(item_id=f"{best}-1", sku=f"SKU-{best}", label=best,
                                                 name=best.title(), similarity=np.float32(0.9)),)
        return Recognition(label=best, score=score, predictions=predictions, matches=matches,
                           latency_ms=(time.perf_counter() - started) * 1000.0)


def label_of(recognizer: ColourRecognizer, frame: Frame) -> str | None:
    return recognizer.recognize(frame.image, frame.source).label


class FlakySource(BaseSource):
    """A live source scripted per open(): a list of steps, one list per session.

    Steps: "frame" yields a frame, "end" returns None, "raise" raises OSError. A session given as
    the string "refuse" makes open() fail with SourceError.
    """

    live = True

    def __init__(self, sessions: list, label: str | None = "apple") -> None:
        super().__init__("flaky")
        self.label = label
        self.sessions = list(sessions)
        self.opens = 0
        self._steps: list[str] = []

    def _open(self) -> None:
        self.opens += 1
        session = self.sessions.pop(0) if self.sessions else ["end"]
        if session == "refuse":
            raise SourceError("flaky: camera busy")
        self._steps = list(session)

    def _read(self) -> Frame | None:
        step = self._steps.pop(0) if self._steps else "end"
        if step == "raise":
            raise OSError("flaky: cable pulled")
        return None if step == "end" else self._frame(colour_frame(self.label))

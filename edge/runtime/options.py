"""How a `Recognizer` runs: its running mode and its knobs, as one frozen dataclass.

The running modes are MediaPipe Tasks' (``RunningMode.IMAGE / VIDEO / LIVE_STREAM``):

- IMAGE: independent images, ``recognize(frame)``; no state between calls.
- VIDEO: the frames of one video in order, ``recognize_for_video(frame, timestamp_ms)``;
  temporal smoothing applies (``Recognition.reported`` marks once per appearance).
- LIVE_STREAM: a camera feeding frames faster than they may be recognised,
  ``recognize_async(frame, timestamp_ms)``; results (smoothed as in VIDEO) arrive through
  ``result_callback(recognition, frame_bgr, timestamp_ms)`` on the recogniser's own thread,
  and a frame waiting while the model is busy is replaced by a newer one.
"""
from __future__ import annotations

import enum
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import numpy as np

from shelfsight.errors import ConfigError

from .smoothing import SmoothingOptions

if TYPE_CHECKING:
    from .postprocess import Recognition

ResultCallback = Callable[["Recognition", np.ndarray, int], None]


class RunningMode(enum.Enum):
    IMAGE = "image"
    VIDEO = "video"
    LIVE_STREAM = "live_stream"


@dataclass(frozen=True)
class RecognizerOptions:
    """Options of `Recognizer.create_from_options`.

    Attributes:
        bundle: the bundle directory.
        running_mode: IMAGE, VIDEO or LIVE_STREAM (see the module docstring).
        runtime: TFLite interpreter ("auto", "litert", "tflite_runtime", "tensorflow"; checked
            by `load_runtime`, which names what is installed).
        threads: interpreter threads (None: the runtime's default).
        delegates: delegate libraries to load, e.g. ("libedgetpu.so.1",).
        top_k: classes reported per frame (>= 1).
        search_k: similar catalog items per frame (0 turns search off).
        unknown_threshold: overrides the bundle's calibrated score threshold (0..1).
        fusion: blend the nearest catalog items' votes into the class scores when the bundle's
            manifest has a ``fusion`` section (`fusion.py`); False: the classifier alone.
        smoothing: VIDEO and LIVE_STREAM only (None there: the default `SmoothingOptions()`);
            IMAGE mode has no frames before or after, so giving it there is an error.
        result_callback: LIVE_STREAM only, and required there.
    """

    bundle: str | Path
    running_mode: RunningMode = RunningMode.IMAGE
    runtime: str = "auto"
    threads: int | None = None
    delegates: tuple[str, ...] = ()
    top_k: int = 5
    search_k: int = 5
    unknown_threshold: float | None = None
    fusion: bool = True
    smoothing: SmoothingOptions | None = None
    result_callback: ResultCallback | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.running_mode, RunningMode):
            raise ConfigError(f"running_mode must be a RunningMode, got {self.running_mode!r}")
        _check_int("threads", self.threads, 1, allow_none=True)
        _check_int("top_k", self.top_k, 1)
        _check_int("search_k", self.search_k, 0)
        if not isinstance(self.delegates, tuple):
            raise ConfigError(f"delegates must be a tuple of library names, got {type(self.delegates).__name__}")
        if self.unknown_threshold is not None and not 0.0 <= float(self.unknown_threshold) <= 1.0:
            raise ConfigError(f"unknown_threshold must be within 0..1, got {self.unknown_threshold!r}")
        image = self.running_mode is RunningMode.IMAGE
        if self.smoothing is not None and (image or not isinstance(self.smoothing, SmoothingOptions)):
            raise ConfigError("smoothing belongs to the video and live-stream modes" if image else
                              f"smoothing must be SmoothingOptions, got {type(self.smoothing).__name__}")
        live = self.running_mode is RunningMode.LIVE_STREAM
        if live != (self.result_callback is not None):
            raise ConfigError("the live-stream mode needs a result_callback" if live else
                              f"result_callback is for the live-stream mode, not {self.running_mode.value}")

    @property
    def stream_smoothing(self) -> SmoothingOptions | None:
        """The smoothing a stream mode applies (None in IMAGE mode)."""
        if self.running_mode is RunningMode.IMAGE:
            return None
        return self.smoothing or SmoothingOptions()


def _check_int(name: str, value: object, minimum: int, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"{name} must be a whole number >= {minimum}, got {value!r}")

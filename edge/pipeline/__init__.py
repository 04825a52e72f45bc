"""The capture pipeline: frame source -> capture thread -> quality gate -> recogniser ->
smoothing -> events -> sinks, with health metrics. Works with any object that has
``recognize(frame_bgr, source="")``; a file- or array-backed source serves tests."""
from .capture import LatestFrameCapture
from .health import Health
from .quality import QualityOptions, Roi
from .runner import RunOptions, RunSummary, run
from .sinks import Sink, make_sinks
from .sources import Frame, FrameSource, open_source

__all__ = ["Frame", "FrameSource", "Health", "LatestFrameCapture", "QualityOptions", "Roi", "RunOptions",
           "RunSummary", "Sink", "make_sinks", "open_source", "run"]

"""Recognition events: the one JSON-ready dict every sink receives.

An event is the result record (runtime/results.py: "schema", "label" (None for unknown),
"score", "predictions", "matches", "latency_ms") with "id" (uuid4 hex), "time" (ISO 8601,
UTC, of the frame's capture), "source" and "frame" (the frame index), and "jpeg" (the
frame, base64) only when asked for: by default no picture leaves the device.
"""
from __future__ import annotations

import base64
import uuid
from datetime import datetime, timezone
from typing import Any

import cv2
import numpy as np

from shelfsight.errors import ConfigError

from ..runtime.postprocess import Recognition
from .sources import Frame


def build_event(recognition: Recognition, frame: Frame, *, jpeg_quality: int | None = None) -> dict:
    """Make the event for a recognition of `frame`.

    Args:
        recognition: the recogniser's result.
        frame: the frame it was made from.
        jpeg_quality: 1..100 to attach the frame as a base64 JPEG; None (default) attaches nothing.

    Raises:
        ConfigError: jpeg_quality outside 1..100.
    """
    event = {"id": uuid.uuid4().hex, "time": iso_time(frame.timestamp), "source": frame.source,
             "frame": frame.index, **recognition.to_dict()}
    if jpeg_quality is not None:
        event["jpeg"] = encode_jpeg(frame.image, jpeg_quality)
    return _plain(event)


def iso_time(timestamp: float) -> str:
    """Seconds since the epoch as ISO 8601 UTC with milliseconds: 2024-05-01T12:00:00.250+00:00."""
    return datetime.fromtimestamp(timestamp, timezone.utc).isoformat(timespec="milliseconds")


def encode_jpeg(image_bgr: np.ndarray, quality: int = 85) -> str:
    """A BGR image as base64 JPEG text."""
    if isinstance(quality, bool) or not isinstance(quality, int) or not 1 <= quality <= 100:
        raise ConfigError(f"jpeg quality must be a whole number 1..100, got {quality!r}")
    ok, data = cv2.imencode(".jpg", image_bgr, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise ValueError(f"OpenCV could not encode a {image_bgr.shape} {image_bgr.dtype} image as JPEG")
    return base64.b64encode(data.tobytes()).decode("ascii")


def _plain(value: Any) -> Any:
    """Numpy scalars and arrays inside an event -> plain Python, so json.dumps always works."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return value

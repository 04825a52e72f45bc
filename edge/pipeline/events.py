"""Recognition events: the one JSON-ready dict every sink receives.

An event has: "id" (uuid4 hex), "time" (ISO 8601, UTC, of the frame's capture), "source",
"frame" (the frame index), "label" (None for unknown), "score", "predictions" (top-k:
label, score, index), "matches" (similar catalog items: item_id, sku, label, name,
similarity), "latency_ms" (of the recognition), and "jpeg" (the frame, base64) only when
asked for: by default no picture leaves the device.
"""
from __future__ import annotations

import base64
import dataclasses
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
        recognition: the recogniser's result (predictions and matches are dataclasses).
        frame: the frame it was made from.
        jpeg_quality: 1..100 to attach the frame as a base64 JPEG; None (default) attaches nothing.

    Raises:
        ConfigError: jpeg_quality outside 1..100.
    """
    event = {
        "id": uuid.uuid4().hex,
        "time": iso_time(frame.timestamp),
        "source": frame.source,
        "frame": frame.index,
        "label": recognition.label,
        "score": recognition.score,
        "predictions": [_record(p) for p in recognition.predictions],
        "matches": [_record(m) for m in recognition.matches],
        "latency_ms": recognition.latency_ms,
    }
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


def _record(item: Any) -> dict:
    if dataclasses.is_dataclass(item) and not isinstance(item, type):
        return dataclasses.asdict(item)
    if isinstance(item, dict):
        return dict(item)
    raise TypeError(f"expected a dataclass record (Prediction / Match), got {type(item).__name__}")


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

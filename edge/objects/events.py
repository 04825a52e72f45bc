"""Per-object events: the run loop's event (`build_event`) of a track's best frame, plus the track.

Keys added to the usual ones (id, time, source, frame, label, score, predictions, matches,
latency_ms): "kind" ("object_confirmed" when a track is confirmed, "object_left" when it
leaves), "track_id", "box" (x, y, w, h of the latest sighting), "best_frame" / "best_box"
(the track's best whole sighting of its class), "first_seen" / "last_seen" (ISO 8601 UTC)
with "first_frame" / "last_frame", "frames" (matched frames), "crossings" (count-line
crossings so far: direction, frame, time) and "barcode" (None until read; then value,
symbology, the catalog item listing it and whether it agrees with the visual match: see
`agreement`).
"label", "score", "predictions" and "matches" are the track's (its crops' mean outputs through
the recogniser's post-processing, see `tracking`); "latency_ms" is the best frame's. "jpeg", when
asked for, is the best crop.
"""
from __future__ import annotations

import dataclasses

from ..catalog.items import Catalog
from ..pipeline.events import build_event, encode_jpeg, iso_time
from ..pipeline.sources import Frame
from .agreement import check_barcode
from .tracking import Track

CONFIRMED, LEFT = "object_confirmed", "object_left"


def object_event(kind: str, track: Track, frame: Frame, *, crop_jpeg=None, jpeg_quality: int | None = None,
                 catalog: Catalog | None = None) -> dict:
    """The event of ``kind`` for ``track`` at ``frame`` (``crop_jpeg``: a BGR crop to attach;
    ``catalog``: where a decoded barcode is looked up)."""
    best, recognition = track.best_sighting, track.recognition
    event = build_event(dataclasses.replace(recognition, latency_ms=best.recognition.latency_ms), frame)
    event.update({
        "kind": kind, "track_id": track.id, "box": track.box.to_list(),
        "best_frame": best.frame, "best_box": best.box.to_list(),
        "first_seen": iso_time(track.first.time), "last_seen": iso_time(track.last.time),
        "first_frame": track.first.frame, "last_frame": track.last.frame, "frames": track.hits,
        "crossings": [dict(c) for c in track.crossings],
        "barcode": (check_barcode(track.barcode, catalog, recognition.label, recognition.matches)
                    if track.barcode else None),
    })
    if crop_jpeg is not None and jpeg_quality is not None:
        event["jpeg"] = encode_jpeg(crop_jpeg, jpeg_quality)
    return event

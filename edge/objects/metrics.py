"""The per-object metrics, registered beside the device's own in its `Health` registry.

    objects_in_view                         confirmed tracks seen in the last frame
    tracks_opened_total, tracks_closed_total confirmed tracks started / left
    object_crossings_total{label,direction} count-line crossings, by the track's final label
    proposals_capped_total                  boxes over the per-frame cap (noise, a rain of blobs)
    barcode_tracks_total{decoded}           closed tracks with / without a decoded barcode
    barcode_checks_total{agreement}         closed tracks with a barcode, by its agreement with the
                                            visual match (agree, mismatch: the ticket-switch alert,
                                            unlisted, unverified; see `agreement`)
"""
from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge


class ObjectMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        r = registry
        self.in_view = Gauge("shelfsight_objects_in_view", "Confirmed tracks seen in the last frame", registry=r)
        self.opened = Counter("shelfsight_tracks_opened", "Confirmed tracks started", registry=r)
        self.closed = Counter("shelfsight_tracks_closed", "Confirmed tracks that left", registry=r)
        self.crossings = Counter("shelfsight_object_crossings", "Count-line crossings by label and direction",
                                 labelnames=("label", "direction"), registry=r)
        self.capped = Counter("shelfsight_proposals_capped", "Proposals over the per-frame cap", registry=r)
        self.barcodes = Counter("shelfsight_barcode_tracks", "Closed tracks by whether a barcode was decoded",
                                labelnames=("decoded",), registry=r)
        self.checks = Counter("shelfsight_barcode_checks",
                              "Closed tracks with a barcode, by agreement with the visual match",
                              labelnames=("agreement",), registry=r)

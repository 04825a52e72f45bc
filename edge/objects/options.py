"""`ObjectsOptions`: everything the per-object mode runs with, one frozen dataclass."""
from __future__ import annotations

from dataclasses import dataclass, field

from shelfsight.errors import ConfigError

from .background import BackgroundOptions
from .counting import CountLine
from .detector import DetectorOptions
from .proposals import parse_backend
from .tracking import TrackingOptions


@dataclass(frozen=True)
class ObjectsOptions:
    """Attributes:
        backend: "background" or "detector:PATH.tflite" (see `proposals`).
        background: the background model's options (backend "background").
        detector: the detector's options (backend "detector:..."; its path comes from the backend).
        tracking: matching, confirmation and leaving.
        margin: crops grow by this share of the box's width / height on each side (0..1). 0 by
            default: a background box is the object's whole silhouette, and context around it
            costs accuracy (on the generated counter video a 0.1 margin turned an avocado into
            a kiwi); raise it for a detector whose boxes cut into the objects.
        max_batch: crops per inference at most (1: no batching).
        count_line: count tracks crossing it (None: no counting).
        barcodes: decode barcodes / QR codes on each track's crops until one is read.
        barcode_every: try a track's crop every this many of its frames ...
        barcode_tries: ... for this many tries; then 5 times less often (a product without a
            visible code would otherwise cost a QR search, ~7 ms at 120 px, every few frames
            for as long as it stays; a code turned to the camera later is still read).
    """

    backend: str = "background"
    background: BackgroundOptions = field(default_factory=BackgroundOptions)
    detector: DetectorOptions | None = None
    tracking: TrackingOptions = field(default_factory=TrackingOptions)
    margin: float = 0.0
    max_batch: int = 8
    count_line: CountLine | None = None
    barcodes: bool = True
    barcode_every: int = 3
    barcode_tries: int = 10

    def __post_init__(self) -> None:
        parse_backend(self.backend)
        checks = ((self.background, BackgroundOptions, "background"), (self.tracking, TrackingOptions, "tracking"),
                  (self.detector, (DetectorOptions, type(None)), "detector"),
                  (self.count_line, (CountLine, type(None)), "count_line"))
        for value, kind, name in checks:
            if not isinstance(value, kind):
                raise ConfigError(f"objects option {name} has the wrong type: {type(value).__name__}")
        if not 0.0 <= self.margin <= 1.0:
            raise ConfigError(f"objects margin must be 0..1, got {self.margin!r}")
        for name in ("max_batch", "barcode_every", "barcode_tries"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"objects {name} must be a whole number >= 1, got {value!r}")

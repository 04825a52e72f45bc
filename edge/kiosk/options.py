"""What a kiosk serves and how it learns: one frozen dataclass, checked when made."""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from pathlib import Path

from shelfsight.errors import ConfigError


@dataclass(frozen=True)
class KioskOptions:
    """Options of `KioskStation` and the kiosk's web page.

    Attributes:
        store: the feedback store directory (confirmed photos, the teaching queue; stays on the device).
        host, port: where the page is served (127.0.0.1 by default: only this device's own screen).
        staff_token: the secret of the staff page (compared in constant time); at least 8 characters.
        teach_after: confirmed photos of one product the model got wrong (or called unknown) before
            the device enrols them; 0 turns teaching off (photos are still kept for export).
        review: hold those photos for staff to approve or discard instead of enrolling them.
        view_fps: most frames a second the live view sends to each screen (1..30).
        view_width: width of the live view in pixels (the frame is scaled down, never up).
        jpeg_quality: of the live view (1..100).
        confirm_hold_s: how long the page shows "added" and ignores taps after a confirmation.
        source_fps: the rate a file or folder source is played at (cameras keep their own).
        images: a folder to look for catalog images in (beside the paths the catalog names).
        sync_photos: also send each photo kept from now on to the sync server (in review mode:
            once staff approved it), as a ``feedback`` event carrying the JPEG, through the outbox
            (which the station must have). Off by default: kept photos leave the device only
            through `FeedbackStore.export`.
    """

    store: Path
    staff_token: str
    host: str = "127.0.0.1"
    port: int = 8080
    teach_after: int = 5
    review: bool = False
    view_fps: int = 15
    view_width: int = 320
    jpeg_quality: int = 75
    confirm_hold_s: float = 2.0
    source_fps: float = 15.0
    images: Path | None = None
    sync_photos: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "store", Path(self.store))
        if self.images is not None:
            object.__setattr__(self, "images", Path(self.images))
        if not isinstance(self.staff_token, str) or len(self.staff_token) < 8:
            raise ConfigError("the staff token must be at least 8 characters")
        for name, low, high in (("port", 0, 65535), ("teach_after", 0, 1000), ("view_fps", 1, 30),
                                ("view_width", 64, 4096), ("jpeg_quality", 1, 100)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
                raise ConfigError(f"kiosk {name} must be a whole number {low}..{high}, got {value!r}")
        if not 0 <= float(self.confirm_hold_s) <= 60:
            raise ConfigError(f"kiosk confirm_hold_s must be within 0..60 s, got {self.confirm_hold_s!r}")
        if not 0 < float(self.source_fps) <= 120:
            raise ConfigError(f"kiosk source_fps must be within 0..120, got {self.source_fps!r}")
        if not isinstance(self.sync_photos, bool):
            raise ConfigError(f"kiosk sync_photos must be True or False, got {self.sync_photos!r}")
        if not isinstance(self.host, str) or not self.host:
            raise ConfigError(f"kiosk host must be a host name or address, got {self.host!r}")

    @property
    def loopback(self) -> bool:
        """Whether the page is reachable from this device only."""
        if self.host == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return False

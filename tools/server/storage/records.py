"""What the storage hands back: small immutable records, the same from every backend."""
from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class Principal:
    """Who sent a request: a device (by its own token, or named by the shared reference
    token's X-Shelfsight-Device header) or an administrator."""

    role: str  # "device" or "admin"
    device: str | None = None
    name: str = ""
    shared: bool = False


@dataclass(frozen=True)
class StoreResult:
    """One batch: how many events were new, and the ids already held with other content."""

    new: int
    conflicts: tuple[str, ...] = ()


@dataclass(frozen=True)
class HealthReport:
    """What a device says about itself (a heartbeat, or a "health" event in a batch)."""

    bundle_id: str | None = None
    fps: float | None = None
    unknown_rate: float | None = None
    errors: int | None = None
    outbox_backlog: int | None = None


@dataclass(frozen=True)
class DeviceRecord:
    id: str
    group: str
    created: float
    revoked: float | None
    last_seen: float | None
    bundle_id: str | None
    fps: float | None
    unknown_rate: float | None
    errors: int | None
    outbox_backlog: int | None
    health_at: float | None
    events: int = 0  # events held from it

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Rollout:
    """A bundle offered to a group or a share of devices until promoted or rolled back.

    The health limits (None: not checked) roll it back when a device in it reports worse.
    """

    id: int
    bundle: str
    group: str | None
    percent: int | None
    state: str  # "active", "promoted", "rolled_back"
    min_fps: float | None
    max_unknown_rate: float | None
    max_errors: int | None
    started: float
    ended: float | None
    reason: str

    def to_dict(self) -> dict:
        return asdict(self)

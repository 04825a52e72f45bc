"""Temporal smoothing: report a product once per appearance, once it is stable.

Per frame the smoother gets the top label, or None for "unknown" / nothing usable. A label
is reported when it has been the top label for `stable_frames` consecutive frames, and not
again until the scene has changed: another label became stable (and was reported), or
`reset_frames` consecutive frames were unknown/empty. A single odd frame in a run of the
same product neither reports the odd label nor re-reports the product.
"""
from __future__ import annotations

from dataclasses import dataclass

from shelfsight.errors import ConfigError


@dataclass(frozen=True)
class SmoothingOptions:
    """Attributes:
        stable_frames: consecutive frames a label must lead before it is reported (N >= 1).
        reset_frames: consecutive unknown/empty frames after which the same product counts
            as a new appearance (M >= 1).
    """

    stable_frames: int = 3
    reset_frames: int = 5

    def __post_init__(self) -> None:
        for name in ("stable_frames", "reset_frames"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"smoothing {name} must be a whole number >= 1, got {value!r}")


class TemporalSmoother:
    """Turns a per-frame label stream into one report per appearance."""

    def __init__(self, options: SmoothingOptions | None = None) -> None:
        self.options = options or SmoothingOptions()
        self._candidate: str | None = None
        self._run = 0
        self._empty_run = 0
        self._reported: str | None = None

    @property
    def reported(self) -> str | None:
        """The label of the current appearance, or None when the scene is empty."""
        return self._reported

    def update(self, label: str | None) -> str | None:
        """Feed one frame's top label (None = unknown/empty). Returns a label to report now, or None."""
        if label is None:
            self._candidate, self._run = None, 0
            self._empty_run += 1
            if self._empty_run >= self.options.reset_frames:
                self._reported = None
            return None
        self._empty_run = 0
        if label == self._candidate:
            self._run += 1
        else:
            self._candidate, self._run = label, 1
        if self._run >= self.options.stable_frames and label != self._reported:
            self._reported = label
            return label
        return None

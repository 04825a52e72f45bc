"""Counting line: objects whose track centre crosses a segment, by direction.

    --count-line x1,y1,x2,y2      pixels of the frame

Directions: "forward" is movement along the line's normal (y2 - y1, x1 - x2), i.e. left to
right across a line drawn top to bottom, bottom to top across a line drawn left to right;
"backward" the other way. A centre within ``hysteresis`` pixels of the line is on neither
side, so jitter on the line counts nothing; a crossing counts only where it passes between
the segment's ends.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from shelfsight.errors import ConfigError

DIRECTIONS = ("forward", "backward")


@dataclass(frozen=True)
class CountLine:
    x1: float
    y1: float
    x2: float
    y2: float
    hysteresis: float = 4.0

    def __post_init__(self) -> None:
        if (self.x1, self.y1) == (self.x2, self.y2):
            raise ConfigError(f"count line needs two different points, got {self.x1},{self.y1} twice")
        if self.hysteresis < 0:
            raise ConfigError(f"count line hysteresis must be >= 0, got {self.hysteresis!r}")

    @classmethod
    def parse(cls, text: str) -> "CountLine":
        """``"x1,y1,x2,y2"`` in pixels.

        Raises:
            ConfigError: not four numbers, or both points the same.
        """
        try:
            values = [float(v) for v in text.split(",")]
        except ValueError:
            values = []
        if len(values) != 4:
            raise ConfigError(f"count line must be x1,y1,x2,y2 in pixels, got {text!r}")
        return cls(*values)

    def side(self, point: tuple[float, float]) -> int:
        """+1 on the forward side, -1 on the backward side, 0 within the hysteresis band or past the ends."""
        d = np.array([self.x2 - self.x1, self.y2 - self.y1])
        p = np.array([point[0] - self.x1, point[1] - self.y1])
        length = float(np.hypot(*d))
        along = float(p @ d) / (length * length)
        if not 0.0 <= along <= 1.0:
            return 0
        distance = float(d[1] * p[0] - d[0] * p[1]) / length  # along the normal (dy, -dx)
        if abs(distance) <= self.hysteresis:
            return 0
        return 1 if distance > 0 else -1


class LineState:
    """One track's side of the line; `update` returns "forward"/"backward" on a crossing."""

    def __init__(self, line: CountLine) -> None:
        self.line = line
        self._side = 0

    def update(self, center: tuple[float, float]) -> str | None:
        side = self.line.side(center)
        if side == 0:
            return None
        previous, self._side = self._side, side
        if previous == 0 or previous == side:
            return None
        return "forward" if side > 0 else "backward"

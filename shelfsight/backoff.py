"""Exponential backoff: how long to wait before attempt n, for reopening a lost camera and for
resending to a server. One formula, optionally with "full jitter"."""
from __future__ import annotations

import math
import random
from dataclasses import dataclass

from .errors import ConfigError


@dataclass(frozen=True)
class BackoffOptions:
    """Attempt n (1-based) waits min(max_s, initial_s * factor**(n - 1)) seconds; with
    ``jitter``, a uniform draw between 0 and that, so that many devices do not retry in step."""

    initial_s: float = 0.5
    max_s: float = 30.0
    factor: float = 2.0
    jitter: bool = False

    def __post_init__(self) -> None:
        if not self.initial_s > 0:
            raise ConfigError(f"backoff initial_s must be > 0 seconds, got {self.initial_s}")
        if not self.max_s >= self.initial_s:
            raise ConfigError(f"backoff max_s must be >= initial_s ({self.initial_s}), got {self.max_s}")
        if not self.factor >= 1:
            raise ConfigError(f"backoff factor must be >= 1, got {self.factor}")

    @classmethod
    def for_retries(cls, initial_s: float = 0.5, max_s: float = 60.0) -> "BackoffOptions":
        """Doubling delays with full jitter, up to a minute: for requests to a server."""
        return cls(initial_s=initial_s, max_s=max_s, factor=2.0, jitter=True)

    def delay(self, attempt: int, rng: random.Random | None = None) -> float:
        """Seconds to wait before attempt ``attempt`` (1-based)."""
        if attempt < 1:
            raise ValueError(f"attempt is 1-based, got {attempt}")
        if self.factor > 1 and attempt - 1 >= math.log(self.max_s / self.initial_s, self.factor):
            ceiling = self.max_s  # reached the cap (and factor**n no longer risks an overflow)
        else:
            ceiling = min(self.max_s, self.initial_s * self.factor ** (attempt - 1))
        return (rng or random).uniform(0.0, ceiling) if self.jitter else ceiling


class Backoff:
    """Counts failed attempts: ``next_delay()`` after each failure, ``reset()`` after a success."""

    def __init__(self, options: BackoffOptions, rng: random.Random | None = None) -> None:
        self.options = options
        self.attempt = 0
        self._rng = rng or random.Random()

    def next_delay(self) -> float:
        self.attempt += 1
        return self.options.delay(self.attempt, self._rng)

    def reset(self) -> None:
        self.attempt = 0

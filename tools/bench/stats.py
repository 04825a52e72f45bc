"""Timing loops and latency statistics for `shelfsight bench`, plain Python and numpy.

`time_calls` runs warm-up calls, then timed calls (``time.perf_counter``) until both a
minimum time and a minimum number of runs are reached. `latency_stats` summarises the
timings: every run stays in the distribution; runs beyond Tukey's upper fence
(Q3 + 1.5 IQR) are counted as outliers and reported, not dropped.
"""
from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from typing import Any, Callable, Sequence

import numpy as np

from shelfsight.errors import ConfigError

PERCENTILES = (50, 90, 99)
TUKEY_K = 1.5


@dataclass(frozen=True)
class TimingOptions:
    """How long to measure one model on one backend.

    Attributes:
        min_time: timed calls go on for at least this many seconds.
        warmup: untimed calls after the first call (which is timed on its own).
        min_runs: at least this many timed calls, whatever the time.
    """

    min_time: float = 2.0
    warmup: int = 10
    min_runs: int = 20

    def __post_init__(self) -> None:
        if not (math.isfinite(self.min_time) and self.min_time >= 0):
            raise ConfigError(f"min_time {self.min_time} must be a finite number of seconds >= 0")
        if self.warmup < 0:
            raise ConfigError(f"warmup {self.warmup} must be >= 0")
        if self.min_runs < 1:
            raise ConfigError(f"min_runs {self.min_runs} must be >= 1")


@dataclass(frozen=True)
class TimedCalls:
    """Seconds taken by the first call, the warm-up calls and the timed calls."""

    first: float
    warmup: tuple[float, ...]
    times: tuple[float, ...]


def time_calls(fn: Callable[[Any], object], inputs: Sequence[Any], options: TimingOptions) -> TimedCalls:
    """Call ``fn(x)`` cycling through ``inputs``: once (first call), ``warmup`` times, then
    until ``min_time`` and ``min_runs`` are both reached.

    Raises:
        ConfigError: no inputs.
    """
    n = len(inputs)
    if n == 0:
        raise ConfigError("time_calls needs at least one input, got none")
    t0 = time.perf_counter()
    fn(inputs[0])
    first = time.perf_counter() - t0
    warm = []
    for i in range(options.warmup):
        t0 = time.perf_counter()
        fn(inputs[(i + 1) % n])
        warm.append(time.perf_counter() - t0)
    times: list[float] = []
    start = time.perf_counter()
    i = 0
    while len(times) < options.min_runs or time.perf_counter() - start < options.min_time:
        x = inputs[i % n]
        t0 = time.perf_counter()
        fn(x)
        times.append(time.perf_counter() - t0)
        i += 1
    return TimedCalls(first, tuple(warm), tuple(times))


@dataclass(frozen=True)
class LatencyStats:
    """Per-call latency in milliseconds over all timed runs (outliers included).

    ``outliers`` counts runs above Q3 + 1.5 IQR; ``throughput_fps`` is sequential
    single-stream calls per second (runs / total timed seconds; 0 if that total is 0).
    """

    runs: int
    mean_ms: float
    std_ms: float
    min_ms: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    outliers: int
    outlier_fence_ms: float
    throughput_fps: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def latency_stats(seconds: Sequence[float] | np.ndarray) -> LatencyStats:
    """Summarise per-call times given in seconds (percentiles by linear interpolation).

    Raises:
        ConfigError: no timings, or a negative or non-finite one.
    """
    s = np.asarray(seconds, dtype=np.float64).reshape(-1)
    if s.size == 0 or not np.all(np.isfinite(s)) or np.any(s < 0):
        raise ConfigError(f"latency_stats needs finite non-negative timings, got {s.size} values"
                          + ("" if s.size == 0 else f" (min {s.min() if np.all(np.isfinite(s)) else 'nan'})"))
    ms = s * 1e3
    p50, p90, p99 = (float(v) for v in np.percentile(ms, PERCENTILES))
    q1, q3 = (float(v) for v in np.percentile(ms, (25, 75)))
    fence = q3 + TUKEY_K * (q3 - q1)
    total = float(s.sum())
    return LatencyStats(
        runs=int(s.size), mean_ms=float(ms.mean()), std_ms=float(ms.std(ddof=1)) if s.size > 1 else 0.0,
        min_ms=float(ms.min()), p50_ms=p50, p90_ms=p90, p99_ms=p99, max_ms=float(ms.max()),
        outliers=int(np.count_nonzero(ms > fence)), outlier_fence_ms=fence,
        throughput_fps=float(s.size / total) if total > 0 else 0.0)

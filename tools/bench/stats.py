"""Latency statistics for `shelfsight bench` (the timing loop is `shelfsight.timing`).

`latency_stats` summarises the timings: every run stays in the distribution; runs beyond Tukey's upper fence
(Q3 + 1.5 IQR) are counted as outliers and reported, not dropped.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Sequence

import numpy as np

from shelfsight.errors import ConfigError

PERCENTILES = (50, 90, 99)
TUKEY_K = 1.5


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

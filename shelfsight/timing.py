"""Timing loops, plain Python: warm-up calls, then calls timed one by one with
``time.perf_counter`` until both a minimum time and a minimum number of runs are reached.

The one timed loop is `time_rounds`; `time_calls` (the benchmark: first call and warm-up
timed too) and `latencies` (index tuning: untimed warm-up) are built on it.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np

from .errors import ConfigError


@dataclass(frozen=True)
class TimingOptions:
    """How long to measure one call.

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


def warm_up(fns: Sequence[Callable[[Any], object]], inputs: Sequence[Any], calls: int,
            offset: int = 0) -> list[list[float]]:
    """``calls`` rounds of every fn on ``inputs[(offset + i) % n]``; the seconds of each call."""
    n = len(inputs)
    times: list[list[float]] = [[] for _ in fns]
    for i in range(calls):
        x = inputs[(offset + i) % n]
        for fn, out in zip(fns, times):
            t0 = time.perf_counter()
            fn(x)
            out.append(time.perf_counter() - t0)
    return times


def time_rounds(fns: Sequence[Callable[[Any], object]], inputs: Sequence[Any], min_time: float,
                min_runs: int) -> list[list[float]]:
    """Seconds per call of each fn, cycling through ``inputs`` from the first, every fn once
    per round on the same input (so a busy machine slows them alike), until both ``min_runs``
    rounds and ``min_time`` seconds are reached."""
    n = len(inputs)
    times: list[list[float]] = [[] for _ in fns]
    start = time.perf_counter()
    i = 0
    while i < min_runs or time.perf_counter() - start < min_time:
        x = inputs[i % n]
        for fn, out in zip(fns, times):
            t0 = time.perf_counter()
            fn(x)
            out.append(time.perf_counter() - t0)
        i += 1
    return times


def time_calls(fn: Callable[[Any], object], inputs: Sequence[Any], options: TimingOptions) -> TimedCalls:
    """Call ``fn(x)`` cycling through ``inputs``: once (first call), ``warmup`` times, then
    until ``min_time`` and ``min_runs`` are both reached.

    Raises:
        ConfigError: no inputs.
    """
    if len(inputs) == 0:
        raise ConfigError("time_calls needs at least one input, got none")
    t0 = time.perf_counter()
    fn(inputs[0])
    first = time.perf_counter() - t0
    (warm,) = warm_up([fn], inputs, options.warmup, offset=1)
    (times,) = time_rounds([fn], inputs, options.min_time, options.min_runs)
    return TimedCalls(first, tuple(warm), tuple(times))


def latencies(fns: Sequence[Callable[[Any], object]], inputs: Sequence[Any], min_time: float, warmup: int = 10,
              min_runs: int = 50) -> list[np.ndarray]:
    """Seconds per call of each fn after ``warmup`` untimed rounds (at most one per input),
    timed as `time_rounds` does."""
    warm_up(fns, inputs, min(warmup, len(inputs)))
    return [np.asarray(t) for t in time_rounds(fns, inputs, min_time, min_runs)]

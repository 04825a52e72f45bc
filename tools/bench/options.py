"""What `shelfsight bench` measures and how long: thread counts, timing, inputs, peers."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from shelfsight.timing import TimingOptions
from shelfsight.errors import ConfigError

from . import compare as peers

RUNTIMES = ("auto", "litert", "tflite_runtime", "tensorflow")


def default_threads(cores: int | None = None) -> tuple[int, ...]:
    """1, then powers of two up to the core count, and the core count itself."""
    n = max(1, cores or os.cpu_count() or 1)
    out = {1, n}
    t = 2
    while t < n:
        out.add(t)
        t *= 2
    return tuple(sorted(out))


def parse_threads(text: str | None) -> tuple[int, ...]:
    """"1,2,4" -> (1, 2, 4); None or "" -> `default_threads()`.

    Raises:
        ConfigError: not a comma list of integers >= 1.
    """
    if not text:
        return default_threads()
    try:
        values = tuple(sorted({int(v) for v in text.split(",") if v.strip()}))
    except ValueError:
        raise ConfigError(f"--threads {text!r}: expected a comma list of integers such as 1,2,4") from None
    if not values or values[0] < 1:
        raise ConfigError(f"--threads {text!r}: thread counts must be >= 1")
    return values


@dataclass(frozen=True)
class BenchOptions:
    """What to measure and how long.

    Attributes:
        threads: interpreter thread counts to measure each target at.
        timing: warm-up, minimum time and minimum runs per measurement.
        input_count: how many input images every backend cycles through.
        data, split: dataset for real inputs, accuracy and search recall (None: synthetic inputs).
        compare: peer backends (see bench_compare.PEERS).
        runtime: shelfsight's TFLite runtime ("auto" or a name from edge.interpreter).
        rounds: interleaved timing slices per measurement (timing.min_time and min_runs are
            split over them).
    """

    threads: tuple[int, ...] = (1,)
    timing: TimingOptions = field(default_factory=TimingOptions)
    input_count: int = 16
    data: Path | None = None
    split: str = "val"
    compare: tuple[str, ...] = ()
    runtime: str = "auto"
    rounds: int = 10

    def __post_init__(self) -> None:
        if self.rounds < 1:
            raise ConfigError(f"rounds {self.rounds} must be >= 1")
        if not self.threads or min(self.threads) < 1:
            raise ConfigError(f"threads {self.threads} must be one or more counts >= 1")
        if self.input_count < 1:
            raise ConfigError(f"input count {self.input_count} must be >= 1")
        unknown = [c for c in self.compare if c not in peers.PEERS]
        if unknown:
            raise ConfigError(f"compare {unknown} unknown, expected any of {', '.join(peers.PEERS)}")
        if self.runtime not in RUNTIMES:
            raise ConfigError(f"runtime {self.runtime!r} unknown, expected one of {', '.join(RUNTIMES)}")
        if self.data is not None and not Path(self.data).exists():
            raise ConfigError(f"--data {self.data} not found")

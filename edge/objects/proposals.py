"""Object proposals: where the boxes come from, chosen in exactly one place (`make_proposer`).

    background             -> BackgroundProposer (fixed camera, learned empty scene)
    detector:PATH.tflite   -> DetectorProposer (SSD-style TFLite detector)

A proposer has ``propose(frame_bgr) -> list[Box]`` and ``capped`` (boxes over its per-frame
cap, over the run); ``close()`` where it holds an interpreter.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Protocol

import numpy as np

from shelfsight.errors import ConfigError

from .background import BackgroundOptions, BackgroundProposer
from .boxes import Box
from .detector import DetectorOptions, DetectorProposer

BACKENDS = ("background", "detector:PATH.tflite")


class Proposer(Protocol):
    capped: int

    def propose(self, frame_bgr: np.ndarray) -> list[Box]: ...


def parse_backend(spec: str) -> tuple[str, Path | None]:
    """``"background"`` -> ("background", None); ``"detector:m.tflite"`` -> ("detector", Path("m.tflite")).

    Raises:
        ConfigError: anything else.
    """
    if spec == "background":
        return "background", None
    if spec.startswith("detector:") and spec[len("detector:"):]:
        return "detector", Path(spec[len("detector:"):])
    raise ConfigError(f"objects backend {spec!r} unknown, expected one of: {', '.join(BACKENDS)}")


def make_proposer(backend: str, background: BackgroundOptions | None = None,
                  detector: DetectorOptions | None = None) -> Proposer:
    """The proposer for ``backend`` (see `parse_backend`), with its options.

    For ``detector:PATH``, PATH replaces ``detector.model`` (the other detector options stay).

    Raises:
        ConfigError: unknown backend; ModelError: the detector does not load or has other outputs.
    """
    kind, path = parse_backend(backend)
    if kind == "background":
        return BackgroundProposer(background or BackgroundOptions())
    options = dataclasses.replace(detector, model=path) if detector is not None else DetectorOptions(model=path)
    return DetectorProposer(options)

"""A recogniser that can be swapped for a new bundle while the camera loop runs.

The update poller calls `reload(bundle_dir)` from its own thread after a verified,
health-checked bundle became current; frames in flight finish on the old model, the
next frame uses the new one, and the old interpreter is closed. If the new bundle does
not load, the exception reaches the poller (which rolls the store back) and the old
recogniser keeps running.
"""
from __future__ import annotations

import contextlib
import logging
import threading
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from .postprocess import Recognition
from .recognizer import Recognizer

log = logging.getLogger(__name__)


class ReloadableRecognizer:
    """Wraps a `Recognizer`; `recognize` always uses the newest successfully loaded one."""

    def __init__(self, bundle_dir: str | Path, factory: Callable[[Path], Recognizer]):
        self._factory = factory
        self._lock = threading.Lock()
        self._current = factory(Path(bundle_dir))
        self.reloads = 0

    @property
    def current(self) -> Recognizer:
        return self._current

    def recognize(self, frame_bgr: np.ndarray, source: str = "") -> Recognition:
        with self._lock:
            return self._current.recognize(frame_bgr, source)

    @contextlib.contextmanager
    def using(self) -> Iterator[Recognizer]:
        """The current recogniser, held for the block: a reload waits, so it is not closed under it."""
        with self._lock:
            yield self._current

    def reload(self, bundle_dir: str | Path) -> None:
        new = self._factory(Path(bundle_dir))  # raises: the old one stays
        with self._lock:
            old, self._current = self._current, new
        old.close()
        self.reloads += 1
        log.info("now running bundle %s from %s", new.bundle.bundle_id, bundle_dir)

    def close(self) -> None:
        with self._lock:
            self._current.close()

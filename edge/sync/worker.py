"""The thread behind each of the device's sync workers (uploader, update poller, heartbeat):
``start`` once, ``stop`` any number of times, and a session closed on stop when it is the
worker's own."""
from __future__ import annotations

import abc
import threading

from .http import SyncSession


class SyncWorker(abc.ABC):
    """A daemon thread running `_run` until `_stop` is set."""

    thread_name = "shelfsight-sync"

    def __init__(self, session: SyncSession, own_session: bool) -> None:
        self.session = session
        self._own_session = own_session
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @abc.abstractmethod
    def _run(self) -> None:
        """The loop: work, then ``self._stop.wait(delay)``, until ``self._stop`` is set."""

    def start(self):
        """Start the background thread (once); its first round runs at once."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name=self.thread_name, daemon=True)
            self._thread.start()
        return self

    def stop(self, timeout_s: float = 10.0) -> None:
        """Stop the thread; idempotent. A request in flight finishes or times out first."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
        if self._own_session:
            self.session.close()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

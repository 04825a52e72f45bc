"""The kiosk's device side: the run loop of `shelfsight run` in a thread, with the live view
looking in (`live`), one set of sinks shared by the loop and the taps, the sync service, and
the feedback store with its teacher.

    station = KioskStation(RecognizerOptions("bundle/", top_k=5, search_k=5), "0", KioskOptions(...))
    station.start()             # recognising; `station.view` has the frames and the answers
    station.confirmations.confirm(frame_id, "banana")
    station.stop()              # idempotent

Wired as `Device.run` wires `shelfsight run` (bundle store installed once, hot reload from
the update poller, outbox sink), except that the sinks are made here so that the taps'
``confirmed`` events go through the very same ones.
"""
from __future__ import annotations

import contextlib
import dataclasses
import logging
import threading
import time
from collections import deque
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from shelfsight.errors import ConfigError

from ..pipeline.runner import RunOptions, RunSummary, run
from ..pipeline.sinks import Sink, make_sinks
from ..pipeline.sources import open_source
from ..runtime.options import RecognizerOptions
from ..runtime.recognizer import Recognizer
from ..runtime.reload import ReloadableRecognizer
from ..sync.service import SyncConfig, SyncService
from .confirm import Confirmations
from .feedback import FeedbackStore, Photo, feedback_event
from .live import KioskHealth, LiveView, TapRecognizer, ViewSource
from .options import KioskOptions
from .teach import Teacher

log = logging.getLogger(__name__)


class SharedSinks:
    """One `Sink` in front of several, for the run loop's thread and the taps' at once: each event
    goes to every sink under one lock; a failing sink is counted and logged, the others still get it."""

    def __init__(self, sinks: Sequence[Sink]) -> None:
        self._sinks = list(sinks)
        self._lock = threading.Lock()
        self._closed = False
        self.errors = 0
        self.events = 0
        self.recent: deque[dict] = deque(maxlen=20)  # the staff page's last events (no pictures)

    def emit(self, event: dict) -> None:
        with self._lock:
            if self._closed:
                raise ValueError("the kiosk's sinks are closed")
            for sink in self._sinks:
                try:
                    sink.emit(event)
                except Exception:
                    self.errors += 1
                    log.exception("sink %r failed to take event %s", sink, event.get("id"))
            self.events += 1
            self.recent.appendleft({k: event.get(k) for k in ("id", "time", "label", "score", "item_id",
                                                                "model_correct", "frame", "kiosk_frame")}
                                   | {"kind": event.get("kind", "recognized")})

    def flush(self) -> None:
        with self._lock:
            for sink in self._sinks:
                sink.flush()

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            for sink in self._sinks:
                try:
                    sink.flush()
                    sink.close()
                except Exception:
                    self.errors += 1
                    log.exception("sink %r failed to flush/close", sink)


class KioskStation:
    """Runs one kiosk (see the module docstring).

    Args:
        recognizer: the bundle and how to run it (image mode; the loop smooths).
        source: the ``--source`` string (`open_source`).
        kiosk: the kiosk's options.
        loop: restart a file or folder at its end.
        sinks: sink specs (`make_sinks`).
        sync: outbox / uploader / bundle store; None: none.
        run_options: the loop's options (the kiosk always takes the newest frame).
        recognizer_factory: ``f(bundle_dir) -> Recognizer`` (default: from ``recognizer``).
    """

    def __init__(self, recognizer: RecognizerOptions, source: str, kiosk: KioskOptions, *, loop: bool = False,
                 sinks: Sequence[str] = (), sync: SyncConfig | None = None, run_options: RunOptions | None = None,
                 recognizer_factory: Callable[[Path], Any] | None = None) -> None:
        self.recognizer_options, self.source_spec, self.options = recognizer, source, kiosk
        self._loop_source, self._sink_specs, self._sync_config = loop, tuple(sinks), sync
        self._run_options = dataclasses.replace(run_options or RunOptions(), drop_frames=True, show=False,
                                                max_frames=None)
        self._factory = recognizer_factory or (
            lambda bundle_dir: Recognizer.create_from_options(dataclasses.replace(recognizer, bundle=bundle_dir)))
        if kiosk.sync_photos and (sync is None or sync.outbox is None):
            raise ConfigError("sync_photos sends kept photos through the sync outbox; "
                              "give an outbox and an endpoint (--outbox DB --endpoint URL)")
        self.view = LiveView(kiosk.view_width, kiosk.jpeg_quality)
        self.health = KioskHealth(self.view)
        self.store = FeedbackStore(kiosk.store)
        share = self._share_photo if kiosk.sync_photos else None
        self.teacher = Teacher(self.store, self.using, kiosk.teach_after, kiosk.review, self.view.next_frame_id,
                               share=share)
        self.sinks: SharedSinks | None = None
        self.service: SyncService | None = None
        self.recognizer: ReloadableRecognizer | None = None
        self.confirmations = Confirmations(self.view, self.using, self.teacher, self.emit, share=share)
        self.summary: RunSummary | None = None
        self.error: str | None = None
        self.started_at = 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._stack = contextlib.ExitStack()

    def start(self) -> "KioskStation":
        """Load the bundle, open the source and the sinks, start sync and the run loop.

        Raises:
            BundleError, SourceError, ConfigError: as `shelfsight run` raises them (nothing is left running).
        """
        try:
            source = ViewSource(open_source(self.source_spec, loop=self._loop_source), self.view,
                                self.options.source_fps)
            if self._sync_config is not None:
                self.service = SyncService(self._sync_config)
                self._stack.callback(self.service.stop)
            bundle_dir = self._bundle_dir()
            self.recognizer = ReloadableRecognizer(bundle_dir, lambda d: TapRecognizer(self._factory(d), self.view))
            self._stack.callback(self.recognizer.close)
            sinks = make_sinks(list(self._sink_specs))
            if self.service is not None:
                if self.service.updater is not None:
                    self.service.updater.on_update = self.recognizer.reload
                if self.service.outbox is not None:
                    sinks.append(self.service.sink())
                self.service.start()
            self.sinks = SharedSinks(sinks)
            self._stack.callback(self.sinks.close)
        except BaseException:
            self._stack.close()
            self.store.close()
            raise
        self.started_at = time.time()
        self._thread = threading.Thread(target=self._run, args=(source,), name="kiosk-run-loop", daemon=True)
        self._thread.start()
        return self

    def _bundle_dir(self) -> Path:
        given = Path(self.recognizer_options.bundle)
        store = self.service.store if self.service is not None else None
        if store is None:
            return given
        if store.current is None:
            store.install(given)
        return Path(store.current)

    def _run(self, source: ViewSource) -> None:
        try:
            self.summary = run(source, self.recognizer, [self.sinks], self._run_options, health=self.health,
                               stop=self._stop, handle_signals=False)
            log.info("the kiosk's run loop ended: %s", self.summary.stopped_by)
        except Exception as e:  # shown on the staff page; the page keeps serving
            self.error = f"{type(e).__name__}: {e}"
            log.exception("the kiosk's run loop failed")

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    @contextlib.contextmanager
    def using(self) -> Iterator[Any]:
        """The running recogniser, held for the block (a reload waits)."""
        if self.recognizer is None:
            raise RuntimeError("the kiosk is not started")
        with self.recognizer.using() as rec:
            yield rec

    def emit(self, event: dict) -> None:
        if self.sinks is None:
            raise RuntimeError("the kiosk is not started")
        self.sinks.emit(event)

    def _share_photo(self, photo: Photo) -> None:
        """Queue a kept photo for the sync server (``sync_photos``): a ``feedback`` event in the outbox
        only (not the other sinks: a stdout or webhook sink gets no picture)."""
        if self.service is None or self.service.outbox is None:
            raise ConfigError("the kiosk has no sync outbox")
        if not self.service.outbox.put(feedback_event(photo, self.store.path(photo).read_bytes())):
            log.warning("the sync outbox refused the photo of %s (full or too large)", photo.event_id)

    def stop(self) -> None:
        """Stop the run loop, close sinks, sync, the recogniser and the store; idempotent."""
        self._stop.set()
        self.view.close()
        if self._thread is not None:
            self._thread.join(10.0)
        self._stack.close()
        self.store.close()

    def stats(self) -> dict[str, Any]:
        """What the staff page shows."""
        seq, _ = self.view.results.get()
        with self.using() as rec:
            manifest = rec.bundle.manifest
            labels = len(rec.labels)
            enrolled = len(rec.index.enrolled) if rec.index is not None else 0
        service = self.service
        outbox = service.outbox.stats() if service is not None and service.outbox is not None else None
        uploader = service.uploader.stats() if service is not None and service.uploader is not None else None
        return {
            "bundle": {"id": manifest.get("bundle_id"), "created_at": manifest.get("created_at"),
                       "schema_version": manifest.get("schema_version"), "labels": labels,
                       "enrolled_on_device": enrolled, "reloads": self.recognizer.reloads},
            "running": self.running, "error": self.error, "source": self.source_spec,
            "uptime_s": round(time.time() - self.started_at, 1) if self.started_at else 0.0,
            **self.view.rates(),
            "events": self.sinks.events if self.sinks else 0, "sink_errors": self.sinks.errors if self.sinks else 0,
            "confirmed": self.confirmations.count, "enrolments": self.teacher.enrolments,
            "review": self.teacher.review, "teach_after": self.teacher.teach_after,
            "photos": self.store.counts(), "queue": self.store.queue(),
            "sync": None if outbox is None else {
                "pending": outbox.pending, "dead": outbox.dead, "acked": outbox.counters.get("acked", 0),
                "photos": self.options.sync_photos,
                "dropped": outbox.counters.get("dropped_oldest", 0) + outbox.counters.get("refused", 0),
                "uploading": uploader is not None,
                "last_error": uploader.last_error if uploader else None,
                "consecutive_failures": uploader.consecutive_failures if uploader else 0},
            "last_frame": seq,
            "last_events": list(self.sinks.recent) if self.sinks else [],
        }

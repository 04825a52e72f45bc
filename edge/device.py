"""One device process: the camera loop with its recogniser, sinks, metrics and sync, wired once.

    summary = Device(DeviceOptions(RecognizerOptions("bundle/"), source="0",
                                   sync=SyncConfig(outbox=Path("events.db"), ...))).run()

`shelfsight run` builds a `DeviceOptions` and calls `Device.run`; this is the only place where
the sync service, the bundle store and hot reload meet the run loop:

- with a bundle store, the given bundle is installed there once (when the store is empty) and
  the device runs the store's current bundle; verified updates swap in without a restart
  (`ReloadableRecognizer.reload`);
- with an outbox, events go to it as well as to the sinks, and the uploader sends them; a
  heartbeat (when configured) carries the run loop's FPS, unknown rate and errors and the
  running bundle to the server, events or not;
- SIGHUP reloads the bundle (the store's current one, or the given directory after it was
  replaced) without stopping the camera: a bundle that does not load is refused in one log
  line and the running one stays (other settings need a restart);
- everything started is stopped when the run ends, whatever the reason.
"""
from __future__ import annotations

import contextlib
import dataclasses
import logging
import signal
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

from shelfsight.errors import ConfigError, ShelfsightError

from .objects import BundleCrops, ObjectsOptions, ObjectStage
from .pipeline.health import Health
from .pipeline.runner import RunOptions, RunSummary, run
from .pipeline.sinks import make_sinks
from .pipeline.sources import open_source
from .runtime.options import RecognizerOptions, RunningMode
from .runtime.recognizer import Recognizer
from .runtime.reload import ReloadableRecognizer
from .sync.service import SyncConfig, SyncService

log = logging.getLogger(__name__)

RecognizerFactory = Callable[[Path], Recognizer]


@dataclass(frozen=True)
class DeviceOptions:
    """What one device runs.

    Attributes:
        recognizer: the bundle and how to run it (image mode: the run loop smooths frames itself,
            with ``run.smoothing``). With a bundle store, ``recognizer.bundle`` is what gets
            installed when the store is empty.
        source: camera index, video file, image folder or file, stream URL, GStreamer pipeline,
            "picamera2" (see `open_source`).
        loop: restart a file or folder source at its end.
        sinks: sink specs for `make_sinks` ("stdout", "jsonl:PATH", an http(s) hook URL).
        run: the run loop's options (ROI, quality gate, smoothing, frame dropping, ...).
        sync: outbox / uploader / bundle store and update poller; None: no sync.
        metrics_port: serve Prometheus metrics on this port (0: any free one); None: no server.
        metrics_host: the address it binds (loopback by default: metrics name the store's products).
        objects: every product in view (proposals, tracks, per-object events); None (default):
            one answer per frame, as the single-object mode has always done.
    """

    recognizer: RecognizerOptions
    source: str
    loop: bool = False
    sinks: tuple[str, ...] = ("stdout",)
    run: RunOptions = field(default_factory=RunOptions)
    sync: SyncConfig | None = None
    metrics_port: int | None = None
    metrics_host: str = "127.0.0.1"
    objects: ObjectsOptions | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.recognizer, RecognizerOptions):
            raise ConfigError(f"device recognizer must be RecognizerOptions, got {type(self.recognizer).__name__}")
        if self.recognizer.running_mode is not RunningMode.IMAGE:
            raise ConfigError("the run loop smooths frames itself (run.smoothing): its recogniser runs in image mode, "
                              f"not {self.recognizer.running_mode.value}")
        if not isinstance(self.run, RunOptions):
            raise ConfigError(f"device run options must be RunOptions, got {type(self.run).__name__}")
        if self.sync is not None and not isinstance(self.sync, SyncConfig):
            raise ConfigError(f"device sync must be a SyncConfig or None, got {type(self.sync).__name__}")
        if not isinstance(self.sinks, tuple):
            raise ConfigError(f"device sinks must be a tuple of sink specs, got {type(self.sinks).__name__}")
        if self.objects is not None and not isinstance(self.objects, ObjectsOptions):
            raise ConfigError(f"device objects must be ObjectsOptions or None, got {type(self.objects).__name__}")
        port = self.metrics_port
        if port is not None and (isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535):
            raise ConfigError(f"metrics_port must be a port number 0..65535 or None, got {port!r}")


class Device:
    """Runs `DeviceOptions`: ``Device(options).run()`` returns the run's `RunSummary`.

    Args:
        options: what to run.
        recognizer_factory: ``f(bundle_dir) -> Recognizer``, for the first bundle and every
            reload (default: `Recognizer.create_from_options` with ``options.recognizer``).
    """

    def __init__(self, options: DeviceOptions, recognizer_factory: RecognizerFactory | None = None) -> None:
        self.options = options
        self._factory = recognizer_factory or self._create_recognizer
        self.health = Health()
        self.bundle_dir: Path | None = None  # the bundle the run started with

    def _create_recognizer(self, bundle_dir: Path) -> Recognizer:
        return Recognizer.create_from_options(dataclasses.replace(self.options.recognizer, bundle=bundle_dir))

    def run(self, stop: threading.Event | None = None, handle_signals: bool = True) -> RunSummary:
        """Run until the source ends, ``run.max_frames``, a signal, or ``stop`` is set.

        Raises:
            BundleError: the bundle (or the store's current one) does not load.
            SourceError, ConfigError: as `run` raises them.
        """
        options = self.options
        with contextlib.ExitStack() as started:
            service = SyncService(options.sync) if options.sync is not None else None
            if service is not None:
                started.callback(service.stop)
            self.bundle_dir = self._bundle_dir(service)
            recognizer = ReloadableRecognizer(self.bundle_dir, self._factory)
            started.callback(recognizer.close)
            if handle_signals:
                started.enter_context(_reload_on_sighup(lambda: self._reload(recognizer, service)))
            stage = None
            if options.objects is not None:
                stage = ObjectStage(options.objects, BundleCrops(recognizer.using, options.objects.max_batch), self.health,
                                    jpeg_quality=options.run.jpeg_quality)
                started.callback(stage.close)
            sinks = make_sinks(list(options.sinks))
            if service is not None:
                if service.updater is not None:
                    service.updater.on_update = recognizer.reload
                if service.outbox is not None:
                    sinks.append(service.sink())
                service.device_health = RunHealth(self.health, recognizer)
                service.start()
            if options.metrics_port is not None:
                started.callback(self.health.serve(options.metrics_port, options.metrics_host).close)
            return run(open_source(options.source, loop=options.loop), recognizer, sinks, options.run,
                       health=self.health, stop=stop, handle_signals=handle_signals, objects=stage)

    def _reload(self, recognizer: ReloadableRecognizer, service: SyncService | None) -> None:
        bundle = Path(service.store.current) if service is not None and service.store is not None else self.bundle_dir
        try:
            recognizer.reload(bundle)
        except ShelfsightError as e:
            log.error("SIGHUP: %s not loaded, still running %s: %s", bundle, recognizer.current.bundle.bundle_id, e)

    def _bundle_dir(self, service: SyncService | None) -> Path:
        """The given bundle, or the bundle store's current one (the given bundle installed first)."""
        given = Path(self.options.recognizer.bundle)
        if service is None or service.store is None:
            return given
        if service.store.current is None:
            service.store.install(given)
            log.info("installed %s into the bundle store %s", given, self.options.sync.store_dir)
        return Path(service.store.current)


class RunHealth:
    """The run loop's part of a heartbeat: ``RunHealth(health, recognizer)()`` gives FPS (once
    frames were counted over a second), the unknown rate (once something was recognised),
    frames that failed with an error since the running bundle started (a rollout judges the
    new bundle, not the old one's errors), and the running bundle's id."""

    def __init__(self, health: Health, recognizer: ReloadableRecognizer) -> None:
        self.health = health
        self.recognizer = recognizer
        self._bundle_id: str | None = None
        self._errors_before = 0.0
        self._started = False

    def _sample(self, name: str, labels: dict | None = None) -> float:
        return self.health.registry.get_sample_value(name, labels or {}) or 0.0

    def __call__(self) -> dict:
        bundle = getattr(self.recognizer.current, "bundle", None)  # a test double may have none
        bundle_id = getattr(bundle, "bundle_id", None)
        errors = self._sample("shelfsight_skipped_frames_total", {"reason": "error"})
        if not self._started:  # the bundle the run started with: every error counts
            self._started, self._bundle_id = True, bundle_id
        elif bundle_id != self._bundle_id:  # a new bundle since the last report: its own count
            self._bundle_id, self._errors_before = bundle_id, errors
        fps = self._sample("shelfsight_fps")
        return {"bundle_id": bundle_id,
                "fps": fps if fps > 0 else None,
                "unknown_rate": (self._sample("shelfsight_unknown_ratio")
                                 if self._sample("shelfsight_recognitions_total") else None),
                "errors": int(errors - self._errors_before)}


@contextlib.contextmanager
def _reload_on_sighup(reload: Callable[[], None]) -> Iterator[None]:
    """Within the block, SIGHUP runs ``reload`` on a thread of its own (the camera loop goes on;
    loading a bundle takes a moment). Only the main thread can take signals: elsewhere, nothing."""
    if threading.current_thread() is not threading.main_thread() or not hasattr(signal, "SIGHUP"):
        yield
        return

    def handler(_signum, _frame) -> None:
        log.info("SIGHUP: reloading the bundle")
        threading.Thread(target=reload, name="sighup-reload", daemon=True).start()

    previous = signal.signal(signal.SIGHUP, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGHUP, previous)

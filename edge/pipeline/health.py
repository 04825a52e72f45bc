"""Health metrics of the running device, in Prometheus format.

`Health` owns its own `CollectorRegistry` (never the process-global one), so two runtimes in
one process, or a test, never collide. Metrics (all prefixed `shelfsight_`):

    frames_total                      frames processed
    fps                               frames processed per second, recent
    inference_latency_seconds         histogram of recognition latency
    recognitions_total, unknown_total recognitions, and those that came out "unknown"
    unknown_ratio                     share of unknown among the last `unknown_window` recognitions
    skipped_frames_total{reason}      dark / bright / blurry (quality gate), corrupt, error
    dropped_frames_total              frames the capture overwrote before they were processed
    events_total                      events sent to the sinks
    source_reopens_total              reopen attempts of a lost camera or stream
    cpu_temperature_celsius           only where /sys/class/thermal has a readable zone
"""
from __future__ import annotations

import logging
import threading
from collections import deque
from pathlib import Path
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest, start_http_server

from shelfsight.errors import ConfigError

log = logging.getLogger(__name__)

THERMAL_ROOT = Path("/sys/class/thermal")
SKIP_REASONS = ("dark", "bright", "blurry", "corrupt", "error")
LATENCY_BUCKETS_S = (0.001, 0.0025, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.05, 0.075, 0.1, 0.2, 0.5, 1.0, 2.5)
_CPU_ZONE_TYPES = ("cpu", "soc", "x86_pkg_temp", "package")


def read_cpu_temperature(root: Path = THERMAL_ROOT) -> float | None:
    """CPU temperature in degrees Celsius from a sysfs thermal zone, or None where none is readable.

    Prefers a zone whose type names the CPU/SoC (cpu-thermal on a Pi, CPU-therm on a Jetson,
    x86_pkg_temp on a PC); otherwise the first readable zone.
    """
    readings: list[tuple[bool, float]] = []
    for zone in sorted(root.glob("thermal_zone*")):
        try:
            millidegrees = int((zone / "temp").read_text().strip())
        except (OSError, ValueError):
            continue
        try:
            kind = (zone / "type").read_text().strip().lower()
        except OSError:
            kind = ""
        readings.append((any(t in kind for t in _CPU_ZONE_TYPES), millidegrees / 1000.0))
    if not readings:
        return None
    preferred = [celsius for is_cpu, celsius in readings if is_cpu]
    return preferred[0] if preferred else readings[0][1]


class MetricsServer:
    """A running exporter on host:port; `close()` stops it (safe to call twice)."""

    def __init__(self, server: WSGIServer, thread: threading.Thread, host: str) -> None:
        self._server: WSGIServer | None = server
        self._thread = thread
        self.host = host
        self.port: int = server.server_address[1]

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/metrics"

    def close(self) -> None:
        if self._server is not None:
            server, self._server = self._server, None
            server.shutdown()
            server.server_close()
            self._thread.join(5.0)


class Health:
    """Counters, gauges and a latency histogram for one runtime.

    Args:
        thermal_root: where thermal zones live (a test passes a fake tree).
        unknown_window: recognitions the unknown_ratio gauge looks back over.
    """

    def __init__(self, thermal_root: Path = THERMAL_ROOT, unknown_window: int = 100) -> None:
        if unknown_window < 1:
            raise ConfigError(f"unknown_window must be >= 1, got {unknown_window}")
        self.registry = CollectorRegistry()
        r = self.registry
        self.frames = Counter("shelfsight_frames", "Frames processed", registry=r)
        self.fps = Gauge("shelfsight_fps", "Frames processed per second, recent", registry=r)
        self.latency = Histogram("shelfsight_inference_latency_seconds", "Recognition latency",
                                 buckets=LATENCY_BUCKETS_S, registry=r)
        self.recognitions = Counter("shelfsight_recognitions", "Frames recognised", registry=r)
        self.unknown = Counter("shelfsight_unknown", "Recognitions that came out unknown", registry=r)
        self.unknown_ratio = Gauge("shelfsight_unknown_ratio",
                                   f"Share of unknown among the last {unknown_window} recognitions", registry=r)
        self.skipped = Counter("shelfsight_skipped_frames", "Frames not recognised, by reason",
                               labelnames=("reason",), registry=r)
        for reason in SKIP_REASONS:
            self.skipped.labels(reason=reason)
        self.dropped = Counter("shelfsight_dropped_frames",
                               "Frames the capture overwrote before they were processed", registry=r)
        self.events = Counter("shelfsight_events", "Events sent to the sinks", registry=r)
        self.reopens = Counter("shelfsight_source_reopens", "Reopen attempts of a lost source", registry=r)
        self.thermal_root = thermal_root
        self.cpu_temperature: Gauge | None = None
        if read_cpu_temperature(thermal_root) is not None:
            self.cpu_temperature = Gauge("shelfsight_cpu_temperature_celsius", "CPU temperature", registry=r)
            self.cpu_temperature.set_function(self._temperature)
        self._recent_unknown: deque[bool] = deque(maxlen=unknown_window)

    def record_frame(self) -> None:
        self.frames.inc()

    def record_recognition(self, latency_s: float, unknown: bool) -> None:
        self.recognitions.inc()
        self.latency.observe(latency_s)
        if unknown:
            self.unknown.inc()
        self._recent_unknown.append(unknown)
        self.unknown_ratio.set(sum(self._recent_unknown) / len(self._recent_unknown))

    def record_skip(self, reason: str, count: int = 1) -> None:
        if count:
            self.skipped.labels(reason=reason).inc(count)

    def record_dropped(self, count: int) -> None:
        if count:
            self.dropped.inc(count)

    def record_event(self) -> None:
        self.events.inc()

    def record_reopen(self) -> None:
        self.reopens.inc()

    def set_fps(self, fps: float) -> None:
        self.fps.set(fps)

    def render(self) -> str:
        """The metrics as Prometheus text exposition."""
        return generate_latest(self.registry).decode("utf-8")

    def serve(self, port: int, host: str = "127.0.0.1") -> MetricsServer:
        """Start the HTTP exporter (GET /metrics) on host:port in a daemon thread; port 0 picks a free one.

        Raises:
            ConfigError: the port is out of range or already in use.
        """
        if not 0 <= port <= 65535:
            raise ConfigError(f"metrics port must be 0..65535, got {port}")
        try:
            server, thread = start_http_server(port, addr=host, registry=self.registry)
        except OSError as err:
            raise ConfigError(f"metrics port {host}:{port} cannot be used: {err.strerror or err}") from err
        exporter = MetricsServer(server, thread, host)
        log.info("metrics on %s", exporter.url)
        return exporter

    def _temperature(self) -> float:
        celsius = read_cpu_temperature(self.thermal_root)
        return float("nan") if celsius is None else celsius

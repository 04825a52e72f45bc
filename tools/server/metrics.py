"""Prometheus metrics of the server, right whichever worker is scraped.

Request counts and batch latency come from every worker: with several workers the
supervisor sets PROMETHEUS_MULTIPROC_DIR and prometheus_client's multiprocess mode sums
them. Fleet figures (devices, their health, events held, the rollout) are read from the
database at scrape time, so they need no shared state at all. Names are prefixed
``shelfsight_server_`` and ``shelfsight_fleet_``.
"""
from __future__ import annotations

import os
import time

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.multiprocess import MultiProcessCollector

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
BATCH_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class ServerMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()  # never the global one: two servers in a test process
        self.requests = Counter("shelfsight_server_requests_total", "HTTP requests answered",
                                ["route", "status"], registry=self.registry)
        self.events = Counter("shelfsight_server_events_total", "Events received in batches, by outcome",
                              ["outcome"], registry=self.registry)
        self.batch_seconds = Histogram("shelfsight_server_batch_seconds", "Time to take in one event batch",
                                       buckets=BATCH_BUCKETS_S, registry=self.registry)

    def render(self, storage) -> bytes:
        """The exposition text: this process's (or all workers') metrics, then the fleet's."""
        if os.environ.get(MULTIPROC_ENV):
            workers = CollectorRegistry()
            MultiProcessCollector(workers)
        else:
            workers = self.registry
        fleet = CollectorRegistry()
        fleet.register(FleetCollector(storage))
        return generate_latest(workers) + generate_latest(fleet)


class FleetCollector:
    """Gauges read from storage on each scrape."""

    def __init__(self, storage) -> None:
        self.storage = storage

    def collect(self):
        now = time.time()
        stats, devices, active = self.storage.stats(), self.storage.devices(), self.storage.active_rollout()
        yield GaugeMetricFamily("shelfsight_fleet_events", "Distinct events held", value=stats["events"])
        yield GaugeMetricFamily("shelfsight_fleet_redeliveries", "Events received again", value=stats["redeliveries"])
        yield GaugeMetricFamily("shelfsight_fleet_devices", "Devices registered and not revoked",
                                value=sum(d.revoked is None for d in devices))
        rollout = GaugeMetricFamily("shelfsight_fleet_rollout_active", "1 while a rollout is in progress",
                                    labels=["bundle"])
        if active is not None:
            rollout.add_metric([active.bundle], 1)
        yield rollout
        per_device = {name: GaugeMetricFamily(f"shelfsight_fleet_device_{name}", help_, labels=["device", "bundle"])
                      for name, help_ in (("fps", "Frames per second the device reported"),
                                          ("unknown_ratio", "Share of unknown recognitions it reported"),
                                          ("outbox_backlog", "Events waiting in its outbox, as reported"),
                                          ("seen_seconds_ago", "Seconds since its last request"))}
        for d in devices:
            if d.revoked is not None:
                continue
            labels = [d.id, d.bundle_id or ""]
            for name, value in (("fps", d.fps), ("unknown_ratio", d.unknown_rate), ("outbox_backlog", d.outbox_backlog),
                                ("seen_seconds_ago", None if d.last_seen is None else now - d.last_seen)):
                if value is not None:
                    per_device[name].add_metric(labels, value)
        yield from per_device.values()

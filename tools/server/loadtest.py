"""Fleet load test: many simulated devices, several server workers on one PostgreSQL, the
fault mix of `faults` (500s, dropped connections, answers slower than the device waits),
a server worker and a device process SIGKILLed mid-run and restarted. Does every event
arrive exactly once, and how fast?

Each simulated device is the real device code: its own outbox (SQLite) and the real
uploader with its own token; a device process runs a share of them. Events are produced
into the outboxes as fast as they take them, so events/s is what the server sustains.
Batch latency is the device's round trip of each POST /v1/events that got an answer.
Usage::

    python -m shelfsight.tools.server.loadtest report --devices 200 --workers 4 --events 50000 [--json OUT]

Without ``--database`` it starts a throwaway PostgreSQL (`pgtemp`) and removes it after.
"""
from __future__ import annotations

import json
import logging
import math
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import click
import requests

from shelfsight.errors import ConfigError, ShelfsightError

from .faults import FaultPlan, free_port

LOAD_MODULE = "shelfsight.tools.server.loadtest"
_DEFAULT_FAULTS = FaultPlan()


def device_name(i: int) -> str:
    return f"SIM-{i:04d}"


def make_event(device: str, i: int) -> dict:
    """Event ``i`` of ``device``; deterministic, so the server's copy can be checked exactly."""
    return {"id": f"{device}-{i:06d}", "seq": i, "type": "recognition", "label": f"sku-{i % 97:03d}",
            "score": round((i % 1000) / 1000, 3), "source": "load-test"}


@dataclass(frozen=True)
class LoadPlan:
    """What the load run does.

    Attributes:
        devices, workers, events: simulated devices, server worker processes, events in all
            (split evenly over the devices).
        device_procs: processes the devices are spread over.
        worker_kills, device_kills: SIGKILLs of a server worker (the supervisor restarts it)
            and of a device process (restarted here; it goes on from its outboxes), spread
            over the run.
        error_rate, drop_rate, slow_rate, slow_s, read_timeout_s: the fault mix of `faults`.
        batch_events: most events per request.
        timeout_s: give up (and report) after this long.
    """

    devices: int = 200
    workers: int = 4
    events: int = 50_000
    device_procs: int = 4
    worker_kills: int = 1
    device_kills: int = 1
    error_rate: float = _DEFAULT_FAULTS.error_rate
    drop_rate: float = _DEFAULT_FAULTS.drop_rate
    slow_rate: float = _DEFAULT_FAULTS.slow_rate
    slow_s: float = _DEFAULT_FAULTS.slow_s
    read_timeout_s: float = _DEFAULT_FAULTS.read_timeout_s
    batch_events: int = 100
    seed: int = 7
    timeout_s: float = 900.0

    def __post_init__(self) -> None:
        if min(self.devices, self.workers, self.device_procs, self.batch_events) < 1:
            raise ConfigError(f"devices, workers, device_procs and batch_events must be >= 1, got {self.devices}, "
                              f"{self.workers}, {self.device_procs}, {self.batch_events}")
        if self.events < self.devices:
            raise ConfigError(f"{self.events} events for {self.devices} devices: need at least one each")
        if self.worker_kills < 0 or self.device_kills < 0:
            raise ConfigError("worker_kills and device_kills must be >= 0")
        if self.worker_kills and self.workers < 2:
            raise ConfigError("worker kills need 2 or more workers (one worker runs without a supervisor to "
                              "restart it): pass --worker-kills 0")

    def events_of(self, device_index: int) -> int:
        share, extra = divmod(self.events, self.devices)
        return share + (device_index < extra)


@dataclass(frozen=True)
class LoadReport:
    produced: int
    stored: int
    duplicates: int
    lost: int
    unexpected: int
    altered: int
    redeliveries: int
    batches: int
    worker_kills: int
    worker_restarts: int
    device_kills: int
    seconds: float
    events_per_s: float
    batch_p50_ms: float
    batch_p99_ms: float
    posts_answered: int

    @property
    def ok(self) -> bool:
        return self.lost == 0 and self.duplicates == 0 and self.unexpected == 0 and self.altered == 0

    def to_dict(self) -> dict:
        return dict(asdict(self), ok=self.ok)


def percentile(values: list[float], q: float) -> float:
    """The ``q`` quantile (0..1) by nearest rank; 0.0 for no values."""
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


# -- the device process ------------------------------------------------------------------------
def run_devices(workdir: Path, endpoint: str, first: int, count: int, plan: LoadPlan) -> None:
    """Devices ``first .. first+count``: produce each one's events (from what its outbox
    already holds) while uploading; return once all are produced and acknowledged."""
    from shelfsight.backoff import BackoffOptions
    from shelfsight.edge.sync.http import HttpOptions
    from shelfsight.edge.sync.outbox import Outbox
    from shelfsight.edge.sync.uploader import UploadOptions, Uploader

    latencies: list[float] = []
    lock = threading.Lock()

    class TimedUploader(Uploader):
        def _post(self, payload: dict) -> object:
            t0 = time.perf_counter()
            answer = super()._post(payload)
            with lock:
                latencies.append(time.perf_counter() - t0)
            return answer

    devices = []
    for index in range(first, first + count):
        name = device_name(index)
        outbox = Outbox(workdir / "devices" / name / "outbox.db")
        http = HttpOptions(token_file=workdir / "tokens" / name, connect_timeout_s=1.0,
                           read_timeout_s=plan.read_timeout_s, device_id=name)
        options = UploadOptions(endpoint=endpoint, http=http, batch_events=plan.batch_events, idle_s=0.05,
                                backoff=BackoffOptions.for_retries(initial_s=0.05, max_s=1.0))
        devices.append((index, name, outbox, TimedUploader(outbox, options).start()))
    for index, name, outbox, _ in devices:  # produce in chunks, as a camera's events pile up
        start, total = outbox.counters().get("enqueued", 0), plan.events_of(index)
        for chunk in range(start, total, 50):
            outbox.put_many(make_event(name, i) for i in range(chunk, min(chunk + 50, total)))
    print("produced all", flush=True)
    out = workdir / f"latency-{first}.jsonl"
    while any(outbox.stats().pending for _, _, outbox, _ in devices):
        time.sleep(0.2)
        with lock:
            done, latencies[:] = list(latencies), []
        if done:
            with open(out, "a", encoding="utf-8") as f:  # what a SIGKILL loses is only the last 0.2 s
                f.write(json.dumps(done) + "\n")
    for _, _, outbox, uploader in devices:
        uploader.stop()
        outbox.close()
    with lock, open(out, "a", encoding="utf-8") as f:
        f.write(json.dumps(latencies) + "\n")


# -- the orchestrator --------------------------------------------------------------------------
class _Run:
    def __init__(self, plan: LoadPlan, workdir: Path, database: str) -> None:
        import random

        self.plan, self.workdir, self.database = plan, workdir, database
        self.rng = random.Random(plan.seed)
        self.port = free_port(self.rng)
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.server_dir = workdir / "server"

    def register_devices(self) -> None:
        from .storage import open_storage

        tokens = self.workdir / "tokens"
        tokens.mkdir(parents=True, exist_ok=True)
        store = open_storage(self.database, 1)
        try:
            for i in range(self.plan.devices):
                (tokens / device_name(i)).write_text(store.add_device(device_name(i)) + "\n")
            self.admin = {"Authorization": f"Bearer {store.add_admin_token('load-test')}"}
        finally:
            store.close()

    def start_server(self) -> subprocess.Popen:
        p = self.plan
        args = [sys.executable, "-m", "shelfsight", "sync-server", "--port", str(self.port),
                "--data-dir", str(self.server_dir), "--database", self.database, "--workers", str(p.workers),
                "--fail-rate", str(p.error_rate), "--drop-rate", str(p.drop_rate), "--slow-rate", str(p.slow_rate),
                "--slow-s", str(p.slow_s), "--seed", str(self.rng.randrange(1 << 30))]
        log = open(self.workdir / "server.log", "a", encoding="utf-8")
        proc = subprocess.Popen(args, stdout=log, stderr=log)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise ShelfsightError(f"sync-server exited with {proc.returncode}; see {self.workdir}/server.log")
            try:
                if requests.get(self.endpoint + "/healthz", timeout=0.5).ok and (p.workers == 1 or self._worker_pids()):
                    return proc
            except requests.RequestException:
                pass
            time.sleep(0.2)
        proc.kill()
        raise ShelfsightError(f"sync-server did not come up on port {self.port}; see {self.workdir}/server.log")

    def _stored(self) -> int:
        """Events the server holds now (0 while no worker answers)."""
        try:
            return requests.get(self.endpoint + "/v1/stats", headers=self.admin, timeout=2).json()["events"]
        except (requests.RequestException, ValueError, KeyError):
            return 0

    def _worker_pids(self) -> dict[str, int]:
        try:
            return json.loads((self.server_dir / "workers.json").read_text())["workers"]
        except (OSError, ValueError, KeyError):
            return {}

    def start_devices(self, slot: int) -> subprocess.Popen:
        first, count = self.slots[slot]
        args = [sys.executable, "-m", LOAD_MODULE, "devices", "--workdir", str(self.workdir), "--endpoint",
                self.endpoint, "--first", str(first), "--count", str(count), "--plan", json.dumps(asdict(self.plan))]
        log = open(self.workdir / f"devices-{first}.log", "a", encoding="utf-8")
        return subprocess.Popen(args, stdout=log, stderr=log)

    def go(self) -> LoadReport:
        p = self.plan
        procs = min(p.device_procs, p.devices)
        share, extra = divmod(p.devices, procs)
        self.slots, first = [], 0
        for s in range(procs):
            self.slots.append((first, share + (s < extra)))
            first += share + (s < extra)
        self.register_devices()
        server = self.start_server()
        t0 = time.monotonic()
        devices = [self.start_devices(s) for s in range(procs)]
        worker_kills = device_kills = 0
        try:
            while any(d.poll() != 0 for d in devices):
                elapsed = time.monotonic() - t0
                if elapsed > p.timeout_s:
                    break
                for s, d in enumerate(devices):
                    if d.poll() not in (None, 0, -signal.SIGKILL):
                        raise ShelfsightError(f"device process {s} exited with {d.returncode}; see {self.workdir}")
                # the kills, spread over the run by the share of events stored: device processes
                # in its first 60 %, server workers in its first 80 %
                done = self._stored() / p.events
                if worker_kills < p.worker_kills and done >= 0.8 * (worker_kills + 1) / (p.worker_kills + 1):
                    pids = list(self._worker_pids().values())
                    subprocess.run(["kill", "-KILL", str(self.rng.choice(pids))], check=False)
                    worker_kills += 1
                if device_kills < p.device_kills and done >= 0.6 * (device_kills + 1) / (p.device_kills + 1):
                    s = self.rng.randrange(procs)
                    if devices[s].poll() is None:
                        devices[s].kill()
                        devices[s].wait()
                        devices[s] = self.start_devices(s)
                        device_kills += 1
                time.sleep(0.1)
            seconds = time.monotonic() - t0
        finally:
            for d in devices:
                if d.poll() is None:
                    d.kill()
                    d.wait()
            server.send_signal(signal.SIGTERM)
            try:
                server.wait(60)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()
        return self.report(worker_kills, device_kills, seconds)

    def report(self, worker_kills: int, device_kills: int, seconds: float) -> LoadReport:
        from .storage import open_storage

        store = open_storage(self.database, 1)
        try:
            rows, stats = store.events(), store.stats()
        finally:
            store.close()
        expected = {}
        for index in range(self.plan.devices):
            name = device_name(index)
            for i in range(self.plan.events_of(index)):
                event = make_event(name, i)
                expected[(name, event["id"])] = event
        keys = [(device, i) for device, i, _ in rows]
        distinct = set(keys)
        altered = sum(1 for device, i, body in rows
                      if (device, i) in expected and json.loads(body) != expected[(device, i)])
        latencies = []
        for path in self.workdir.glob("latency-*.jsonl"):
            for line in path.read_text().splitlines():
                try:
                    latencies.extend(json.loads(line))
                except ValueError:
                    pass  # a line cut short by the SIGKILL
        restarts = (self.workdir / "server.log").read_text(errors="replace").count("; restarting")
        return LoadReport(
            produced=len(expected), stored=len(distinct), duplicates=len(keys) - len(distinct),
            lost=len(set(expected) - distinct), unexpected=len(distinct - set(expected)), altered=altered,
            redeliveries=stats["redeliveries"], batches=stats["batches"], worker_kills=worker_kills,
            worker_restarts=restarts, device_kills=device_kills, seconds=round(seconds, 1),
            events_per_s=round(len(distinct) / seconds, 1) if seconds else 0.0,
            batch_p50_ms=round(percentile(latencies, 0.50) * 1000, 1),
            batch_p99_ms=round(percentile(latencies, 0.99) * 1000, 1), posts_answered=len(latencies))


def run_load_test(plan: LoadPlan, workdir: Path, database: str | None = None) -> LoadReport:
    """Run ``plan`` in ``workdir`` against ``database`` (a fresh PostgreSQL when None)."""
    from .pgtemp import TempPostgres

    workdir.mkdir(parents=True, exist_ok=True)
    if database is not None:
        return _Run(plan, workdir, database).go()
    with TempPostgres() as pg:
        return _Run(plan, workdir, pg.url).go()


@click.group()
def main() -> None:
    """Fleet load report (report) and its device process (devices)."""


@main.command()
@click.option("--workdir", type=click.Path(path_type=Path), required=True)
@click.option("--endpoint", required=True)
@click.option("--first", type=int, required=True)
@click.option("--count", type=int, required=True)
@click.option("--plan", "plan_json", required=True)
def devices(workdir, endpoint, first, count, plan_json) -> None:
    """The device side: devices FIRST..FIRST+COUNT produce and upload their events."""
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s: %(message)s")
    run_devices(workdir, endpoint, first, count, LoadPlan(**json.loads(plan_json)))


@main.command()
@click.option("--devices", "n_devices", type=int, default=LoadPlan.devices, show_default=True)
@click.option("--workers", type=int, default=LoadPlan.workers, show_default=True)
@click.option("--events", type=int, default=LoadPlan.events, show_default=True)
@click.option("--device-procs", type=int, default=LoadPlan.device_procs, show_default=True)
@click.option("--batch-events", type=int, default=LoadPlan.batch_events, show_default=True)
@click.option("--worker-kills", type=int, default=LoadPlan.worker_kills, show_default=True)
@click.option("--device-kills", type=int, default=LoadPlan.device_kills, show_default=True)
@click.option("--no-faults", is_flag=True, help="No 500s, drops or slow answers (kills still happen).")
@click.option("--seed", type=int, default=LoadPlan.seed, show_default=True)
@click.option("--database", help="postgresql://... to use (default: a throwaway PostgreSQL).")
@click.option("--workdir", type=click.Path(file_okay=False, path_type=Path),
              help="Where to keep outboxes and logs (default: a new temp dir).")
@click.option("--json", "json_out", type=click.Path(dir_okay=False, path_type=Path), help="Write the report here.")
def report(n_devices, workers, events, device_procs, batch_events, worker_kills, device_kills, no_faults, seed,
           database, workdir, json_out) -> None:
    """Run the load scenario and print the counts and rates."""
    faults = dict(error_rate=0.0, drop_rate=0.0, slow_rate=0.0) if no_faults else {}
    try:
        plan = LoadPlan(devices=n_devices, workers=workers, events=events, device_procs=device_procs,
                        batch_events=batch_events, worker_kills=worker_kills, device_kills=device_kills, seed=seed,
                        **faults)
    except ConfigError as e:
        raise click.UsageError(str(e)) from None
    workdir = workdir or Path(tempfile.mkdtemp(prefix="shelfsight-fleet-load-"))
    try:
        result = run_load_test(plan, workdir, database)
    except ShelfsightError as e:
        raise click.ClickException(str(e)) from None
    text = json.dumps(dict(result.to_dict(), plan=asdict(plan), workdir=str(workdir)), indent=2)
    click.echo(text)
    if json_out:
        json_out.write_text(text + "\n")
    if not result.ok:
        raise SystemExit(1)


if __name__ == "__main__":
    main()

"""Fault report for sync: does every event arrive exactly once through real failures?

Runs the reference server and a device process on loopback, both as subprocesses:

* the server answers a share of batches with 500, drops a share of connections and
  answers a share slowly (past the device's read timeout), each before or after storing;
* the server is killed (SIGKILL) and restarted after a pause, several times;
* the device process, which produces events into its outbox while uploading, is
  killed with SIGKILL right after it starts posting a batch, and restarted; on restart
  it continues producing from the outbox's own count of events committed.

Then it counts events produced, events stored on the server, duplicates, lost events,
unexpected or altered ones. Usage::

    python -m shelfsight.tools.server.faults report --events 10000 [--json OUT]
"""
from __future__ import annotations

import json
import logging
import os
import random
import signal
import socket
import sqlite3
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

DEVICE_MODULE = "shelfsight.tools.server.faults"
TOKEN = "fault-test-token"


def make_event(i: int) -> dict:
    """Event number ``i``; deterministic, so the server's copy can be checked exactly."""
    return {"id": f"ev-{i:07d}", "seq": i, "type": "recognition", "label": f"sku-{i % 97:03d}",
            "score": round((i % 1000) / 1000, 3), "source": "fault-test"}


@dataclass(frozen=True)
class FaultPlan:
    """What the fault run does.

    Attributes:
        events: events the device produces in total.
        rate_hz: events produced per second.
        device_kills: SIGKILLs of the device, each right after it starts posting a batch.
        server_outages: times the server is killed and restarted ``outage_s`` later.
        error_rate, drop_rate, slow_rate, slow_s: the server's fault injection.
        read_timeout_s: the device's read timeout (below slow_s, so slow answers time out).
        batch_events: events per request.
        timeout_s: give up (and report) after this long.
    """

    events: int = 10_000
    rate_hz: float = 2000.0
    device_kills: int = 5
    server_outages: int = 3
    outage_s: float = 2.0
    error_rate: float = 0.1
    drop_rate: float = 0.05
    slow_rate: float = 0.05
    slow_s: float = 1.5
    read_timeout_s: float = 1.0
    batch_events: int = 200
    seed: int = 7
    timeout_s: float = 600.0

    def __post_init__(self) -> None:
        if self.events < 1 or self.rate_hz <= 0 or self.batch_events < 1:
            raise ConfigError(f"need events >= 1, rate_hz > 0, batch_events >= 1; got {self.events}, "
                              f"{self.rate_hz}, {self.batch_events}")
        if self.device_kills < 0 or self.server_outages < 0 or self.outage_s < 0:
            raise ConfigError("device_kills, server_outages and outage_s must be >= 0")


@dataclass(frozen=True)
class FaultReport:
    produced: int
    stored: int
    duplicates: int
    lost: int
    unexpected: int
    altered: int
    redeliveries: int
    batches: int
    device_kills: int
    kills_mid_batch: int
    server_outages: int
    outbox_dropped: int
    posts: int
    answers_500: int
    connections_dropped: int
    timeouts: int
    server_unreachable: int
    seconds: float

    @property
    def ok(self) -> bool:
        return self.lost == 0 and self.duplicates == 0 and self.unexpected == 0 and self.altered == 0

    def to_dict(self) -> dict:
        return dict(asdict(self), ok=self.ok)


# -- the device process ------------------------------------------------------------------------
def run_device(outbox_path: Path, endpoint: str, token_file: Path, events: int, rate_hz: float,
               batch_events: int, read_timeout_s: float) -> None:
    """Produce events ``[committed .. events)`` into the outbox while uploading; return
    once all are produced and acknowledged."""
    from shelfsight.edge.sync.outbox import Outbox
    from shelfsight.backoff import BackoffOptions
    from shelfsight.edge.sync.http import HttpOptions
    from shelfsight.edge.sync.uploader import UploadOptions, Uploader

    outbox = Outbox(outbox_path)
    start = outbox.counters()["enqueued"]
    http = HttpOptions(token_file=token_file, connect_timeout_s=1.0, read_timeout_s=read_timeout_s,
                       device_id="fault-device")
    options = UploadOptions(endpoint=endpoint, http=http, batch_events=batch_events, idle_s=0.05,
                            backoff=BackoffOptions.for_retries(initial_s=0.05, max_s=1.0))
    uploader = Uploader(outbox, options).start()
    t0 = time.monotonic()
    for i in range(start, events):
        outbox.put(make_event(i))
        ahead = (i - start + 1) / rate_hz - (time.monotonic() - t0)
        if ahead > 0:
            time.sleep(ahead)
    print("produced all", flush=True)
    while outbox.stats().pending:
        time.sleep(0.05)
    uploader.stop()
    outbox.close()


# -- the orchestrator --------------------------------------------------------------------------
def free_port(rng: random.Random | None = None) -> int:
    """A free loopback port below Linux's ephemeral range (32768+), so that a client
    retrying a stopped server cannot connect to itself and take the port."""
    rng = rng or random.Random()
    for _ in range(200):
        port = rng.randrange(20000, 32000)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise ShelfsightError("no free loopback port found in 20000..32000")


class _Proc:
    """A child process whose stderr lines are watched for "posting batch" / "batch done"."""

    def __init__(self, args: list[str], log_path: Path) -> None:
        self.log = open(log_path, "a", encoding="utf-8")
        self.proc = subprocess.Popen(args, stdout=self.log, stderr=subprocess.PIPE, text=True,
                                     env=dict(os.environ, PYTHONUNBUFFERED="1"))
        self.posting = threading.Event()
        self.in_batch = False
        self._watcher = threading.Thread(target=self._watch, daemon=True)
        self._watcher.start()

    def _watch(self) -> None:
        for line in self.proc.stderr:
            self.log.write(line)
            if "posting batch" in line:
                self.in_batch = True
                self.posting.set()
            elif "batch done" in line:
                self.in_batch = False

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def close(self) -> None:
        self.kill()
        self._watcher.join(10)
        self.log.close()


class _Run:
    def __init__(self, plan: FaultPlan, workdir: Path) -> None:
        self.plan, self.workdir = plan, workdir
        self.rng = random.Random(plan.seed)
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.token_file = workdir / "token"
        self.token_file.write_text(TOKEN + "\n")
        self.outbox = workdir / "device" / "outbox.db"
        self.server_dir = workdir / "server"

    def start_server(self) -> _Proc:
        p = self.plan
        args = [sys.executable, "-m", "shelfsight", "sync-server", "--port", str(self.port),
                "--data-dir", str(self.server_dir), "--token-file", str(self.token_file),
                "--fail-rate", str(p.error_rate), "--drop-rate", str(p.drop_rate),
                "--slow-rate", str(p.slow_rate), "--slow-s", str(p.slow_s),
                "--seed", str(self.rng.randrange(1 << 30))]
        proc = _Proc(args, self.workdir / "server.log")
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if proc.proc.poll() is not None:
                raise ShelfsightError(f"sync-server exited with {proc.proc.returncode}; see {self.workdir}/server.log")
            try:
                if requests.get(self.endpoint + "/healthz", timeout=0.5).ok:
                    return proc
            except requests.RequestException:
                time.sleep(0.1)
        raise ShelfsightError(f"sync-server did not come up on port {self.port}")

    def start_device(self) -> _Proc:
        p = self.plan
        args = [sys.executable, "-m", DEVICE_MODULE, "device", "--outbox", str(self.outbox),
                "--endpoint", self.endpoint, "--token-file", str(self.token_file),
                "--events", str(p.events), "--rate", str(p.rate_hz), "--batch-events", str(p.batch_events),
                "--read-timeout", str(p.read_timeout_s)]
        return _Proc(args, self.workdir / "device.log")

    def go(self) -> FaultReport:
        p = self.plan
        t0 = time.monotonic()
        server, device = self.start_server(), self.start_device()
        kills = mid_batch = outages = 0
        spacing = p.events / p.rate_hz / (p.server_outages + 1)  # outages while events are produced
        next_outage = t0 + spacing
        try:
            while device.proc.poll() != 0:
                if time.monotonic() - t0 > p.timeout_s:
                    break
                if device.proc.poll() is not None:  # crashed on its own: that is a failure
                    raise ShelfsightError(f"device exited with {device.proc.returncode}; see {self.workdir}/device.log")
                if outages < p.server_outages and time.monotonic() >= next_outage:
                    server.close()
                    time.sleep(p.outage_s)
                    server = self.start_server()
                    outages += 1
                    next_outage = time.monotonic() + spacing
                if kills < p.device_kills and device.posting.wait(0.1):
                    device.posting.clear()
                    if self.rng.random() < 0.5:
                        continue  # let some batches through
                    time.sleep(self.rng.uniform(0.0, 0.05))
                    if not device.in_batch:
                        continue  # answered already: wait for a batch still in flight
                    mid_batch += device.in_batch
                    device.close()
                    kills += 1
                    device = self.start_device()
                elif kills >= p.device_kills:
                    time.sleep(0.1)
        finally:
            device.close()
            server.close()
        return self.report(kills, mid_batch, outages, time.monotonic() - t0)

    def report(self, kills: int, mid_batch: int, outages: int, seconds: float) -> FaultReport:
        p = self.plan
        with sqlite3.connect(self.outbox) as db:
            counters = dict(db.execute("SELECT name, value FROM counters").fetchall())
        with sqlite3.connect(self.server_dir / "events.db") as db:
            rows = db.execute("SELECT id, body FROM events").fetchall()
            server_counters = dict(db.execute("SELECT name, SUM(value) FROM counters GROUP BY name").fetchall())
        expected = {make_event(i)["id"]: make_event(i) for i in range(p.events)}
        stored_ids = [i for i, _ in rows]
        distinct = set(stored_ids)
        altered = sum(1 for i, body in rows if i in expected and json.loads(body) != expected[i])
        return FaultReport(
            produced=counters.get("enqueued", 0), stored=len(distinct),
            duplicates=len(stored_ids) - len(distinct), lost=len(set(expected) - distinct),
            unexpected=len(distinct - set(expected)), altered=altered,
            redeliveries=server_counters.get("redeliveries", 0), batches=server_counters.get("batches", 0),
            device_kills=kills, kills_mid_batch=mid_batch, server_outages=outages,
            outbox_dropped=sum(counters.get(k, 0) for k in ("dropped_oldest", "refused", "expired", "rejected")),
            **self.device_log_counts(), seconds=round(seconds, 1))

    def device_log_counts(self) -> dict[str, int]:
        """What the device saw, from its log: posts and failed posts by kind."""
        text = (self.workdir / "device.log").read_text(encoding="utf-8", errors="replace")
        return {"posts": text.count("posting batch"), "answers_500": text.count("HTTP 500"),
                "connections_dropped": text.count("RemoteDisconnected"), "timeouts": text.count("ReadTimeout"),
                "server_unreachable": text.count("Connection refused")}


def run_fault_test(plan: FaultPlan, workdir: Path) -> FaultReport:
    """Run the plan in ``workdir`` (fresh) and count what arrived."""
    workdir.mkdir(parents=True, exist_ok=True)
    return _Run(plan, workdir).go()


@click.group()
def main() -> None:
    """Sync fault report (report) and its device process (device)."""


@main.command()
@click.option("--outbox", type=click.Path(path_type=Path), required=True)
@click.option("--endpoint", required=True)
@click.option("--token-file", type=click.Path(path_type=Path), required=True)
@click.option("--events", type=int, required=True)
@click.option("--rate", type=float, required=True)
@click.option("--batch-events", type=int, required=True)
@click.option("--read-timeout", type=float, required=True)
def device(outbox, endpoint, token_file, events, rate, batch_events, read_timeout) -> None:
    """The device side: produce events into the outbox and upload them."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    run_device(outbox, endpoint, token_file, events, rate, batch_events, read_timeout)


@main.command()
@click.option("--events", type=int, default=10_000, show_default=True)
@click.option("--device-kills", type=int, default=FaultPlan.device_kills, show_default=True)
@click.option("--server-outages", type=int, default=FaultPlan.server_outages, show_default=True)
@click.option("--seed", type=int, default=FaultPlan.seed, show_default=True, help="Seed of kills and faults.")
@click.option("--workdir", type=click.Path(file_okay=False, path_type=Path),
              help="Where to keep the databases and logs (default: a new temp dir).")
@click.option("--json", "json_out", type=click.Path(dir_okay=False, path_type=Path), help="Write the report here.")
def report(events, device_kills, server_outages, seed, workdir, json_out) -> None:
    """Run the fault scenario and print the counts."""
    plan = FaultPlan(events=events, device_kills=device_kills, server_outages=server_outages, seed=seed)
    workdir = workdir or Path(tempfile.mkdtemp(prefix="shelfsight-sync-faults-"))
    result = run_fault_test(plan, workdir)
    text = json.dumps(dict(result.to_dict(), plan=asdict(plan), workdir=str(workdir)), indent=2)
    click.echo(text)
    if json_out:
        json_out.write_text(text + "\n")
    if not result.ok:
        raise SystemExit(1)


if __name__ == "__main__":
    main()

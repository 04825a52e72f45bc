"""Several server processes on one port: a small supervisor that starts N workers with
SO_REUSEPORT (the kernel spreads connections across them), restarts any that dies, and
stops them all on SIGINT/SIGTERM.

The workers share nothing but the database and the bundle store. The supervisor writes
their pids to ``DATA_DIR/workers.json`` (what an operator, or the load test, kills one by),
and gives them a PROMETHEUS_MULTIPROC_DIR so /metrics adds up every worker.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import multiprocessing
import os
import shutil
import signal
import socket
import tempfile
import time
from pathlib import Path

import click

from shelfsight import atomic
from shelfsight.errors import ConfigError

from .config import ServerConfig
from .metrics import MULTIPROC_ENV


RESTART_DELAY_S = 0.5


def _worker(config: ServerConfig, index: int) -> None:
    from .server import serve

    logging.basicConfig(level=logging.WARNING, format=f"%(levelname)s worker {index} %(name)s: %(message)s")
    seed = None if config.seed is None else config.seed + index  # each worker its own fault stream
    serve(dataclasses.replace(config, seed=seed), reuse_port=True, announce=False)


def _reserve_port(host: str, port: int) -> socket.socket:
    """A bound, never-listening SO_REUSEPORT socket that holds the port (one chosen by the
    kernel when ``port`` is 0) for the workers to join."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        sock.bind((host, port))
    except OSError as e:
        sock.close()
        raise ConfigError(f"cannot listen on {host}:{port}: {e.strerror or e}") from None
    return sock


class Supervisor:
    def __init__(self, config: ServerConfig) -> None:
        self.reserved = _reserve_port(config.host, config.port)
        self.config = dataclasses.replace(config, port=self.reserved.getsockname()[1])
        self.context = multiprocessing.get_context("spawn")
        self.procs: dict[int, multiprocessing.Process] = {}
        self.stopping = False
        self.metrics_dir = Path(tempfile.mkdtemp(prefix="shelfsight-metrics-"))
        self.pid_file = Path(config.data_dir) / "workers.json"

    @property
    def url(self) -> str:
        scheme = "https" if self.config.tls_cert else "http"
        return f"{scheme}://{self.config.host}:{self.config.port}"

    def _start(self, index: int) -> None:
        proc = self.context.Process(target=_worker, args=(self.config, index), name=f"sync-worker-{index}")
        proc.start()
        self.procs[index] = proc
        atomic.write_text(self.pid_file, json.dumps({"supervisor": os.getpid(), "url": self.url,
                                                     "workers": {str(i): p.pid for i, p in self.procs.items()}}))

    def _wait_listening(self, timeout_s: float = 60) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            dead = [i for i, p in self.procs.items() if p.exitcode is not None]
            if dead:
                raise ConfigError(f"sync-server worker {dead[0]} exited with {self.procs[dead[0]].exitcode} on start")
            try:
                with socket.create_connection((self.config.host, self.config.port), timeout=0.5):
                    return
            except OSError:
                time.sleep(0.1)
        raise ConfigError(f"sync-server workers did not start listening within {timeout_s:g} s")

    def run(self) -> None:
        from .storage import open_storage

        os.environ[MULTIPROC_ENV] = str(self.metrics_dir)  # inherited by the spawned workers
        Path(self.config.data_dir).mkdir(parents=True, exist_ok=True)
        open_storage(self.config.database_url, 1).close()  # migrate once, and fail here in one line
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, self._stop)
        try:
            for i in range(self.config.workers):
                self._start(i)
            self._wait_listening()
            click.echo(f"sync-server listening on {self.url} ({self.config.workers} workers, "
                       f"pids in {self.pid_file})", err=True)
            self._watch()
        finally:
            self._shutdown()

    def _watch(self) -> None:
        from prometheus_client import multiprocess

        while not self.stopping:
            time.sleep(0.2)
            for index, proc in list(self.procs.items()):
                if proc.exitcode is not None and not self.stopping:
                    click.echo(f"sync-server worker {index} (pid {proc.pid}) exited with {proc.exitcode}; "
                               "restarting", err=True)
                    multiprocess.mark_process_dead(proc.pid, str(self.metrics_dir))
                    time.sleep(RESTART_DELAY_S)
                    self._start(index)

    def _stop(self, signum, frame) -> None:
        self.stopping = True

    def _shutdown(self) -> None:
        self.stopping = True
        for proc in self.procs.values():
            if proc.exitcode is None:
                proc.terminate()
        for proc in self.procs.values():
            proc.join(30)
            if proc.exitcode is None:
                proc.kill()
                proc.join()
        self.reserved.close()
        shutil.rmtree(self.metrics_dir, ignore_errors=True)
        self.pid_file.unlink(missing_ok=True)


def serve_workers(config: ServerConfig) -> None:
    """Run ``config.workers`` worker processes in the foreground until SIGINT or SIGTERM."""
    Supervisor(config).run()

"""Several server workers on one PostgreSQL: every worker answers, a killed worker is
restarted, and events from several devices through the fault mix arrive exactly once
(the load test of tools/server/loadtest.py, small)."""
from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import requests

from fleet_support import fresh_database, postgres  # noqa: F401  (fixture)
from shelfsight.app.cli import main
from shelfsight.tools.server.faults import free_port
from shelfsight.tools.server.loadtest import LoadPlan, percentile, run_load_test
from shelfsight.tools.server.storage import open_storage


def _listening(base: str) -> bool:
    try:
        return requests.get(base + "/healthz", timeout=1).status_code == 200
    except requests.ConnectionError:
        return False


def test_workers_share_the_database_and_a_killed_one_is_restarted(tmp_path, postgres):  # noqa: F811
    url = fresh_database(postgres)
    store = open_storage(url, 1)
    token, admin = store.add_device("cam-1"), store.add_admin_token("ops")
    store.close()
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "shelfsight", "sync-server", "--workers", "2", "--database", url,
                             "--data-dir", str(tmp_path / "server"), "--port", str(port), "--admin"],
                            stderr=subprocess.PIPE, text=True)
    base = f"http://127.0.0.1:{port}"
    try:
        pid_file = tmp_path / "server" / "workers.json"
        deadline = time.monotonic() + 60
        while not _listening(base):
            assert time.monotonic() < deadline and proc.poll() is None
            time.sleep(0.2)
        up = set()  # both workers accepting before the counted posts (the second may start later)
        while len(up) < 2:
            assert time.monotonic() < deadline and proc.poll() is None
            up.add(requests.get(base + "/healthz", headers={"Connection": "close"}, timeout=5)
                   .headers.get("X-Shelfsight-Worker"))
            up.discard(None)
        answered = set()
        for i in range(40):  # a new connection each time: the kernel spreads them over the workers
            r = requests.post(base + "/v1/events", json={"events": [{"id": f"e{i}"}]}, timeout=5,
                              headers={"Authorization": f"Bearer {token}", "Connection": "close"})
            assert r.json() == {"held": [f"e{i}"], "rejected": {}}
            answered.add(r.headers["X-Shelfsight-Worker"])
        workers = json.loads(pid_file.read_text())["workers"]
        assert answered == {str(pid) for pid in workers.values()}
        # faults are per worker: the answer names the worker whose faults it shows
        r = requests.get(base + "/v1/admin/faults", headers={"Authorization": f"Bearer {admin}"}, timeout=5)
        assert r.headers["X-Shelfsight-Worker"] in answered and r.json()["error_rate"] == 0.0
        metrics = requests.get(base + "/metrics", headers={"Authorization": f"Bearer {admin}"}, timeout=5).text
        assert 'shelfsight_server_events_total{outcome="held"} 40.0' in metrics  # every worker's, summed
        assert "shelfsight_fleet_events 40.0" in metrics
        killed = workers["0"]
        subprocess.run(["kill", "-KILL", str(killed)], check=True)
        while json.loads(pid_file.read_text())["workers"]["0"] == killed:
            assert time.monotonic() < deadline + 30
            time.sleep(0.1)
        stats = requests.get(base + "/v1/stats", headers={"Authorization": f"Bearer {admin}"}, timeout=5).json()
        assert (stats["events"], stats["batches"]) == (40, 40)  # counters summed over the workers
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0
    assert f"worker 0 (pid {killed}) exited with -9; restarting" in err


def test_load_through_faults_and_kills_arrives_exactly_once(tmp_path, postgres):  # noqa: F811
    plan = LoadPlan(devices=6, workers=2, events=1200, device_procs=2, batch_events=50)
    report = run_load_test(plan, tmp_path, fresh_database(postgres))
    assert report.ok, report
    assert (report.produced, report.stored, report.lost, report.duplicates) == (1200, 1200, 0, 0)
    assert (report.worker_kills, report.worker_restarts, report.device_kills) == (1, 1, 1)
    assert report.events_per_s > 0 and 0 < report.batch_p50_ms <= report.batch_p99_ms


def test_several_workers_need_postgresql(tmp_path, capsys):
    token = tmp_path / "token"
    token.write_text("t0123456789-fleet\n")
    try:
        main(["sync-server", "--workers", "2", "--data-dir", str(tmp_path), "--token-file", str(token)])
    except SystemExit as e:
        assert e.code == 2
    assert capsys.readouterr().err.startswith("error: 2 workers need a PostgreSQL database (--database postgresql://")


def test_percentile_is_nearest_rank():
    assert percentile([], 0.5) == 0.0
    assert percentile([3.0, 1.0, 2.0, 4.0], 0.5) == 2.0
    assert percentile(list(range(1, 101)), 0.99) == 99

"""`shelfsight sync`, `sync-server` and `sync-keys` from the command line."""
from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import pytest
import requests

from shelfsight.edge.sync.outbox import Outbox
from shelfsight.tools.server.faults import free_port

from cli_run import run_cli
from sync_fakes import TOKEN, make_bundle, server, token_file


def fill_outbox(path, n: int) -> None:
    with Outbox(path) as box:
        box.put_many([{"id": f"cli-{i}", "n": i} for i in range(n)])


def test_sync_once_uploads_and_checks_for_a_bundle(tmp_path, capsys):
    bundle = make_bundle(tmp_path / "pub", ["apple"], b"not a tflite model", bundle_id="garbage-model")
    fill_outbox(tmp_path / "outbox.db", 120)
    with server(tmp_path, bundle=bundle) as srv:
        code, out, err = run_cli(["sync", "--once", "--endpoint", srv.url, "--outbox", tmp_path / "outbox.db",
                                  "--token-file", token_file(tmp_path), "--bundle-store", tmp_path / "store"],
                                 capsys)
        assert code == 0, err
        # the default health check loads the model with the TFLite interpreter: garbage is refused
        assert out.splitlines()[0].startswith("bundle: unhealthy garbage-model (running None) health check failed")
        assert out.splitlines()[1] == "outbox: 121 sent, 0 waiting, dropped 0"
        report = json.loads(srv.state.store.db.execute(
            "SELECT body FROM events WHERE body LIKE '%bundle_update%'").fetchone()[0])
        assert (report["status"], report["bundle_id"]) == ("unhealthy", "garbage-model")
    assert not (tmp_path / "store" / "current").exists()


def test_sync_once_with_server_down_is_an_error_and_keeps_events(tmp_path, capsys, monkeypatch):
    fill_outbox(tmp_path / "outbox.db", 5)
    monkeypatch.setenv("SHELFSIGHT_SYNC_TOKEN", TOKEN)
    code, out, err = run_cli(["sync", "--once", "--timeout", "0.3", "--endpoint", f"http://127.0.0.1:{free_port()}",
                              "--outbox", tmp_path / "outbox.db"], capsys)
    assert code == 2
    assert err.strip().splitlines()[-1] == "error: 5 events still waiting after 0.3 s; run sync again later"
    with Outbox(tmp_path / "outbox.db") as box:
        assert box.stats().pending == 5


@pytest.mark.parametrize("args, message", [
    (["sync"], "error: nothing to sync: give an outbox and/or a bundle store"),
    (["sync", "--endpoint", "http://127.0.0.1:9", "--outbox", "{tmp}/o.db", "--token-env", "NO_SUCH_TOKEN_VAR"],
     "error: no sync token: pass a token file or set $NO_SUCH_TOKEN_VAR"),
    (["sync", "--endpoint", "http://sync.example.com", "--outbox", "{tmp}/o.db"],
     "error: sync URL 'http://sync.example.com' uses plain http to sync.example.com; "
     "use https (or --allow-http, which sends the device token in clear)"),
    (["sync-server", "--data-dir", "{tmp}/d", "--token-file", "{tmp}/missing"],
     "error: token file {tmp}/missing: No such file or directory"),
])
def test_user_errors_are_one_line(tmp_path, capsys, args, message):
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    code, out, err = run_cli(args, capsys)
    assert code == 2
    assert err.strip() == message.replace("{tmp}", str(tmp_path))


def test_sync_keys_generate_and_sign(tmp_path, capsys):
    bundle = make_bundle(tmp_path / "b", ["x"], b"m", bundle_id="signed")
    code, out, _ = run_cli(["sync-keys", "generate", "--private", tmp_path / "k", "--public", tmp_path / "k.pub"],
                           capsys)
    assert code == 0 and (tmp_path / "k").stat().st_mode & 0o777 == 0o600
    code, out, err = run_cli(["sync-keys", "generate", "--private", tmp_path / "k", "--public", tmp_path / "p2"],
                             capsys)
    assert code == 2 and err.strip() == f"error: {tmp_path / 'k'} already exists; refusing to overwrite a key"
    code, out, _ = run_cli(["sync-keys", "sign", bundle, "--key", tmp_path / "k"], capsys)
    assert code == 0 and out.strip() == f"wrote {bundle / 'manifest.json.sig'}"
    code, out, err = run_cli(["sync-keys", "sign", bundle, "--key", tmp_path / "k.pub"], capsys)
    assert code == 2 and "not an unencrypted PEM private key" in err


def test_sync_server_process_with_admin_faults(tmp_path):
    port = free_port()
    tokens = token_file(tmp_path)
    proc = subprocess.Popen([sys.executable, "-m", "shelfsight", "sync-server", "--port", str(port),
                             "--data-dir", str(tmp_path / "data"), "--token-file", str(tokens),
                             "--admin", "--seed", "1"],
                            stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    auth = {"Authorization": f"Bearer {TOKEN}"}
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if requests.get(url + "/healthz", timeout=0.5).json() == {"ok": True}:
                    break
            except requests.RequestException:
                time.sleep(0.1)
        batch = {"events": [{"id": "a"}, {"id": "b"}, {"id": "x" * 300}]}
        assert requests.post(url + "/v1/events", json=batch, timeout=5).status_code == 401
        faults = requests.post(url + "/v1/admin/faults", json={"error_rate": 1.0}, headers=auth).json()
        assert faults["error_rate"] == 1.0
        assert requests.post(url + "/v1/events", json=batch, headers=auth, timeout=5).status_code == 500
        assert requests.post(url + "/v1/admin/faults", json={"error_rate": 2}, headers=auth).status_code == 400
        requests.post(url + "/v1/admin/faults", json={"error_rate": 0}, headers=auth)
        answer = requests.post(url + "/v1/events", json=batch, headers=auth, timeout=5).json()
        assert answer == {"held": ["a", "b"], "rejected": {"x" * 300: "id must be 1..200 characters"}}
        assert requests.post(url + "/v1/events", json={"events": [{"n": 1}]}, headers=auth).status_code == 400
        stats = requests.get(url + "/v1/stats", headers=auth).json()
        assert (stats["events"], stats["batches"]) == (2, 1)  # with seed 1 the 500 came before storing
        assert requests.get(url + "/v1/manifest", headers=auth).status_code == 404
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0
    assert f"sync-server listening on {url}" in err

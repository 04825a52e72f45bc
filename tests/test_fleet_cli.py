"""`shelfsight fleet` and per-device credentials: a device token acts only as its device,
admin routes need an admin token, a revoked token is refused; the fleet view and metrics."""
from __future__ import annotations

import json

import requests

from shelfsight.tools.server import ServerConfig, SyncServer
from shelfsight.tools.server.faults import free_port

from cli_run import run_cli


def fleet(data, capsys, *args) -> str:
    code, out, err = run_cli(["fleet", "--data-dir", data, *args], capsys)
    assert code == 0, err
    return out


def bearer(token: str) -> dict:
    return {"Authorization": f"Bearer {token}"}


def test_device_tokens_admin_tokens_and_the_fleet_view(tmp_path, capsys):
    data = tmp_path / "data"
    token_a = fleet(data, capsys, "device", "add", "STORE-1-CAM-1", "--group", "north").strip()
    token_b = fleet(data, capsys, "device", "add", "STORE-2-CAM-1").strip()
    admin = fleet(data, capsys, "admin", "add", "ops").strip()
    assert len({token_a, token_b, admin}) == 3 and all(t.startswith("ssk_") for t in (token_a, token_b, admin))
    batch = {"events": [{"id": "e1", "type": "recognition"}, {"id": "e2", "type": "recognition"}]}
    with SyncServer(ServerConfig(data_dir=data, port=free_port(), admin=True)) as server:
        url = server.url
        assert requests.post(url + "/v1/events", json=batch, timeout=5).status_code == 401
        assert requests.post(url + "/v1/events", json=batch, headers=bearer("ssk_wrong"), timeout=5).status_code == 401
        # a device token acts only as its own device, and never on admin routes
        other = dict(bearer(token_a), **{"X-Shelfsight-Device": "STORE-2-CAM-1"})
        refused = requests.post(url + "/v1/events", json=batch, headers=other, timeout=5)
        assert (refused.status_code, refused.text) == (403, "this token belongs to device 'STORE-1-CAM-1'")
        for path in ("/v1/stats", "/metrics", "/v1/admin/fleet", "/v1/admin/faults"):
            assert requests.get(url + path, headers=bearer(token_a), timeout=5).status_code == 403
        assert requests.post(url + "/v1/events", json=batch, headers=bearer(admin), timeout=5).status_code == 403
        # the same event ids from two devices are two devices' events
        for token in (token_a, token_b):
            answer = requests.post(url + "/v1/events", json=batch, headers=bearer(token), timeout=5).json()
            assert answer == {"held": ["e1", "e2"], "rejected": {}}
        health = {"bundle_id": "b1", "fps": 12.5, "unknown_rate": 0.05, "errors": 0, "outbox_backlog": 7}
        assert requests.post(url + "/v1/health", json=health, headers=bearer(token_a), timeout=5).json() == \
            {"ok": True, "rolled_back": None}
        bad = requests.post(url + "/v1/health", json={"fps": "fast"}, headers=bearer(token_a), timeout=5)
        assert bad.status_code == 400 and "health field 'fps' must be a number >= 0" in bad.text
        stats = requests.get(url + "/v1/stats", headers=bearer(admin), timeout=5).json()
        assert (stats["events"], stats["devices"], stats["batches"]) == (4, 2, 2)
        metrics = requests.get(url + "/metrics", headers=bearer(admin), timeout=5).text
        assert 'shelfsight_server_events_total{outcome="held"} 4.0' in metrics
        assert "shelfsight_fleet_devices 2.0" in metrics
        assert 'shelfsight_fleet_device_fps{bundle="b1",device="STORE-1-CAM-1"} 12.5' in metrics
        view = requests.get(url + "/v1/admin/fleet", headers=bearer(admin), timeout=5).json()
        assert [d["id"] for d in view["devices"]] == ["STORE-1-CAM-1", "STORE-2-CAM-1"]

        assert fleet(data, capsys, "device", "revoke", "STORE-1-CAM-1") == "device STORE-1-CAM-1 revoked\n"
        assert requests.post(url + "/v1/events", json=batch, headers=bearer(token_a), timeout=5).status_code == 401
        assert requests.post(url + "/v1/events", json=batch, headers=bearer(token_b), timeout=5).status_code == 200

    status = json.loads(fleet(data, capsys, "status", "--json"))
    rows = {d["id"]: d for d in status["devices"]}
    a = rows["STORE-1-CAM-1"]
    assert (a["group"], a["bundle_id"], a["fps"], a["unknown_rate"], a["outbox_backlog"]) == \
        ("north", "b1", 12.5, 0.05, 7)
    assert a["revoked"] is not None and rows["STORE-2-CAM-1"]["seen_s_ago"] >= 0
    assert (a["events"], rows["STORE-2-CAM-1"]["events"]) == (2, 2)
    assert status["events"]["events"] == 4 and status["rollout"] is None
    table = fleet(data, capsys, "status")
    assert table.splitlines()[0].split() == ["DEVICE", "GROUP", "SEEN", "BUNDLE", "FPS", "UNKNOWN", "ERRORS", "BACKLOG",
                                          "EVENTS"]
    assert "STORE-1-CAM-1            north       revoked b1" in table
    assert table.splitlines()[-1] == "2 devices, 4 events held; no rollout in progress"
    assert json.loads(fleet(data, capsys, "device", "list", "--json")) == [
        {"id": "STORE-1-CAM-1", "group": "north", "revoked": True},
        {"id": "STORE-2-CAM-1", "group": "", "revoked": False}]


def test_fleet_user_errors_are_one_line(tmp_path, capsys):
    data = tmp_path / "data"
    fleet(data, capsys, "device", "add", "cam-1")
    for args, message in [
            (["device", "add", "cam-1"], "error: device 'cam-1' already has a token (revoke it first)"),
            (["device", "add", "cam 1"], "error: device name 'cam 1': expected 1..128 letters"),
            (["device", "revoke", "cam-9"], "error: no device 'cam-9'"),
            (["rollout", "promote"], "error: no rollout in progress"),
            (["rollout", "start", "nope", "--percent", "10"], "error: no bundle 'nope' in the fleet (add it first)"),
            (["rollout", "start", "nope"], "error: a rollout targets either a device group or a percentage")]:
        code, out, err = run_cli(["fleet", "--data-dir", data, *args], capsys)
        assert (code, out) == (2, "") and err.startswith(message), (args, err)
    code, _, err = run_cli(["fleet", "status"], capsys)
    assert code == 2 and err.startswith("error: no fleet database: pass --database")

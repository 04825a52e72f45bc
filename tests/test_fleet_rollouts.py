"""Staged rollouts against a real PostgreSQL: a 10 % canary that stays healthy is promoted to
every device; one that reports unhealthy is rolled back and the other devices are never
offered its bundle (neither its manifest nor its files)."""
from __future__ import annotations

import json

import pytest
import requests

from fleet_support import fresh_database, postgres  # noqa: F401  (fixture)
from shelfsight.app.cli import main
from shelfsight.tools.server import ServerConfig, SyncServer
from shelfsight.tools.server.faults import free_port
from shelfsight.tools.server.rollouts import bucket
from shelfsight.tools.server.storage import open_storage
from sync_fakes import make_bundle

DEVICES = [f"STORE-{i // 4:02d}-CAM-{i % 4}" for i in range(100)]


@pytest.fixture
def fleet_env(tmp_path, postgres, capsys):  # noqa: F811
    url = fresh_database(postgres)
    store = open_storage(url, 2)
    tokens = {d: store.add_device(d, group="north" if d.startswith("STORE-00") else "") for d in DEVICES}
    store.close()
    env = {"url": url, "tokens": tokens, "store": tmp_path / "bundles", "tmp": tmp_path, "capsys": capsys}
    for version in ("v1", "v2", "v3"):
        make_bundle(tmp_path / version, ["a", "b"], f"model {version}".encode(), bundle_id=version)
        assert fleet(env, "bundle", "add", tmp_path / version) == version + "\n"
    return env


def fleet(env, *args) -> str:
    try:
        main(["fleet", "--database", env["url"], "--bundle-store", str(env["store"]), *map(str, args)])
    except SystemExit as e:
        assert not e.code, e
    return env["capsys"].readouterr().out


def offers(server, env) -> dict[str, str | None]:
    """The bundle_id each device is offered right now."""
    seen = {}
    for device, token in env["tokens"].items():
        r = requests.get(server.url + "/v1/manifest", headers={"Authorization": f"Bearer {token}"}, timeout=5)
        seen[device] = r.json()["bundle_id"] if r.status_code == 200 else None
    return seen


def report(server, env, device, **health) -> dict:
    r = requests.post(server.url + "/v1/health", json=health, timeout=5,
                      headers={"Authorization": f"Bearer {env['tokens'][device]}"})
    assert r.status_code == 200, r.text
    return r.json()


def test_canary_healthy_then_promoted_then_unhealthy_canary_rolled_back(fleet_env):
    env = fleet_env
    config = ServerConfig(data_dir=env["tmp"] / "server", database=env["url"], bundle_store=env["store"],
                          port=free_port())
    with SyncServer(config) as server:
        assert set(offers(server, env).values()) == {None}  # nothing promoted yet: nothing offered
        assert fleet(env, "rollout", "start", "v1", "--percent", "100").startswith("rollout 1: v1 offered to 100%")
        fleet(env, "rollout", "promote")
        assert set(offers(server, env).values()) == {"v1"}

        out = fleet(env, "rollout", "start", "v2", "--percent", "10", "--min-fps", "10", "--max-unknown-rate", "0.3")
        assert out == "rollout 2: v2 offered to 10% of devices\n"
        seen = offers(server, env)
        canary = sorted(d for d, b in seen.items() if b == "v2")
        assert canary == sorted(d for d in DEVICES if bucket(2, d) < 10)  # the device id hash decides
        assert 4 <= len(canary) <= 18 and offers(server, env) == seen  # about 10 %, and stable
        for device in canary:
            assert report(server, env, device, bundle_id="v2", fps=14.0, unknown_rate=0.1, errors=0) == \
                {"ok": True, "rolled_back": None}
        status = json.loads(fleet(env, "rollout", "status", "--json"))
        assert [r["state"] for r in status["rollouts"]] == ["promoted", "active"] and status["stable"] == "v1"
        assert fleet(env, "rollout", "promote") == "rollout 2 of v2 promoted\n"
        assert set(offers(server, env).values()) == {"v2"}

        fleet(env, "rollout", "start", "v3", "--percent", "10", "--min-fps", "10")
        during = offers(server, env)
        canary = sorted(d for d, b in during.items() if b == "v3")
        assert canary == sorted(d for d in DEVICES if bucket(3, d) < 10)
        others = [d for d in DEVICES if d not in canary]
        assert {during[d] for d in others} == {"v2"}
        # a device outside the canary cannot fetch the canary's files either: it gets its own bundle's
        token = env["tokens"][others[0]]
        model = requests.get(server.url + "/v1/bundles/model.tflite", headers={"Authorization": f"Bearer {token}"},
                             timeout=5)
        assert model.content == b"model v2"
        # one canary reports too few frames per second: the rollout stops at once
        answer = report(server, env, canary[0], bundle_id="v3", fps=3.0)
        assert answer == {"ok": True, "rolled_back": 3}
        assert set(offers(server, env).values()) == {"v2"}  # the canary goes back to v2; nobody else saw v3
    status = json.loads(fleet(env, "rollout", "status", "--json"))
    last = status["rollouts"][-1]
    assert (last["state"], last["reason"]) == ("rolled_back", f"{canary[0]}: fps 3 below 10")
    assert status["stable"] == "v2"


def test_group_rollout_rolled_back_by_a_device_refusing_the_update(fleet_env):
    env = fleet_env
    config = ServerConfig(data_dir=env["tmp"] / "server", database=env["url"], bundle_store=env["store"],
                          port=free_port())
    with SyncServer(config) as server:
        fleet(env, "rollout", "start", "v1", "--group", "north")
        seen = offers(server, env)
        north = {d for d in DEVICES if d.startswith("STORE-00")}
        assert {d for d, b in seen.items() if b == "v1"} == north
        assert {seen[d] for d in DEVICES if d not in north} == {None}
        # the device-side updater's own event (edge/sync/updates.py) when the bundle fails its health check
        event = {"id": "u1", "type": "bundle_update", "status": "unhealthy", "bundle_id": "v1", "running_id": "v0",
                 "reason": "health check: model does not load"}
        r = requests.post(server.url + "/v1/events", json={"events": [event]}, timeout=5,
                          headers={"Authorization": f"Bearer {env['tokens']['STORE-00-CAM-1']}"})
        assert r.json() == {"held": ["u1"], "rejected": {}}
        assert set(offers(server, env).values()) == {None}
    out = fleet(env, "rollout", "status")
    assert "rolled_back  STORE-00-CAM-1: device update unhealthy: health check: model does not load" in out
    status = json.loads(fleet(env, "status", "--json"))
    assert {d["id"]: d["bundle_id"] for d in status["devices"]}["STORE-00-CAM-1"] == "v0"  # from running_id

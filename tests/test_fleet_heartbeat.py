"""The device's heartbeat to a real sync server on loopback: a device with no events to send
still shows in the fleet view with its bundle, FPS, unknown rate, errors and outbox backlog,
and a canary that reports bad health by heartbeat alone is rolled back."""
from __future__ import annotations

import json
import logging
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import cv2
import pytest

from cli_run import run_cli
from edge_fakes import ColourRecognizer, colour_frame
from shelfsight.edge.cli.sync import config_from_options
from shelfsight.edge.device import Device, DeviceOptions
from shelfsight.edge.pipeline.runner import RunOptions
from shelfsight.edge.runtime.options import RecognizerOptions
from shelfsight.edge.sync.heartbeat import Heartbeat, HeartbeatOptions, clean_report
from shelfsight.edge.sync.http import AuthError, HttpOptions, SyncSession
from shelfsight.edge.sync.service import SyncConfig, SyncService
from shelfsight.edge.sync.uploader import UploadOptions
from shelfsight.errors import ConfigError
from shelfsight.tools.server import ServerConfig, SyncServer
from shelfsight.tools.server.bundles import DirectoryBundleStore
from shelfsight.tools.server.faults import free_port
from shelfsight.tools.server.storage import open_storage
from sync_fakes import make_bundle


def http_for(tmp_path: Path, name: str, token: str) -> HttpOptions:
    path = tmp_path / f"{name}.token"
    path.write_text(token + "\n")
    return HttpOptions(token_file=path, connect_timeout_s=1.0, read_timeout_s=5.0)


def sync_config(tmp_path: Path, name: str, url: str, token: str, interval_s: float = 0.1) -> SyncConfig:
    return SyncConfig(outbox=tmp_path / f"{name}.outbox.db",
                      upload=UploadOptions(endpoint=url, http=http_for(tmp_path, name, token), idle_s=0.05),
                      heartbeat=HeartbeatOptions(interval_s))


def wait_for(condition, timeout_s: float = 10.0):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"not within {timeout_s} s")


def test_a_device_with_no_events_shows_in_the_fleet_view(tmp_path, capsys):
    data = tmp_path / "server"
    store = open_storage(f"sqlite:///{data / 'events.db'}")
    token = store.add_device("STORE-7-CAM-1", group="north")
    with SyncServer(ServerConfig(data_dir=data, port=free_port())) as server:
        service = SyncService(sync_config(tmp_path, "cam", server.url, token))
        service.device_health = lambda: {"bundle_id": "v1", "fps": 14.5, "unknown_rate": 0.125, "errors": 2}
        with service:
            record = wait_for(lambda: (r := store.device("STORE-7-CAM-1")) and r.health_at and r)
        assert service.heartbeat.stats.sent >= 1 and service.heartbeat.stats.failed == 0
    assert (record.bundle_id, record.fps, record.unknown_rate, record.errors, record.outbox_backlog) == \
        ("v1", 14.5, 0.125, 2, 0)
    assert store.stats()["events"] == 0  # nothing was sent but the heartbeat
    store.close()
    code, out, err = run_cli(["fleet", "--data-dir", data, "status", "--json"], capsys)
    assert code == 0, err
    (row,) = json.loads(out)["devices"]
    assert (row["id"], row["bundle_id"], row["fps"], row["unknown_rate"], row["errors"], row["outbox_backlog"]) == \
        ("STORE-7-CAM-1", "v1", 14.5, 0.125, 2, 0)
    assert 0 <= row["seen_s_ago"] < 60


def test_the_outbox_backlog_and_the_store_bundle_are_reported(tmp_path):
    data = tmp_path / "server"
    store = open_storage(f"sqlite:///{data / 'events.db'}")
    token = store.add_device("cam")
    with SyncServer(ServerConfig(data_dir=data, port=free_port())) as server:
        config = sync_config(tmp_path, "cam", server.url, token)
        service = SyncService(config)
        service.outbox.put_many([{"id": f"e{i}"} for i in range(3)])
        assert service.health() == {"outbox_backlog": 3}
        assert service.heartbeat.send_once() == {"outbox_backlog": 3}  # the uploader has not started
        assert store.device("cam").outbox_backlog == 3
        service.stop()
    store.close()


def test_a_canary_reporting_low_fps_by_heartbeat_alone_is_rolled_back(tmp_path):
    data = tmp_path / "server"
    store = open_storage(f"sqlite:///{data / 'events.db'}")
    bundles = DirectoryBundleStore(data / "bundles")
    for version in ("v1", "v2"):
        bundles.put(make_bundle(tmp_path / version, ["a"], version.encode() * 100, bundle_id=version))
        store.add_bundle(version, bundles.location(version))
    tokens = {name: store.add_device(name, group) for name, group in (("north-1", "north"), ("south-1", "south"))}
    store.start_rollout("v1", percent=100)
    store.end_rollout("promoted")
    store.start_rollout("v2", group="north", min_fps=10)
    with SyncServer(ServerConfig(data_dir=data, port=free_port())) as server:
        south = SyncService(sync_config(tmp_path, "south-1", server.url, tokens["south-1"]))
        south.device_health = lambda: {"bundle_id": "v1", "fps": 4.0}  # not in the rollout: not judged by it
        north = SyncService(sync_config(tmp_path, "north-1", server.url, tokens["north-1"]))
        north.device_health = lambda: {"bundle_id": "v2", "fps": 4.0, "errors": 0}
        with south:
            wait_for(lambda: south.heartbeat.stats.sent >= 2)
            assert store.active_rollout() is not None
            with north:
                rollout = wait_for(lambda: store.rollouts()[-1].state == "rolled_back" and store.rollouts()[-1])
    assert (rollout.bundle, rollout.reason) == ("v2", "north-1: fps 4 below 10")
    assert store.device("north-1").bundle_id == "v2" and store.stable_bundle() == "v1"
    assert store.stats()["events"] == 0
    store.close()


class BundledColours(ColourRecognizer):
    bundle = SimpleNamespace(bundle_id="colours-v1")

    def close(self) -> None:
        pass


def test_the_run_loop_sends_its_fps_unknown_rate_and_errors(tmp_path):
    frames = tmp_path / "frames"
    frames.mkdir()
    for i in range(4):
        cv2.imwrite(str(frames / f"{i}.png"), colour_frame("apple"))
    data = tmp_path / "server"
    store = open_storage(f"sqlite:///{data / 'events.db'}")
    token = store.add_device("kiosk-3")
    with SyncServer(ServerConfig(data_dir=data, port=free_port())) as server:
        options = DeviceOptions(RecognizerOptions(tmp_path / "bundle"), source=str(frames), loop=True, sinks=(),
                                sync=sync_config(tmp_path, "kiosk-3", server.url, token), run=RunOptions())
        device = Device(options, recognizer_factory=lambda _: BundledColours(delay_s=0.01, fail_on={5}))
        stop = threading.Event()
        runner = threading.Thread(target=device.run, kwargs={"stop": stop, "handle_signals": False})
        runner.start()
        try:
            record = wait_for(lambda: (r := store.device("kiosk-3")) and r.fps and r, timeout_s=20)
        finally:
            stop.set()
            runner.join(30)
    assert (record.bundle_id, record.unknown_rate, record.errors) == ("colours-v1", 0.0, 1)
    assert 0 < record.fps < 1000 and record.outbox_backlog is not None
    store.close()


def test_failed_heartbeats_are_logged_once_per_streak(tmp_path, caplog):
    data = tmp_path / "server"
    store = open_storage(f"sqlite:///{data / 'events.db'}")
    token = store.add_device("cam")
    store.close()
    port = free_port()
    session = SyncSession(http_for(tmp_path, "cam", token))
    beat = Heartbeat(session, f"http://127.0.0.1:{port}", HeartbeatOptions(60), lambda: {"fps": 3.0})
    with caplog.at_level(logging.INFO, logger="shelfsight.edge.sync.heartbeat"):
        beat._beat()
        beat._beat()  # the server is still down: not logged again
        with SyncServer(ServerConfig(data_dir=data, port=port)):
            beat._beat()
    assert (beat.stats.sent, beat.stats.failed, beat.stats.last_error) == (1, 2, None)
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 2 and messages[0].startswith(f"heartbeat: POST http://127.0.0.1:{port}/v1/health failed")
    assert messages[1] == "heartbeat: sent again"
    session.close()


def test_a_refused_token_is_an_auth_error(tmp_path):
    data = tmp_path / "server"
    open_storage(f"sqlite:///{data / 'events.db'}").close()
    with SyncServer(ServerConfig(data_dir=data, port=free_port())) as server:
        session = SyncSession(http_for(tmp_path, "cam", "ssk_not-a-token-of-this-fleet"))
        beat = Heartbeat(session, server.url, HeartbeatOptions(60), lambda: {})
        with pytest.raises(AuthError, match=r"server refused the sync token \(HTTP 401\)"):
            beat.send_once()
        session.close()


def test_a_report_is_cleaned_before_it_is_sent():
    assert clean_report({"bundle_id": "b", "fps": float("nan"), "unknown_rate": -0.1, "errors": True,
                         "outbox_backlog": 3.0, "temperature": 71}) == {"bundle_id": "b", "outbox_backlog": 3}
    assert clean_report({"bundle_id": "", "fps": 9, "errors": 0}) == {"fps": 9.0, "errors": 0}


def test_heartbeat_options_and_the_cli(tmp_path, capsys, monkeypatch):
    with pytest.raises(ConfigError, match=r"heartbeat interval must be a number of seconds > 0, got -1"):
        HeartbeatOptions(-1)
    with pytest.raises(ConfigError, match="a heartbeat goes to the upload endpoint"):
        SyncConfig(outbox=tmp_path / "o.db", heartbeat=HeartbeatOptions())
    base = dict(endpoint="http://127.0.0.1:9", outbox=tmp_path / "o.db", token_file=None, token_env="T",
                ca_bundle=None, allow_http=False, device_id="", batch_size=500, max_events=10, max_bytes=10_000,
                max_age=60.0, drop_policy="oldest", bundle_store=None, manifest_url=None, public_key=None,
                poll_interval=300.0)
    assert config_from_options(**base, heartbeat_interval=60.0).heartbeat == HeartbeatOptions(60.0)
    assert config_from_options(**base, heartbeat_interval=0).heartbeat is None
    assert config_from_options(**dict(base, outbox=None, bundle_store=tmp_path / "s"),
                               heartbeat_interval=60.0).heartbeat is None  # no uploader: nowhere to send
    monkeypatch.setenv("SHELFSIGHT_SYNC_TOKEN", "a-long-enough-token")
    code, out, err = run_cli(["sync", "--endpoint", "http://127.0.0.1:9", "--outbox", tmp_path / "o.db",
                              "--heartbeat-interval", "-5"], capsys)
    assert (code, out, err) == (2, "", "error: heartbeat interval must be a number of seconds > 0, got -5.0\n")

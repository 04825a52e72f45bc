"""The sync server's low-severity hardening (issue 14), on real servers and both databases:
an event id reused with other content is rejected with a reason (not "held" and dropped),
event ids are scoped per device, a lowercase ``bearer`` scheme is accepted, and plain http
beyond loopback is warned about in one line."""
from __future__ import annotations

import logging
import signal
import subprocess
import sys
import time

import pytest
import requests

from fleet_support import database_url, postgres  # noqa: F401  (fixtures)
from shelfsight.edge.sync.http import HttpOptions
from shelfsight.edge.sync.outbox import Outbox, OutboxOptions
from shelfsight.edge.sync.uploader import UploadOptions, Uploader
from shelfsight.errors import ConfigError
from shelfsight.tools.server import ServerConfig, SyncServer
from shelfsight.tools.server.faults import free_port
from shelfsight.tools.server.server import plain_http_warning
from shelfsight.tools.server.storage import open_storage
from sync_fakes import TOKEN, token_file

CONFLICT = "id already held with different content"


def bearer(token: str, scheme: str = "Bearer") -> dict:
    return {"Authorization": f"{scheme} {token}"}


@pytest.fixture
def fleet(tmp_path, database_url):  # noqa: F811
    """A server on ``database_url`` with two registered devices: (url, storage, tokens)."""
    store = open_storage(database_url, 2)
    tokens = {name: store.add_device(name) for name in ("cam-a", "cam-b")}
    with SyncServer(ServerConfig(data_dir=tmp_path / "server", database=database_url, port=free_port(),
                                 token=TOKEN)) as server:
        yield server.url, store, tokens
    store.close()


def post(url: str, headers: dict, *events: dict) -> dict:
    r = requests.post(url + "/v1/events", json={"events": list(events)}, headers=headers, timeout=5)
    assert r.status_code == 200, r.text
    return r.json()


def test_an_event_id_reused_with_different_content_is_rejected_with_a_reason(fleet, tmp_path, caplog):
    url, store, tokens = fleet
    a = bearer(tokens["cam-a"])
    assert post(url, a, {"id": "e1", "n": 1}) == {"held": ["e1"], "rejected": {}}
    assert post(url, a, {"id": "e1", "n": 2}) == {"held": [], "rejected": {"e1": CONFLICT}}
    assert post(url, a, {"id": "e1", "n": 1}) == {"held": ["e1"], "rejected": {}}  # a resend stays harmless
    assert store.events("cam-a") == [("cam-a", "e1", '{"id":"e1","n":1}')]
    assert store.stats()["conflicts"] == 1

    # the device's own uploader keeps the refused event as a dead letter with the reason, and says so
    (tmp_path / "a.token").write_text(tokens["cam-a"] + "\n")
    outbox = Outbox(tmp_path / "outbox.db", OutboxOptions(durable=False))
    outbox.put({"id": "e1", "n": 3})
    uploader = Uploader(outbox, UploadOptions(endpoint=url, http=HttpOptions(token_file=tmp_path / "a.token")))
    with caplog.at_level(logging.WARNING, logger="shelfsight.edge.sync.uploader"):
        result = uploader.send_once()
    assert (result.sent, result.acked, result.rejected) == (1, 0, 1)
    assert outbox.dead_letters() == [("e1", CONFLICT)] and outbox.stats().pending == 0
    assert [r.getMessage() for r in caplog.records] == [
        f"server rejected 1 events (kept as dead letters), e.g. e1: {CONFLICT}"]
    uploader.stop()
    outbox.close()


def test_one_device_cannot_block_another_devices_event_id(fleet):
    url, store, tokens = fleet
    assert post(url, bearer(tokens["cam-a"]), {"id": "shared-1", "by": "a"}) == {"held": ["shared-1"], "rejected": {}}
    assert post(url, bearer(tokens["cam-b"]), {"id": "shared-1", "by": "b"}) == {"held": ["shared-1"], "rejected": {}}
    # the reference setup's shared token: devices named by X-Shelfsight-Device, scoped the same way
    for name in ("dev-x", "dev-y"):
        headers = dict(bearer(TOKEN), **{"X-Shelfsight-Device": name})
        assert post(url, headers, {"id": "shared-1", "by": name}) == {"held": ["shared-1"], "rejected": {}}
    assert store.events() == [("cam-a", "shared-1", '{"id":"shared-1","by":"a"}'),
                              ("cam-b", "shared-1", '{"id":"shared-1","by":"b"}'),
                              ("dev-x", "shared-1", '{"id":"shared-1","by":"dev-x"}'),
                              ("dev-y", "shared-1", '{"id":"shared-1","by":"dev-y"}')]
    assert store.stats()["conflicts"] == 0


def test_an_id_twice_in_one_batch_with_different_content_stores_neither(fleet):
    url, store, tokens = fleet
    answer = post(url, bearer(tokens["cam-a"]), {"id": "d", "n": 1}, {"id": "s"}, {"id": "d", "n": 2}, {"id": "s"},
                  {"id": "d", "n": 1})
    assert answer == {"held": ["s"], "rejected": {"d": "id sent twice in this batch with different content"}}
    assert [row[1] for row in store.events("cam-a")] == ["s"]


def test_a_lowercase_bearer_scheme_is_accepted(fleet):
    url, store, tokens = fleet
    admin = store.add_admin_token("ops")
    for scheme in ("bearer", "BEARER", "Bearer", "bEaReR"):
        assert post(url, bearer(tokens["cam-a"], scheme), {"id": f"e-{scheme}"})["held"] == [f"e-{scheme}"]
        assert requests.get(url + "/v1/stats", headers=bearer(admin, scheme), timeout=5).status_code == 200
        shared = dict(bearer(TOKEN, scheme), **{"X-Shelfsight-Device": "dev-x"})
        assert requests.post(url + "/v1/events", json={"events": []}, headers=shared, timeout=5).status_code == 200
    for header in (f"Basic {tokens['cam-a']}", tokens["cam-a"], "bearer", "bearer ", f"Bearer{tokens['cam-a']}"):
        r = requests.post(url + "/v1/events", json={"events": []}, headers={"Authorization": header}, timeout=5)
        assert (r.status_code, r.text) == (401, "missing or wrong bearer token"), header


def test_plain_http_beyond_loopback_is_warned_about_in_one_line(tmp_path):
    expected = ("plain http on 0.0.0.0: device and admin tokens travel in clear; give --tls-cert and --tls-key, "
                "or put a TLS proxy in front and listen on 127.0.0.1")
    assert plain_http_warning(ServerConfig(data_dir=tmp_path, host="0.0.0.0")) == expected
    for quiet in (ServerConfig(data_dir=tmp_path), ServerConfig(data_dir=tmp_path, host="localhost"),
                  ServerConfig(data_dir=tmp_path, host="::1"),
                  ServerConfig(data_dir=tmp_path, host="0.0.0.0", tls_cert=tmp_path / "c", tls_key=tmp_path / "k")):
        assert plain_http_warning(quiet) is None
    assert plain_http_warning(ServerConfig(data_dir=tmp_path, host="10.1.2.3")).startswith("plain http on 10.1.2.3:")

    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "shelfsight", "sync-server", "--host", "0.0.0.0",
                             "--port", str(port), "--data-dir", str(tmp_path / "data"),
                             "--token-file", str(token_file(tmp_path))],
                            stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                if requests.get(f"http://127.0.0.1:{port}/healthz", timeout=0.5).status_code == 200:
                    break
            except requests.RequestException:
                time.sleep(0.2)
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    assert err.splitlines() == [f"WARNING shelfsight.tools.server.server: {expected}",
                                f"sync-server listening on http://0.0.0.0:{port} (data in {tmp_path / 'data'})"]


def test_a_lone_surrogate_is_rejected_not_a_500(fleet):
    url, store, tokens = fleet
    headers = dict(bearer(tokens["cam-a"]), **{"Content-Type": "application/json"})
    body = '{"events": [{"id": "e1", "label": "\\ud800"}, {"id": "e2"}, {"id": "\\udfff"}]}'  # ASCII escapes
    r = requests.post(url + "/v1/events", data=body.encode(), headers=headers, timeout=5)
    lone = "text that is not valid Unicode (a lone surrogate, \\ud800-\\udfff)"
    assert (r.status_code, r.json()) == (200, {"held": ["e2"], "rejected": {"e1": lone, "\udfff": lone}})
    health = requests.post(url + "/v1/health", data=b'{"bundle_id": "v\\ud800"}', headers=headers, timeout=5)
    assert (health.status_code, health.json()) == \
        (400, {"error": "health report: health field 'bundle_id' is not valid Unicode, got 'v\\ud800'"})
    assert [row[1] for row in store.events("cam-a")] == ["e2"]


def test_a_shared_token_device_name_is_checked_like_a_registered_one(fleet, tmp_path):
    url, store, tokens = fleet
    rule = "expected 1..128 letters, digits, '.', '_' or '-' starting with a letter or digit (e.g. STORE-12-CAM-3)"
    for name, shown in ((b"\xff\xfe", "'\\udcff\\udcfe'"), ("café".encode(), "'café'"), (b"a b", "'a b'"),
                        (b"x" * 200, repr("x" * 140) + "...")):
        for path, payload in (("/v1/events", {"events": [{"id": "e"}]}), ("/v1/health", {"fps": 1})):
            headers = dict(bearer(TOKEN), **{"X-Shelfsight-Device": name})
            r = requests.post(url + path, json=payload, headers=headers, timeout=5)
            assert (r.status_code, r.text) == (400, f"X-Shelfsight-Device: device name {shown}: {rule}")
    assert store.events() == [] and store.devices()[0].id == "cam-a"
    # the device refuses such a name itself, before it sends anything
    with pytest.raises(ConfigError, match=r"device id 'café': expected 1\.\.128 letters"):
        HttpOptions(device_id="café")
    assert HttpOptions(device_id="STORE-12-CAM-3.b_1").device_id == "STORE-12-CAM-3.b_1"

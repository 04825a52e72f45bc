"""Uploading the outbox to the real reference server on loopback, through faults."""
from __future__ import annotations

import random
import time

import pytest
import requests

from shelfsight.edge.sync.outbox import Outbox, OutboxOptions
from shelfsight.backoff import Backoff, BackoffOptions
from shelfsight.edge.sync.http import AuthError, HttpOptions, SyncError, check_url, read_token
from shelfsight.edge.sync.uploader import UploadOptions, Uploader, parse_answer
from shelfsight.errors import ConfigError
from shelfsight.tools.server import Faults

from sync_fakes import TOKEN, make_tls, server, token_file


def ev(i: int) -> dict:
    return {"id": f"ev-{i:05d}", "seq": i, "label": f"sku-{i % 7}"}


def uploader(tmp_path, endpoint: str, token: str = TOKEN, batch: int = 100, read_timeout_s: float = 5.0,
             ca_bundle=None) -> Uploader:
    outbox = Outbox(tmp_path / "outbox.db", OutboxOptions(durable=False))
    http = HttpOptions(token_file=token_file(tmp_path, token), read_timeout_s=read_timeout_s,
                       connect_timeout_s=1.0, ca_bundle=ca_bundle, device_id="dev-1")
    options = UploadOptions(endpoint=endpoint, http=http, batch_events=batch, idle_s=0.02,
                            backoff=BackoffOptions.for_retries(initial_s=0.02, max_s=0.2))
    return Uploader(outbox, options, backoff=Backoff(options.backoff, random.Random(0)))


def held_ids(srv) -> set[str]:
    return {row[0] for row in srv.state.store.db.execute("SELECT id FROM events")}


def test_upload_everything_once(tmp_path):
    with server(tmp_path) as srv:
        up = uploader(tmp_path, srv.url)
        up.outbox.put_many([ev(i) for i in range(250)])
        assert up.send_once().acked == 100
        assert up.drain(10)
        assert held_ids(srv) == {ev(i)["id"] for i in range(250)}
        stats = requests.get(srv.url + "/v1/stats", headers={"Authorization": f"Bearer {TOKEN}"}).json()
        assert (stats["events"], stats["batches"], stats["redeliveries"], stats["devices"]) == (250, 3, 0, 1)
        assert up.outbox.counters()["acked"] == 250
        up.stop()


def test_resent_batch_is_stored_once(tmp_path):
    with server(tmp_path) as srv:
        up = uploader(tmp_path, srv.url)
        up.outbox.put_many([ev(i) for i in range(10)])
        batch = up.outbox.claim()
        for _ in range(3):  # the answer got lost twice: the device sends the batch again
            answer = up.session.request("POST", up.options.events_url, json={"events": list(batch.events)}).json()
        assert sorted(answer["held"]) == list(batch.ids)
        assert srv.state.store.stats()["events"] == 10 and srv.state.store.stats()["redeliveries"] == 20
        up.stop()


def test_faults_500_drops_and_slow_answers_lose_and_duplicate_nothing(tmp_path):
    faults = Faults(error_rate=0.2, drop_rate=0.15, slow_rate=0.15, slow_s=0.4)
    with server(tmp_path, faults=faults) as srv:
        up = uploader(tmp_path, srv.url, batch=100, read_timeout_s=0.25)
        up.outbox.put_many([ev(i) for i in range(2000)])
        assert up.drain(60)
        stats = srv.state.store.stats()
        assert held_ids(srv) == {ev(i)["id"] for i in range(2000)}
        assert stats["events"] == 2000
        assert up.stats.batches_failed > 0 and stats["batches"] > 20
        assert up.outbox.stats().pending == 0 and up.outbox.counters()["acked"] == 2000
        up.stop()


def test_server_down_for_a_while_events_wait_on_disk(tmp_path):
    srv = server(tmp_path)
    port = srv.config.port
    srv.stop()
    up = uploader(tmp_path, srv.url)
    up.outbox.put_many([ev(i) for i in range(300)])
    assert not up.drain(0.5)
    assert up.stats.batches_failed >= 1 and up.outbox.stats().pending == 300
    up.outbox.close()
    up = uploader(tmp_path, srv.url)  # the device restarted meanwhile: events are still on disk
    with server(tmp_path, port=port) as back:
        assert up.drain(10)
        assert len(held_ids(back)) == 300
    up.stop()


def test_background_worker_sends_as_events_arrive(tmp_path):
    with server(tmp_path) as srv:
        up = uploader(tmp_path, srv.url).start()
        for i in range(50):
            up.outbox.put(ev(i))
        deadline = time.monotonic() + 10
        while srv.state.store.stats()["events"] < 50 and time.monotonic() < deadline:
            time.sleep(0.02)
        up.stop()
        up.stop()  # idempotent
        assert srv.state.store.stats()["events"] == 50


def test_wrong_token_keeps_events_and_rotated_token_is_picked_up(tmp_path):
    with server(tmp_path) as srv:
        up = uploader(tmp_path, srv.url, token="wrong")
        up.outbox.put_many([ev(i) for i in range(5)])
        with pytest.raises(AuthError, match="refused the sync token \\(HTTP 401\\)"):
            up.send_once()
        assert up.outbox.stats().pending == 5
        assert not up.drain(0.3)
        token_file(tmp_path, TOKEN)  # the token file is rotated on disk
        assert up.drain(10)
        assert srv.state.store.stats()["events"] == 5
        up.stop()


def test_tls_with_custom_ca(tmp_path):
    ca, cert, key = make_tls(tmp_path)
    with server(tmp_path, tls_cert=cert, tls_key=key) as srv:
        assert srv.url.startswith("https://127.0.0.1:")
        trusted = uploader(tmp_path / "a", srv.url, ca_bundle=ca)
        trusted.outbox.put(ev(1))
        assert trusted.send_once().acked == 1
        trusted.stop()
        untrusted = uploader(tmp_path / "b", srv.url)  # system CAs do not know the test CA
        untrusted.outbox.put(ev(2))
        with pytest.raises(SyncError, match="SSLError"):
            untrusted.send_once()
        assert untrusted.outbox.stats().pending == 1
        untrusted.stop()


def test_parse_answer_keeps_to_the_batch():
    held, rejected = parse_answer({"held": ["a", "zzz"], "rejected": {"b": "too long", "x": "y"}}, ("a", "b", "c"))
    assert held == ["a"] and rejected == {"b": "too long"}
    with pytest.raises(SyncError, match="server answer is not"):
        parse_answer({"ok": True}, ("a",))


def test_backoff_full_jitter_bounds():
    backoff = Backoff(BackoffOptions.for_retries(initial_s=0.5, max_s=4.0), random.Random(3))
    delays = [backoff.next_delay() for _ in range(8)]
    caps = [0.5, 1.0, 2.0, 4.0, 4.0, 4.0, 4.0, 4.0]
    assert all(0.0 <= d <= c for d, c in zip(delays, caps))
    assert len(set(delays)) == 8  # jittered, not a fixed ladder
    backoff.reset()
    assert backoff.attempt == 0 and backoff.next_delay() <= 0.5
    with pytest.raises(ConfigError, match=r"max_s must be >= initial_s \(5\), got 1"):
        BackoffOptions.for_retries(initial_s=5, max_s=1)


def test_urls_and_tokens(tmp_path, monkeypatch):
    assert check_url("http://127.0.0.1:8765/") == "http://127.0.0.1:8765"
    assert check_url("http://localhost:1") == "http://localhost:1"
    assert check_url("https://sync.example.com") == "https://sync.example.com"
    with pytest.raises(ConfigError, match="plain http to sync.example.com"):
        check_url("http://sync.example.com")
    assert check_url("http://sync.example.com", allow_http=True) == "http://sync.example.com"
    with pytest.raises(ConfigError, match="not an http\\(s\\) URL"):
        check_url("ftp://x")
    monkeypatch.setenv("MY_TOKEN", " abc ")
    assert read_token(HttpOptions(token_env="MY_TOKEN")) == "abc"
    monkeypatch.delenv("MY_TOKEN")
    with pytest.raises(ConfigError, match="no sync token: pass a token file or set \\$MY_TOKEN"):
        read_token(HttpOptions(token_env="MY_TOKEN"))
    (tmp_path / "empty").write_text("\n")
    with pytest.raises(ConfigError, match="is empty"):
        read_token(HttpOptions(token_file=tmp_path / "empty"))
    with pytest.raises(ConfigError, match="CA bundle .* not found"):
        HttpOptions(ca_bundle=tmp_path / "nope.pem")

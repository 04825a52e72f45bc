"""Issue 14, medium 6 and the --allow-http item: credentials never reach a log line, and
plain http to another host is refused naming --allow-http, or warned about with it."""
from __future__ import annotations

import logging

import pytest

from shelfsight.edge.pipeline.sinks import HttpSink
from shelfsight.edge.pipeline.sources import open_source
from shelfsight.edge.sync.http import check_url
from shelfsight.errors import ConfigError
from shelfsight.redact import redact_url
from shelfsight.tools.server.faults import free_port

SECRETS = ("hunter2", "K3YVALUE", "T0KEN")


@pytest.mark.parametrize("url, shown", [
    ("https://alice:hunter2@hooks.example/x?api_key=K3YVALUE&n=1", "https://***@hooks.example/x?api_key=***&n=1"),
    ("rtsp://cam:hunter2@10.0.0.7:554/stream", "rtsp://***@10.0.0.7:554/stream"),
    ("http://h.example/p?n=1&token=T0KEN#top", "http://h.example/p?n=1&token=***#top"),
    ("rtspsrc location=rtsp://u:hunter2@cam/1 ! decodebin", "rtspsrc location=rtsp://***@cam/1 ! decodebin"),
    ("Max retries exceeded with url: /hook?API_KEY=K3YVALUE (Caused by ...)",
     "Max retries exceeded with url: /hook?API_KEY=*** (Caused by ...)"),
    ("https://plain.example/path?keep=me", "https://plain.example/path?keep=me"),
])
def test_redact_url(url, shown):
    assert redact_url(url) == shown


def test_http_sink_logs_no_credentials(caplog):
    url = f"http://alice:hunter2@127.0.0.1:{free_port()}/hook?api_key=K3YVALUE"  # nothing listens there
    with caplog.at_level(logging.INFO, logger="shelfsight.edge.pipeline.sinks"):
        sink = HttpSink(url, timeout_s=0.5, flush_timeout_s=5.0)
        sink.emit({"id": 1})
        sink.flush()
        sink.close()
    assert sink.failures == 1
    text = caplog.text + repr(sink)
    assert "post failed" in text and "http://***@127.0.0.1" in text and "api_key=***" in text
    assert not any(secret in text for secret in SECRETS)


def test_stream_source_name_is_redacted():
    source = open_source("rtsp://cam:hunter2@127.0.0.1:9/stream?token=T0KEN")
    assert source.name == "rtsp://***@127.0.0.1:9/stream?token=***"


def test_plain_http_names_the_flag_and_warns_when_allowed(caplog):
    with pytest.raises(ConfigError, match=r"uses plain http to sync\.example\.com; use https \(or --allow-http"):
        check_url("http://u:hunter2@sync.example.com")
    with caplog.at_level(logging.WARNING, logger="shelfsight.edge.sync.http"):
        assert check_url("http://sync.example.com/", allow_http=True) == "http://sync.example.com"
        check_url("http://127.0.0.1:8080", allow_http=True)  # loopback: nothing to warn about
    assert [r.getMessage() for r in caplog.records] == [
        "sync URL http://sync.example.com/ is plain http (--allow-http): the device token travels in clear"]

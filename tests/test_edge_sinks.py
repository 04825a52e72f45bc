"""Events and sinks: JSON lines, HTTP hook against a real loopback server, sink specs."""
from __future__ import annotations

import base64
import json
import threading
import time
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import cv2
import numpy as np
import pytest

from edge_fakes import ColourRecognizer, colour_frame
from shelfsight.edge.pipeline.events import build_event, iso_time
from shelfsight.edge.pipeline.sinks import HttpSink, JsonlSink, Sink, make_sinks
from shelfsight.edge.pipeline.sources import Frame
from shelfsight.errors import ConfigError


class Hook:
    """A loopback HTTP server that records POSTed JSON and answers with `status`."""

    def __init__(self, status: int = 204, delay_s: float = 0.0) -> None:
        self.bodies: list[dict] = []
        self.status = status
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                length = int(self.headers["Content-Length"])
                body = json.loads(self.rfile.read(length))
                if delay_s:
                    time.sleep(delay_s)
                hook.bodies.append({"content_type": self.headers["Content-Type"], "path": self.path, **body})
                self.send_response(hook.status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/events"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def hook():
    server = Hook()
    yield server
    server.close()


def event_for(label="apple", index=7, jpeg_quality=None):
    frame = Frame(image=colour_frame(label), index=index, timestamp=1714564800.25, source="cam")
    recognition = ColourRecognizer().recognize(frame.image, frame.source)
    return build_event(recognition, frame, jpeg_quality=jpeg_quality)


def test_event_fields_are_plain_json_and_carry_no_picture_by_default():
    event = event_for()
    assert set(event) == {"schema", "id", "time", "source", "frame", "label", "score", "predictions", "matches", "latency_ms"}
    assert len(event["id"]) == 32 and int(event["id"], 16) >= 0
    assert event["time"] == "2024-05-01T12:00:00.250+00:00"
    assert datetime.fromisoformat(event["time"]).timestamp() == 1714564800.25
    assert (event["source"], event["frame"], event["label"]) == ("cam", 7, "apple")
    assert event["predictions"][0] == {"label": "apple", "score": event["predictions"][0]["score"], "index": 0}
    assert event["matches"] == [{"item_id": "apple-1", "sku": "SKU-apple", "label": "apple", "name": "Apple",
                                 "similarity": pytest.approx(0.9)}]
    assert type(event["matches"][0]["similarity"]) is float
    assert json.loads(json.dumps(event)) == event
    assert event_for()["id"] != event["id"]


def test_event_jpeg_only_when_asked_and_it_decodes_to_the_frame():
    event = event_for(jpeg_quality=90)
    image = cv2.imdecode(np.frombuffer(base64.b64decode(event["jpeg"]), np.uint8), cv2.IMREAD_COLOR)
    assert image.shape == (240, 320, 3)
    assert np.abs(np.median(image.reshape(-1, 3), axis=0) - (40, 40, 200)).max() <= 6
    with pytest.raises(ConfigError, match="jpeg quality must be a whole number 1..100, got 0"):
        event_for(jpeg_quality=0)


def test_iso_time_is_utc_with_milliseconds():
    assert iso_time(0.0) == "1970-01-01T00:00:00.000+00:00"


def test_jsonl_file_sink_appends_complete_lines(tmp_path):
    path = tmp_path / "out" / "events.jsonl"
    sink = JsonlSink(path)
    events = [event_for(index=i) for i in range(3)]
    for event in events:
        sink.emit(event)
    assert path.read_text().count("\n") == 3  # line-buffered: on disk before close
    sink.close()
    sink.close()
    with pytest.raises(ValueError, match="closed"):
        sink.emit(events[0])
    again = JsonlSink(path)
    again.emit(events[0])
    again.close()
    lines = path.read_text().splitlines()
    assert [json.loads(line) for line in lines] == events + events[:1]


def test_jsonl_stdout_sink(capsys):
    sink = make_sinks(["stdout"])[0]
    sink.emit({"label": "lime", "score": 0.5})
    sink.close()
    assert capsys.readouterr().out == '{"label":"lime","score":0.5}\n'


def test_http_sink_posts_json_to_a_loopback_hook(hook):
    sink = HttpSink(hook.url, timeout_s=2.0)
    events = [event_for(index=i) for i in range(3)]
    for event in events:
        sink.emit(event)
    sink.flush()
    assert (sink.sent, sink.failures, sink.dropped) == (3, 0, 0)
    received = sorted(hook.bodies, key=lambda b: b["frame"])
    assert [b.pop("content_type") for b in received] == ["application/json"] * 3
    assert [b.pop("path") for b in received] == ["/events"] * 3
    assert received == events
    sink.close()
    sink.close()


def test_http_sink_counts_failures_and_never_raises(caplog):
    refusing = Hook(status=500)
    try:
        sink = HttpSink(refusing.url, timeout_s=1.0)
        sink.emit(event_for())
        sink.emit(event_for())
        sink.close()
        assert (sink.sent, sink.failures) == (0, 2)
        assert "post failed (HTTP 500); 1 failures in a row" in caplog.text
    finally:
        refusing.close()

    dead_url = refusing.url  # the server is gone: connection refused
    sink = HttpSink(dead_url, timeout_s=0.5)
    sink.emit(event_for())
    sink.close()
    assert (sink.sent, sink.failures) == (0, 1)
    assert "ConnectionError" in caplog.text


def test_http_sink_drops_the_oldest_when_the_server_is_slow():
    slow = Hook(delay_s=0.3)
    try:
        sink = HttpSink(slow.url, timeout_s=2.0, max_pending=2)
        for i in range(6):
            sink.emit(event_for(index=i))
        sink.close()
        assert sink.dropped >= 2
        assert sink.sent + sink.dropped == 6
        assert sorted(b["frame"] for b in slow.bodies)[-1] == 5  # the newest got through
    finally:
        slow.close()


def test_make_sinks_parses_every_form_and_refuses_others(tmp_path, hook):
    sinks = make_sinks(["stdout", f"jsonl:{tmp_path / 'e.jsonl'}", hook.url])
    assert [type(s) for s in sinks] == [JsonlSink, JsonlSink, HttpSink]
    assert all(isinstance(s, Sink) for s in sinks)
    for sink in sinks:
        sink.close()
    with pytest.raises(ConfigError, match=r"sink 'kafka://x': expected 'stdout', 'jsonl:PATH' or an http"):
        make_sinks(["kafka://x"])
    with pytest.raises(ConfigError, match="sink 'jsonl:' needs a file path"):
        make_sinks(["jsonl:"])
    with pytest.raises(ConfigError, match="is a folder; expected a file path"):
        make_sinks([f"jsonl:{tmp_path}"])
    with pytest.raises(ConfigError, match="http sink needs an http:// or https:// URL, got 'ftp://x'"):
        HttpSink("ftp://x")

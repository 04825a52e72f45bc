"""Hardening, the low items: each with its regression test."""
from __future__ import annotations

import json
import stat

import pytest
from aiohttp import web

from shelfsight.edge.pipeline.runner import RunSummary
from shelfsight.edge.pipeline.sinks import JsonlSink
from shelfsight.edge.sync.outbox import Outbox
from shelfsight.errors import ConfigError
from shelfsight.tools.server.config import read_token_file
from shelfsight.tools.server.store import parse_batch


def test_a_jsonl_file_ending_in_a_torn_line_gets_the_next_event_on_a_fresh_line(tmp_path):
    path = tmp_path / "events.jsonl"
    path.write_text('{"id": "a"}\n{"id": "b", "lab')  # a crash mid-write
    sink = JsonlSink(path)
    sink.emit({"id": "c"})
    sink.close()
    lines = path.read_text().splitlines()
    assert lines[0] == '{"id": "a"}' and lines[1] == '{"id": "b", "lab' and json.loads(lines[2]) == {"id": "c"}


def test_a_summary_of_no_frames_is_valid_json(tmp_path):
    nan = float("nan")
    summary = RunSummary(frames=0, recognized=0, events=0, unknown=0, skipped={}, dropped=0, reopens=0,
                         sink_errors=0, duration_s=0.1, fps=0.0, latency_p50_ms=nan, latency_p99_ms=nan,
                         inference_p50_ms=nan, inference_p99_ms=nan, first_event_s=None, stopped_by="end of source")
    text = json.dumps(summary.to_dict(), allow_nan=False)
    assert json.loads(text)["latency_p50_ms"] is None


def test_the_outbox_file_is_readable_by_its_owner_only(tmp_path):
    with Outbox(tmp_path / "events.db") as box:
        box.put({"id": "e1"})
    assert stat.S_IMODE((tmp_path / "events.db").stat().st_mode) == 0o600


@pytest.mark.parametrize("body, reason", [
    (b'{"events": ' + b"[" * 200_000 + b"]" * 200_000 + b"}", "body is nested too deeply"),
    (b'{"events": [{"id": "a", "score": NaN}]}', "NaN is not a JSON number"),
    (b'{"events": [{"id": "a", "score": -Infinity}]}', "-Infinity is not a JSON number"),
])
def test_the_server_refuses_deep_and_non_finite_json_with_a_400(body, reason):
    with pytest.raises(web.HTTPBadRequest) as refused:
        parse_batch(body)
    assert json.loads(refused.value.text) == {"error": reason}


def test_a_short_shared_token_is_refused(tmp_path):
    (tmp_path / "t").write_text("x\n")
    with pytest.raises(ConfigError, match=r"the token has 1 characters, at least 12 are needed"):
        read_token_file(tmp_path / "t")
    (tmp_path / "t").write_text("a-long-enough-token\n")
    assert read_token_file(tmp_path / "t") == "a-long-enough-token"


def test_metrics_bind_loopback_unless_told():
    from shelfsight.edge.device import DeviceOptions
    from shelfsight.edge.runtime.options import RecognizerOptions

    assert DeviceOptions(RecognizerOptions("b"), source="0").metrics_host == "127.0.0.1"

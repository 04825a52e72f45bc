"""Health metrics: own registry, Prometheus text over a loopback exporter, CPU temperature."""
from __future__ import annotations

from pathlib import Path

import pytest
import requests
from prometheus_client import REGISTRY, generate_latest

from shelfsight.edge.pipeline.health import Health, read_cpu_temperature
from shelfsight.errors import ConfigError


def thermal_tree(root: Path, zones: dict[str, tuple[str, str]]) -> Path:
    for name, (kind, temp) in zones.items():
        zone = root / name
        zone.mkdir(parents=True)
        (zone / "type").write_text(kind + "\n")
        (zone / "temp").write_text(temp + "\n")
    return root


def sample(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    raise AssertionError(f"{name} not in metrics")


def test_counters_render_as_prometheus_text(tmp_path):
    health = Health(thermal_root=tmp_path / "none")
    for _ in range(4):
        health.record_frame()
    health.record_recognition(0.004, unknown=False)
    health.record_recognition(0.030, unknown=True)
    health.record_recognition(0.006, unknown=False)
    health.record_skip("blurry")
    health.record_skip("corrupt", 2)
    health.record_dropped(5)
    health.record_event()
    health.record_reopen()
    health.set_fps(12.5)
    text = health.render()
    assert sample(text, "shelfsight_frames_total") == 4
    assert sample(text, "shelfsight_recognitions_total") == 3
    assert sample(text, "shelfsight_unknown_total") == 1
    assert sample(text, "shelfsight_unknown_ratio") == pytest.approx(1 / 3)
    assert sample(text, 'shelfsight_skipped_frames_total{reason="blurry"}') == 1
    assert sample(text, 'shelfsight_skipped_frames_total{reason="corrupt"}') == 2
    assert sample(text, 'shelfsight_skipped_frames_total{reason="dark"}') == 0
    assert sample(text, "shelfsight_dropped_frames_total") == 5
    assert sample(text, "shelfsight_events_total") == 1
    assert sample(text, "shelfsight_source_reopens_total") == 1
    assert sample(text, "shelfsight_fps") == 12.5
    assert sample(text, "shelfsight_inference_latency_seconds_count") == 3
    assert sample(text, 'shelfsight_inference_latency_seconds_bucket{le="0.005"}') == 1
    assert sample(text, 'shelfsight_inference_latency_seconds_bucket{le="0.0075"}') == 2
    assert "shelfsight_cpu_temperature_celsius" not in text
    assert "shelfsight_frames_total" not in generate_latest(REGISTRY).decode()  # its own registry


def test_two_health_objects_do_not_collide(tmp_path):
    a, b = Health(thermal_root=tmp_path), Health(thermal_root=tmp_path)
    a.record_frame()
    assert sample(a.render(), "shelfsight_frames_total") == 1
    assert sample(b.render(), "shelfsight_frames_total") == 0


def test_metrics_endpoint_on_loopback(tmp_path):
    health = Health(thermal_root=thermal_tree(tmp_path, {"thermal_zone0": ("cpu-thermal", "48312")}))
    health.record_frame()
    health.record_skip("dark")
    server = health.serve(0, host="127.0.0.1")
    try:
        response = requests.get(server.url, timeout=5)
        assert response.status_code == 200
        assert response.headers["Content-Type"].startswith("text/plain; version=")
        assert sample(response.text, "shelfsight_frames_total") == 1
        assert sample(response.text, 'shelfsight_skipped_frames_total{reason="dark"}') == 1
        assert sample(response.text, "shelfsight_cpu_temperature_celsius") == pytest.approx(48.312)
        (tmp_path / "thermal_zone0" / "temp").write_text("51000\n")  # read at scrape time
        assert sample(requests.get(server.url, timeout=5).text, "shelfsight_cpu_temperature_celsius") == 51.0
        with pytest.raises(ConfigError, match=rf"metrics port 127.0.0.1:{server.port} cannot be used"):
            health.serve(server.port, host="127.0.0.1")
    finally:
        server.close()
        server.close()
    with pytest.raises(ConfigError, match="metrics port must be 0..65535, got 70000"):
        health.serve(70000)


def test_cpu_temperature_prefers_the_cpu_zone(tmp_path):
    root = thermal_tree(tmp_path / "a", {"thermal_zone0": ("acpitz", "27800"),
                                         "thermal_zone1": ("x86_pkg_temp", "55000"),
                                         "thermal_zone2": ("iwlwifi_1", "bogus")})
    assert read_cpu_temperature(root) == 55.0
    assert read_cpu_temperature(thermal_tree(tmp_path / "b", {"thermal_zone0": ("acpitz", "27800")})) == 27.8
    assert read_cpu_temperature(tmp_path / "missing") is None

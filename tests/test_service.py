"""The device program as a service: `run --config`, environment overrides, the systemd unit,
SIGHUP reload on a running process, journal priorities, exit codes a supervisor can use."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from shelfsight.edge.cli.service import render_unit

from cli_run import run_cli


def _config(tmp_path: Path, bundle: Path, source: Path, **extra) -> Path:
    lines = [f'bundle = "{bundle}"', f'source = "{source}"', f'sink = ["jsonl:{tmp_path / "events.jsonl"}"]',
             "no-quality-gate = true", "stable_frames = 1", *(f"{k} = {v}" for k, v in extra.items())]
    path = tmp_path / "device.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def _frames(capsys_err: str) -> int:
    return int(capsys_err.strip().splitlines()[-1].split()[0])


def test_run_reads_its_settings_from_a_file_env_and_flags_override(int8_bundle, sample_data, tmp_path, capsys,
                                                                  monkeypatch):
    folder = sample_data / "val" / "Fruit" / "Kiwi"  # 5 images
    config = _config(tmp_path, int8_bundle, folder, **{"max-frames": 4})
    code, _, err = run_cli(["run", "--config", config], capsys)
    assert code == 0 and _frames(err) == 4
    assert len((tmp_path / "events.jsonl").read_text().splitlines()) == 1  # one Kiwi appearance
    monkeypatch.setenv("SHELFSIGHT_RUN_MAX_FRAMES", "2")
    assert _frames(run_cli(["run", "--config", config], capsys)[2]) == 2
    assert _frames(run_cli(["run", "--config", config, "--max-frames", "3"], capsys)[2]) == 3


@pytest.mark.parametrize("text, message", [
    ('sorce = "0"', "Invalid value for --config: {f}: unknown setting 'sorce' (did you mean 'source'?)"),
    ('source = "0"\ntop-k = "many"', "Invalid value for '-k' / '--top-k': 'many' is not a valid integer range."),
    ("source = [", "Invalid value for --config: {f}: not valid TOML"),
])
def test_a_bad_settings_file_is_one_line(text, message, tmp_path, capsys):
    config = tmp_path / "device.toml"
    config.write_text(text + "\n")
    code, out, err = run_cli(["run", "B", "--config", config], capsys)
    assert code == 2 and out == "" and len(err.strip().splitlines()) == 1
    assert err.startswith("error: " + message.format(f=config)), err


def test_the_unit_restarts_on_failure_but_not_on_a_settings_mistake(tmp_path):
    exe = Path(sys.executable).with_name("shelfsight")
    unit = render_unit(exe, Path("/etc/shelfsight/device.toml"))
    lines = unit.splitlines()
    for line in (f"ExecStart={exe} run --config /etc/shelfsight/device.toml", "ExecReload=/bin/kill -HUP $MAINPID",
                 "Restart=on-failure", "RestartPreventExitStatus=2", "KillSignal=SIGTERM", "User=shelfsight"):
        assert line in lines
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze is not installed")
    (tmp_path / "shelfsight.service").write_text(unit)
    verify = subprocess.run(["systemd-analyze", "verify", str(tmp_path / "shelfsight.service")],
                            capture_output=True, text=True, timeout=60)
    assert verify.returncode == 0, verify.stderr


def test_sighup_reloads_the_bundle_and_a_bad_one_leaves_the_good_running(int8_bundle, sample_data, tmp_path):
    bundle = tmp_path / "bundle"
    shutil.copytree(int8_bundle, bundle)
    frames = tmp_path / "frames"
    frames.mkdir()
    for i, name in enumerate(["Kiwi/Kiwi_003.jpg", "Banana/Banana_001.jpg"]):  # two products, in turn
        shutil.copy(sample_data / "val" / "Fruit" / name, frames / f"{i}.jpg")
    config = _config(tmp_path, bundle, frames, loop="true")
    log = open(tmp_path / "stderr.log", "w+")
    proc = subprocess.Popen([sys.executable, "-m", "shelfsight", "-v", "run", "--config", str(config)],
                            stdout=subprocess.DEVNULL, stderr=log, text=True)
    events = tmp_path / "events.jsonl"
    try:
        _wait(lambda: events.exists() and events.stat().st_size > 0, "first event")
        proc.send_signal(signal.SIGHUP)
        _wait(lambda: "now running bundle" in (tmp_path / "stderr.log").read_text(), "reload")
        (bundle / "model.tflite").write_bytes(b"not a model")
        proc.send_signal(signal.SIGHUP)
        _wait(lambda: "SIGHUP: " + str(bundle) + " not loaded, still running" in (tmp_path / "stderr.log").read_text(),
              "refusal")
        seen = len(events.read_text().splitlines())
        _wait(lambda: len(events.read_text().splitlines()) > seen, "events after the refused reload")
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
    assert proc.returncode == 0 and "stopped by signal SIGTERM" in (tmp_path / "stderr.log").read_text()


def test_log_lines_carry_journal_priorities_under_systemd(tmp_path):
    script = ("import logging; from shelfsight.console import setup_logging; setup_logging(logging.INFO); "
              "logging.getLogger('cam').error('lost'); logging.getLogger('cam').info('back')")
    with open(tmp_path / "journal", "w") as stream:
        st = os.fstat(stream.fileno())
        env = {**os.environ, "JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"}
        subprocess.run([sys.executable, "-c", script], stderr=stream, env=env, timeout=60, check=True)
        subprocess.run([sys.executable, "-c", script], stderr=stream, env={**os.environ, "JOURNAL_STREAM": "1:2"},
                       timeout=60, check=True)
    assert (tmp_path / "journal").read_text().splitlines() == ["<3>cam: lost", "<6>cam: back",
                                                                "ERROR cam: lost", "INFO cam: back"]


def test_a_source_that_is_not_there_exits_3_for_the_supervisor_to_retry(int8_bundle, tmp_path, capsys):
    code, _, err = run_cli(["run", int8_bundle, "--source", tmp_path / "missing.mp4"], capsys)
    assert code == 3 and err.startswith("error: ")


def _wait(condition, what: str, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.1)
    raise AssertionError(f"no {what} within {seconds} s")

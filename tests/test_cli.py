"""The CLI: every command has --help; user mistakes are one line and a non-zero exit."""
from __future__ import annotations

import subprocess
import sys

import pytest

from shelfsight.app.cli import COMMANDS


def shelfsight(*args: str, timeout: int = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "shelfsight", *args], capture_output=True, text=True,
                          timeout=timeout)


def test_top_level_help_lists_commands():
    out = shelfsight("--help")
    assert out.returncode == 0
    for name in ("train", "eval", "export", "classify", "run", "demo"):
        assert name in out.stdout


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_every_command_has_help(name):
    out = shelfsight(name, "--help")
    assert out.returncode == 0, out.stderr
    assert "Usage:" in out.stdout


def _one_line_error(out: subprocess.CompletedProcess, expected: str) -> None:
    assert out.returncode != 0
    lines = [line for line in out.stderr.splitlines() if line.strip() and not _runtime_noise(line)]
    assert len(lines) == 1, out.stderr
    assert "Traceback" not in out.stderr
    assert expected in lines[0], lines[0]


def _runtime_noise(line: str) -> bool:
    # TensorFlow/LiteRT C++ start-up chatter, not shelfsight's output
    return line.startswith(("WARNING: All log messages", "E0000", "W0000", "I0000", "INFO: Created TensorFlow"))


def test_missing_bundle_is_one_line(tmp_path, sample_data):
    image = next((sample_data / "val").rglob("*.jpg"))
    _one_line_error(shelfsight("classify", str(tmp_path / "nope"), str(image)), "not found")


def test_unknown_backbone_is_one_line(tmp_path):
    _one_line_error(shelfsight("train", "--data", str(tmp_path), "--out", str(tmp_path / "r"), "--backbone", "vgg"),
                    "Invalid value for '--backbone'")


def test_unreadable_dataset_is_one_line(tmp_path):
    _one_line_error(shelfsight("train", "--data", str(tmp_path / "missing"), "--out", str(tmp_path / "r")),
                    "dataset")


def test_eval_of_something_that_is_not_a_model(tmp_path):
    _one_line_error(shelfsight("eval", str(tmp_path), "--data", str(tmp_path)), "neither a bundle")


def test_not_a_bundle_is_refused(tmp_path):
    (tmp_path / "b").mkdir()
    _one_line_error(shelfsight("run", str(tmp_path / "b"), "--source", "0"), "no manifest.json")

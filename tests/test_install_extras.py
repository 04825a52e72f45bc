"""pyproject's extras say what each install is for: the device's has no training, server,
plotting or compiled-only dependency, and every command names an extra that exists."""
from __future__ import annotations

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
EXTRAS = PROJECT["optional-dependencies"]


def names(requirements: list[str]) -> set[str]:
    return {re.split(r"[\s<>=!~;\[]", r, maxsplit=1)[0].lower() for r in requirements}


def test_python_and_numpy_are_uncapped_for_the_device():
    assert PROJECT["requires-python"] == ">=3.10"
    core = {r.split(">=")[0]: r for r in PROJECT["dependencies"]}
    assert core["numpy"] == "numpy>=1.24"  # 1.x and 2.x
    assert "opencv-python-headless" in core and "opencv-python" not in core


def test_the_device_extra_is_the_whole_device_and_nothing_else():
    edge = names(EXTRAS["edge"])
    assert edge == {"ai-edge-litert", "prometheus-client", "psutil", "requests", "cryptography", "flatbuffers"} | (
        {"jsonschema"} & edge)
    heavy = {"tensorflow", "tf-keras", "aiohttp", "matplotlib", "annoy", "opencv-python", "onnx2tf", "torch"}
    assert not edge & heavy
    # psutil has aarch64 wheels from 6.0 on
    assert "psutil>=6.0; platform_machine == 'aarch64'" in EXTRAS["edge"]


def test_each_extra_adds_its_part():
    assert names(EXTRAS["plots"]) == {"matplotlib"}
    assert "aiohttp" in names(EXTRAS["server"])
    assert names(EXTRAS["gui"]) == {"opencv-python"}
    assert names(EXTRAS["annoy"]) == {"annoy"}
    assert {"tensorflow", "tf-keras"} <= names(EXTRAS["train"]) and "tensorflow==2.19.0" in EXTRAS["train"]
    assert "onnx2tf" in names(EXTRAS["onnx"])


def test_every_command_names_an_extra_that_exists():
    from shelfsight.app.cli import COMMANDS

    assert {e.extra for e in COMMANDS.values()} <= set(EXTRAS)


def test_make_install_installs_every_extra_but_the_gui():
    makefile = (ROOT / "Makefile").read_text()
    installed = re.search(r'-e "\.\[([a-z0-9,]+)\]"', makefile).group(1).split(",")
    assert set(installed) == set(EXTRAS) - {"gui", "sync"}  # sync: the old name of server


def test_constraints_pin_every_edge_dependency():
    pinned = {line.split("==")[0].lower().replace("_", "-") for line in (ROOT / "constraints.txt").read_text().split()
              if "==" in line}
    assert names(EXTRAS["edge"]) | names(PROJECT["dependencies"]) <= pinned

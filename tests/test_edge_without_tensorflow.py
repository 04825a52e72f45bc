"""The device side classifies a real bundle with TensorFlow and Keras made unimportable."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

BLOCKED = ("tensorflow", "tf_keras", "keras", "tensorflow_model_optimization", "torch")
BLOCKER = """
import importlib.abc, sys
BLOCKED = %r
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name.split(".")[0] in BLOCKED or any(name == b or name.startswith(b + ".")
                                                for b in ("shelfsight.training", "shelfsight.export")):
            raise ImportError("blocked: " + name, name=name)
sys.meta_path.insert(0, Block())
""" % (BLOCKED,)
# a device install: shelfsight whole, but no TensorFlow and none of the server/plotting extras
DEVICE_BLOCKER = BLOCKER.replace(repr(BLOCKED), repr(BLOCKED + ("aiohttp", "matplotlib"))).replace(
    '("shelfsight.training", "shelfsight.export")', "()")

SCRIPT = BLOCKER + """
import json, sys
import shelfsight.edge
from shelfsight.edge.runtime.recognizer import Recognizer, health_check
from shelfsight.images import read_image
bundle, image = sys.argv[1], sys.argv[2]
with Recognizer.create_from_bundle(bundle) as rec:
    r = rec.classify(read_image(image))
    runtime = rec.model.runtime.name
check = health_check(bundle)
heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("tensorflow", "tf_keras", "keras", "torch"))
print(json.dumps({"label": r.label, "score": r.score, "heavy": heavy, "runtime": runtime}))
"""


@pytest.mark.slow
def test_edge_classifies_with_tensorflow_blocked(int8_bundle, sample_data):
    image = sample_data / "val" / "Fruit" / "Banana" / "Banana_001.jpg"
    out = subprocess.run([sys.executable, "-c", SCRIPT, str(int8_bundle), str(image)],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["heavy"] == []
    assert result["runtime"] == "litert"
    # the right product, and exactly what the same bundle says with TensorFlow importable
    assert result["label"] == "Banana"
    from shelfsight.edge.runtime.recognizer import Recognizer
    from shelfsight.images import read_image

    with Recognizer.create_from_bundle(int8_bundle) as rec:
        here = rec.classify(read_image(image))
    assert (result["label"], result["score"]) == (here.label, pytest.approx(here.score, abs=1e-6))


def test_cli_device_commands_import_without_tensorflow():
    script = BLOCKER + """
from shelfsight.app.cli import cli, COMMANDS
import importlib
for name in ("classify", "run"):
    module, attr = COMMANDS[name].target.split(":")
    getattr(importlib.import_module(module), attr)
print("ok")
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-2000:]


def test_help_works_on_a_device_install_and_a_missing_extra_is_one_line():
    script = DEVICE_BLOCKER + """
import sys
from shelfsight.app.cli import main
main(sys.argv[1:])
"""
    run = lambda *args: subprocess.run([sys.executable, "-c", script, *args], capture_output=True, text=True,
                                       timeout=60)
    listing = run("--help")
    assert listing.returncode == 0, listing.stderr[-2000:]
    from shelfsight.app.cli import COMMANDS

    section = listing.stdout.split("Commands:")[1].splitlines()
    listed = [line.split()[0] for line in section if line.startswith("  ") and line[2] != " "]  # not wrapped help
    assert listed == sorted(COMMANDS)
    assert run("train", "--help").returncode == 0  # the training CLI parses without TensorFlow
    out = run("sync-server", "--help")
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    assert out.returncode == 1 and "Traceback" not in out.stderr, out.stderr[-2000:]
    assert lines == ["error: 'sync-server' needs aiohttp, which is not installed: pip install 'shelfsight[server]'"]

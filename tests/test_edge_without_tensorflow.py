"""The device side classifies a real bundle with TensorFlow and Keras made unimportable."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

BLOCKER = """
import importlib.abc, sys
BLOCKED = ("tensorflow", "tf_keras", "keras", "tensorflow_model_optimization", "torch",
           "shelfsight.training", "shelfsight.export")
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name in BLOCKED or name.split(".")[0] in BLOCKED[:5] or any(name.startswith(b + ".") for b in BLOCKED):
            raise ImportError("blocked: " + name)
sys.meta_path.insert(0, Block())
"""

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
    module, attr = COMMANDS[name].split(":")
    getattr(importlib.import_module(module), attr)
print("ok")
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-2000:]

"""Each package's `__init__.py` curates its public API: `__all__` lists names that exist."""
from __future__ import annotations

import importlib
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _packages() -> list[str]:
    text = (ROOT / "pyproject.toml").read_text()
    block = text[text.index("packages = ["):]
    return sorted(re.findall(r'"(shelfsight[\w.]*)"', block[: block.index("]")]))


@pytest.mark.parametrize("name", _packages())
def test_package_lists_its_public_names_and_each_resolves(name):
    package = importlib.import_module(name)
    public = package.__all__
    assert public == sorted(set(public)) or name == "shelfsight", public  # sorted, no repeats
    missing = [n for n in public if getattr(package, n, None) is None]
    assert missing == []


def test_lazy_packages_load_nothing_heavy_until_a_name_is_used():
    import subprocess
    import sys

    code = ("import sys, shelfsight.export, shelfsight.app, shelfsight.tools, shelfsight.tools.bench, shelfsight.training; "
            "print(sorted(m for m in ('tensorflow', 'shelfsight.export.exporter', 'shelfsight.app.cli', "
            "'shelfsight.training.trainer') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "[]"

"""The layering, checked on the source: which package may import which (a static AST scan of
every import, including the ones inside functions), and the package list in pyproject.toml."""
from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# folder -> the package it installs as (pyproject's package-dir)
FOLDERS = {"shelfsight": "shelfsight", "edge": "shelfsight.edge", "training": "shelfsight.training",
           "export": "shelfsight.export", "tools": "shelfsight.tools"}
SIDES = ("shelfsight.edge", "shelfsight.training", "shelfsight.export", "shelfsight.tools", "shelfsight.app")
# Inside edge/: a subpackage may import only those listed (and the core). catalog is the search
# library (no model); runtime runs the model and searches the catalog; pipeline and sync sit on
# the runtime; objects (per-object mode) is a pipeline stage; indexing, cli and the top-level
# package compose them all.
EDGE_ALLOWED = {
    "catalog": set(),
    "runtime": {"catalog"},
    "pipeline": {"runtime", "catalog"},
    "sync": {"runtime"},
    "objects": {"runtime", "pipeline", "catalog"},
    # the self-checkout screen sits on the run loop and sync; its command reuses the device commands' options
    "kiosk": {"runtime", "pipeline", "catalog", "sync", "cli"},
}
# What training and export use of the device side today: the TFLite runtime's public API only
# (export checks every converted model through the same interpreter the device runs).
EXPORT_MAY_IMPORT = {"shelfsight.edge.runtime"}
# ... and the device's own indexing, which `shelfsight export` runs last (the index is embedded
# with the shipped model, by the code the device rebuilds it with).
EXPORT_MAY_IMPORT_MODULES = {"shelfsight.edge.indexing", "shelfsight.edge.indexing.build_index"}


def _module_name(path: Path) -> str:
    rel = path.relative_to(ROOT)
    parts = [FOLDERS[rel.parts[0]], *rel.parts[1:]]
    parts[-1] = parts[-1].removesuffix(".py")
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: Path) -> set[str]:
    """Absolute names of every module imported anywhere in the file (relative ones resolved)."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            found.add(module)
            found.update(f"{module}.{a.name}" for a in node.names)  # `from pkg import submodule`
    return found


def _under(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def _sources(folder: str) -> list[Path]:
    return sorted((ROOT / folder).rglob("*.py"))


def _violations(files: list[Path], forbidden) -> list[str]:
    return [f"{p.relative_to(ROOT)} imports {m}" for p in files for m in sorted(_imports(p)) if forbidden(m)]


def test_the_core_imports_no_side():
    # __main__ is the program's entry point (`python -m shelfsight`), not part of the library
    core = [p for p in _sources("shelfsight") if p.parts[len(ROOT.parts) + 1] != "app" and p.name != "__main__.py"]
    assert core, "no core modules found"
    assert _violations(core, lambda m: any(_under(m, s) for s in SIDES)) == []


def test_edge_imports_neither_training_export_tools_nor_app():
    forbidden = ("shelfsight.training", "shelfsight.export", "shelfsight.tools", "shelfsight.app")
    assert _violations(_sources("edge"), lambda m: any(_under(m, s) for s in forbidden)) == []


@pytest.mark.parametrize("sub", sorted(EDGE_ALLOWED))
def test_edge_subpackages_import_only_the_layers_below(sub):
    packages = {p.parent.name for p in (ROOT / "edge").glob("*/__init__.py")}
    others = (packages | {"indexing", "device"}) - {sub} - EDGE_ALLOWED[sub]
    files = sorted((ROOT / "edge" / sub).rglob("*.py"))
    assert _violations(files, lambda m: any(_under(m, f"shelfsight.edge.{o}") for o in others)) == []


def test_training_imports_no_other_side():
    assert _violations(_sources("training"), lambda m: any(_under(m, s) for s in SIDES
                                                          if s != "shelfsight.training")) == []


def _public_names(init: Path) -> set[str]:
    for node in ast.parse(init.read_text(encoding="utf-8")).body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", "") == "__all__" for t in node.targets):
            return set(ast.literal_eval(node.value))
    return set()


def test_export_uses_only_the_public_runtime_of_the_edge_side():
    allowed = set(EXPORT_MAY_IMPORT) | EXPORT_MAY_IMPORT_MODULES
    for package in EXPORT_MAY_IMPORT:
        init = ROOT / "edge" / package.removeprefix("shelfsight.edge.").replace(".", "/") / "__init__.py"
        allowed |= {f"{package}.{name}" for name in _public_names(init)}
    forbidden = ("shelfsight.tools", "shelfsight.app")
    assert _violations(_sources("export"), lambda m: (_under(m, "shelfsight.edge") and m not in allowed)
                       or any(_under(m, s) for s in forbidden)) == []


def test_pyproject_lists_every_package_of_the_tree():
    text = (ROOT / "pyproject.toml").read_text()
    block = text[text.index("packages = ["):]
    listed = set(re.findall(r'"(shelfsight[\w.]*)"', block[: block.index("]")]))
    found = {_module_name(p) for folder in FOLDERS for p in (ROOT / folder).rglob("__init__.py")}
    assert listed == found
    assert (ROOT / "shelfsight" / "py.typed").is_file()


def test_paths_the_code_derives_from_its_own_location_exist():
    """Moves between packages must carry the paths computed from __file__ along."""
    from shelfsight.app.demo import SAMPLE
    from shelfsight.tools.bench.compare import MEDIAPIPE_SCRIPT, PEERS_DIR

    assert SAMPLE == ROOT / "assets" / "grocery-sample" and (SAMPLE / "train").is_dir()
    assert MEDIAPIPE_SCRIPT.is_file()
    assert PEERS_DIR.parents[1] == ROOT  # where tools/peers/setup_env.sh puts .venv-peers

"""A device without the [annoy] extra (annoy needs a compiler) reads an Annoy index exactly:
the same file, the true nearest items; building one says which extra to install."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from shelfsight.edge.catalog import ann
from shelfsight.edge.catalog.search import CatalogIndex, IndexOptions
from shelfsight.edge.catalog.tuning import TuningOptions
from shelfsight.edge.catalog.vectors import ExactSearch, unit_rows
from shelfsight.errors import ConfigError, IndexMismatchError

from test_search import MODEL, annoy_dir, make_catalog  # noqa: F401  (annoy_dir: the shared fixture)


@pytest.fixture
def no_annoy(monkeypatch):
    monkeypatch.setattr(ann, "AnnoyIndex", None)


def test_an_annoy_index_is_searched_exactly_without_annoy(annoy_dir, no_annoy):
    out, directions, vectors = annoy_dir
    index = CatalogIndex.load(out, MODEL)
    backend = index._live().backend
    assert index.spec["backend"] == "annoy" and isinstance(backend, ExactSearch)
    np.testing.assert_array_equal(backend.vectors, vectors)  # the file's items, in id order
    rng = np.random.default_rng(3)
    queries = unit_rows(directions[rng.integers(0, 600, 50)] + rng.normal(scale=0.6 / 8, size=(50, 64)))
    truth = ExactSearch(np.ascontiguousarray(vectors))
    for q in queries:
        assert backend.query(q, 10)[0].tolist() == truth.query(q, 10)[0].tolist()
    assert [index.search(d, 1)[0].item_id for d in directions[:20]] == [f"p{i}" for i in range(20)]


def test_a_file_holding_other_items_is_refused_without_annoy(annoy_dir, tmp_path):
    out, _, _ = annoy_dir
    with pytest.raises(IndexMismatchError, match=r"index.ann: holds 2400 vectors, the index spec says 2399"):
        ann.read_annoy_items(out / "index.ann", 64, 2399)
    (tmp_path / "short.ann").write_bytes((out / "index.ann").read_bytes()[:-100])
    with pytest.raises(IndexMismatchError, match="not a whole number of 268-byte nodes"):
        ann.read_annoy_items(tmp_path / "short.ann", 64, 2400)


def test_without_annoy_auto_indexes_exactly_and_annoy_asks_for_the_extra(tmp_path, no_annoy):
    _, vectors, ids, catalog = make_catalog(400, 3)
    index = CatalogIndex.build(vectors, ids, catalog, tmp_path / "auto", MODEL)
    assert index.spec["backend"] == "exact" and "annoy is not installed" in index.spec["backend_reason"]
    with pytest.raises(ConfigError, match=r"needs annoy, which is not installed: pip install 'shelfsight\[annoy\]'"):
        CatalogIndex.build(vectors, ids, catalog, tmp_path / "annoy", MODEL,
                           IndexOptions(TuningOptions(backend="annoy")))


def test_the_search_modules_import_with_annoy_unimportable():
    script = """
import sys, importlib.abc
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name == "annoy":
            raise ImportError("blocked", name=name)
sys.meta_path.insert(0, Block())
import shelfsight.edge
from shelfsight.edge.catalog import ann
print(ann.annoy_available())
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout.strip() == "False", out.stderr[-2000:]

"""The search index's parts as plain functions: vectors, recall, tuning, PCA, catalog, delta."""
from __future__ import annotations

import json

import numpy as np
import pytest

from shelfsight.edge.catalog.ann import AnnoyBackend, annoy_node_bytes, build_annoy
from shelfsight.edge.catalog.items import Catalog, CatalogItem
from shelfsight.edge.catalog.enroll import EnrolledDelta
from shelfsight.edge.catalog.projection import Projection, fit_projection
from shelfsight.edge.catalog.search import Match
from shelfsight.edge.catalog.tuning import TuningOptions, recall_at_k, recall_lower_bound, tune
from shelfsight.edge.catalog.vectors import ExactSearch, cosine_from_angular, top_rows, unit_rows
from shelfsight.errors import ConfigError, IndexMismatchError
from shelfsight.metrics import hit_rate_at_k


def clustered(n: int, dim: int, clusters: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = unit_rows(np.random.default_rng(99).normal(size=(clusters, dim)))
    return unit_rows(centres[rng.integers(0, clusters, n)] + rng.normal(scale=0.5 / np.sqrt(dim), size=(n, dim)))


def test_unit_rows_normalises_and_refuses_zero_and_nan():
    out = unit_rows([[3.0, 4.0], [0.0, 2.0]])
    assert out.dtype == np.float32 and out.flags.c_contiguous
    np.testing.assert_allclose(out, [[0.6, 0.8], [0.0, 1.0]], atol=1e-7)
    with pytest.raises(ConfigError, match="row 1 has zero length"):
        unit_rows([[1.0, 0.0], [0.0, 0.0]])
    with pytest.raises(ConfigError, match="NaN or infinite"):
        unit_rows([[np.nan, 1.0]])
    with pytest.raises(ConfigError, match="3 values per vector, expected 2"):
        unit_rows([[1.0, 2.0, 3.0]], dim=2)


def test_top_rows_orders_best_first_and_breaks_ties_by_row():
    rows, sims = top_rows(np.array([0.1, 0.9, 0.5, 0.9, -1.0], np.float32), 3)
    assert rows.tolist() == [1, 3, 2] and sims.dtype == np.float32
    np.testing.assert_allclose(sims, [0.9, 0.9, 0.5])
    assert top_rows(np.array([0.2, 0.1], np.float32), 10)[0].tolist() == [0, 1]


def test_angular_distance_maps_back_to_cosine():
    a, b = unit_rows([[1.0, 0.0]])[0], unit_rows([[0.6, 0.8]])[0]
    d = np.sqrt(2 - 2 * float(a @ b))
    assert cosine_from_angular(d) == pytest.approx(0.6, abs=1e-6)


def test_exact_search_batch_equals_single_queries():
    x = clustered(500, 16, 10, seed=1)
    q = clustered(7, 16, 10, seed=2)
    ex = ExactSearch(x)
    for (rows, sims), one in zip(ex.query_batch(q, 5), q):
        r1, s1 = ex.query(one, 5)
        assert rows.tolist() == r1.tolist()
        np.testing.assert_allclose(sims, s1, atol=1e-6)
        np.testing.assert_allclose(sims, x[rows] @ one, atol=1e-6)


def test_recall_at_k_on_known_lists():
    truth = np.array([[1, 2, 3, 4], [5, 6, 7, 8]])
    assert recall_at_k([[1, 2, 3, 4], [5, 6, 9, 10]], truth) == pytest.approx(0.75)
    assert recall_at_k([[4, 3, 2, 1, 99], [8, 7, 6, 5]], truth) == 1.0
    assert recall_lower_bound(np.ones(10)) == 1.0
    assert recall_lower_bound(np.array([1.0, 0.0] * 50)) == pytest.approx(0.5 - 1.645 * 0.5025 / 10, abs=1e-3)
    with pytest.raises(ConfigError, match="1 result lists for truth of shape"):
        recall_at_k([[1]], truth)


def test_tuning_options_refuse_bad_values():
    with pytest.raises(ConfigError, match="target_recall 1.5 must be in"):
        TuningOptions(target_recall=1.5)
    with pytest.raises(ConfigError, match="backend 'faiss' unknown"):
        TuningOptions(backend="faiss")
    with pytest.raises(ConfigError, match="max_index_mb -1 must be > 0"):
        TuningOptions(max_index_mb=-1)
    assert TuningOptions(max_overhead=0.5, free_mb=0).budget_bytes(100, 8) == pytest.approx(150 * annoy_node_bytes(8))
    assert TuningOptions(max_overhead=0.5).budget_bytes(100, 8) == 8e6  # small files are free
    assert TuningOptions(max_overhead=0.15).budget_bytes(10**6, 128) == pytest.approx(1.15 * 524e6)
    assert TuningOptions(max_index_mb=60).budget_bytes(10**6, 128) == 60e6
    assert TuningOptions(max_overhead=None).budget_bytes(100, 8) == float("inf")


def test_tune_reaches_target_recall_within_budget(tmp_path):
    x = clustered(4000, 16, 40, seed=3)
    path = tmp_path / "index.ann"
    report = tune(x, path, TuningOptions(backend="annoy", target_recall=0.9, free_mb=0, max_overhead=1.0))
    assert report.backend == "annoy" and path.is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["index.ann"]  # candidates removed
    assert report.index_bytes == path.stat().st_size <= report.budget_bytes
    assert report.query_source == "catalog sample held out of the candidate indexes" and report.queries == 400
    chosen = [t for t in report.trials if t.n_trees == report.n_trees][0]
    assert chosen.recall_low >= 0.9 and chosen.search_k == report.search_k
    # the tuned setting keeps its recall on queries it has never seen
    queries = clustered(300, 16, 40, seed=4)
    truth = np.asarray([r for r, _ in ExactSearch(x).query_batch(queries, 10)])
    backend = AnnoyBackend(path, 16, 4000, report.search_k)
    assert recall_at_k([backend.query(q, 10)[0] for q in queries], truth) >= 0.9
    assert json.loads(json.dumps(report.to_dict()))["n_trees"] == report.n_trees


def test_tune_falls_back_to_exact_when_annoy_cannot_fit(tmp_path):
    x = clustered(2000, 16, 20, seed=5)
    report = tune(x, tmp_path / "index.ann", TuningOptions(max_index_mb=0.1))
    assert report.backend == "exact" and report.reason.startswith("exact: no Annoy setting reached recall@10")
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(ConfigError, match="within 0.1 MB"):
        tune(x, tmp_path / "index.ann", TuningOptions(max_index_mb=0.1, backend="annoy"))
    assert tune(x[:999], tmp_path / "i.ann", TuningOptions()).reason.startswith("exact: 999 vectors are fewer than 1000")
    with pytest.raises(ConfigError, match="an Annoy index needs at least 110 vectors to tune recall@10, got 99"):
        tune(x[:99], tmp_path / "i.ann", TuningOptions(backend="annoy"))
    assert tune(x, tmp_path / "i.ann", TuningOptions(backend="exact")).reason == "exact search was requested"


def test_annoy_backend_refuses_truncated_or_other_dimension(tmp_path):
    x = clustered(300, 8, 5, seed=6)
    path = tmp_path / "a.ann"
    size = build_annoy(x, 3, path)
    with pytest.raises(IndexMismatchError, match="not a whole number of 104-byte nodes of a 23-dimensional"):
        AnnoyBackend(path, 23, 300, 100)
    with pytest.raises(IndexMismatchError, match="holds 300 vectors, the index spec says 301"):
        AnnoyBackend(path, 8, 301, 100)
    with open(path, "r+b") as f:
        f.truncate(size - 10)
    with pytest.raises(IndexMismatchError, match=r"truncated, or built for another dimension"):
        AnnoyBackend(path, 8, 300, 100)


def test_projection_round_trip_and_energy(tmp_path):
    rng = np.random.default_rng(7)
    basis = np.linalg.qr(rng.normal(size=(32, 4)))[0]
    x = unit_rows(rng.normal(size=(200, 4)) @ basis.T)  # exactly 4-dimensional data in 32 dims
    p = fit_projection(x, 4)
    assert p.retained == pytest.approx(1.0, abs=1e-5) and p.components.shape == (32, 4)
    y = p.apply(x)
    np.testing.assert_allclose(y @ y.T, x @ x.T, atol=1e-4)  # cosines kept exactly
    p.save(tmp_path / "pca.npz")
    q = Projection.load(tmp_path / "pca.npz")
    np.testing.assert_array_equal(q.components, p.components)
    assert q.retained == p.retained
    with pytest.raises(ConfigError, match="pca_dim 32 must be between 1 and 31"):
        fit_projection(x, 32)
    (tmp_path / "bad.npz").write_bytes(b"not an npz")
    with pytest.raises(IndexMismatchError, match="not a readable PCA projection"):
        Projection.load(tmp_path / "bad.npz")


def test_catalog_round_trip_and_refusals(tmp_path):
    cat = Catalog([CatalogItem("a", "Apple", "1", "Apple", ("a.jpg",), {"coarse": "Fruit"}), CatalogItem("b")])
    cat.save(tmp_path / "catalog.json")
    back = Catalog.load(tmp_path / "catalog.json")
    assert back == cat and back.position("b") == 1 and back.get("a").extra == {"coarse": "Fruit"}
    with pytest.raises(ConfigError, match="item_id 'a' appears twice"):
        Catalog([CatalogItem("a"), CatalogItem("a")])
    with pytest.raises(ConfigError, match="item_id must be a non-empty string"):
        CatalogItem(" ")
    (tmp_path / "other.json").write_text('{"format": "x", "version": 1, "items": []}')
    with pytest.raises(IndexMismatchError, match="catalog format"):
        Catalog.load(tmp_path / "other.json")


def test_enrolled_delta_round_trip(tmp_path):
    v = unit_rows(np.eye(4)[:3])
    d = EnrolledDelta("a" * 64, 4).added(CatalogItem("x", sku="1"), v[:2]).added(CatalogItem("y"), v[2:])
    d.save(tmp_path / "enrolled.npz")
    back = EnrolledDelta.load(tmp_path / "enrolled.npz")
    assert [e.seq for e in back.entries] == [1, 2] and back.item_of_row == ("x", "x", "y")
    np.testing.assert_array_equal(back.matrix, d.matrix)
    assert back.after(1).item_of_row == ("y",) and back.items()["x"].sku == "1"
    assert EnrolledDelta("a" * 64, 4).added(CatalogItem("z"), v[:1], after_seq=7).last_seq == 8
    (tmp_path / "enrolled.npz").write_bytes(b"PK\x03\x04 garbage")
    with pytest.raises(IndexMismatchError, match="enrolled items are not readable"):
        EnrolledDelta.load(tmp_path / "enrolled.npz")
    back.after(5).save(tmp_path / "enrolled.npz")  # empty: the file goes
    assert EnrolledDelta.load(tmp_path / "enrolled.npz") is None


def test_hit_rate_at_k_on_known_results():
    a, b, c = (Match(i, "", lab, "", 0.5) for i, lab in (("a", "A"), ("b", "B"), ("c", "A")))
    results = [[a, b], [b, c], [c, a], []]
    ids = [[m.item_id for m in r] for r in results]
    labels = [[m.label for m in r] for r in results]
    assert hit_rate_at_k(ids, ["a", "a", "a", "a"], ks=(1, 2)) == {1: 0.25, 2: 0.5}
    assert hit_rate_at_k(labels, ["A", "A", "A", "A"], ks=(1, 2)) == {1: 0.5, 2: 0.75}
    with pytest.raises(ConfigError, match="4 results for 3 answers"):
        hit_rate_at_k(ids, ["a", "b", "c"])

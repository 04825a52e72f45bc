"""CatalogIndex end to end on disk: search, grouping, open-set, enrolment, rebuild, refusals."""
from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
import threading

import numpy as np
import pytest

from shelfsight.bundle import load_bundle, new_manifest, write_manifest
from shelfsight.edge.catalog.items import Catalog, CatalogItem
from shelfsight.edge.catalog.search import CatalogIndex, IndexOptions, Match
from shelfsight.edge.catalog.tuning import TuningOptions
from shelfsight.edge.catalog.vectors import ExactSearch, unit_rows
from shelfsight.errors import BundleError, ConfigError, IndexMismatchError
from shelfsight.preprocess import PreprocessSpec

MODEL = hashlib.sha256(b"model A").hexdigest()
OTHER_MODEL = hashlib.sha256(b"model B").hexdigest()
DIM = 32


def make_catalog(n_items: int, per_item: int, seed: int = 0, spread: float = 0.05):
    """Items with well separated random directions; each image a small perturbation of it."""
    rng = np.random.default_rng(seed)
    directions = unit_rows(rng.normal(size=(n_items, DIM)))
    vectors = np.repeat(directions, per_item, axis=0) + rng.normal(scale=spread, size=(n_items * per_item, DIM))
    ids = [f"item-{i:03d}" for i in range(n_items) for _ in range(per_item)]
    catalog = Catalog(CatalogItem(f"item-{i:03d}", label=f"class-{i % 5}", sku=f"{7000 + i}", name=f"Product {i}",
                                  images=tuple(f"img/{i}-{j}.jpg" for j in range(per_item)))
                      for i in range(n_items))
    return directions, vectors.astype(np.float32), ids, catalog


@pytest.fixture
def small(tmp_path):
    directions, vectors, ids, catalog = make_catalog(20, 3)
    index = CatalogIndex.build(vectors, ids, catalog, tmp_path / "bundle", MODEL)
    return index, directions, vectors


@pytest.fixture(scope="module")
def annoy_dir(tmp_path_factory):
    """An Annoy-backed index of 600 items x 4 images (64-d), built once."""
    rng = np.random.default_rng(1)
    directions = unit_rows(rng.normal(size=(600, 64)))
    vectors = np.repeat(directions, 4, axis=0) + rng.normal(scale=0.6 / 8, size=(2400, 64))
    ids = [f"p{i}" for i in range(600) for _ in range(4)]
    catalog = Catalog(CatalogItem(f"p{i}", label="x", sku=str(i)) for i in range(600))
    out = tmp_path_factory.mktemp("annoy") / "bundle"
    CatalogIndex.build(vectors, ids, catalog, out, MODEL,
                       IndexOptions(TuningOptions(backend="annoy", target_recall=0.95)))
    return out, directions, unit_rows(vectors)


def test_exact_search_returns_known_items_grouped_per_item(small):
    index, directions, vectors = small
    assert index.spec["backend"] == "exact" and index.spec["vector_count"] == 60
    matches = index.search(directions[7], k=4)
    assert [type(m) for m in matches] == [Match] * 4
    assert matches[0].item_id == "item-007" and matches[0].sku == "7007" and matches[0].label == "class-2"
    assert len({m.item_id for m in matches}) == 4  # one entry per item, not per image
    best_of_item7 = float(np.max(unit_rows(vectors[21:24]) @ directions[7]))
    assert matches[0].similarity == pytest.approx(best_of_item7, abs=1e-5)
    sims = [m.similarity for m in matches]
    assert sims == sorted(sims, reverse=True)
    batch = index.search_batch(directions[[7, 3]], k=2)
    assert [m.item_id for m in batch[0]] == [m.item_id for m in matches[:2]] and batch[1][0].item_id == "item-003"


def test_open_set_threshold_answers_unknown(small):
    index, directions, _ = small
    stranger = unit_rows(np.random.default_rng(5).normal(size=DIM))[0]
    assert index.search(stranger, 3, min_similarity=0.9) == []
    assert [m.item_id for m in index.search(directions[2], 3, min_similarity=0.9)] == ["item-002"]


def test_annoy_index_recall_on_known_answers(annoy_dir):
    out, directions, vectors = annoy_dir
    index = CatalogIndex.load(out, MODEL)
    spec = index.spec
    assert spec["backend"] == "annoy" and spec["metric"] == "angular"
    assert spec["n_trees"] >= 2 and spec["search_k"] > 0 and spec["recall"] >= 0.95
    assert spec["tuning"]["exact_query_ms"] > 0 and "annoy was requested" in spec["backend_reason"]
    # each item's own direction finds that item first
    top1 = [index.search(d, 1)[0].item_id for d in directions]
    assert np.mean([t == f"p{i}" for i, t in enumerate(top1)]) == 1.0
    # vector-level recall@10 against exact search on fresh held-out queries
    rng = np.random.default_rng(2)
    queries = unit_rows(directions[rng.integers(0, 600, 200)] + rng.normal(scale=0.6 / 8, size=(200, 64)))
    exact = ExactSearch(vectors)
    backend = index._live().backend
    hits = [len(set(backend.query(q, 10)[0].tolist()) & set(exact.query(q, 10)[0].tolist())) for q in queries]
    assert np.mean(hits) / 10 >= 0.93


def test_spec_and_files_for_the_bundle_manifest(small):
    index, _, _ = small
    spec = index.spec
    for key in ("backend", "backend_reason", "dimension", "embedding_dimension", "vector_count", "item_count",
                "model_sha256", "n_trees", "search_k", "recall", "target_recall", "build_seconds", "tuning"):
        assert key in spec
    assert spec["item_count"] == 20 and spec["model_sha256"] == MODEL and spec["pca"] is None
    assert sorted(index.files) == ["catalog.json", "index_rows.npy", "index_vectors.npy"]
    assert json.loads((index.directory / "index.json").read_text()) == spec


def test_enrolled_item_is_found_at_once_and_after_restart(small):
    index, directions, _ = small
    new_direction = unit_rows(np.random.default_rng(9).normal(size=DIM))[0]
    item = CatalogItem("new-1", label="class-new", sku="999", name="Brand new")
    photos = np.stack([new_direction + 0.01, new_direction - 0.02])
    index.enroll(item, photos)
    expected = float(np.max(unit_rows(photos) @ new_direction))
    assert index.search(new_direction, 1)[0] == Match("new-1", "999", "class-new", "Brand new",
                                                      pytest.approx(expected, abs=1e-6))
    files_before = {f: (index.directory / f).read_bytes() for f in index.files}
    index.close()
    index.close()  # idempotent
    with pytest.raises(ConfigError, match="is closed"):
        index.search(new_direction, 1)

    reopened = CatalogIndex.load(index.directory, MODEL)
    assert reopened.search(new_direction, 1)[0].item_id == "new-1"
    assert [it.item_id for it in reopened.enrolled] == ["new-1"]
    assert reopened.search(directions[4], 1)[0].item_id == "item-004"  # catalog and delta merged
    assert {f: (index.directory / f).read_bytes() for f in reopened.files} == files_before  # manifest files untouched


def test_enrolment_refuses_a_clashing_record_and_wrong_length(small):
    index, directions, _ = small
    with pytest.raises(ConfigError, match="item_id 'item-003' is already in the catalog"):
        index.enroll(CatalogItem("item-003", sku="other"), directions[3])
    same = index.catalog.get("item-003")
    index.enroll(same, directions[3])  # more photos of a known item are fine
    assert index.search(directions[3], 1)[0].similarity == pytest.approx(1.0, abs=1e-6)
    with pytest.raises(IndexMismatchError, match=r"embedding has 16 values \(shape \(1, 16\)\), the index expects 32"):
        index.enroll(CatalogItem("n"), np.ones(16))
    with pytest.raises(IndexMismatchError, match=r"embedding has 31 values \(shape \(31,\)\), the index expects 32"):
        index.search(np.ones(31), 1)


def test_rebuild_folds_the_delta_and_swaps_files(small):
    index, _, _ = small
    new_direction = unit_rows(np.random.default_rng(11).normal(size=DIM))[0]
    index.enroll(CatalogItem("new-2", sku="123"), new_direction)
    old_files = set(index.files)
    spec = index.rebuild()
    assert spec["generation"] == 1 and spec["item_count"] == 21 and spec["vector_count"] == 61
    assert spec["folded_through"] == 1 and index.enrolled == ()
    assert not (index.directory / "enrolled.npz").exists()
    assert set(index.files) == {"catalog.1.json", "index_rows.1.npy", "index_vectors.1.npy"}
    assert not any((index.directory / f).exists() for f in old_files - set(index.files))
    reopened = CatalogIndex.load(index.directory, MODEL)
    assert reopened.search(new_direction, 1)[0].item_id == "new-2" and reopened.enrolled == ()
    assert reopened.catalog.get("new-2").sku == "123"


def test_item_enrolled_during_a_rebuild_stays_in_the_delta(small):
    index, _, _ = small
    a, b = unit_rows(np.random.default_rng(12).normal(size=(2, DIM)))
    index.enroll(CatalogItem("a"), a)
    index.enroll(CatalogItem("b"), b)  # 2 enrolments, 62 vectors: enough for tuning to run and call progress
    c = unit_rows(np.random.default_rng(13).normal(size=DIM))[0]
    enrolled_during = []

    def progress(_line: str) -> None:  # runs inside the rebuild, before the swap
        if not enrolled_during:
            index.enroll(CatalogItem("c"), c)
            enrolled_during.append(True)

    spec = index.rebuild(progress=progress)
    assert enrolled_during and spec["item_count"] == 22 and spec["folded_through"] == 2
    assert [it.item_id for it in index.enrolled] == ["c"]
    reopened = CatalogIndex.load(index.directory, MODEL)
    assert [it.item_id for it in reopened.enrolled] == ["c"]
    assert [reopened.search(v, 1)[0].item_id for v in (a, b, c)] == ["a", "b", "c"]


def test_background_rebuild_while_querying(annoy_dir, tmp_path):

    src, directions, _ = annoy_dir
    out = tmp_path / "copy"
    shutil.copytree(src, out)
    index = CatalogIndex.load(out, MODEL)
    new_direction = unit_rows(np.random.default_rng(14).normal(size=64))[0]
    index.enroll(CatalogItem("fresh"), new_direction)
    stop, answers, errors = threading.Event(), [], []

    def query_loop() -> None:
        while not stop.is_set():
            try:
                answers.append(index.search(directions[10], 1)[0].item_id)
            except Exception as e:  # noqa: BLE001 - the test reports any failure
                errors.append(e)

    reader = threading.Thread(target=query_loop)
    reader.start()
    gate = threading.Event()
    future = index.rebuild_in_background(progress=lambda _line: gate.wait(30))  # held until released
    with pytest.raises(ConfigError, match="already running"):
        index.rebuild()
    gate.set()
    spec = future.result(timeout=120)
    stop.set()
    reader.join()
    assert errors == [] and answers and set(answers) == {"p10"}
    assert spec["generation"] == 1 and spec["backend"] in ("annoy", "exact") and spec["item_count"] == 601
    assert index.search(new_direction, 1)[0].item_id == "fresh" and index.enrolled == ()


def test_pca_round_trip(tmp_path):
    directions, vectors, ids, catalog = make_catalog(20, 3)
    index = CatalogIndex.build(vectors, ids, catalog, tmp_path / "b", MODEL, IndexOptions(pca_dim=24))
    spec = index.spec
    assert spec["pca"]["output_dimension"] == 24 and spec["dimension"] == 24 and spec["embedding_dimension"] == 32
    assert "pca.npz" in index.files
    before = index.search(directions[5], 3)
    reopened = CatalogIndex.load(tmp_path / "b", MODEL, dimension=32)
    after = reopened.search(directions[5], 3)
    assert [m.item_id for m in after] == [m.item_id for m in before] and after[0].item_id == "item-005"
    np.testing.assert_allclose([m.similarity for m in after], [m.similarity for m in before], atol=1e-6)
    reopened.enroll(CatalogItem("z"), directions[5] + directions[6])  # enrolment goes through the projection
    reopened.rebuild()
    assert CatalogIndex.load(tmp_path / "b", MODEL).spec["pca"]["file"] == "pca.npz"


def test_stale_or_damaged_index_is_refused(small):
    index, _, _ = small
    d = index.directory
    with pytest.raises(IndexMismatchError, match="built from model sha256 .* this bundle's model is"):
        CatalogIndex.load(d, OTHER_MODEL)
    with pytest.raises(IndexMismatchError, match="32-value embeddings, the model gives 64"):
        CatalogIndex.load(d, MODEL, dimension=64)
    vectors = d / "index_vectors.npy"
    data = bytearray(vectors.read_bytes())
    data[-1] ^= 0xFF
    vectors.write_bytes(bytes(data))
    with pytest.raises(IndexMismatchError, match="index_vectors.npy does not match its sha256"):
        CatalogIndex.load(d, MODEL)
    vectors.write_bytes(bytes(data[:-4]))
    with pytest.raises(IndexMismatchError, match=r"index_vectors.npy is \d+ bytes, the index spec says"):
        CatalogIndex.load(d, MODEL, verify=False)
    (d / "index.json").unlink()
    with pytest.raises(IndexMismatchError, match="no search index"):
        CatalogIndex.load(d, MODEL)


def test_catalog_count_mismatch_is_refused(small):
    index, _, _ = small
    d = index.directory
    cat = Catalog(list(index.catalog)[:-1])
    cat.save(d / "catalog.json")
    spec = json.loads((d / "index.json").read_text())
    spec["checksums"]["catalog.json"] = {"sha256": hashlib.sha256((d / "catalog.json").read_bytes()).hexdigest(),
                                         "size": (d / "catalog.json").stat().st_size}
    (d / "index.json").write_text(json.dumps(spec))
    with pytest.raises(IndexMismatchError, match="catalog catalog.json has 19 items, the index spec says 20"):
        CatalogIndex.load(d, MODEL)


def test_truncated_annoy_file_is_refused(annoy_dir, tmp_path):

    src, _, _ = annoy_dir
    out = tmp_path / "copy"
    shutil.copytree(src, out)
    ann = out / "index.ann"
    size = ann.stat().st_size
    with open(ann, "r+b") as f:
        f.truncate(size - 100)
    with pytest.raises(IndexMismatchError, match=f"index.ann is {size - 100} bytes, the index spec says {size}"):
        CatalogIndex.load(out, MODEL)
    spec = json.loads((out / "index.json").read_text())
    spec["checksums"]["index.ann"]["size"] = size - 100  # a spec that agrees: Annoy's own size check
    (out / "index.json").write_text(json.dumps(spec))
    with pytest.raises(IndexMismatchError, match="not a whole number of 268-byte nodes"):
        CatalogIndex.load(out, MODEL, verify=False)


def test_enrolment_from_another_model_is_refused(small, tmp_path):
    index, directions, vectors = small
    index.enroll(CatalogItem("e"), directions[0])
    ids = [it.item_id for it in index.catalog for _ in range(3)] + ["e"]
    catalog = index.catalog.extended([CatalogItem("e")])
    rebuilt = CatalogIndex.build(np.vstack([vectors, directions[:1]]), ids, catalog, index.directory, OTHER_MODEL)
    assert rebuilt.enrolled == () and not (index.directory / "enrolled.npz").exists()  # folded by the new build
    rebuilt.enroll(CatalogItem("f"), directions[1])
    spec = json.loads((index.directory / "index.json").read_text())
    spec["model_sha256"] = MODEL  # pretend the index (not the delta) matches model A
    (index.directory / "index.json").write_text(json.dumps(spec))
    with pytest.raises(IndexMismatchError, match="enrolled items come from model"):
        CatalogIndex.load(index.directory, MODEL)


def test_build_refuses_bad_input(tmp_path):
    directions, vectors, ids, catalog = make_catalog(5, 2)
    with pytest.raises(ConfigError, match="1 item_ids are not in the catalog: ghost"):
        CatalogIndex.build(vectors, ids[:-1] + ["ghost"], catalog, tmp_path, MODEL)
    with pytest.raises(ConfigError, match="1 catalog items have no vectors: item-004"):
        CatalogIndex.build(vectors[:8], ids[:8], catalog, tmp_path, MODEL)
    with pytest.raises(ConfigError, match="9 item_ids for 10 vectors"):
        CatalogIndex.build(vectors, ids[:9], catalog, tmp_path, MODEL)
    with pytest.raises(ConfigError, match="model_sha256 must be 64 lowercase hex digits"):
        CatalogIndex.build(vectors, ids, catalog, tmp_path, "abc")
    index = CatalogIndex.build(vectors, ids, catalog, tmp_path, MODEL)
    index.enroll(CatalogItem("only-on-device"), directions[0] + directions[1])
    with pytest.raises(ConfigError, match="1 enrolled items are not in the new catalog"):
        CatalogIndex.build(vectors, ids, catalog, tmp_path, MODEL)
    assert CatalogIndex.load(tmp_path, MODEL).enrolled[0].item_id == "only-on-device"  # nothing lost


def test_bundle_manifest_locks_index_to_model(tmp_path):
    root = tmp_path / "bundle"
    root.mkdir()
    (root / "model.tflite").write_bytes(b"model A bytes")
    (root / "labels.txt").write_text("a\nb\n")
    manifest = new_manifest(model={"file": "model.tflite"}, labels={"file": "labels.txt", "count": 2},
                            preprocess=PreprocessSpec().to_dict())
    manifest = write_manifest(root, manifest)
    model_sha = load_bundle(root).model_sha256
    directions, vectors, ids, catalog = make_catalog(6, 2)
    index = CatalogIndex.build(vectors, ids, catalog, root, model_sha)
    write_manifest(root, dict(manifest, index=index.spec), files=index.files)
    bundle = load_bundle(root)
    assert CatalogIndex.load(bundle.root, bundle.model_sha256).search(directions[1], 1)[0].item_id == "item-001"
    (root / "model.tflite").write_bytes(b"retrained model")  # a new model without a new index
    write_manifest(root, bundle.manifest)
    bundle = load_bundle(root)
    with pytest.raises(BundleError, match="index was built from model sha256"):
        CatalogIndex.load(bundle.root, bundle.model_sha256)


def test_rebuild_inside_a_bundle_keeps_it_verifiable(tmp_path):
    root = tmp_path / "bundle"
    root.mkdir()
    (root / "model.tflite").write_bytes(b"model A bytes")
    (root / "labels.txt").write_text("a\n")
    manifest = write_manifest(root, new_manifest(model={"file": "model.tflite"}, preprocess=PreprocessSpec().to_dict(),
                                                 labels={"file": "labels.txt", "count": 1}))
    model_sha = load_bundle(root).model_sha256
    directions, vectors, ids, catalog = make_catalog(6, 2)
    index = CatalogIndex.build(vectors, ids, catalog, root, model_sha)
    manifest = write_manifest(root, dict(manifest, index=index.spec), files=index.files)
    shipped = set(index.files)
    index.enroll(CatalogItem("on-device"), directions[0] + directions[1])
    index.rebuild()  # on the device: the shipped (maybe signed) manifest is left alone
    assert all((root / f).exists() for f in shipped)
    bundle = load_bundle(root)
    assert CatalogIndex.load(bundle.root, bundle.model_sha256).search(directions[0] + directions[1], 1)[0].item_id \
        == "on-device"
    # `shelfsight index --rebuild` style: rewrite the manifest, then drop the old generation
    files = {n: e for n, e in manifest["files"].items() if n not in shipped}
    write_manifest(root, dict(manifest, files=files, index=index.spec), files=index.files)
    assert index.remove_unused_files() == sorted(shipped)
    assert load_bundle(root).index["generation"] == 1


def test_search_modules_import_without_tensorflow(tmp_path):
    code = f"""
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("tensorflow", "tf_keras", "keras"):
            raise ImportError("blocked: " + name)
sys.meta_path.insert(0, Block())
import numpy as np
from shelfsight.edge.catalog.search import CatalogIndex
from shelfsight.edge.catalog.items import Catalog, CatalogItem
from shelfsight.tools.bench import search as bench_search
v = np.eye(4, dtype=np.float32)
idx = CatalogIndex.build(v, list("abcd"), Catalog(CatalogItem(c) for c in "abcd"), r"{tmp_path}", "{MODEL}")
print(idx.search(v[2], 1)[0].item_id)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "c"

"""Barcodes in the per-object mode: the catalog's barcode column, the check against the visual
match (the self-checkout "ticket switch"), and codes rendered on the generated videos."""
from __future__ import annotations

import json

import numpy as np
import pytest

from cli_run import run_cli
from objects_fakes import HistogramCrops
from shelfsight.bundle import load_bundle
from shelfsight.datasets import load_dataset
from shelfsight.edge.catalog import Catalog, CatalogItem, CatalogIndex, IndexOptions, Match, TuningOptions
from shelfsight.edge.catalog.items import normalize_barcode
from shelfsight.edge.indexing import catalog_of
from shelfsight.edge.objects import BundleCrops, ObjectsOptions, ObjectStage
from shelfsight.edge.objects.agreement import check_barcode
from shelfsight.edge.objects.barcodes import BarcodeReader
from shelfsight.edge.pipeline.health import Health
from shelfsight.edge.pipeline.sources import Frame
from shelfsight.edge.runtime.recognizer import Recognizer
from shelfsight.errors import ConfigError, IndexMismatchError
from shelfsight.tools import make_objects_video as mv
from tiny_bundle import make_tiny_bundle

PRODUCTS = mv.catalog_products()


def test_barcodes_are_compared_as_gtin_14_and_one_code_belongs_to_one_item():
    assert normalize_barcode(" 012345678905 ") == "00012345678905"  # UPC-A as printed
    assert normalize_barcode("0012345678905") == "00012345678905"  # the same code read as EAN-13
    assert normalize_barcode("40063812") == "00000040063812"  # EAN-8
    assert normalize_barcode("shelfsight:Kiwi") == "shelfsight:Kiwi"
    assert normalize_barcode("12345") == "12345"  # not a GTIN length: as it is
    catalog = Catalog([CatalogItem("kiwi", label="Kiwi", barcodes=("012345678905", "012345678905")),
                       CatalogItem("lemon", label="Lemon")])
    assert catalog.by_barcode("0012345678905").item_id == "kiwi"
    assert catalog.by_barcode("999") is None and catalog.has_barcodes
    assert catalog[0].barcodes == ("012345678905",)  # repeats dropped
    assert catalog[0].to_dict()["barcodes"] == ["012345678905"] and "barcodes" not in catalog[1].to_dict()
    assert CatalogItem.from_dict(catalog[0].to_dict()) == catalog[0]
    assert not Catalog([CatalogItem("lemon")]).has_barcodes
    with pytest.raises(ConfigError, match="barcode '0012345678905' is listed by both 'kiwi' and 'lemon'"):
        Catalog([CatalogItem("kiwi", barcodes=("012345678905",)), CatalogItem("lemon", barcodes=("0012345678905",))])
    with pytest.raises(ConfigError, match="'x': barcodes must be a list of non-empty strings, got '123'"):
        CatalogItem("x", barcodes="123")
    with pytest.raises(ConfigError, match="barcodes must be a list of non-empty strings"):
        CatalogItem("x", barcodes=("123", " "))


def test_a_catalog_file_with_a_bad_barcodes_value_is_refused(tmp_path):
    path = tmp_path / "catalog.json"
    Catalog([CatalogItem("kiwi", barcodes=("123",))]).save(path)
    data = json.loads(path.read_text())
    data["items"][0]["barcodes"] = "123"
    path.write_text(json.dumps(data))
    with pytest.raises(IndexMismatchError, match="invalid catalog item"):
        Catalog.load(path)


def test_the_csv_barcode_column_reaches_the_catalog_items(tmp_path):
    manifest = tmp_path / "products.csv"
    manifest.write_text("path,label,sku,split,barcode\n"
                        "a1.jpg,Kiwi,K1,train,2000000000015\n"
                        "a2.jpg,Kiwi,K1,train,2000000000015;012345678905\n"
                        "b1.jpg,Lemon,L1,train,\n"
                        "b2.jpg,Lemon,L1,val,4006381333931\n")
    train = load_dataset(manifest, "train")
    assert [s.barcodes for s in train.samples] == [("2000000000015",), ("2000000000015", "012345678905"), ()]
    catalog = catalog_of(list(train.samples))
    assert [(it.item_id, it.barcodes) for it in catalog] == [("K1", ("2000000000015", "012345678905")), ("L1", ())]
    assert catalog.by_barcode("0012345678905").label == "Kiwi"


def _match(item_id: str) -> Match:
    return Match(item_id, item_id.upper(), "", item_id, 0.9)


def test_a_code_agrees_with_the_product_seen_or_raises_the_ticket_switch_alert():
    catalog = Catalog([CatalogItem("kiwi", label="Kiwi", sku="K1", name="Kiwi, each", barcodes=("2000000000015",)),
                       CatalogItem("steak", label="", barcodes=("2000000000022",))])
    kiwi = {"value": "2000000000015", "symbology": "EAN_13"}
    assert check_barcode(kiwi, catalog, "Kiwi") == {
        "value": "2000000000015", "symbology": "EAN_13", "agreement": "agree",
        "item": {"item_id": "kiwi", "label": "Kiwi", "sku": "K1", "name": "Kiwi, each"}}
    assert check_barcode(kiwi, catalog, "Lemon")["agreement"] == "mismatch"
    assert check_barcode(kiwi, catalog, None)["agreement"] == "unverified"
    steak = {"value": "2000000000022", "symbology": "EAN_13"}  # an item without a class label: by its match
    assert check_barcode(steak, catalog, None, [_match("steak")])["agreement"] == "agree"
    assert check_barcode(steak, catalog, "Kiwi", [_match("kiwi")])["agreement"] == "mismatch"
    other = {"value": "shelfsight:Lemon", "symbology": "QR"}
    assert check_barcode(other, catalog, "Lemon") == {"value": "shelfsight:Lemon", "symbology": "QR", "item": None,
                                                      "agreement": "unlisted"}
    assert check_barcode(kiwi, None, "Kiwi")["agreement"] == "unlisted"


@pytest.mark.parametrize("symbology", mv.SYMBOLOGIES)
def test_codes_drawn_on_the_videos_are_read_by_opencv(symbology):
    codes = mv.product_codes(PRODUCTS, seed=0)
    label, (symbology, code) = next((lb, c) for lb, c in codes.items() if c[0] == symbology)
    patch = mv.with_code(np.full((210, 210, 3), 160, np.uint8), symbology, code)
    assert BarcodeReader().read(patch) == {"value": code, "symbology": symbology}
    assert BarcodeReader().read(np.full((210, 210, 3), 160, np.uint8)) is None


def test_check_digits_and_symbologies_of_the_generated_codes():
    codes = mv.product_codes(PRODUCTS, seed=0)
    assert [c[0] for c in codes.values()] == list(mv.SYMBOLOGIES) * 3
    lengths = {"EAN_13": 13, "UPC_A": 12, "EAN_8": 8}
    for symbology, code in codes.values():
        if symbology == "QR":
            assert code.startswith("shelfsight:")
            continue
        digits = [int(d) for d in code.zfill(13 if symbology != "EAN_8" else 8)]
        weights = [1, 3] * 6 if symbology != "EAN_8" else [3, 1] * 3 + [3]
        assert len(code) == lengths[symbology]
        assert (sum(d * w for d, w in zip(digits[:-1], weights)) + digits[-1]) % 10 == 0, code
    with pytest.raises(ConfigError, match="symbology 'CODE_128' unknown"):
        mv.render_code("CODE_128", "SHELF-1", 200)


def test_each_track_reports_its_code_and_a_switched_code_is_a_mismatch():
    items = mv.barcode_scene(PRODUCTS, seed=0, count=6, switch_every=3)
    codes = mv.product_codes(PRODUCTS, seed=0)
    catalog = Catalog(CatalogItem(label, label=label, barcodes=(codes[label][1],)) for label, _ in PRODUCTS)
    health = Health()
    stage = ObjectStage(ObjectsOptions(), HistogramCrops(PRODUCTS), health, catalog=catalog)
    events = []
    for i, (image, _) in enumerate(mv.frames(items, 640, 480, 0, empty=30)):
        events += stage.process(image, Frame(image, i, 1000.0 + i / 30, "generated"))[0]
    left = sorted((e for e in events + stage.finish() if e["kind"] == "object_left"), key=lambda e: e["track_id"])
    assert [(e["label"], e["barcode"]["value"]) for e in left] == [(it.label, it.code) for it in items]
    assert [e["barcode"]["agreement"] for e in left] == ["mismatch" if it.switched else "agree" for it in items]
    assert [it.switched for it in items] == [False, False, True, False, False, True]
    assert left[2]["barcode"]["item"]["label"] != left[2]["label"]  # the code names the product it belongs to
    assert dict(stage.agreements) == {"agree": 4, "mismatch": 2}
    metrics = health.render()
    assert 'shelfsight_barcode_checks_total{agreement="mismatch"} 2.0' in metrics
    assert 'shelfsight_barcode_checks_total{agreement="agree"} 4.0' in metrics
    assert 'shelfsight_barcode_tracks_total{decoded="true"} 6.0' in metrics


def test_without_a_catalog_a_decoded_code_is_unlisted():
    items = mv.barcode_scene(PRODUCTS, seed=0, count=2, switch_every=0)
    stage = ObjectStage(ObjectsOptions(), HistogramCrops(PRODUCTS))
    events = []
    for i, (image, _) in enumerate(mv.frames(items, 640, 480, 0, empty=30)):
        events += stage.process(image, Frame(image, i, 1000.0 + i / 30, "generated"))[0]
    left = [e for e in events + stage.finish() if e["kind"] == "object_left"]
    assert [(e["barcode"]["item"], e["barcode"]["agreement"]) for e in left] == [(None, "unlisted")] * 2


def _indexed_tiny_bundle(root, red_code="2000000000015", colours=("red", "blue")):
    """The tiny bundle with an exact index of one item per colour, the red one listing a barcode."""
    make_tiny_bundle(root)
    bundle = load_bundle(root)
    catalog = Catalog(CatalogItem(f"{c}-1", label=c, barcodes=(red_code,) if c == "red" else ()) for c in colours)
    rows = np.eye(3, dtype=np.float32)[[("red", "green", "blue").index(c) for c in colours]]
    index = CatalogIndex.build(rows, [f"{c}-1" for c in colours], catalog, root,
                               bundle.model_sha256, IndexOptions(TuningOptions(backend="exact")))
    bundle.with_index(index.spec, index.files)
    index.close()
    return root


@pytest.mark.parametrize("search_k", [0, 3])
def test_bundle_crops_find_the_bundles_catalog_with_search_on_or_off(tmp_path, search_k):
    root = _indexed_tiny_bundle(tmp_path / "bundle")
    with Recognizer.create_from_bundle(root, search_k=search_k) as recognizer:
        crops = BundleCrops(recognizer)
        catalog = crops.catalog()
        assert [it.item_id for it in catalog] == ["red-1", "blue-1"]
        assert catalog.by_barcode("2000000000015").item_id == "red-1"
        assert crops.catalog() is catalog  # read once per recogniser
        red = np.zeros((32, 32, 3), np.uint8)
        red[..., 2] = 255  # BGR
        result = crops.recognize_crops([red])[0].recognition
        assert result.label == "red"
        assert [m.item_id for m in result.matches] == (["red-1", "blue-1"] if search_k else [])  # no threshold


def test_bundle_crops_without_an_index_have_no_catalog(tmp_path):
    with Recognizer.create_from_bundle(make_tiny_bundle(tmp_path / "bundle")) as recognizer:
        assert BundleCrops(recognizer).catalog() is None


def test_a_track_without_a_code_is_tried_less_often_after_barcode_tries():
    items = mv.steady_scene(PRODUCTS, seed=0, count=1)
    options = ObjectsOptions(barcode_every=3, barcode_tries=4)
    stage = ObjectStage(options, HistogramCrops(PRODUCTS))
    for i, (image, _) in enumerate(mv.frames(items, 640, 480, 0, empty=30)):
        if i == 90:
            break
        stage.process(image, Frame(image, i, 1000.0 + i / 30, "generated"))
    (track,) = stage.tracker.tracks
    assert track.hits == 60 and track.barcode is None
    assert stage.barcodes.attempts == 7  # hits 1, 4, 7, 10, then every 15: 25, 40, 55
    with pytest.raises(ConfigError, match="barcode_tries must be a whole number >= 1, got 0"):
        ObjectsOptions(barcode_tries=0)


def test_run_objects_checks_each_code_against_the_bundles_catalog(tmp_path, capsys):
    items = mv.barcode_scene(PRODUCTS, seed=0, count=2, switch_every=0)
    video = mv.write_video(items, tmp_path / "codes.avi", 640, 480)
    root = _indexed_tiny_bundle(tmp_path / "bundle", red_code=items[0].code, colours=("red", "green", "blue"))
    events_file = tmp_path / "events.jsonl"
    code, _, err = run_cli(["run", root, "--source", video, "--objects", "background", "--no-quality-gate",
                            "--sink", f"jsonl:{events_file}"], capsys)
    assert code == 0, err
    events = [json.loads(line) for line in events_file.read_text().splitlines()]
    left = sorted((e for e in events if e["kind"] == "object_left"), key=lambda e: e["track_id"])
    assert [e["barcode"]["value"] for e in left] == [items[0].code, items[1].code]
    first, second = (e["barcode"] for e in left)
    assert first["item"] == {"item_id": "red-1", "label": "red", "sku": "", "name": ""}
    assert first["agreement"] == ("agree" if left[0]["label"] == "red" else "mismatch")
    assert (second["item"], second["agreement"]) == (None, "unlisted")


def _manifest(tmp_path, lemon_code):
    photos = sorted((mv.SAMPLE / "train").rglob("*.jpg"))
    kiwi = [p for p in photos if p.parent.name == "Kiwi"][:2]
    lemon = [p for p in photos if p.parent.name == "Lemon"][:2]
    path = tmp_path / "products.csv"
    path.write_text("path,label,sku,split,barcode\n"
                    f"{kiwi[0]},red,KIWI,train,2000000000015\n{kiwi[1]},red,KIWI,train,\n"
                    f"{lemon[0]},blue,LEMON,train,{lemon_code}\n{lemon[1]},blue,LEMON,train,\n")
    return path


def test_shelfsight_index_carries_the_barcode_column_into_the_bundle(tmp_path, capsys):
    root = make_tiny_bundle(tmp_path / "bundle")
    code, _, err = run_cli(["index", root, "--catalog", _manifest(tmp_path, "012345678905"), "--backend", "exact",
                            "--no-fusion"], capsys)
    assert code == 0, err
    bundle = load_bundle(root)
    with CatalogIndex.load(bundle.root, bundle.model_sha256) as index:
        assert [(it.item_id, it.barcodes) for it in index.catalog] == [("KIWI", ("2000000000015",)),
                                                                       ("LEMON", ("012345678905",))]
        assert index.catalog.by_barcode("0012345678905").item_id == "LEMON"


def test_one_code_listed_for_two_products_is_refused_in_one_line(tmp_path, capsys):
    root = make_tiny_bundle(tmp_path / "bundle")
    code, _, err = run_cli(["index", root, "--catalog", _manifest(tmp_path, "02000000000015"), "--backend", "exact",
                            "--no-fusion"], capsys)
    assert code == 2 and err.strip() == ("error: catalog: barcode '02000000000015' is listed by both 'KIWI' and "
                                         "'LEMON'"), err

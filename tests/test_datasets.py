"""The dataset API on all three layouts, with real sample images and deliberately bad files."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from shelfsight.datasets import load_dataset, load_images
from shelfsight.errors import DatasetError
from shelfsight.images import UnreadableImage, read_image
from shelfsight.preprocess import PreprocessSpec

SPEC = PreprocessSpec(size=64)


def _grocery_images(sample_data: Path, label: str, n: int) -> list[Path]:
    ds = load_dataset(sample_data, "train")
    return [s.path for s in ds.samples if s.label == label][:n]


def test_grocery_layout_reads_classes_hierarchy_and_catalog(sample_data):
    train = load_dataset(sample_data, "train")
    val = load_dataset(sample_data, "val")
    assert train.layout == "grocery" and len(train) == 120 and len(val) == 60
    assert len(train.labels) == 12 and train.labels == val.labels
    assert train.labels[0] == "Granny-Smith"  # order of the dataset's class ids
    assert train.coarse_of["Granny-Smith"] == "Apple" and train.coarse_of["Arla-Standard-Milk"] == "Milk"
    assert {s.label for s in train.catalog} == set(train.labels)
    assert all(s.path.is_file() for s in train.catalog)


def test_folder_layout_with_split_folders(sample_data, tmp_path):
    for split, n in (("train", 4), ("val", 2)):
        for label in ("Banana", "Lemon"):
            d = tmp_path / split / label
            d.mkdir(parents=True)
            for p in _grocery_images(sample_data, label, n):
                shutil.copy(p, d / p.name)
    train, val = load_dataset(tmp_path, "train"), load_dataset(tmp_path, "val")
    assert train.layout == "folders" and train.labels == ("Banana", "Lemon")
    assert len(train) == 8 and len(val) == 4


def test_folder_layout_without_splits_is_hashed_stably(sample_data, tmp_path):
    for label in ("Banana", "Lemon"):
        (tmp_path / label).mkdir()
        for p in _grocery_images(sample_data, label, 10):
            shutil.copy(p, tmp_path / label / p.name)
    train, val = load_dataset(tmp_path, "train"), load_dataset(tmp_path, "val")
    assert len(train) + len(val) == 20 and len(val) > 0
    assert {s.path for s in train.samples}.isdisjoint({s.path for s in val.samples})
    assert load_dataset(tmp_path, "val").samples == val.samples


def test_csv_manifest_with_sku_name_and_split(sample_data, tmp_path):
    rows = ["path,label,sku,name,split"]
    for label, sku in (("Banana", "SKU-1"), ("Lemon", "SKU-2")):
        for i, p in enumerate(_grocery_images(sample_data, label, 5)):
            dst = tmp_path / "img" / p.name
            dst.parent.mkdir(exist_ok=True)
            shutil.copy(p, dst)
            rows.append(f"img/{p.name},{label},{sku},{label} loose,{'val' if i == 0 else 'train'}")
    manifest = tmp_path / "products.csv"
    manifest.write_text("\n".join(rows) + "\n")
    train, val = load_dataset(manifest, "train"), load_dataset(manifest, "val")
    assert train.layout == "csv" and len(train) == 8 and len(val) == 2
    assert train.samples[0].sku == "SKU-1" and train.samples[0].name == "Banana loose"


def test_corrupt_truncated_and_non_image_files_are_skipped_and_counted(sample_data, tmp_path):
    good = _grocery_images(sample_data, "Banana", 3)
    d = tmp_path / "Banana"
    d.mkdir()
    for p in good:
        shutil.copy(p, d / p.name)
    data = good[0].read_bytes()
    (d / "truncated.jpg").write_bytes(data[: len(data) // 2])
    (d / "garbage.jpg").write_bytes(b"this is not a jpeg at all, just text" * 10)
    (d / "empty.png").write_bytes(b"")
    samples = load_dataset(tmp_path, "train").samples + load_dataset(tmp_path, "val").samples
    loaded = load_images(samples, SPEC, ("Banana",), progress=False)
    assert len(loaded.images) == 3 and len(loaded.skipped) == 3
    assert {p.name for p, _ in loaded.skipped} == {"truncated.jpg", "garbage.jpg", "empty.png"}
    assert loaded.images.shape == (3, 64, 64, 3) and loaded.images.dtype == np.uint8
    assert any("truncated JPEG" in reason for _, reason in loaded.skipped)


def test_read_image_refuses_truncated_jpeg(sample_data, tmp_path):
    data = _grocery_images(sample_data, "Lemon", 1)[0].read_bytes()
    bad = tmp_path / "half.jpg"
    bad.write_bytes(data[:-100])
    with pytest.raises(UnreadableImage, match="truncated JPEG"):
        read_image(bad)


def test_empty_class_folder_is_an_error(sample_data, tmp_path):
    (tmp_path / "Banana").mkdir()
    shutil.copy(_grocery_images(sample_data, "Banana", 1)[0], tmp_path / "Banana" / "a.jpg")
    (tmp_path / "Ghost").mkdir()
    with pytest.raises(DatasetError, match="class 'Ghost' has no images"):
        load_dataset(tmp_path, "train")


def test_val_label_missing_from_train_is_an_error(sample_data, tmp_path):
    for split, label in (("train", "Banana"), ("val", "Banana"), ("val", "Lemon")):
        d = tmp_path / split / label
        d.mkdir(parents=True)
        shutil.copy(_grocery_images(sample_data, label, 1)[0], d / "x.jpg")
    with pytest.raises(DatasetError, match="labels that train does not have: Lemon"):
        load_dataset(tmp_path, "val")


def test_unknown_split_and_missing_path(tmp_path):
    with pytest.raises(DatasetError, match="split 'dev' unknown"):
        load_dataset(tmp_path, "dev")
    with pytest.raises(DatasetError, match="not found"):
        load_dataset(tmp_path / "nope", "train")

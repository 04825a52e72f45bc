"""`shelfsight index / enroll / search` on a real int8 bundle and the sample catalog."""
from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys

import pytest

from shelfsight.bundle import load_bundle
from shelfsight.errors import BundleError, IndexMismatchError

pytestmark = pytest.mark.slow


def shelfsight(*args):
    return subprocess.run([sys.executable, "-m", "shelfsight", "-q", *args], capture_output=True, text=True,
                          timeout=300)


@pytest.fixture
def indexed_bundle(bundle_copy, sample_data):
    from shelfsight.edge.indexing import build_index

    report = build_index(bundle_copy, sample_data, progress=False)
    return bundle_copy, report


def test_index_is_in_the_verified_bundle_and_finds_products(indexed_bundle, sample_data):
    from shelfsight.edge.runtime.recognizer import Recognizer
    from shelfsight.images import read_image

    bundle, report = indexed_bundle
    assert report["items"] == 12 and report["catalog_images"] == 132 and report["skipped_images"] == 0
    assert report["recall_at_5"] >= 0.8 and report["iconic_recall_at_5"] >= 0.5
    b = load_bundle(bundle)  # every index file is checksummed in the manifest
    assert b.index["model_sha256"] == b.model_sha256 and b.index["item_count"] == 12
    assert set(b.index["checksums"]) <= set(b.manifest["files"])
    assert 0.0 < b.thresholds["unknown_similarity"] <= 1.0
    banana = sample_data / "iconic-images-and-descriptions" / "Fruit" / "Banana" / "Banana_Iconic.jpg"
    with Recognizer(b, search_k=3) as rec:
        result = rec.recognize(read_image(banana))
    assert result.matches[0].item_id == "Banana" and result.matches[0].similarity > 0.99


def test_enrolled_product_is_found_by_a_new_process_and_survives_rebuild(indexed_bundle, sample_data):
    bundle, _ = indexed_bundle
    photo = sample_data / "val" / "Fruit" / "Kiwi" / "Kiwi_003.jpg"
    out = shelfsight("enroll", str(bundle), "--sku", "KIWI-GOLD", "--name", "Gold kiwi", str(photo))
    assert out.returncode == 0, out.stderr
    found = shelfsight("search", str(bundle), str(photo), "-k", "1")
    assert found.returncode == 0 and "KIWI-GOLD" in found.stdout
    rebuilt = shelfsight("index", str(bundle), "--rebuild")
    assert rebuilt.returncode == 0, rebuilt.stderr
    assert json.loads(rebuilt.stdout.strip().splitlines()[-1])["items"] == 13
    assert load_bundle(bundle).index["item_count"] == 13
    again = shelfsight("search", str(bundle), str(photo), "-k", "1")
    assert "KIWI-GOLD" in again.stdout


def test_index_of_another_model_is_refused(indexed_bundle, int8_bundle, tmp_path):
    from shelfsight.bundle import write_manifest
    from shelfsight.edge.runtime.recognizer import Recognizer

    bundle, _ = indexed_bundle
    other = tmp_path / "other"
    shutil.copytree(bundle, other)
    data = bytearray((other / "model.tflite").read_bytes())
    data.extend(b"\0" * 16)  # a different model file (still loadable), checksummed honestly
    (other / "model.tflite").write_bytes(bytes(data))
    write_manifest(other, json.loads((other / "manifest.json").read_text()))
    with pytest.raises(IndexMismatchError, match="index was built from model sha256"):
        Recognizer.create_from_bundle(other)


def test_truncated_index_file_is_refused(indexed_bundle):
    bundle, _ = indexed_bundle
    spec = load_bundle(bundle).index
    victim = bundle / sorted(spec["checksums"])[0]
    victim.write_bytes(victim.read_bytes()[:-8])
    size = victim.stat().st_size
    with pytest.raises(BundleError, match=re.escape(f"{victim.name} is {size} bytes, manifest says {size + 8}")):
        load_bundle(bundle)


def test_runtime_choice_gives_the_same_answer(int8_bundle, sample_data):
    import numpy as np

    from shelfsight.edge.runtime.interpreter import TFLiteModel
    from shelfsight.errors import RuntimeUnavailableError

    pixels = np.full((96, 96, 3), 120, np.uint8)
    a = TFLiteModel(int8_bundle / "model.tflite", runtime="litert").run(pixels)
    b = TFLiteModel(int8_bundle / "model.tflite", runtime="tensorflow").run(pixels)
    np.testing.assert_allclose(a["scores"], b["scores"], atol=1e-6)
    with pytest.raises(RuntimeUnavailableError, match="runtime 'onnx' unknown"):
        TFLiteModel(int8_bundle / "model.tflite", runtime="onnx")

"""Export in every mode: the bundle loads in the edge interpreter and agrees with Keras."""
from __future__ import annotations

import json

import numpy as np
import pytest

from shelfsight.bundle import load_bundle
from shelfsight.errors import BundleError, ConfigError

pytestmark = pytest.mark.slow

# A Keras top-1 that leads top-2 by this much must survive quantization. The tiny model's
# scores differ between machines (threaded CPU kernels are not deterministic); a lead of 0.1
# was seen flipped by weight quantization alone, 0.2 never.
DECIDED = 0.2


def _val_images(sample_data, n=12):
    from shelfsight.datasets import load_dataset, load_images
    from shelfsight.preprocess import PreprocessSpec

    ds = load_dataset(sample_data, "val")
    return load_images(ds.samples[::5][:n], PreprocessSpec(size=96), ds.labels, progress=False).images


def _keras_outputs(tiny_run, images):
    from shelfsight.training.model import load_model, predict

    return predict(load_model(tiny_run / "model.keras"), images)


@pytest.mark.parametrize("mode", ["float32", "fp16", "dynamic"])
def test_float_like_modes_agree_with_keras(mode, tiny_run, sample_data, tmp_path):
    from shelfsight.edge.runtime import Recognizer
    from shelfsight.export.exporter import export_run
    from shelfsight.export.options import ExportOptions, QuantizationConfig

    result = export_run(tiny_run, tmp_path / mode, ExportOptions(QuantizationConfig(mode)), progress=False)
    images = _val_images(sample_data)
    k_scores, k_emb = _keras_outputs(tiny_run, images)
    with Recognizer.create_from_bundle(result.bundle) as rec:
        assert rec.model.input.dtype == np.float32
        outs = [rec.infer(img) for img in images]
    t_scores, t_emb = np.stack([o[0] for o in outs]), np.stack([o[1] for o in outs])
    cos = np.sum(t_emb * k_emb, axis=1)
    if mode == "float32":
        assert (t_scores.argmax(1) == k_scores.argmax(1)).all()
        assert cos.min() >= 0.9999, cos
        return
    # fp16 / dynamic range: near-ties of this small model may flip; decided images may not
    ranked = np.sort(k_scores, axis=1)
    decided = ranked[:, -1] - ranked[:, -2] >= DECIDED
    np.testing.assert_array_equal(t_scores.argmax(1)[decided], k_scores.argmax(1)[decided])
    assert np.mean(t_scores.argmax(1) == k_scores.argmax(1)) >= 0.75
    assert cos.mean() >= (0.995 if mode == "fp16" else 0.95), cos
    assert result.manifest["model"]["quantization"] == mode


def test_int8_bundle_takes_uint8_pixels_and_agrees_with_keras(int8_bundle, tiny_run, sample_data):
    from shelfsight.edge.runtime import Recognizer

    images = _val_images(sample_data)
    k_scores, k_emb = _keras_outputs(tiny_run, images)
    with Recognizer.create_from_bundle(int8_bundle) as rec:
        info = rec.model.input
        # EfficientNet-Lite's (x - 127) / 128 is the input quantization: pixels go in untouched
        assert (info.dtype, info.scale, info.zero_point) == (np.uint8, 1 / 128, 127)
        outs = [rec.infer(img) for img in images]
    t_scores, t_emb = np.stack([o[0] for o in outs]), np.stack([o[1] for o in outs])
    # Quantization may flip near-ties of this small, briefly trained model; where the Keras
    # model is decided (top-1 leads top-2 by DECIDED or more) the int8 model must agree exactly.
    ranked = np.sort(k_scores, axis=1)
    decided = ranked[:, -1] - ranked[:, -2] >= DECIDED
    assert decided.sum() >= 4, ranked[:, -2:]
    np.testing.assert_array_equal(t_scores.argmax(1)[decided], k_scores.argmax(1)[decided])
    assert np.mean(t_scores.argmax(1) == k_scores.argmax(1)) >= 0.75
    assert np.sum(t_emb * k_emb, axis=1).mean() >= 0.98


def test_manifest_sections_and_guard(int8_bundle, tiny_run, sample_data):
    b = load_bundle(int8_bundle)
    m = b.manifest
    assert m["schema"] == "shelfsight.bundle" and m["schema_version"] == 1
    assert set(m["files"]) >= {"model.tflite", "labels.txt"}
    assert m["labels"]["count"] == 12 and len(b.labels) == 12
    assert m["preprocess"]["size"] == 96 and m["preprocess"]["normalization_in_model"] is True
    assert set(m["model"]["outputs"]) == {"scores", "embedding"}
    assert m["model"]["outputs"]["embedding"]["shape"] == [1, 32]
    guard = m["metrics"]["float_comparison"]
    # the guard's agreement is the share of all val images where the shipped and the float model agree
    from shelfsight.datasets import load_dataset, load_images
    from shelfsight.edge.runtime import predict_tflite
    from shelfsight.run import Run
    from shelfsight.training.model import load_model, predict

    run = Run.load(tiny_run)
    val = load_images(load_dataset(sample_data, "val").samples, run.preprocess, run.labels, progress=False)
    float_top1 = predict(load_model(run.model_path), val.images)[0].argmax(1)
    shipped_top1 = predict_tflite(b.model_path, val.images)[0].argmax(1)
    assert m["metrics"]["val_images"] == len(val.images)
    assert guard["top1_agreement"] == pytest.approx(float(np.mean(float_top1 == shipped_top1)), abs=1e-9)
    assert guard["embedding_cosine_mean"] > 0.95
    assert 0.0 < m["thresholds"]["unknown_score"] < 1.0
    assert m["provenance"]["backbone"] == "efficientnet_lite0"


def test_tampered_model_or_manifest_is_refused(bundle_copy):
    model = bundle_copy / "model.tflite"
    data = bytearray(model.read_bytes())
    data[len(data) // 2] ^= 0xFF
    model.write_bytes(bytes(data))
    with pytest.raises(BundleError, match="model.tflite does not match its sha256"):
        load_bundle(bundle_copy)


def test_manifest_edit_and_missing_file_are_refused(bundle_copy):
    manifest = json.loads((bundle_copy / "manifest.json").read_text())
    manifest["labels"]["count"] = 13
    (bundle_copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match="12 labels in labels.txt, manifest says 13"):
        load_bundle(bundle_copy)
    (bundle_copy / "labels.txt").unlink()
    with pytest.raises(BundleError, match="labels.txt is missing"):
        load_bundle(bundle_copy)


def test_archive_round_trip_and_unsafe_archive(int8_bundle, tmp_path):
    import tarfile

    from shelfsight.bundle import pack_archive

    archive = pack_archive(int8_bundle, tmp_path / "b.tar.gz")
    assert load_bundle(archive).bundle_id == load_bundle(int8_bundle).bundle_id
    evil = tmp_path / "evil.tar.gz"
    with tarfile.open(evil, "w:gz") as tar:
        tar.add(int8_bundle / "labels.txt", arcname="../escape.txt")
    with pytest.raises(BundleError, match="unsafe member '../escape.txt'"):
        load_bundle(evil)


def test_pruning_reaches_the_asked_sparsity(tiny_run, tmp_path):
    from shelfsight.export.exporter import export_run
    from shelfsight.export.options import ExportOptions, PruneOptions, QuantizationConfig

    result = export_run(tiny_run, tmp_path / "pruned", ExportOptions(QuantizationConfig.for_int8(32),
                        prune=PruneOptions(sparsity=0.5, epochs=1, frequency=1)), progress=False)
    achieved = result.manifest["provenance"]["pruning"]["achieved"]
    assert achieved["overall"] >= 0.5 - 1e-3
    assert all(v >= 0.49 for v in achieved["layers"].values()), achieved["layers"]
    assert load_bundle(result.bundle).manifest["model"]["quantization"] == "int8"


def test_qat_export_loads_and_qat_needs_int8(tiny_run, tmp_path):
    from shelfsight.edge.runtime import health_check
    from shelfsight.export.exporter import export_run
    from shelfsight.export.options import ExportOptions, QATOptions, QuantizationConfig

    with pytest.raises(ConfigError, match="--qat needs --quantize int8"):
        ExportOptions(QuantizationConfig.for_float16(), qat=QATOptions(epochs=1))
    result = export_run(tiny_run, tmp_path / "qat", ExportOptions(QuantizationConfig.for_int8(32), qat=QATOptions(epochs=1)),
                        progress=False)
    assert health_check(result.bundle)["bundle_id"] == result.manifest["bundle_id"]
    # regression: QAT on unfolded BatchNorm with tfmot's [-6, 6] starting ranges collapsed to ~40%
    assert result.guard.top1_quant >= result.guard.top1_float - 0.25, result.guard.to_dict()
    assert result.guard.embedding_cosine_mean >= 0.9
    cosines = result.manifest["provenance"]["qat"]["embedding_cosine"]  # student vs float teacher, per epoch
    assert len(cosines) == 1 and 0.9 < cosines[0] <= 1.0, cosines


def _shape_of(value):
    """The structure of a manifest: keys and value types, not values that change per export."""
    if isinstance(value, dict):
        return {k: _shape_of(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_shape_of(value[0])] if value else []
    return type(value).__name__


def test_manifest_matches_stored_reference(int8_bundle):
    """A change to the bundle contract must be deliberate: update tests/data/manifest_reference.json
    (and schema_version, and the README's bundle section) together."""
    from pathlib import Path

    manifest = json.loads((int8_bundle / "manifest.json").read_text())
    shape = _shape_of(manifest)
    # per-class and per-file maps are keyed by this export's labels and files: compare their value shape only
    shape["metrics"]["float_comparison"]["per_class_drop_points"] = "dict[label, float]"
    shape["metrics"]["float_comparison"]["classes_over_margin"] = "list[label]"  # often empty
    shape["files"] = "dict[name, {sha256, size}]"
    shape["provenance"]["run"] = shape["provenance"]["dataset"] = "str"
    reference = json.loads((Path(__file__).parent / "data" / "manifest_reference.json").read_text())
    assert shape == reference

"""Training on the sample: the loss falls, the model reloads exactly, embeddings are unit-norm."""
from __future__ import annotations

import json

import numpy as np
import pytest

from shelfsight.errors import ConfigError, ModelError

pytestmark = pytest.mark.slow


def test_run_directory_and_falling_loss(tiny_run):
    for name in ("model.keras", "labels.txt", "preprocess.json", "config.json", "history.json", "metrics.json",
                 "confusion.png"):
        assert (tiny_run / name).is_file(), name
    history = json.loads((tiny_run / "history.json").read_text())
    losses = history["heads"]["loss"]
    assert losses[-1] < 0.8 * losses[0]
    metrics = json.loads((tiny_run / "metrics.json").read_text())
    assert metrics["val"]["samples"] == 60
    assert metrics["val"]["top1"] > 0.5  # 12 classes: chance is 0.08
    assert 0.0 < metrics["val"]["unknown_threshold"] < 1.0
    assert "coarse_top1" in metrics["val"]
    spec = json.loads((tiny_run / "preprocess.json").read_text())
    assert spec["size"] == 96 and spec["mean"] == [127.0] * 3 and spec["std"] == [128.0] * 3


def test_reloaded_model_gives_identical_outputs_and_unit_embeddings(tiny_run, sample_data):
    from shelfsight.datasets import load_dataset, load_images
    from shelfsight.preprocess import PreprocessSpec
    from shelfsight.training.model import load_model, predict

    ds = load_dataset(sample_data, "val")
    imgs = load_images(ds.samples[:8], PreprocessSpec(size=96), ds.labels, progress=False).images
    a_scores, a_emb = predict(load_model(tiny_run / "model.keras"), imgs)
    b_scores, b_emb = predict(load_model(tiny_run / "model.keras"), imgs)
    np.testing.assert_array_equal(a_scores, b_scores)
    np.testing.assert_array_equal(a_emb, b_emb)
    np.testing.assert_allclose(np.linalg.norm(a_emb, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(a_scores.sum(axis=1), 1.0, atol=1e-5)


def test_save_and_reload_round_trip_of_fresh_model(tmp_path):
    from shelfsight.training.model import build_model, load_model
    from shelfsight.training.options import ModelOptions

    pm = build_model(ModelOptions(backbone="mobilenet_v3_small", image_size=96, weights="none"), 5)
    x = np.random.default_rng(0).integers(0, 256, (2, 96, 96, 3)).astype(np.float32)
    before = pm.model.predict(x, verbose=0)
    pm.model.save(tmp_path / "m.keras")
    after = load_model(tmp_path / "m.keras").predict(x, verbose=0)
    for key in ("scores", "embedding"):
        np.testing.assert_allclose(before[key], after[key], atol=1e-6)


def test_bad_options_are_clear_errors(tmp_path):
    from shelfsight.training.backbones import build_backbone
    from shelfsight.training.options import ModelOptions

    with pytest.raises(ConfigError, match="backbone 'resnet9' unknown"):
        ModelOptions(backbone="resnet9")
    with pytest.raises(ConfigError, match="image size 64 out of range 96..320"):
        ModelOptions(image_size=64)
    with pytest.raises(ConfigError, match="alpha 0.35 not available for efficientnet_lite0"):
        ModelOptions(alpha=0.35)
    bad = tmp_path / "w.h5"
    bad.write_bytes(b"not weights")
    with pytest.raises(ModelError, match="does not fit mobilenet_v2"):
        build_backbone("mobilenet_v2", 96, weights=str(bad))


def test_imagenet_weights_offline_fail_with_one_clear_line(monkeypatch, tmp_path):
    from shelfsight.training.backbones import build_backbone

    monkeypatch.setenv("KERAS_HOME", str(tmp_path))  # no cached weights
    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:9")  # and no network, even where there is one
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")
    with pytest.raises(ModelError, match="--weights PATH .* --weights none"):
        build_backbone("mobilenet_v2", 96, weights="imagenet")

"""BatchNorm folding keeps the model's outputs and removes the folded BatchNorms."""
import numpy as np
import pytest

pytestmark = pytest.mark.slow


def test_folded_model_matches_and_has_no_batchnorm_after_convs():
    from shelfsight.export.fold import fold_batchnorm
    from shelfsight.training.model import build_model
    from shelfsight.training.options import ModelOptions
    from shelfsight.training.tf_env import keras

    model = build_model(ModelOptions(image_size=96, weights="imagenet", embedding_dim=16), 4).model
    rng = np.random.default_rng(0)
    for layer in model.layers:  # non-trivial BatchNorm statistics, so a wrong fold shows
        if isinstance(layer, keras.layers.BatchNormalization):
            g, b, m, v = layer.get_weights()
            layer.set_weights([g * rng.uniform(0.5, 2, g.shape), b + rng.normal(0, 0.1, b.shape),
                               m + rng.normal(0, 0.1, m.shape), v * rng.uniform(0.5, 2, v.shape)])
    folded = fold_batchnorm(model)
    x = rng.integers(0, 256, (4, 96, 96, 3)).astype(np.float32)
    a, b = model.predict(x, verbose=0), folded.predict(x, verbose=0)
    np.testing.assert_allclose(a["embedding"], b["embedding"], atol=2e-4)
    np.testing.assert_allclose(a["scores"], b["scores"], atol=2e-4)
    assert not any(isinstance(layer, keras.layers.BatchNormalization) for layer in folded.layers)
    assert sum(isinstance(layer, keras.layers.BatchNormalization) for layer in model.layers) == 49
    # dropping the dropout (identity at inference) changes nothing either
    no_dropout = fold_batchnorm(model, skip=("head_dropout",))
    assert "head_dropout" not in [layer.name for layer in no_dropout.layers]
    np.testing.assert_allclose(no_dropout.predict(x, verbose=0)["embedding"], a["embedding"], atol=2e-4)

"""Stage-2 augmentation: random erasing, mixup and cutmix keep images and targets consistent."""
from __future__ import annotations

import numpy as np
import pytest

from shelfsight.errors import ConfigError


def _batch(n: int = 4, size: int = 32):
    """Image i is the constant 10 * (i + 1); its target is one-hot i, its weight i + 1."""
    x = np.stack([np.full((size, size, 3), 10.0 * (i + 1), np.float32) for i in range(n)])
    return x, np.eye(n, dtype=np.float32), np.arange(1, n + 1, dtype=np.float32)


def test_mixup_blends_images_targets_and_weights_with_one_lambda():
    from shelfsight.training.augment import mix_batch

    x, y, w = _batch()
    for seed in range(5):
        mx, my, mw = (t.numpy() for t in mix_batch(x, y, w, "mixup", alpha=0.4, seed=seed))
        for i in range(len(x)):
            assert np.isclose(my[i].sum(), 1.0)
            # the image's value is the target-weighted mean of the source values, everywhere
            expected = float(my[i] @ (10.0 * np.arange(1, 5)))
            np.testing.assert_allclose(mx[i], expected, rtol=1e-5)
            np.testing.assert_allclose(mw[i], float(my[i] @ w), rtol=1e-5)


def test_cutmix_target_share_equals_the_pasted_area():
    from shelfsight.training.augment import mix_batch

    x, y, w = _batch(size=40)
    mixed_any = False
    for seed in range(8):
        mx, my, _ = (t.numpy() for t in mix_batch(x, y, w, "cutmix", alpha=1.0, seed=seed))
        for i in range(len(x)):
            values = mx[i, :, :, 0]
            for j in np.flatnonzero(my[i] > 0):
                share = np.mean(values == 10.0 * (j + 1))
                if np.count_nonzero(my[i] > 0) == 2:
                    mixed_any = True
                    assert share == pytest.approx(my[i, j], abs=1e-6)
    assert mixed_any


def test_random_erasing_greys_one_rectangle_of_bounded_area():
    from shelfsight.training.augment import random_erasing

    image = np.full((50, 60, 3), 200.0, np.float32)
    for seed in range(10):
        out = random_erasing(image, 1.0, seed=seed).numpy()
        grey = np.all(out == 127.0, axis=2)
        rows, cols = np.flatnonzero(grey.any(1)), np.flatnonzero(grey.any(0))
        assert grey.sum() == len(rows) * len(cols)  # one filled rectangle
        assert rows.max() - rows.min() + 1 == len(rows) and cols.max() - cols.min() + 1 == len(cols)
        assert 0.01 <= grey.mean() <= 0.3
        assert np.all(out[~grey] == 200.0)
    np.testing.assert_array_equal(random_erasing(image, 0.0, seed=3).numpy(), image)


def test_training_dataset_with_mix_and_erasing_yields_soft_targets_summing_to_one():
    from shelfsight.training.augment import training_dataset

    rng = np.random.default_rng(0)
    images = rng.integers(0, 255, (8, 40, 40, 3), dtype=np.uint8)
    y = np.eye(4, dtype=np.float32)[np.arange(8) % 4]
    x, t, s = next(iter(training_dataset(images, y, np.ones(8, np.float32), 8, 32, seed=1,
                                         erasing=0.5, mix="mixup", mix_alpha=0.4)))
    assert x.shape == (8, 32, 32, 3) and t.shape == (8, 4)
    np.testing.assert_allclose(t.numpy().sum(1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(s.numpy(), 1.0, rtol=1e-5)


@pytest.mark.parametrize("kw", [{"mix": "blend"}, {"mix_alpha": 0.0}, {"erasing": 1.5}])
def test_bad_mix_options_are_config_errors(kw):
    from shelfsight.training.options import TrainOptions

    with pytest.raises(ConfigError):
        TrainOptions(**kw)


def test_jpeg_round_trip_leaves_blocks_only_when_drawn():
    import cv2

    from shelfsight.training.augment import jpeg_round_trip

    rng = np.random.default_rng(1)
    image = cv2.GaussianBlur(rng.uniform(0, 255, (64, 64, 3)).astype(np.float32), (0, 0), 2.0).round()
    np.testing.assert_array_equal(jpeg_round_trip(image, 0.0, seed=2).numpy(), image)
    out = jpeg_round_trip(image, 1.0, seed=2).numpy()
    assert out.shape == image.shape and out.dtype == np.float32
    error = np.abs(out - image).mean()
    assert 0.2 < error < 10, error  # changed, as a JPEG at quality 40-95 changes it, not destroyed
    assert np.array_equal(out, out.round())  # whole pixel values, as decoded

"""The one L2 normalisation and cosine (shelfsight.embeddings)."""
import numpy as np
import pytest

from shelfsight.embeddings import cosine, l2_normalize


def test_l2_normalize_scales_rows_and_leaves_zero_vectors_zero():
    out = l2_normalize(np.array([[3.0, 4.0], [0.0, 0.0]], np.float64), axis=1)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, [[0.6, 0.8], [0.0, 0.0]], atol=1e-7)


def test_cosine_of_known_vectors():
    assert cosine(np.array([1.0, 0.0]), np.array([2.0, 2.0])) == pytest.approx(np.sqrt(0.5), abs=1e-6)
    np.testing.assert_allclose(cosine(np.eye(2), np.array([[1.0, 0.0], [1.0, 0.0]])), [1.0, 0.0], atol=1e-7)

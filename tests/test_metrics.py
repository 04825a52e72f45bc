"""Metric code checked against hand counts."""
import numpy as np
import pytest

from shelfsight.errors import ConfigError
from shelfsight.metrics import calibrate_threshold, classification_report, confusion_matrix, top_k_accuracy

LABELS = ("apple", "banana", "carrot")
COARSE = {"apple": "fruit", "banana": "fruit", "carrot": "veg"}
# 5 images: true classes and scores chosen so every figure can be counted by hand.
Y = np.array([0, 0, 1, 2, 2])
S = np.array([
    [0.7, 0.2, 0.1],   # apple  -> apple   (right)
    [0.3, 0.6, 0.1],   # apple  -> banana  (wrong, same coarse class)
    [0.1, 0.8, 0.1],   # banana -> banana  (right)
    [0.5, 0.1, 0.4],   # carrot -> apple   (wrong; carrot 2nd)
    [0.2, 0.1, 0.7],   # carrot -> carrot  (right)
])


def test_report_matches_hand_count():
    r = classification_report(S, Y, LABELS, COARSE, accept_share=0.8)
    assert r["top1"] == pytest.approx(3 / 5)
    assert top_k_accuracy(S, Y, 2) == pytest.approx(5 / 5)
    assert r["coarse_top1"] == pytest.approx(4 / 5)
    # apple: P = 1/2 (predicted twice, once right), R = 1/2; banana: P = 1/2, R = 1; carrot: P = 1, R = 1/2
    assert r["per_class"]["apple"] == pytest.approx({"precision": 0.5, "recall": 0.5, "f1": 0.5, "support": 2})
    assert r["per_class"]["banana"]["precision"] == pytest.approx(0.5)
    assert r["per_class"]["carrot"]["recall"] == pytest.approx(0.5)
    assert r["macro_f1"] == pytest.approx((0.5 + 2 / 3 + 2 / 3) / 3)
    assert r["confusion_matrix"] == [[1, 1, 0], [0, 1, 0], [1, 0, 1]]
    # top-1 scores 0.7 0.6 0.8 0.5 0.7: accepting 80% (4 of 5) puts the threshold at 0.6
    assert r["unknown_threshold"] == pytest.approx(0.6)


def test_confusion_matrix_counts_and_threshold_edges():
    cm = confusion_matrix(np.array([0, 1, 1]), np.array([1, 1, 1]), 2)
    assert cm.tolist() == [[0, 1], [0, 2]]
    assert calibrate_threshold(np.array([0.9, 0.1]), 1.0) == pytest.approx(0.1)
    with pytest.raises(ConfigError, match="accept_share 0.0 must be in"):
        calibrate_threshold(np.array([0.5]), 0.0)


def test_calibrated_threshold_on_known_numbers():
    """The one calibrator of both the class threshold and the search similarity threshold."""
    sims = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0]
    assert calibrate_threshold(sims, 0.9) == pytest.approx(0.2)
    assert calibrate_threshold(sims, 1.0) == pytest.approx(0.1)
    assert calibrate_threshold(sims, 0.5) == pytest.approx(0.6)
    assert calibrate_threshold(sims, 0.25) == pytest.approx(0.8)  # ceil(2.5) = 3 accepted
    assert calibrate_threshold(np.array([0.7, 0.7, 0.2]), 0.6) == pytest.approx(0.7)
    with pytest.raises(ConfigError, match="accept_share 0 must be in"):
        calibrate_threshold(sims, 0)
    with pytest.raises(ConfigError, match="got 0 values"):
        calibrate_threshold([], 0.9)

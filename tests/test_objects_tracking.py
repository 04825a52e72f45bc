"""A track's label: its crops' mean outputs through the recogniser's post-processing (temporal ensembling)."""
from __future__ import annotations

import numpy as np
import pytest

from shelfsight.edge.objects import Box, BundleCrops, CropResult, Tracker, TrackingOptions
from shelfsight.edge.objects.boxes import overlapping
from shelfsight.edge.runtime.postprocess import Recognition, top_k
from shelfsight.edge.runtime.recognizer import Recognizer
from shelfsight.errors import ConfigError
from tiny_bundle import make_tiny_bundle

LABELS = ("a", "b", "c")
THRESHOLD = 0.4
EMBEDDING = np.array([1.0, 0.0], np.float32)


def _decide(scores, embedding, top_score):
    predictions = top_k(scores, LABELS, 3)
    return Recognition(predictions[0].label if top_score >= THRESHOLD else None, predictions[0].score, predictions,
                       (), 0.0)


def _result(scores):
    scores = np.asarray(scores, np.float32)
    return CropResult(_decide(scores, EMBEDDING, float(scores.max())), EMBEDDING, scores)


def _track(frames, options=None):
    """One object standing still, seen with these (scores, at_edge, overlapping) frames."""
    tracker = Tracker(_decide, options)
    box = Box(10, 10, 50, 50)
    for i, (scores, edge, overlap) in enumerate(frames):
        tracker.update([box], [_result(scores)], i, float(i), [edge], [overlap])
    (track,) = tracker.tracks
    return track


def test_frames_under_the_threshold_are_not_votes_for_unknown():
    # alone, three of the five frames are "unknown" (top score 0.39 < 0.4): they outvoted "a" before
    frames = [([0.39, 0.31, 0.30], False, False)] * 3 + [([0.43, 0.30, 0.27], False, False)] * 2
    assert [_result(s).recognition.label for s, _, _ in frames] == [None, None, None, "a", "a"]
    track = _track(frames)
    assert track.recognition.predictions[0].score == pytest.approx((3 * 0.39 + 2 * 0.43) / 5, abs=1e-6)
    assert track.label == "a"  # mean top score 0.406 >= 0.4
    assert track.best_sighting.frame == 3  # its best whole frame that names "a"


def test_unknown_is_decided_on_the_mean_top_score_of_the_frames():
    track = _track([([0.39, 0.31, 0.30], False, False)] * 4 + [([0.43, 0.30, 0.27], False, False)])
    assert track.label is None  # mean top score 0.398 < 0.4
    assert track.recognition.predictions[0].label == "a"  # what it would be, as for one photo


def test_the_label_is_the_top_of_the_mean_scores_not_the_most_frequent_top_class():
    frames = [([0.45, 0.40, 0.15], False, False)] * 3 + [([0.30, 0.50, 0.20], False, False)] * 2
    track = _track(frames)
    np.testing.assert_allclose([p.score for p in track.recognition.predictions], [0.44, 0.39, 0.17], atol=1e-6)
    assert track.label == "b"
    assert track.best_sighting.frame == 3


def test_sightings_at_the_edge_or_overlapping_another_box_count_less():
    whole, partial = [0.2, 0.8, 0.0], [0.9, 0.05, 0.05]
    options = TrackingOptions(edge_weight=0.25)
    track = _track([(partial, True, False), (whole, False, False), (partial, True, False)], options)
    assert track.label == "b"  # b (0.8 + 0.25 * 0.1) / 1.5 = 0.55 against a (0.2 + 0.25 * 1.8) / 1.5 = 0.43
    assert track.best_sighting.frame == 1
    track = _track([(partial, False, False), (whole, False, True), (partial, False, False)], options)
    assert track.label == "a"  # the whole sighting overlaps another box: (0.9 * 2 + 0.25 * 0.2) / 2.25
    track = _track([(partial, True, True), (whole, False, False)], options)
    assert [s.weight for s in (track.first, track.last)] == [0.0625, 1.0]


def test_by_default_a_sighting_at_the_edge_counts_only_while_the_track_has_no_whole_one():
    entering = [([0.1, 0.9, 0.0], True, False), ([0.1, 0.9, 0.0], True, False)]
    assert _track(entering).label == "b"  # only partial sightings so far: they decide
    track = _track(entering + [([0.7, 0.2, 0.1], False, False)] + [([0.0, 1.0, 0.0], True, False)] * 5)
    assert track.label == "a"
    assert track.recognition.predictions[0].score == pytest.approx(0.7, abs=1e-4)
    assert track.best_sighting.frame == 2
    with pytest.raises(ConfigError, match="tracking overlap_weight must be 0.0..1.0, got 1.5"):
        TrackingOptions(overlap_weight=1.5)


def test_sightings_at_the_edge_change_nothing_once_there_is_a_whole_one():
    """Regression: at a weight of 1e-6 instead of none, a track whose whole crops all scored the
    threshold exactly (an int8 model's scores are steps of 1/256) fell under it by 1e-10."""
    at_threshold = [THRESHOLD, 0.3, 0.3]
    track = _track([([0.3, 0.2, 0.1], True, False)] + [(at_threshold, False, False)] * 3
                   + [([0.1, 0.1, 0.1], True, False)])
    assert track.evidence.mean()[2] == float(np.float32(THRESHOLD))
    assert track.label == "a"


def test_overlapping_boxes_share_pixels_touching_ones_do_not():
    boxes = [Box(0, 0, 10, 10), Box(10, 0, 10, 10), Box(15, 5, 10, 10), Box(50, 50, 5, 5)]
    assert overlapping(boxes) == [False, True, True, False]
    assert overlapping([Box(0, 0, 10, 10)]) == [False] and overlapping([]) == []


def test_a_reloaded_bundle_with_other_classes_starts_the_tracks_mean_again():
    tracker = Tracker(_decide)
    box = Box(10, 10, 50, 50)
    tracker.update([box], [_result([0.9, 0.1, 0.0])], 0, 0.0)
    four = np.array([0.1, 0.1, 0.7, 0.1], np.float32)
    tracker.update([box], [CropResult(_result([0.1, 0.1, 0.8]).recognition, EMBEDDING, four)], 1, 1.0)
    (track,) = tracker.tracks
    np.testing.assert_allclose(track.evidence.scores, [four, np.zeros(4)], atol=1e-6)


def test_bundle_crops_decide_a_track_of_one_crop_as_that_crop_alone(tmp_path):
    red = np.zeros((32, 32, 3), np.uint8)
    red[..., 2] = 255  # BGR
    with Recognizer.create_from_bundle(make_tiny_bundle(tmp_path / "bundle")) as recognizer:
        crops = BundleCrops(recognizer)
        (result,) = crops.recognize_crops([red])
        decided = crops.decide(result.scores, result.embedding, float(result.scores.max()))
        assert (decided.label, decided.predictions, decided.matches) == \
            (result.recognition.label, result.recognition.predictions, result.recognition.matches)
        assert decided.label == "red"
        assert crops.decide(result.scores, result.embedding, recognizer.unknown_threshold - 1e-3).label is None

"""Temporal smoothing: one report per appearance, once stable."""
from __future__ import annotations

import pytest

from shelfsight.edge.runtime.smoothing import SmoothingOptions, TemporalSmoother
from shelfsight.errors import ConfigError


def reports(labels, stable=3, reset=2):
    smoother = TemporalSmoother(SmoothingOptions(stable_frames=stable, reset_frames=reset))
    return [(i, out) for i, label in enumerate(labels) if (out := smoother.update(label)) is not None]


def test_a_product_is_reported_once_when_stable_and_not_on_every_frame():
    assert reports(["a"] * 10) == [(2, "a")]


def test_flicker_is_not_reported_and_does_not_re_report_the_product():
    labels = ["a", "a", "a", "b", "a", "a", "a", "a", "b", "b", "a"]
    assert reports(labels) == [(2, "a")]


def test_unstable_labels_never_report():
    assert reports(["a", "b", "a", "b", None, "a", "a", None, "b", "b"]) == []


def test_same_product_again_after_an_empty_scene_is_a_new_appearance():
    labels = ["a"] * 4 + [None] * 2 + ["a"] * 3
    assert reports(labels) == [(2, "a"), (8, "a")]


def test_a_short_gap_is_not_a_new_appearance():
    labels = ["a"] * 4 + [None] + ["a"] * 4
    assert reports(labels) == [(2, "a")]


def test_another_stable_product_changes_the_scene():
    labels = ["a"] * 3 + ["b"] * 3 + ["a"] * 3
    assert reports(labels) == [(2, "a"), (5, "b"), (8, "a")]
    assert reports(["a", "b", "a"], stable=1) == [(0, "a"), (1, "b"), (2, "a")]


def test_reported_tracks_the_current_appearance():
    smoother = TemporalSmoother(SmoothingOptions(stable_frames=2, reset_frames=1))
    smoother.update("a")
    assert smoother.reported is None
    smoother.update("a")
    assert smoother.reported == "a"
    smoother.update(None)
    assert smoother.reported is None


@pytest.mark.parametrize("kwargs,message", [
    ({"stable_frames": 0}, "stable_frames must be a whole number >= 1, got 0"),
    ({"reset_frames": 2.5}, "reset_frames must be a whole number >= 1, got 2.5"),
    ({"stable_frames": True}, "stable_frames must be a whole number >= 1, got True"),
])
def test_options_validation(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        SmoothingOptions(**kwargs)

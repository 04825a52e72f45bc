"""The per-object mode on generated videos: proposals, tracks, labels, counts, events, limits."""
from __future__ import annotations

import json

import numpy as np
import pytest

from objects_fakes import HistogramCrops
from shelfsight.edge.objects import (BackgroundOptions, BackgroundProposer, Box, CountLine, ObjectsOptions,
                                     ObjectStage, TrackingOptions, load_scene, parse_backend, save_scene)
from shelfsight.edge.objects.boxes import as_array, iou_matrix, nms
from shelfsight.edge.objects.counting import LineState
from shelfsight.edge.pipeline.health import Health
from shelfsight.edge.pipeline.runner import RunOptions, run
from shelfsight.edge.pipeline.sinks import make_sinks
from shelfsight.edge.pipeline.sources import ArraySource, Frame
from shelfsight.edge.pipeline.quality import QualityOptions
from shelfsight.errors import ConfigError
from shelfsight.tools import make_objects_video as mv

PRODUCTS = mv.catalog_products()


@pytest.fixture(scope="module")
def crops():
    return HistogramCrops(PRODUCTS)


def _play(stage, items, width, height, empty=30):
    events, truths, boxes = [], [], []
    for i, (image, truth) in enumerate(mv.frames(items, width, height, 0, empty=empty)):
        new, _, _ = stage.process(image, Frame(image, i, 1000.0 + i / 30, "generated"))
        events += new
        truths.append(truth)
        boxes.append([t.box for t in stage.tracker.tracks if t.last.frame == i])
    return events + stage.finish(), truths, boxes


def test_backend_is_chosen_from_one_spec_and_bad_options_are_refused():
    assert parse_backend("background") == ("background", None)
    assert parse_backend("detector:m.tflite")[0] == "detector"
    with pytest.raises(ConfigError, match="objects backend 'yolo' unknown"):
        ObjectsOptions(backend="yolo")
    with pytest.raises(ConfigError, match="min_area < max_area"):
        BackgroundOptions(min_area=0.5, max_area=0.1)
    with pytest.raises(ConfigError, match="confirm_frames must be a whole number >= 1"):
        TrackingOptions(confirm_frames=0)
    with pytest.raises(ConfigError, match="count line must be x1,y1,x2,y2"):
        CountLine.parse("1,2,3")
    with pytest.raises(ConfigError, match="two different points"):
        CountLine.parse("5,5,5,5")


def test_iou_and_nms_are_exact():
    a = as_array([Box(0, 0, 10, 10)])
    b = as_array([Box(5, 0, 10, 10), Box(20, 20, 5, 5), Box(0, 0, 10, 10)])
    np.testing.assert_allclose(iou_matrix(a, b), [[50 / 150, 0.0, 1.0]], atol=1e-6)
    kept = nms([Box(0, 0, 10, 10, 0.6), Box(1, 0, 10, 10, 0.9), Box(40, 40, 10, 10, 0.5)], 0.5)
    assert [(b.x, b.score) for b in kept] == [(1, 0.9), (40, 0.5)]


def test_count_line_directions_and_hysteresis():
    line = CountLine.parse("100,0,100,200")  # drawn top to bottom: left -> right is forward
    state = LineState(line)
    path = [(80, 50), (97, 50), (103, 50), (99, 50), (120, 50), (60, 50), (60, 300), (150, 300)]
    assert [state.update(p) for p in path] == [None, None, None, None, "forward", "backward", None, None]


def test_counter_video_gives_one_track_per_product_with_its_label_and_direction(crops):
    width, height = 640, 480
    items = mv.counter_scene(PRODUCTS, width, height, seed=0)
    stage = ObjectStage(ObjectsOptions(count_line=CountLine(width / 2, 0, width / 2, height)), crops)
    events, truths, tracked = _play(stage, items, width, height)
    confirmed = [e for e in events if e["kind"] == "object_confirmed"]
    left = [e for e in events if e["kind"] == "object_left"]
    assert [e["track_id"] for e in confirmed] == [1, 2, 3, 4, 5, 6]
    assert sorted(e["track_id"] for e in left) == [1, 2, 3, 4, 5, 6]
    # ids follow the items' order of entry, each with its product's label and direction
    assert [e["label"] for e in confirmed] == [it.label for it in items]
    by_id = {e["track_id"]: e for e in left}
    assert [[c["direction"] for c in by_id[i + 1]["crossings"]] for i in range(6)] == \
        [["forward" if it.speed > 0 else "backward"] for it in items]
    assert dict(stage.counts) == {(it.label, "forward" if it.speed > 0 else "backward"): 1 for it in items}
    assert json.loads(json.dumps(left[0]))["box"] == left[0]["box"]  # events are plain JSON
    # proposals against the ground truth, IoU >= 0.5, on every frame after the scene is learned
    hits = correct = truth_total = proposals = 0
    for truth, boxes in zip(truths[30:], tracked[30:]):
        whole = [Box(*t["box"]) for t in truth if t["whole"]]
        visible = [Box(*t["box"]) for t in truth]
        if whole:
            hits += int((iou_matrix(as_array(whole), as_array(boxes)) >= 0.5).any(axis=1).sum())
        if boxes:
            correct += int((iou_matrix(as_array(boxes), as_array(visible)) >= 0.5).any(axis=1).sum())
        truth_total += len(whole)
        proposals += len(boxes)
    assert truth_total > 500
    assert hits / truth_total >= 0.95  # recall over items wholly in view
    assert correct / proposals >= 0.90  # precision against every item in view (entering ones clipped)


def test_conveyor_of_100_items_counts_each_once_in_order(crops):
    width, height = 320, 240
    items = mv.conveyor_scene(PRODUCTS, 100, width, height, seed=0)
    stage = ObjectStage(ObjectsOptions(count_line=CountLine(width / 2, 0, width / 2, height)), crops)
    events, _, _ = _play(stage, items, width, height)
    left = sorted((e for e in events if e["kind"] == "object_left"), key=lambda e: e["track_id"])
    assert [e["track_id"] for e in left] == list(range(1, 101))
    assert [e["label"] for e in left] == [it.label for it in items]
    assert [len(e["crossings"]) for e in left] == [1] * 100
    assert sum(stage.counts.values()) == 100
    assert all(direction == "forward" for _, direction in stage.counts)


def test_a_rain_of_tiny_blobs_and_an_empty_scene_give_no_events_and_stay_fast(crops):
    rng = np.random.default_rng(0)
    scene = mv.background(320, 240, 0)
    proposer = BackgroundProposer(BackgroundOptions(learn_frames=10, max_proposals=4))
    stage = ObjectStage(ObjectsOptions(), crops, health=Health(), proposer=proposer)
    for i in range(10):
        assert stage.process(scene, Frame(scene, i, float(i), "x"))[0] == []
    noisy = scene.copy()
    ys, xs = rng.integers(0, 240, 1000), rng.integers(0, 320, 1000)
    noisy[ys, xs] = 255
    assert proposer.propose(noisy) == []  # specks are opened away
    blobs = scene.copy()
    for k in range(40):  # 40 blobs big enough to survive: only max_proposals of them go on
        y, x = divmod(k, 8)
        blobs[10 + y * 45:30 + y * 45, 10 + x * 38:30 + x * 38] = (255, 255, 255) if k % 2 else (0, 0, 0)
    assert len(proposer.propose(blobs)) == 4
    assert proposer.capped == 36


def test_calibrated_scene_proposes_from_the_first_frame(tmp_path, crops):
    scene = mv.background(320, 240, 0)
    path = save_scene([scene] * 50, tmp_path / "scene.npz")
    assert load_scene(path).shape == (30, 240, 320, 3)
    proposer = BackgroundProposer(BackgroundOptions(scene=path))
    frame = scene.copy()
    frame[100:160, 100:160] = (20, 200, 240)
    boxes = proposer.propose(frame)
    assert len(boxes) == 1 and iou_matrix(as_array(boxes), as_array([Box(100, 100, 60, 60)]))[0, 0] >= 0.8
    (tmp_path / "bad.npz").write_bytes(b"not a scene")
    with pytest.raises(ConfigError, match="not a scene file"):
        BackgroundProposer(BackgroundOptions(scene=tmp_path / "bad.npz"))


def test_the_run_loop_sends_object_events_to_the_sinks_and_the_metrics_move(tmp_path, crops):
    width, height = 320, 240
    items = mv.conveyor_scene(PRODUCTS, 3, width, height, seed=1)
    images = [image for image, _ in mv.frames(items, width, height, 0, empty=30)]
    health = Health()
    stage = ObjectStage(ObjectsOptions(count_line=CountLine(160, 0, 160, 240)), crops, health=health)
    summary = run(ArraySource(images), None, make_sinks([f"jsonl:{tmp_path / 'events.jsonl'}"]),
                  RunOptions(quality=QualityOptions.off()), health=health, handle_signals=False, objects=stage)
    events = [json.loads(line) for line in (tmp_path / "events.jsonl").read_text().splitlines()]
    assert [(e["kind"], e["track_id"]) for e in events] == [
        ("object_confirmed", 1), ("object_left", 1), ("object_confirmed", 2), ("object_left", 2),
        ("object_confirmed", 3), ("object_left", 3)] or sorted((e["kind"], e["track_id"]) for e in events) == sorted(
        [(k, i) for i in (1, 2, 3) for k in ("object_confirmed", "object_left")])
    assert [e["label"] for e in events if e["kind"] == "object_left"] == [it.label for it in items]
    assert summary.events == 6 and summary.frames == len(images)
    metrics = health.render()
    assert "shelfsight_tracks_opened_total 3.0" in metrics
    assert "shelfsight_tracks_closed_total 3.0" in metrics
    assert "shelfsight_objects_in_view 0.0" in metrics
    for it in items:
        assert f'shelfsight_object_crossings_total{{direction="forward",label="{it.label}"}}' in metrics


def test_objects_sits_on_runtime_and_pipeline_and_nothing_below_imports_it():
    from test_layout import ROOT, _sources, _under, _violations

    files = sorted((ROOT / "edge" / "objects").rglob("*.py"))
    above = ("sync", "cli", "device", "indexing", "kiosk")
    assert _violations(files, lambda m: any(_under(m, f"shelfsight.edge.{o}") for o in above)) == []
    below = [p for sub in ("runtime", "pipeline", "catalog", "sync") for p in _sources(f"edge/{sub}")]
    assert _violations(below, lambda m: _under(m, "shelfsight.edge.objects")) == []


def test_the_model_sees_a_long_box_whole_in_its_square_window():
    """The preprocessing centre-crops to a square: a 300x100 bottle lying on a belt would lose two
    thirds of itself. The window is square around the box, moved inside the frame at its edges."""
    from shelfsight.edge.objects.crops import square_window

    frame = np.arange(480 * 640, dtype=np.int64).reshape(480, 640)  # each pixel names its position
    window = square_window(frame, Box(170, 190, 300, 100), margin=0.0)
    assert window.shape == (300, 300) and window[0, 0] == frame[90, 170]  # 100 px of scene above and below
    window = square_window(frame, Box(0, 10, 300, 100), margin=0.0)  # near the top: moved down, not cut
    assert window.shape == (300, 300) and window[0, 0] == frame[0, 0]
    window = square_window(frame, Box(20, 200, 600, 80), margin=0.0)  # longer than the frame is high
    assert window.shape == (480, 600) and window[0, 0] == frame[0, 20]
    window = square_window(frame, Box(300, 200, 50, 50), margin=0.1)  # a square box: itself and its margin
    assert window.shape == (60, 60) and window[0, 0] == frame[195, 295]


def test_whole_boxes_go_to_the_model_as_square_windows_and_edge_boxes_as_they_are():
    seen = []

    class Recording(HistogramCrops):
        def recognize_crops(self, crops):
            seen.append([c.shape[:2] for c in crops])
            return super().recognize_crops(crops)

    scene = np.full((240, 320, 3), 90, np.uint8)
    stage = ObjectStage(ObjectsOptions(background=BackgroundOptions(learn_frames=5)), Recording(PRODUCTS))
    for i in range(8):
        stage.process(scene, Frame(scene, i, float(i), "generated"))
    image = scene.copy()
    image[100:140, 60:180] = (20, 200, 240)   # a long product in the middle: 120 x 40
    image[60:120, 0:30] = (240, 40, 200)      # a product entering on the left: cut by the edge
    stage.process(image, Frame(image, 8, 8.0, "generated"))
    assert sorted(seen[-1]) == [(60, 30), (120, 120)]

"""The per-object mode with a real bundle (trained on assets/grocery-sample) on generated videos."""
from __future__ import annotations

import json

import pytest

from shelfsight.edge.objects import BundleCrops, CountLine, ObjectsOptions, ObjectStage
from shelfsight.edge.pipeline.sources import Frame
from shelfsight.edge.runtime.recognizer import Recognizer
from shelfsight.images import read_image
from shelfsight.tools import make_objects_video as mv

PRODUCTS = mv.catalog_products()


@pytest.fixture(scope="module")
def recognizer(int8_bundle):
    with Recognizer.create_from_bundle(int8_bundle, search_k=0) as rec:
        yield rec


def _left(recognizer, items, width, height):
    stage = ObjectStage(ObjectsOptions(count_line=CountLine(width / 2, 0, width / 2, height)), BundleCrops(recognizer))
    events = []
    for i, (image, _) in enumerate(mv.frames(items, width, height, 0, empty=30)):
        events += stage.process(image, Frame(image, i, 1000.0 + i / 30, "generated"))[0]
    events += stage.finish()
    return sorted((e for e in events if e["kind"] == "object_left"), key=lambda e: e["track_id"]), stage


def test_each_track_on_the_counter_is_named_as_the_bundle_names_its_product_alone(recognizer):
    alone = {label: recognizer.recognize(read_image(path)).label for label, path in PRODUCTS}
    items = mv.counter_scene(PRODUCTS, 640, 480, seed=0)
    left, stage = _left(recognizer, items, 640, 480)
    assert [e["label"] for e in left] == [alone[it.label] for it in items]
    assert sum(alone[it.label] == it.label for it in items) == len(items)  # and the bundle knows all six
    assert dict(stage.counts) == {(it.label, "forward" if it.speed > 0 else "backward"): 1 for it in items}
    top_k = len(recognizer.recognize(read_image(PRODUCTS[0][1])).predictions)  # the recogniser's own top-k
    assert [(e["matches"], len(e["predictions"])) for e in left] == [([], top_k)] * len(left)


def test_a_conveyor_is_counted_exactly_and_named_at_least_as_well_as_single_images(recognizer, int8_bundle):
    items = mv.conveyor_scene(PRODUCTS, 30, 320, 240, seed=0)
    left, stage = _left(recognizer, items, 320, 240)
    assert [e["track_id"] for e in left] == list(range(1, 31))
    assert [len(e["crossings"]) for e in left] == [1] * 30
    assert sum(stage.counts.values()) == 30
    accuracy = sum(e["label"] == it.label for e, it in zip(left, items)) / len(items)
    val_top1 = json.loads((int8_bundle / "manifest.json").read_text())["metrics"]["val_top1"]
    assert accuracy >= val_top1, (accuracy, val_top1)


def test_a_single_frame_after_a_batch_of_crops_is_run_at_batch_one(recognizer):
    """Regression: run_batch left the interpreter's input at N rows, and the next single-image
    run failed with 'Dimension mismatch. Got 1 but expected 3'."""
    image = read_image(PRODUCTS[0][1])
    alone = recognizer.recognize(image)
    assert recognizer.model.batch_resizable
    crops = BundleCrops(recognizer).recognize_crops([image, image, image])  # one batch of exactly 3 rows
    assert recognizer.model.input.shape[0] == 3
    again = recognizer.recognize(image)
    assert recognizer.model.input.shape[0] == 1
    assert [c.recognition.label for c in crops] == [alone.label] * 3 and again.label == alone.label
    assert again.score == pytest.approx(alone.score, abs=1e-6)

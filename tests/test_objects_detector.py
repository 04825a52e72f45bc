"""The `detector:` backend on tiny SSD-style detectors generated here with the real TFLite_Detection_PostProcess op.

The detectors see a 64x64 image as a 4x4 grid of anchors (one per cell, box encodings zero, so
each decoded box is its cell); a cell's class-0 score is its redness, class-1 its blueness,
from the cell's mean colour. TensorFlow's converter fuses the `experimental_implements`
function into the custom op, as the TF object detection API's TFLite export does, so what
the device parses is what such a detector gives it.
"""
from __future__ import annotations

import numpy as np
import pytest

from shelfsight.edge.objects import Box, DetectorOptions, DetectorProposer
from shelfsight.edge.objects.detector_metadata import read_detector_metadata
from shelfsight.errors import ModelError

GRID, SIZE = 4, 64
POSTPROCESS = {"max_detections": ("i", 10), "max_classes_per_detection": ("i", 1), "use_regular_nms": ("b", "false"),
               "nms_score_threshold": ("f", 0.3), "nms_iou_threshold": ("f", 0.5), "y_scale": ("f", 10.0),
               "x_scale": ("f", 10.0), "h_scale": ("f", 5.0), "w_scale": ("f", 5.0), "num_classes": ("i", 2)}


def _detector(path, unit_range: bool = False, metadata: bool = False, other_outputs: bool = False):
    """Write a detector taking 1x64x64x3 float pixels in -1..1 (``unit_range``: 0..1)."""
    import tensorflow as tf

    centres = (np.arange(GRID) + 0.5) / GRID
    cy, cx = np.meshgrid(centres, centres, indexing="ij")
    anchors = np.stack([cy.ravel(), cx.ravel(), np.full(GRID * GRID, 1 / GRID), np.full(GRID * GRID, 1 / GRID)], 1)
    signature = " ".join(['name: "TFLite_Detection_PostProcess"'] + [
        f'attr {{ key: "{key}" value {{ {kind}: {value} }} }}' for key, (kind, value) in POSTPROCESS.items()])

    class Detector(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([1, SIZE, SIZE, 3], tf.float32, name="image")])
        def detect(self, image):
            cells = tf.reshape(tf.nn.avg_pool2d(image, SIZE // GRID, SIZE // GRID, "VALID"), [1, GRID * GRID, 3])
            unit = cells if unit_range else (cells + 1.0) / 2.0
            red, blue = unit[..., 0:1], unit[..., 2:3]
            scores = tf.concat([tf.zeros_like(red), red * (1.0 - blue), blue * (1.0 - red)], -1)  # background first
            if other_outputs:
                return tf.reshape(scores, [1, -1])
            return self.postprocess(tf.zeros([1, GRID * GRID, 4]), scores, tf.constant(anchors, tf.float32))

        @tf.function(experimental_implements=signature)
        def postprocess(self, box_encodings, class_predictions, anchors):
            # a stand-in body: the converter replaces the whole function by the TFLite op
            return tuple(tf.constant(0.0, name=n) for n in ("boxes", "classes", "scores", "num_detections"))

    module = Detector()
    converter = tf.lite.TFLiteConverter.from_concrete_functions([module.detect.get_concrete_function()], module)
    converter.allow_custom_ops = True
    model = converter.convert()
    if metadata:
        from tensorflow_lite_support.metadata.python.metadata_writers import object_detector

        labels = path.with_name("labels.txt")
        labels.write_text("red\nblue\n")
        mean, std = ([0.0], [255.0]) if unit_range else ([127.5], [127.5])
        model = object_detector.MetadataWriter.create_for_inference(model, mean, std, [str(labels)]).populate()
    path.write_bytes(model)
    return path


@pytest.fixture(scope="session")
def detectors(tmp_path_factory):
    """The generated detectors, made once per session."""
    made = {}
    for name, kwargs in {"plain": {}, "metadata": {"unit_range": True, "metadata": True},
                         "classifier": {"other_outputs": True}}.items():
        folder = tmp_path_factory.mktemp(f"detector-{name}")
        made[name] = _detector(folder / f"{name}.tflite", **kwargs)
    return made


def _frame():
    """640x480, black, a red product on cell (row 1, col 2) and a blue one on cell (3, 0)."""
    frame = np.zeros((480, 640, 3), np.uint8)
    frame[120:240, 320:480] = (0, 0, 255)  # BGR red
    frame[360:480, 0:160] = (255, 0, 0)  # BGR blue
    return frame


RED, BLUE = Box(320, 120, 160, 120, 1.0, 0), Box(0, 360, 160, 120, 1.0, 1)


def test_postprocess_outputs_are_parsed_into_frame_boxes(detectors):
    proposer = DetectorProposer(DetectorOptions(model=detectors["plain"]))
    assert proposer.has_nms and [proposer.roles[r].shape for r in ("boxes", "classes", "scores", "count")] == [
        (1, 10, 4), (1, 10), (1, 10), (1,)]
    boxes = proposer.propose(_frame())
    assert sorted(boxes, key=lambda b: b.class_id) == [RED, BLUE]
    assert proposer.propose(np.zeros((480, 640, 3), np.uint8)) == []  # nothing in view: no boxes
    only_blue = DetectorProposer(DetectorOptions(model=detectors["plain"], classes=(1,)))
    assert only_blue.propose(_frame()) == [BLUE]
    capped = DetectorProposer(DetectorOptions(model=detectors["plain"], max_proposals=1))
    assert len(capped.propose(_frame())) == 1 and capped.capped == 1
    proposer.close()


def test_metadata_gives_the_normalisation_and_the_output_roles(detectors):
    metadata = read_detector_metadata(detectors["metadata"])
    assert (metadata.mean, metadata.std) == ((0.0,), (255.0,))
    assert set(metadata.outputs) == {"boxes", "classes", "scores", "count"}
    assert read_detector_metadata(detectors["plain"]) is None
    proposer = DetectorProposer(DetectorOptions(model=detectors["metadata"]))
    np.testing.assert_array_equal(proposer.std, [255.0])
    # with 0..1 inputs, as the metadata says, the scores are exactly 1.0; with -1..1 they would be 2.0
    assert sorted(proposer.propose(_frame()), key=lambda b: b.class_id) == [RED, BLUE]
    wrong = DetectorProposer(DetectorOptions(model=detectors["metadata"], mean=127.5, std=127.5))
    assert {b.score for b in wrong.propose(_frame())} == {2.0}


def test_a_model_with_other_outputs_is_refused_naming_them(detectors):
    with pytest.raises(ModelError, match=r"classifier.tflite: outputs output_0 1x48; expected "
                                         r"TFLite_Detection_PostProcess outputs \(boxes 1xNx4, classes 1xN"):
        DetectorProposer(DetectorOptions(model=detectors["classifier"]))


def test_run_refuses_a_detector_with_other_outputs_in_one_line(detectors, int8_bundle, tmp_path, capsys):
    from shelfsight.app.cli import main

    with pytest.raises(SystemExit) as exit_:
        main(["run", str(int8_bundle), "--source", str(tmp_path), "--objects", f"detector:{detectors['classifier']}"])
    assert exit_.value.code == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error")]
    assert len(err) == 1 and "outputs output_0 1x48; expected TFLite_Detection_PostProcess" in err[0], err

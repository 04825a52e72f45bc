"""The per-object benchmark (tools/bench/objects.py): its scoring on hand-made events, and a
tiny run end to end on the hand-built bundle (seconds, no TensorFlow)."""
from __future__ import annotations

import json
from collections import Counter

from click.testing import CliRunner

from shelfsight.tools.bench import objects as bench
from tiny_bundle import make_tiny_bundle


def _truth(items, frames):
    return {"size": [320, 240], "items": items, "frames": frames}


def _left(track_id, frame, box, label="Kiwi", crossings=1, barcode=None, top1=None):
    return {"kind": "object_left", "track_id": track_id, "best_frame": frame, "best_box": box, "label": label,
            "predictions": [{"label": top1 or label, "score": 0.5}],
            "crossings": [{"direction": "forward"}] * crossings, "barcode": barcode}


def test_boxes_are_paired_one_to_one_by_iou():
    truth = [[0, 0, 10, 10], [20, 0, 10, 10]]
    found = [[21, 0, 10, 10], [1, 0, 10, 10], [0, 0, 10, 10], [100, 100, 5, 5]]
    assert bench.iou([0, 0, 10, 10], [5, 0, 10, 10]) == 50 / 150
    assert bench.matched_pairs(truth, found) == [(0, 2), (1, 0)]  # the exact box wins, each used once
    assert bench.matched_pairs(truth, [[5, 0, 10, 10]]) == []  # IoU 1/3 < 0.5


def test_tracks_are_scored_against_the_items_they_follow():
    items = [{"label": "Kiwi", "code": "1", "switched": False}, {"label": "Lemon", "code": "2", "switched": True},
             {"label": "Lime", "code": "3", "switched": False}]
    frames = [[{"item": 0, "box": [0, 0, 10, 10]}, {"item": 1, "box": [50, 0, 10, 10]}],
              [{"item": 2, "box": [0, 0, 10, 10]}]]
    events = [_left(1, 0, [0, 0, 10, 10], "Kiwi", 1, {"value": "1", "agreement": "agree"}),
              _left(2, 0, [51, 0, 10, 10], "Kiwi", 2, {"value": "2", "agreement": "mismatch"}),
              _left(3, 1, [100, 100, 10, 10], "Lime", 1),  # follows no item
              _left(4, 1, [0, 0, 10, 10], None, 0, top1="Lime"),  # "unknown", its top class right
              {"kind": "object_confirmed", "track_id": 1}]
    truth = _truth(items, frames)
    assert bench.items_of_tracks(events, truth) == {1: 0, 2: 1, 3: None, 4: 2}
    assert bench.label_accuracy(events, truth) == {"items": 3, "tracked": 3, "right": 1, "accuracy": 1 / 3,
                                                   "right_top1": 2, "accuracy_top1": 2 / 3, "unknown": 1,
                                                   "tracks_without_item": 1}
    assert bench.count_error(events, truth) == {"items": 3, "counted": 4, "missed": 1, "double_counted": 2}
    assert bench.per_sku_error(Counter({("Kiwi", "forward"): 3, ("Lime", "forward"): 1}), truth) == 3
    assert bench.barcode_quality(events, truth) == {"items": 3, "decoded": 2, "wrong_value": 0, "decode_rate": 2 / 3,
                                                    "switched": 1, "switches_flagged": 1, "false_alerts": 0}


def test_a_tiny_run_writes_the_table_and_its_json(tmp_path):
    bundle = make_tiny_bundle(tmp_path / "bundle")
    out = tmp_path / "bench"
    result = CliRunner().invoke(bench.main, [str(bundle), "--out", str(out), "--threads", "1", "--counter-items", "2",
                                             "--conveyor-items", "4", "--barcode-items", "2", "--val-items", "3",
                                             "--fps-frames", "20"])
    assert result.exit_code == 0, result.output
    report = json.loads((out / "objects.json").read_text())
    assert report["proposals"] == {"truth_boxes": 220, "proposals": 212, "matched": 212, "recall": 212 / 220,
                                   "precision": 1.0, "truth_boxes_under_min_area": 4, "frames": 157}
    assert {k: report["conveyor_count"][k] for k in ("items", "missed", "double_counted")} == {
        "items": 4, "missed": 0, "double_counted": 0}
    assert {k: report["val_labels"][k] for k in ("items", "tracked", "size")} == {"items": 3, "tracked": 3, "size": 224}
    assert report["val_labels_uncompressed"]["items"] == 3
    assert report["barcodes"]["decoded"] == 2 and report["barcodes"]["symbologies"] == {"QR": 1, "EAN_8": 1}
    assert report["fps"]["frames"] == 10 and report["threads"] == 1 and "cpu_model" in report["device"]
    assert sorted(p.name for p in (out / "videos").iterdir()) == [
        f"{name}.avi{suffix}" for name in ("barcodes", "conveyor", "counter", "labels", "steady")
        for suffix in ("", ".json")]
    table = (out / "objects.md").read_text()
    assert table.startswith("| metric | target | measured | |\n") and table.count("\n") == 10
    assert "| conveyor count error (4 items) | 0 missed, 0 double-counted | 0 missed, 0 double-counted" in table
    assert result.output.strip() == table.strip()


def test_a_bundle_that_is_not_there_is_one_line_and_exit_2(tmp_path):
    result = CliRunner().invoke(bench.main, [str(tmp_path / "nope")])
    assert result.exit_code == 2 and "does not exist" in result.output

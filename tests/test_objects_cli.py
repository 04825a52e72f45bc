"""`shelfsight run --objects` and `shelfsight calibrate` on a generated video, with a real bundle."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from shelfsight.app.cli import main
from shelfsight.tools import make_objects_video as mv


def shelfsight(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "shelfsight", *args], capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def conveyor(tmp_path_factory):
    """Three products crossing a 320x240 conveyor, after 30 frames of the empty scene."""
    items = mv.conveyor_scene(mv.catalog_products(), 3, 320, 240, seed=1)
    return mv.write_video(items, tmp_path_factory.mktemp("video") / "conveyor.avi", 320, 240), items


def test_calibrate_then_run_with_objects_gives_one_track_per_item_counted_once(int8_bundle, conveyor, tmp_path):
    video, items = conveyor
    scene = tmp_path / "scene.npz"
    out = shelfsight("calibrate", str(video), "--out", str(scene), "--frames", "25")
    assert out.returncode == 0, out.stderr
    assert f"{scene}: empty scene from 25 frames of 320x240" in out.stderr
    events_file = tmp_path / "events.jsonl"
    out = shelfsight("run", str(int8_bundle), "--source", str(video), "--objects", "background", "--scene", str(scene),
                     "--count-line", "160,0,160,240", "--sink", f"jsonl:{events_file}", "--no-quality-gate",
                     "--summary", str(tmp_path / "summary.json"))
    assert out.returncode == 0, out.stderr
    events = [json.loads(line) for line in events_file.read_text().splitlines()]
    assert sorted((e["kind"], e["track_id"]) for e in events) == sorted(
        (k, i) for i in (1, 2, 3) for k in ("object_confirmed", "object_left"))
    left = sorted((e for e in events if e["kind"] == "object_left"), key=lambda e: e["track_id"])
    assert [[c["direction"] for c in e["crossings"]] for e in left] == [["forward"]] * 3
    assert all(e["box"][1] == (240 - 64) // 2 for e in left)  # whole-frame pixels, the conveyor's row
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["events"] == 6 and summary["frames"] == mv.length(items, 320) + 30


@pytest.mark.parametrize("args, expected", [
    (["--objects", "yolo"], "objects backend 'yolo' unknown, expected one of: background, detector:PATH.tflite"),
    (["--objects", "detector:nowhere.tflite"], "detector nowhere.tflite does not exist"),
    (["--objects", "background", "--count-line", "1,2,3"], "count line must be x1,y1,x2,y2 in pixels, got '1,2,3'"),
    (["--objects", "background", "--count-line", "5,5,5,5"], "count line needs two different points"),
    (["--count-line", "0,0,10,10"], "--count-line needs --objects"),
    (["--objects", "background", "--scene", "missing.npz"], "scene file missing.npz does not exist"),
])
def test_bad_objects_values_are_one_line(args, expected, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["run", str(tmp_path), "--source", str(tmp_path), *args])
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err == f"error: {expected}" or (err.startswith("error: ") and expected in err and "\n" not in err), err


def test_calibrate_refuses_a_source_without_frames_and_a_bad_scene(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    with pytest.raises(SystemExit):
        main(["calibrate", str(tmp_path / "empty"), "--out", str(tmp_path / "s.npz")])
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err, err
    assert not (tmp_path / "s.npz").exists()

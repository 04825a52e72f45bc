"""Frame sources: backend choice from the spec string, files, folders, videos, arrays."""
from __future__ import annotations

import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge_fakes import ColourRecognizer, colour_frame, label_of
from shelfsight.edge.pipeline.sources import (ArraySource, Frame, FrameSource, ImageFileSource, ImageFolderSource,
                                     Picamera2Source, VideoCaptureSource, open_source, opencv_has_gstreamer)
from shelfsight.errors import ConfigError, RuntimeUnavailableError, SourceError

SAMPLE = Path(__file__).resolve().parents[1] / "assets" / "grocery-sample"


def write_video(path: Path, labels: list, fourcc: str = "mp4v", fps: float = 10.0) -> Path:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), fps, (320, 240))
    assert writer.isOpened(), f"OpenCV cannot write {fourcc} video"
    for label in labels:
        writer.write(colour_frame(label))
    writer.release()
    return path


def read_all(source: FrameSource, limit: int = 1000) -> list[Frame]:
    frames = []
    with source:
        while len(frames) < limit and (frame := source.read()) is not None:
            frames.append(frame)
    return frames


def test_open_source_chooses_the_backend_from_the_spec(tmp_path):
    folder = tmp_path / "imgs"
    folder.mkdir()
    cv2.imwrite(str(folder / "a.png"), colour_frame("apple"))
    video = write_video(tmp_path / "clip.mp4", ["apple"])

    assert type(open_source(str(folder))) is ImageFolderSource
    assert type(open_source(str(folder / "a.png"))) is ImageFileSource
    made = open_source(str(video))
    assert type(made) is VideoCaptureSource and not made.live
    camera = open_source("0")
    assert type(camera) is VideoCaptureSource and camera.live and camera.name == "camera:0"
    assert open_source("/dev/video2").live
    stream = open_source("rtsp://user:secret@10.0.0.5:554/stream1")
    assert stream.live and stream.name == "rtsp://***@10.0.0.5:554/stream1"
    assert open_source("http://127.0.0.1:8080/video.mjpg").live
    pipeline = open_source("v4l2src ! videoconvert ! appsink")
    assert pipeline.live and pipeline.name == "v4l2src ! videoconvert ! appsink"
    assert type(open_source("picamera2")) is Picamera2Source
    assert open_source("picamera2:1").name == "picamera2:1"


def test_open_source_refuses_unknown_specs_and_loop_on_live_sources(tmp_path):
    with pytest.raises(SourceError, match=r"'nope\.mp4' is not an existing file or folder"):
        open_source(str(tmp_path / "nope.mp4").replace(str(tmp_path) + "/", ""))
    with pytest.raises(SourceError, match="source is empty"):
        open_source("  ")
    with pytest.raises(ConfigError, match="--loop applies to files and folders; source 0 is a live"):
        open_source("0", loop=True)
    (tmp_path / "empty").mkdir()
    with pytest.raises(SourceError, match="no image files"):
        open_source(str(tmp_path / "empty"))


@pytest.mark.skipif(opencv_has_gstreamer(), reason="this OpenCV has GStreamer")
def test_gstreamer_pipeline_without_gstreamer_says_so():
    source = open_source("videotestsrc ! videoconvert ! appsink")
    with pytest.raises(RuntimeUnavailableError, match="GStreamer pipelines need OpenCV built with GStreamer"):
        source.open()


def test_picamera2_without_the_package_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "picamera2", None)
    with pytest.raises(RuntimeUnavailableError, match="picamera2 is not installed"):
        open_source("picamera2:0").open()


def test_missing_video_file_cannot_be_opened(tmp_path):
    bogus = tmp_path / "clip.mp4"
    bogus.write_bytes(b"not a video at all" * 10)
    with pytest.raises(SourceError, match="OpenCV could not open it"):
        open_source(str(bogus)).open()


@pytest.mark.parametrize("fourcc,suffix", [("mp4v", ".mp4"), ("MJPG", ".avi")])
def test_video_file_frames_give_the_expected_labels(tmp_path, fourcc, suffix):
    labels = ["apple"] * 3 + ["lime"] * 3 + [None] * 2 + ["plum"] * 3
    video = write_video(tmp_path / f"clip{suffix}", labels, fourcc=fourcc)
    frames = read_all(open_source(str(video)))

    recognizer = ColourRecognizer()
    assert [label_of(recognizer, f) for f in frames] == labels
    assert [f.index for f in frames] == list(range(len(labels)))
    assert all(f.image.shape == (240, 320, 3) and f.image.dtype == np.uint8 for f in frames)
    assert {f.source for f in frames} == {str(video)}


def test_video_file_loops_and_keeps_counting(tmp_path):
    video = write_video(tmp_path / "clip.mp4", ["apple", "lime", "plum"])
    frames = read_all(open_source(str(video), loop=True), limit=8)
    recognizer = ColourRecognizer()
    assert [label_of(recognizer, f) for f in frames] == ["apple", "lime", "plum"] * 2 + ["apple", "lime"]
    assert [f.index for f in frames] == list(range(8))


def test_image_folder_is_sorted_and_skips_corrupt_files(tmp_path):
    folder = tmp_path / "shots"
    folder.mkdir()
    cv2.imwrite(str(folder / "b.jpg"), colour_frame("lime"))
    cv2.imwrite(str(folder / "a.png"), colour_frame("apple"))
    good = cv2.imencode(".jpg", colour_frame("plum"))[1].tobytes()
    (folder / "c.jpg").write_bytes(good[: len(good) // 2])  # truncated
    (folder / "d.jpg").write_bytes(good)
    (folder / "notes.txt").write_text("not an image")

    source = open_source(str(folder))
    frames = read_all(source)
    recognizer = ColourRecognizer()
    assert [label_of(recognizer, f) for f in frames] == ["apple", "lime", "plum"]
    assert [Path(f.source).name for f in frames] == ["a.png", "b.jpg", "d.jpg"]
    assert source.corrupt == 1


def test_image_folder_loops_and_a_folder_of_only_corrupt_files_ends(tmp_path):
    folder = tmp_path / "shots"
    folder.mkdir()
    cv2.imwrite(str(folder / "a.png"), colour_frame("apple"))
    cv2.imwrite(str(folder / "b.png"), colour_frame("lime"))
    frames = read_all(open_source(str(folder), loop=True), limit=5)
    assert [Path(f.source).name for f in frames] == ["a.png", "b.png", "a.png", "b.png", "a.png"]

    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "x.jpg").write_bytes(b"\xff\xd8" + b"\x00" * 100)
    source = open_source(str(broken), loop=True)
    assert read_all(source) == []
    assert source.corrupt == 1


def test_single_image_file_and_sample_asset(tmp_path):
    sample = sorted((SAMPLE / "train").rglob("*.jpg"))[0]
    frames = read_all(open_source(str(sample)))
    assert len(frames) == 1 and frames[0].source == str(sample)
    assert frames[0].image.shape == cv2.imread(str(sample)).shape
    assert len(read_all(open_source(str(sample), loop=True), limit=3)) == 3


def test_array_source_and_open_close_rules():
    source = ArraySource([colour_frame("apple"), colour_frame("lime")], name="test")
    with pytest.raises(SourceError, match="source test is not open"):
        source.read()
    with source:
        assert source.is_open
        assert source.read().index == 0
        source.open()  # idempotent: does not rewind
        assert source.read().index == 1
        assert source.read() is None
    assert not source.is_open
    source.close()  # twice is fine
    with source:  # reopened: starts again, numbering continues
        assert source.read().index == 2
    with pytest.raises(SourceError, match="no images given"):
        ArraySource([])


def test_frame_refuses_non_bgr_uint8_images():
    with pytest.raises(SourceError, match=r"expected a BGR uint8 HxWx3 array, got float32 \(4, 4, 3\)"):
        Frame(image=np.zeros((4, 4, 3), np.float32), index=0, timestamp=0.0, source="x")
    with pytest.raises(SourceError, match=r"got uint8 \(4, 4\)"):
        Frame(image=np.zeros((4, 4), np.uint8), index=0, timestamp=0.0, source="x")


def test_every_source_satisfies_the_protocol(tmp_path):
    cv2.imwrite(str(tmp_path / "a.png"), colour_frame("apple"))
    for source in (ArraySource([colour_frame("apple")]), open_source(str(tmp_path)),
                   open_source(str(tmp_path / "a.png")), open_source("0"), Picamera2Source()):
        assert isinstance(source, FrameSource)

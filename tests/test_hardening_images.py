"""Issue 14, medium 3 and 4: images over a pixel limit are refused before decoding (counted as
skipped wherever unreadable images are), and `search` on an unreadable image is one line."""
from __future__ import annotations

import struct
import time
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest

from shelfsight.edge.pipeline.sources import open_source
from shelfsight.errors import ConfigError
from shelfsight.images import DEFAULT_MAX_PIXELS, ImageTooLarge, UnreadableImage, read_image

from cli_run import run_cli

SAMPLE = Path(__file__).resolve().parents[1] / "assets" / "grocery-sample" / "val" / "Fruit" / "Banana"


def bomb_png(path: Path, width: int = 20000, height: int = 20000) -> Path:
    """A small PNG whose header declares width x height (its pixel data is 8x8)."""
    ok, data = cv2.imencode(".png", np.zeros((8, 8, 3), np.uint8))
    data = bytearray(data.tobytes())
    ihdr = bytes(data[12:16]) + struct.pack(">II", width, height) + bytes(data[24:29])
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(ihdr) & 0xFFFFFFFF)
    path.write_bytes(bytes(data))
    return path


def test_pixel_bomb_is_refused_before_decoding(tmp_path):
    bomb = bomb_png(tmp_path / "bomb.png")
    assert bomb.stat().st_size < 200
    t0 = time.perf_counter()
    with pytest.raises(ImageTooLarge, match=r"bomb\.png: over 179 MP declared, which is over the 40 MP limit "
                                            r"\(\$SHELFSIGHT_MAX_IMAGE_PIXELS\)$"):
        read_image(bomb)
    with pytest.raises(ImageTooLarge, match=r"bomb\.png: 8000x6000 pixels is over the 40 MP limit"):
        read_image(bomb_png(bomb, 8000, 6000))
    assert time.perf_counter() - t0 < 0.5 and issubclass(ImageTooLarge, UnreadableImage)
    assert DEFAULT_MAX_PIXELS == 40_000_000


def test_pixel_limit_is_configurable(tmp_path, monkeypatch):
    photo = SAMPLE / "Banana_001.jpg"
    h, w = read_image(photo).shape[:2]
    with pytest.raises(ImageTooLarge, match=rf"{w}x{h} pixels is over the 0.001 MP limit"):
        read_image(photo, max_pixels=1000)
    monkeypatch.setenv("SHELFSIGHT_MAX_IMAGE_PIXELS", "1000")
    with pytest.raises(ImageTooLarge):
        read_image(photo)
    monkeypatch.setenv("SHELFSIGHT_MAX_IMAGE_PIXELS", str(w * h))
    assert read_image(photo).shape == (h, w, 3)
    monkeypatch.setenv("SHELFSIGHT_MAX_IMAGE_PIXELS", "lots")
    with pytest.raises(ConfigError, match=r"SHELFSIGHT_MAX_IMAGE_PIXELS='lots': expected a positive whole number"):
        read_image(photo)


def test_run_source_dir_counts_the_bomb_as_skipped(tmp_path):
    folder = tmp_path / "frames"
    folder.mkdir()
    (folder / "a.jpg").write_bytes((SAMPLE / "Banana_001.jpg").read_bytes())
    bomb_png(folder / "b.png")
    source = open_source(str(folder))
    source.open()
    frames = []
    while (frame := source.read()) is not None:
        frames.append(frame)
    source.close()
    assert [Path(f.source).name for f in frames] == ["a.jpg"] and source.corrupt == 1


@pytest.mark.parametrize("make, message", [
    (lambda p: bomb_png(p / "bomb.png"), r"bomb\.png: over 179 MP declared, which is over the 40 MP limit"),
    (lambda p: (p / "junk.jpg").write_bytes(b"\xff\xd8 not really a jpeg at all") and p / "junk.jpg",
     r"junk\.jpg: truncated JPEG"),
    (lambda p: p / "missing.jpg", r"missing\.jpg: No such file or directory"),
])
def test_search_on_an_unreadable_image_is_one_line(tmp_path, capsys, make, message):
    image = make(tmp_path)
    code, out, err = run_cli(["search", tmp_path / "no-bundle", image], capsys)
    assert code != 0 and out == "" and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert __import__("re").search(message, err), err

"""Quality gate (blur / exposure) and region-of-interest cropping."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from edge_fakes import colour_frame
from shelfsight.edge.pipeline.quality import Quality, QualityOptions, Roi, check_quality, crop, measure
from shelfsight.errors import ConfigError

SAMPLE = Path(__file__).resolve().parents[1] / "assets" / "grocery-sample"


def test_sharp_frame_passes_and_blurred_black_and_white_frames_are_rejected():
    options = QualityOptions()
    sharp = colour_frame("apple")
    verdict = check_quality(sharp, options)
    assert verdict.ok and verdict.reason is None and verdict.sharpness > 100

    blurred = cv2.GaussianBlur(sharp, (0, 0), 8)
    verdict = check_quality(blurred, options)
    assert (verdict.ok, verdict.reason) == (False, "blurry")
    assert verdict.sharpness < options.min_sharpness

    assert check_quality(np.zeros((240, 320, 3), np.uint8), options) == Quality(
        ok=False, reason="dark", sharpness=0.0, brightness=0.0)
    assert check_quality(np.full((240, 320, 3), 255, np.uint8), options).reason == "bright"


def test_real_sample_images_pass_the_default_gate():
    paths = sorted((SAMPLE / "train").rglob("*.jpg"))[:12]
    assert len(paths) == 12
    assert all(check_quality(cv2.imread(str(p)), QualityOptions()).ok for p in paths)


def test_measurement_is_independent_of_resolution_above_the_analysis_size():
    small = colour_frame("lime", size=(240, 320))
    large = cv2.resize(small, (1280, 960), interpolation=cv2.INTER_NEAREST)
    s_small, b_small = measure(small)
    s_large, b_large = measure(large)
    assert b_large == pytest.approx(b_small, abs=1.0)
    assert s_large == pytest.approx(s_small, rel=0.25)


def test_quality_options_validation_and_off():
    with pytest.raises(ConfigError, match="min_sharpness must be >= 0, got -1"):
        QualityOptions(min_sharpness=-1)
    with pytest.raises(ConfigError, match="brightness limits must lie in 0..255, got min 0, max 300"):
        QualityOptions(min_brightness=0, max_brightness=300)
    with pytest.raises(ConfigError, match="min_brightness 200 is above max_brightness 100"):
        QualityOptions(min_brightness=200, max_brightness=100)
    off = QualityOptions.off()
    assert not off.enabled
    assert check_quality(np.zeros((8, 8, 3), np.uint8), off).ok


def test_roi_parse_pixels_and_fractions():
    assert Roi.parse("10, 20, 100, 50") == Roi(10, 20, 100, 50, fractional=False)
    assert Roi.parse("0.25,0.25,0.5,.5") == Roi(0.25, 0.25, 0.5, 0.5, fractional=True)
    assert str(Roi.parse("0.25,0.25,0.5,0.5")) == "0.25,0.25,0.5,0.5"
    with pytest.raises(ConfigError, match=r"roi must be four numbers x,y,w,h .* got '1,2,3'"):
        Roi.parse("1,2,3")
    with pytest.raises(ConfigError, match=r"got '-1,0,5,5'"):
        Roi.parse("-1,0,5,5")
    with pytest.raises(ConfigError, match=r"fractional roi 0.5,0,0.75,1 must have .* x \+ w <= 1"):
        Roi.parse("0.5,0,0.75,1.0")
    with pytest.raises(ConfigError, match="pixel roi 0,0,0,5 must be whole numbers"):
        Roi(0, 0, 0, 5)


def test_crop_exact_region_and_refuses_a_region_outside_the_frame():
    image = np.arange(48 * 64 * 3, dtype=np.uint32).astype(np.uint8).reshape(48, 64, 3)
    assert np.array_equal(crop(image, Roi(8, 4, 16, 10)), image[4:14, 8:24])
    assert np.array_equal(crop(image, Roi.parse("0.5,0.25,0.5,0.5")), image[12:36, 32:64])
    assert crop(image, None) is image
    assert Roi.parse("0.0,0.0,0.001,0.001").to_pixels(64, 48) == (0, 0, 1, 1)
    with pytest.raises(ConfigError, match=r"roi 60,0,10,10 \(x,y,w,h pixels\) reaches outside the 64x48 frame"):
        crop(image, Roi(60, 0, 10, 10))

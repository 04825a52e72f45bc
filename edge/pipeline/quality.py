"""Frame quality gate (blur, exposure) and region-of-interest cropping.

Sharpness is the variance of the Laplacian of the grey image, measured at a fixed working
size (longer side `QualityOptions.analysis_size` pixels) so that one threshold means the
same for a 640x480 webcam and a 4K camera. Brightness is the mean grey level, 0..255.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

import cv2
import numpy as np

from shelfsight.errors import ConfigError

DARK, BRIGHT, BLURRY = "dark", "bright", "blurry"


@dataclass(frozen=True)
class QualityOptions:
    """Limits a frame must meet to be recognised.

    Attributes:
        min_sharpness: minimum variance of the Laplacian (0 disables the blur check).
        min_brightness: minimum mean grey level, 0..255 (0 disables).
        max_brightness: maximum mean grey level, 0..255 (255 disables).
        analysis_size: longer side, in pixels, the frame is shrunk to before measuring.
    """

    min_sharpness: float = 15.0
    min_brightness: float = 20.0
    max_brightness: float = 240.0
    analysis_size: int = 320

    def __post_init__(self) -> None:
        if not self.min_sharpness >= 0:
            raise ConfigError(f"min_sharpness must be >= 0, got {self.min_sharpness}")
        if not 0 <= self.min_brightness <= 255 or not 0 <= self.max_brightness <= 255:
            raise ConfigError(
                f"brightness limits must lie in 0..255, got min {self.min_brightness}, max {self.max_brightness}")
        if self.min_brightness > self.max_brightness:
            raise ConfigError(
                f"min_brightness {self.min_brightness} is above max_brightness {self.max_brightness}")
        if self.analysis_size < 32:
            raise ConfigError(f"analysis_size must be >= 32 pixels, got {self.analysis_size}")

    @classmethod
    def off(cls) -> "QualityOptions":
        """Options that accept every frame."""
        return cls(min_sharpness=0.0, min_brightness=0.0, max_brightness=255.0)

    @property
    def enabled(self) -> bool:
        return self.min_sharpness > 0 or self.min_brightness > 0 or self.max_brightness < 255


@dataclass(frozen=True)
class Quality:
    """The gate's verdict: ok, or the reason ("dark", "bright", "blurry"), with its measurements."""

    ok: bool
    reason: str | None
    sharpness: float
    brightness: float


def measure(image_bgr: np.ndarray, analysis_size: int = 320) -> tuple[float, float]:
    """Return (sharpness, brightness) of a BGR or grey uint8 image."""
    if image_bgr.ndim not in (2, 3) or image_bgr.size == 0:
        raise ValueError(f"expected a non-empty HxW or HxWx3 image, got shape {image_bgr.shape}")
    grey = image_bgr if image_bgr.ndim == 2 else cv2.cvtColor(image_bgr, cv2.COLOR_BGR2GRAY)
    height, width = grey.shape
    scale = analysis_size / max(height, width)
    if scale < 1:
        size = (max(1, round(width * scale)), max(1, round(height * scale)))
        grey = cv2.resize(grey, size, interpolation=cv2.INTER_AREA)
    brightness = float(grey.mean())
    sharpness = float(cv2.Laplacian(grey, cv2.CV_64F).var())
    return sharpness, brightness


def check_quality(image_bgr: np.ndarray, options: QualityOptions) -> Quality:
    """Measure a frame and judge it against `options` (exposure first, then blur)."""
    if not options.enabled:
        return Quality(ok=True, reason=None, sharpness=float("nan"), brightness=float("nan"))
    sharpness, brightness = measure(image_bgr, options.analysis_size)
    reason = None
    if brightness < options.min_brightness:
        reason = DARK
    elif brightness > options.max_brightness:
        reason = BRIGHT
    elif sharpness < options.min_sharpness:
        reason = BLURRY
    return Quality(ok=reason is None, reason=reason, sharpness=sharpness, brightness=brightness)


@dataclass(frozen=True)
class Roi:
    """A region of interest: x, y, width, height, in pixels or as fractions of the frame.

    Pixel values are whole numbers >= 0 (width, height >= 1); fractional values lie in 0..1
    with x + w <= 1 and y + h <= 1.
    """

    x: float
    y: float
    w: float
    h: float
    fractional: bool = False

    def __post_init__(self) -> None:
        values = (self.x, self.y, self.w, self.h)
        if self.fractional:
            if not all(0 <= v <= 1 for v in values) or self.w <= 0 or self.h <= 0 \
                    or self.x + self.w > 1 + 1e-9 or self.y + self.h > 1 + 1e-9:
                raise ConfigError(
                    f"fractional roi {self} must have 0 <= x, y and 0 < w, h with x + w <= 1 and y + h <= 1")
        else:
            if not all(float(v).is_integer() for v in values) or min(values) < 0 or self.w < 1 or self.h < 1:
                raise ConfigError(f"pixel roi {self} must be whole numbers with x, y >= 0 and w, h >= 1")

    def __str__(self) -> str:
        fmt = "{:g}" if self.fractional else "{:.0f}"
        return ",".join(fmt.format(v) for v in (self.x, self.y, self.w, self.h))

    @classmethod
    def parse(cls, text: str) -> "Roi":
        """Parse "x,y,w,h": all whole numbers -> pixels; any decimal point -> fractions of the frame.

        Raises:
            ConfigError: not four numbers, or values out of range.
        """
        parts = [p.strip() for p in text.split(",")]
        if len(parts) != 4 or not all(re.fullmatch(r"\d+(\.\d*)?|\.\d+", p) for p in parts):
            raise ConfigError(f"roi must be four numbers x,y,w,h (pixels, or fractions like 0.25), got {text!r}")
        fractional = any("." in p for p in parts)
        values = [float(p) for p in parts]
        return cls(*values, fractional=fractional)

    def to_pixels(self, width: int, height: int) -> tuple[int, int, int, int]:
        """The region as whole pixels (x, y, w, h) inside a width x height frame.

        Raises:
            ConfigError: a pixel region reaches outside the frame.
        """
        if self.fractional:
            x0, y0 = round(self.x * width), round(self.y * height)
            x1, y1 = round((self.x + self.w) * width), round((self.y + self.h) * height)
            x1, y1 = min(width, max(x1, x0 + 1)), min(height, max(y1, y0 + 1))
            x0, y0 = min(x0, x1 - 1), min(y0, y1 - 1)
            return x0, y0, x1 - x0, y1 - y0
        x, y, w, h = int(self.x), int(self.y), int(self.w), int(self.h)
        if x + w > width or y + h > height:
            raise ConfigError(f"roi {self} (x,y,w,h pixels) reaches outside the {width}x{height} frame")
        return x, y, w, h


def crop(image: np.ndarray, roi: Roi | None) -> np.ndarray:
    """The part of `image` inside `roi` (a view, not a copy); the whole image when roi is None.

    Raises:
        ConfigError: a pixel roi reaches outside the image.
    """
    if roi is None:
        return image
    x, y, w, h = roi.to_pixels(image.shape[1], image.shape[0])
    return image[y:y + h, x:x + w]

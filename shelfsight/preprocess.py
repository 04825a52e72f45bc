"""The preprocessing contract shared by training, evaluation and the device.

A model takes RGB pixels in [0, 255]; its normalisation ((x - mean) / std) is a layer
inside the model, so a uint8-input int8 model is fed camera pixels as they are. What is
left outside the model is geometric and identical everywhere: convert BGR (OpenCV) to
RGB, resize the shorter side to ``size / crop_fraction`` and take the centre crop.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import cv2
import numpy as np

from .errors import ConfigError

MIN_SIZE, MAX_SIZE = 32, 1024


@dataclass(frozen=True)
class PreprocessSpec:
    """How a frame becomes a model input.

    Attributes:
        size: side of the square model input in pixels.
        crop_fraction: share of the shorter side kept by the centre crop (1.0 keeps all).
        mean, std: per-channel normalisation in pixel units, applied inside the model.
        interpolation: OpenCV interpolation name used for resizing.
    """

    size: int = 224
    crop_fraction: float = 1.0
    mean: tuple[float, float, float] = (127.0, 127.0, 127.0)
    std: tuple[float, float, float] = (128.0, 128.0, 128.0)
    interpolation: str = "area"

    def __post_init__(self) -> None:
        if not MIN_SIZE <= int(self.size) <= MAX_SIZE:
            raise ConfigError(f"image size {self.size} is out of range {MIN_SIZE}..{MAX_SIZE}")
        if not 0.2 <= self.crop_fraction <= 1.0:
            raise ConfigError(f"crop_fraction {self.crop_fraction} is out of range 0.2..1.0")
        if len(self.mean) != 3 or len(self.std) != 3 or min(self.std) <= 0:
            raise ConfigError(f"mean/std need 3 values and std > 0, got {self.mean} / {self.std}")
        if self.interpolation not in _INTERPOLATION:
            raise ConfigError(
                f"interpolation {self.interpolation!r} unknown, expected one of {sorted(_INTERPOLATION)}")
        object.__setattr__(self, "mean", tuple(float(v) for v in self.mean))
        object.__setattr__(self, "std", tuple(float(v) for v in self.std))

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.update(color="RGB", range=[0, 255], layout="NHWC",
                 resize="shorter_side_then_center_crop", normalization_in_model=True)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "PreprocessSpec":
        return cls(size=int(d["size"]), crop_fraction=float(d["crop_fraction"]),
                   mean=tuple(d["mean"]), std=tuple(d["std"]),
                   interpolation=d.get("interpolation", "area"))


_INTERPOLATION = {"area": cv2.INTER_AREA, "linear": cv2.INTER_LINEAR, "cubic": cv2.INTER_CUBIC}


def center_crop_resize(image: np.ndarray, size: int, crop_fraction: float = 1.0,
                       interpolation: str = "area") -> np.ndarray:
    """Centre-crop the largest square (times ``crop_fraction``) and resize it to size x size."""
    h, w = image.shape[:2]
    side = max(1, int(round(min(h, w) * crop_fraction)))
    top, left = (h - side) // 2, (w - side) // 2
    crop = image[top:top + side, left:left + side]
    if side == size:
        return np.ascontiguousarray(crop)
    interp = _INTERPOLATION[interpolation] if side > size else cv2.INTER_LINEAR
    return cv2.resize(crop, (size, size), interpolation=interp)


def prepare(image_bgr: np.ndarray, spec: PreprocessSpec) -> np.ndarray:
    """Turn one BGR uint8 frame (as OpenCV gives it) into the model's RGB uint8 input.

    Args:
        image_bgr: H x W x 3 uint8 (or H x W greyscale).
    Returns:
        spec.size x spec.size x 3 uint8 RGB.
    """
    if image_bgr.ndim == 2:
        image_bgr = cv2.cvtColor(image_bgr, cv2.COLOR_GRAY2BGR)
    elif image_bgr.shape[2] == 4:
        image_bgr = cv2.cvtColor(image_bgr, cv2.COLOR_BGRA2BGR)
    rgb = cv2.cvtColor(image_bgr, cv2.COLOR_BGR2RGB)
    return center_crop_resize(rgb, spec.size, spec.crop_fraction, spec.interpolation)


def normalize(pixels: np.ndarray, spec: PreprocessSpec) -> np.ndarray:
    """What the model's normalisation layer computes, for code outside the model."""
    return (pixels.astype(np.float32) - np.float32(spec.mean)) / np.float32(spec.std)

"""Options for `shelfsight import-onnx`: the input normalisation an ONNX model expects, and
how its outputs become the bundle's "scores" and "embedding".

Normalisation is given the way the model's authors state it. PyTorch models (torchvision,
timm) state it in 0..1 units: the model takes ``(pixel / 255 - mean) / std``. Others state
it in pixel units: ``(pixel - mean) / std``. Either way it is stored in pixel units (the
unit of `PreprocessSpec`) and folded into the converted model, so the device still feeds
raw RGB pixels 0..255.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from shelfsight.errors import ConfigError

from ..options import QuantizationConfig

UNITS = ("unit", "pixel")
SCORES_ARE = ("auto", "logits", "probabilities")
# name -> (mean, std) in 0..1 units
PRESETS: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
    "imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),  # torchvision / timm default
    "symmetric": ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),               # inputs in [-1, 1]
    "unit": ((0.0, 0.0, 0.0), (1.0, 1.0, 1.0)),                    # inputs in [0, 1]
    "raw": ((0.0, 0.0, 0.0), (1 / 255, 1 / 255, 1 / 255)),         # pixels 0..255 as they are
}


@dataclass(frozen=True)
class InputNormalization:
    """Per-channel (RGB) normalisation in pixel units: the model takes ``(pixel - mean) / std``."""

    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    def __post_init__(self) -> None:
        if len(self.mean) != 3 or len(self.std) != 3:
            raise ConfigError(f"normalisation needs 3 means and 3 stds, got {list(self.mean)} / {list(self.std)}")
        values = tuple(float(v) for v in self.mean + self.std)
        if not all(math.isfinite(v) for v in values) or min(values[3:]) <= 0:
            raise ConfigError(f"normalisation std must be finite and > 0, got {list(self.std)}")
        object.__setattr__(self, "mean", values[:3])
        object.__setattr__(self, "std", values[3:])

    @classmethod
    def parse(cls, text: str, units: str = "unit") -> "InputNormalization":
        """From a preset name (``imagenet``, ``symmetric``, ``unit``, ``raw``) or numbers:
        ``MEAN,STD`` (one value for all channels) or ``M1,M2,M3,S1,S2,S3``.

        Args:
            units: ``unit`` when the numbers are for pixels scaled to 0..1 (PyTorch's
                convention), ``pixel`` when they are for pixels 0..255. Presets ignore it.
        Raises:
            ConfigError: unknown preset, wrong count of numbers, unknown units, std <= 0.
        """
        if units not in UNITS:
            raise ConfigError(f"normalisation units {units!r} unknown, expected one of {', '.join(UNITS)}")
        text = text.strip()
        if text in PRESETS:
            mean, std = PRESETS[text]
            return cls(_scaled(mean, 255.0), _scaled(std, 255.0))
        try:
            numbers = [float(v) for v in text.split(",")]
        except ValueError:
            raise ConfigError(f"normalisation {text!r}: expected a preset ({', '.join(PRESETS)}) or numbers "
                              f"'MEAN,STD' / 'M1,M2,M3,S1,S2,S3'") from None
        if len(numbers) not in (2, 6):
            raise ConfigError(f"normalisation {text!r} has {len(numbers)} numbers, expected 2 (MEAN,STD) or 6 "
                              f"(M1,M2,M3,S1,S2,S3)")
        mean, std = (numbers[:1] * 3, numbers[1:] * 3) if len(numbers) == 2 else (numbers[:3], numbers[3:])
        scale = 255.0 if units == "unit" else 1.0
        return cls(_scaled(mean, scale), _scaled(std, scale))

    def to_dict(self) -> dict[str, list[float]]:
        return {"mean": list(self.mean), "std": list(self.std), "units": "pixel"}


@dataclass(frozen=True)
class ImportOptions:
    """How an ONNX model becomes a bundle.

    Attributes:
        quantization: TFLite mode; int8 calibrates on the --calib images.
        normalization: what the ONNX model expects of its input, folded into the converted model.
        input_size: side of the square input; needed when the ONNX input has a dynamic height/width,
            checked against it otherwise.
        crop_fraction: centre crop kept before resizing (torchvision's eval transform: 224/256 = 0.875).
        scores_output: tensor giving the class scores (default: the one output with one value per label).
        embedding_output: tensor giving the embedding (default: the other output, else the
            features entering the final Gemm/MatMul, else the logits).
        scores_are: ``logits`` (softmax is added), ``probabilities`` (used as they are) or
            ``auto`` (probabilities when a Softmax ends the graph, else logits; logits that
            already sum to 1 on every calibration image are refused as ambiguous).
        compare_images: calibration images on which ONNX and TFLite outputs are compared.
    """

    quantization: QuantizationConfig
    normalization: InputNormalization
    input_size: int | None = None
    crop_fraction: float = 1.0
    scores_output: str | None = None
    embedding_output: str | None = None
    scores_are: str = "auto"
    compare_images: int = 64

    def __post_init__(self) -> None:
        if self.input_size is not None and self.input_size < 1:
            raise ConfigError(f"input size must be >= 1, got {self.input_size}")
        if not 0.2 <= self.crop_fraction <= 1.0:
            raise ConfigError(f"crop fraction {self.crop_fraction} is out of range 0.2..1.0")
        if self.scores_are not in SCORES_ARE:
            raise ConfigError(f"scores_are {self.scores_are!r} unknown, expected one of {', '.join(SCORES_ARE)}")
        if self.compare_images < 1:
            raise ConfigError(f"compare images must be >= 1, got {self.compare_images}")
        if self.scores_output is not None and self.scores_output == self.embedding_output:
            raise ConfigError(f"scores and embedding are both asked from tensor {self.scores_output!r}")


def _scaled(values, factor: float) -> tuple[float, ...]:
    """``values`` times ``factor``, rounded to 6 decimals (57.12, not 57.120000000000005)."""
    return tuple(round(factor * v, 6) for v in values)

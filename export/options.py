"""Export options: quantization (named constructors as in MediaPipe Model Maker), pruning, QAT,
and `ExportOptions`, which holds one export's choices."""
from __future__ import annotations

from dataclasses import dataclass, field

from shelfsight.errors import ConfigError

MODES = ("int8", "fp16", "dynamic", "float32")


@dataclass(frozen=True)
class QuantizationConfig:
    """How the .tflite is quantized.

    Attributes:
        mode: int8 (full integer, uint8 pixel input), fp16, dynamic (int8 weights) or float32.
        calibration_images: for int8, how many training images form the representative set.
    """

    mode: str = "int8"
    calibration_images: int = 300

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ConfigError(f"quantization {self.mode!r} unknown, expected one of {', '.join(MODES)}")
        if self.calibration_images < 1:
            raise ConfigError(f"calibration images must be >= 1, got {self.calibration_images}")

    @classmethod
    def for_int8(cls, calibration_images: int = 300) -> "QuantizationConfig":
        return cls("int8", calibration_images)

    @classmethod
    def for_float16(cls) -> "QuantizationConfig":
        return cls("fp16")

    @classmethod
    def for_dynamic(cls) -> "QuantizationConfig":
        return cls("dynamic")

    @classmethod
    def for_float32(cls) -> "QuantizationConfig":
        return cls("float32")


@dataclass(frozen=True)
class PruneOptions:
    """Magnitude pruning during a short fine-tune (polynomial schedule from 0 to ``sparsity``).

    Attributes:
        sparsity: share of weights set to zero in each pruned layer, 0 < s < 1.
        epochs: fine-tune epochs while pruning.
        end_fraction: share of the fine-tune steps after which the final sparsity is reached.
        frequency: prune every this many steps.
        distill: learn from the unpruned model (KL + embedding cosine) instead of the labels.
    """

    sparsity: float = 0.5
    epochs: int = 2
    learning_rate: float = 1e-4
    end_fraction: float = 0.7
    frequency: int = 50
    batch_size: int = 32
    distill: bool = True

    def __post_init__(self) -> None:
        if not 0.0 < self.sparsity < 1.0:
            raise ConfigError(f"sparsity {self.sparsity} out of range (0, 1)")
        if self.epochs < 1:
            raise ConfigError(f"pruning epochs must be >= 1, got {self.epochs}")
        if not 0.0 < self.end_fraction <= 1.0:
            raise ConfigError(f"end fraction {self.end_fraction} out of range (0, 1]")
        if self.frequency < 1 or self.batch_size < 1 or self.learning_rate <= 0:
            raise ConfigError("frequency and batch size must be >= 1, learning rate > 0")


@dataclass(frozen=True)
class QATOptions:
    """Quantization-aware training (distilling the float model) before conversion."""

    epochs: int = 3
    learning_rate: float = 3e-5
    batch_size: int = 32

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_size < 1 or self.learning_rate <= 0:
            raise ConfigError(f"QAT: epochs and batch size >= 1, learning rate > 0 (got {self})")


@dataclass(frozen=True)
class ExportOptions:
    """One export's choices (what `shelfsight export` flags set).

    Attributes:
        quantization: the .tflite's number format.
        prune: magnitude pruning before conversion (None: no pruning).
        qat: quantization-aware training before int8 conversion (None: post-training
            quantization only; the CLI turns QAT on for int8 unless --ptq is given).
        archive: also write BUNDLE.tar.gz.
        margin: per-class drop (points) above which a class is named in the report.
        max_drop: refuse to ship (RegressionError) when any class drops more than this.
        data: dataset for calibration and the val comparison (None: the run's own).
    """

    quantization: QuantizationConfig = field(default_factory=QuantizationConfig)
    prune: PruneOptions | None = None
    qat: QATOptions | None = None
    archive: bool = False
    margin: float = 10.0
    max_drop: float | None = None
    data: str | None = None

    def __post_init__(self) -> None:
        if self.qat and self.quantization.mode != "int8":
            raise ConfigError(f"--qat needs --quantize int8, got {self.quantization.mode}")
        if self.margin < 0 or (self.max_drop is not None and self.max_drop < 0):
            raise ConfigError(f"margin and max drop must be >= 0, got {self.margin}, {self.max_drop}")

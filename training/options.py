"""Options for model building and training, one frozen dataclass each, checked on creation."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from shelfsight.errors import ConfigError


@dataclass(frozen=True)
class ModelOptions:
    """What network to build.

    Attributes:
        backbone: a name from `backbones.BACKBONES`.
        image_size: square input side, 96..320.
        alpha: width multiplier for families that have one (MobileNet); 1.0 otherwise.
        weights: "imagenet", a path to a weights file, or "none" (random init).
        embedding_dim: size of the L2-normalised embedding output.
        dropout: dropout before the heads.
        cosine_scale: temperature of the cosine classifier (logits = scale * cos).
    """

    backbone: str = "efficientnet_lite0"
    image_size: int = 224
    alpha: float = 1.0
    weights: str = "imagenet"
    embedding_dim: int = 128
    dropout: float = 0.2
    cosine_scale: float = 16.0

    def __post_init__(self) -> None:
        from .backbones import BACKBONES  # local: backbones imports this module's users

        if self.backbone not in BACKBONES:
            raise ConfigError(f"backbone {self.backbone!r} unknown, expected one of {', '.join(BACKBONES)}")
        if not 96 <= self.image_size <= 320:
            raise ConfigError(f"image size {self.image_size} out of range 96..320")
        spec = BACKBONES[self.backbone]
        if self.alpha != 1.0 and self.alpha not in spec.alphas:
            raise ConfigError(f"alpha {self.alpha} not available for {self.backbone} "
                              f"(available: {', '.join(map(str, spec.alphas)) or '1.0 only'})")
        if self.weights not in ("imagenet", "none") and not Path(self.weights).is_file():
            raise ConfigError(f"weights {self.weights!r}: expected 'imagenet', 'none' or an existing file")
        if not 8 <= self.embedding_dim <= 2048:
            raise ConfigError(f"embedding dim {self.embedding_dim} out of range 8..2048")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"dropout {self.dropout} out of range [0, 1)")
        if self.cosine_scale <= 0:
            raise ConfigError(f"cosine scale must be > 0, got {self.cosine_scale}")


@dataclass(frozen=True)
class TrainOptions:
    """How to train.

    Attributes:
        head_epochs: stage 1, heads on the frozen backbone.
        finetune_epochs: stage 2, top of the backbone unfrozen (0 skips it).
        finetune_fraction: share of backbone layers (from the top) trained in stage 2.
        augment: random resized crop, flip, colour jitter, small rotation in stage 2.
        patience: early stopping on val accuracy (epochs without improvement).
        accept_share: share of val accepted by the calibrated "unknown" threshold.
    """

    batch_size: int = 32
    head_epochs: int = 40
    head_lr: float = 3e-3
    finetune_epochs: int = 8
    finetune_lr: float = 3e-4
    finetune_fraction: float = 0.35
    augment: bool = True
    label_smoothing: float = 0.1
    balance_classes: bool = True
    patience: int = 3
    seed: int = 0
    mixed_precision: str = "auto"
    accept_share: float = 0.95

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise ConfigError(f"batch size must be >= 1, got {self.batch_size}")
        if self.head_epochs < 1 or self.finetune_epochs < 0:
            raise ConfigError(f"epochs: head >= 1 and fine-tune >= 0, got {self.head_epochs}, {self.finetune_epochs}")
        if not 0.0 < self.finetune_fraction <= 1.0:
            raise ConfigError(f"finetune fraction {self.finetune_fraction} out of range (0, 1]")
        if self.head_lr <= 0 or self.finetune_lr <= 0:
            raise ConfigError("learning rates must be > 0")
        if not 0.0 <= self.label_smoothing < 0.5:
            raise ConfigError(f"label smoothing {self.label_smoothing} out of range [0, 0.5)")
        if self.mixed_precision not in ("auto", "on", "off"):
            raise ConfigError(f"mixed precision {self.mixed_precision!r}: expected auto, on or off")
        if not 0.0 < self.accept_share <= 1.0:
            raise ConfigError(f"accept share {self.accept_share} out of range (0, 1]")

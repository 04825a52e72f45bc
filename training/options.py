"""Options for model building and training, one frozen dataclass each, checked on creation."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from shelfsight.errors import ConfigError
from shelfsight.run import is_run


@dataclass(frozen=True)
class ModelOptions:
    """What network to build.

    Attributes:
        backbone: a name from `backbones.BACKBONES`.
        image_size: square input side, 96..320; None takes the backbone's own resolution
            (224 for Lite0, 240 for Lite1, 260 for Lite2).
        alpha: width multiplier for families that have one (MobileNet); 1.0 otherwise.
        weights: "imagenet", a path to a weights file, or "none" (random init).
        embedding_dim: size of the L2-normalised embedding output.
        dropout: dropout before the heads.
        cosine_scale: temperature of the cosine classifier (logits = scale * cos).
    """

    backbone: str = "efficientnet_lite0"
    image_size: int | None = None
    alpha: float = 1.0
    weights: str = "imagenet"
    embedding_dim: int = 128
    dropout: float = 0.2
    cosine_scale: float = 16.0

    def __post_init__(self) -> None:
        from .backbones import BACKBONES  # local: backbones imports this module's users

        if self.backbone not in BACKBONES:
            raise ConfigError(f"backbone {self.backbone!r} unknown, expected one of {', '.join(BACKBONES)}")
        if self.image_size is None:  # frozen: set through object.__setattr__, as dataclasses do
            object.__setattr__(self, "image_size", BACKBONES[self.backbone].default_size)
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

    Stage 1 fits the heads on cached features of the frozen backbone; stage 2 fine-tunes
    ``finetune_fraction`` of the backbone with augmentation, on a fixed schedule: linear
    warm-up, cosine decay to 5% of the rate, and an exponential moving average of the weights
    (the EMA is what is saved). With a few hundred val images, val accuracy moves by a point
    between epochs by chance alone, so picking an epoch by it (early stopping) picks noise;
    the end of a cosine schedule is a stable point and needs no val data at all.

    Attributes:
        head_epochs: stage 1, heads on the frozen backbone.
        finetune_epochs: stage 2 (0 skips it).
        finetune_fraction: share of backbone layers (from the top) trained in stage 2.
        warmup_epochs: stage 2 epochs of linear learning-rate warm-up.
        ema_momentum: weight EMA in stage 2 (0 turns it off).
        train_batchnorm: update BatchNorm statistics and scales in stage 2 (frozen by default:
            batches of 32 give noisy statistics).
        catalog_images: add the dataset's catalog (iconic) images to the training set.
        teacher: a training run, or several (an ensemble: their scores are averaged), whose
            class scores (cached once) are soft targets.
        distill_weight: share of the target taken from the teacher (0..1).
        ensemble: train this many runs of the recipe (seeds ``seed``, ``seed + 1``, ...) into
            ``OUT/members/`` and ship their ensemble as one model (0: one run): the scores are
            averaged and the joint embedding retrieves better for fusion; the device pays N
            backbones per image.
        augment: random resized crop, flip, colour jitter, small rotation in stage 2.
        jpeg: probability of a JPEG round trip (quality 40-95) per image (default 0.5). Every frame a
            device sees went through a camera stream's compression (MJPEG, RTSP), which clean
            catalog photos never show; on Grocery it gained 3.4 points at the fast schedule, and
            on the per-object conveyor it is what the MJPG codec cost the demo bundle.
        erasing: probability of random erasing (a grey rectangle, 2-25% of the image) per image.
        mix: "mixup" (default), "cutmix" or "none" within each batch; ``mix_alpha`` is its
            Beta(a, a). A few thousand photos are learnt by heart within a few epochs (train
            accuracy 99.5% against 80% val); mixup, the standard regulariser for that, gained
            2.4 and 3.0 points on Grocery at the fast and balanced schedules (README, Results).
        patience: early stopping on val accuracy (0: the fixed schedule, the default).
        accept_share: share of val accepted by the calibrated "unknown" threshold.
    """

    batch_size: int = 32
    head_epochs: int = 40
    head_lr: float = 3e-3
    finetune_epochs: int = 10
    finetune_lr: float = 3e-4
    finetune_fraction: float = 1.0
    warmup_epochs: float = 1.0
    ema_momentum: float = 0.99
    train_batchnorm: bool = False
    catalog_images: bool = True
    teacher: str | tuple[str, ...] | None = None
    distill_weight: float = 0.5
    ensemble: int = 0
    augment: bool = True
    jpeg: float = 0.5
    erasing: float = 0.0
    mix: str = "mixup"
    mix_alpha: float = 0.2
    label_smoothing: float = 0.1
    balance_classes: bool = True
    patience: int = 0
    seed: int = 0
    mixed_precision: str = "auto"
    accept_share: float = 0.95

    @property
    def teachers(self) -> tuple[str, ...]:
        """The teacher runs, none, one or an ensemble."""
        if self.teacher is None:
            return ()
        return (self.teacher,) if isinstance(self.teacher, str) else tuple(self.teacher)

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise ConfigError(f"batch size must be >= 1, got {self.batch_size}")
        if self.head_epochs < 1 or self.finetune_epochs < 0:
            raise ConfigError(f"epochs: head >= 1 and fine-tune >= 0, got {self.head_epochs}, {self.finetune_epochs}")
        if not 0.0 < self.finetune_fraction <= 1.0:
            raise ConfigError(f"finetune fraction {self.finetune_fraction} out of range (0, 1]")
        if self.head_lr <= 0 or self.finetune_lr <= 0:
            raise ConfigError("learning rates must be > 0")
        if self.warmup_epochs < 0 or (self.finetune_epochs > 0 and self.warmup_epochs > self.finetune_epochs):
            raise ConfigError(f"warm-up {self.warmup_epochs} epochs out of range 0..{self.finetune_epochs} (fine-tune epochs)")
        if not 0.0 <= self.ema_momentum < 1.0:
            raise ConfigError(f"EMA momentum {self.ema_momentum} out of range [0, 1)")
        if not 0.0 <= self.label_smoothing < 0.5:
            raise ConfigError(f"label smoothing {self.label_smoothing} out of range [0, 0.5)")
        if not 0.0 <= self.jpeg <= 1.0:
            raise ConfigError(f"JPEG augmentation probability {self.jpeg} out of range [0, 1]")
        if not 0.0 <= self.erasing <= 1.0:
            raise ConfigError(f"erasing probability {self.erasing} out of range [0, 1]")
        if self.mix not in ("none", "mixup", "cutmix"):
            raise ConfigError(f"mix {self.mix!r}: expected none, mixup or cutmix")
        if self.mix_alpha <= 0:
            raise ConfigError(f"mix alpha must be > 0, got {self.mix_alpha}")
        if not 0.0 <= self.distill_weight <= 1.0:
            raise ConfigError(f"distill weight {self.distill_weight} out of range [0, 1]")
        for run in self.teachers:
            if not is_run(run):
                raise ConfigError(f"teacher {run}: not a training run (no model.keras)")
        if self.ensemble < 0 or self.ensemble == 1:
            raise ConfigError(f"ensemble: 0 (one run) or at least 2 members, got {self.ensemble}")
        if self.patience < 0:
            raise ConfigError(f"patience must be >= 0, got {self.patience}")
        if self.mixed_precision not in ("auto", "on", "off"):
            raise ConfigError(f"mixed precision {self.mixed_precision!r}: expected auto, on or off")
        if not 0.0 < self.accept_share <= 1.0:
            raise ConfigError(f"accept share {self.accept_share} out of range (0, 1]")

"""Named training recipes: `shelfsight train --preset fast|balanced|best`.

A preset is a set of option values, resolved before the user's own flags are applied (a flag
given on the command line wins). Each states what it costs, measured on the development
machine (2-core x86_64, no GPU) with the Grocery Store train split (2,640 images); the cost
scales with the number of training images.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from shelfsight.errors import ConfigError


@dataclass(frozen=True)
class Preset:
    name: str
    summary: str
    cost: str
    model: dict[str, Any] = field(default_factory=dict)
    train: dict[str, Any] = field(default_factory=dict)


PRESETS: dict[str, Preset] = {p.name: p for p in (
    Preset("fast", "EfficientNet-Lite0 224 px, whole backbone, 4 fine-tune epochs, mixup, JPEG round trips",
           "about 9 min per 2,640 images on 2 CPU cores",
           model={"backbone": "efficientnet_lite0", "image_size": 224},
           train={"finetune_epochs": 4, "finetune_fraction": 1.0, "warmup_epochs": 0.5}),
    Preset("balanced", "EfficientNet-Lite0 224 px, whole backbone, 10 fine-tune epochs, warm-up + cosine, weight EMA, "
                       "mixup, JPEG round trips",
           "about 20 min per 2,640 images on 2 CPU cores",
           model={"backbone": "efficientnet_lite0", "image_size": 224},
           train={"finetune_epochs": 10, "finetune_fraction": 1.0, "warmup_epochs": 1.0}),
    # Members without mixup or JPEG round trips: two such seeds averaged scored 84.5% float on Grocery
    # val twice, two mixup + JPEG seeds 82.4% (README, Results).
    Preset("best", "two seeds of balanced without mixup or JPEG round trips, shipped as one model that averages "
                   "them (two Lite0 backbones per image on the device)",
           "about 40 min per 2,640 images on 2 CPU cores",
           model={"backbone": "efficientnet_lite0", "image_size": 224},
           train={"finetune_epochs": 10, "finetune_fraction": 1.0, "warmup_epochs": 1.0, "ensemble": 2,
                  "mix": "none", "jpeg": 0.0}),
)}
DEFAULT_PRESET = "balanced"


def resolve(name: str, model_flags: dict[str, Any], train_flags: dict[str, Any]) -> tuple[dict, dict]:
    """The preset's values overridden by the flags the user gave (None means not given).

    Raises:
        ConfigError: unknown preset name.
    """
    if name not in PRESETS:
        raise ConfigError(f"preset {name!r} unknown, expected one of {', '.join(PRESETS)}")
    preset = PRESETS[name]
    given = lambda flags: {k: v for k, v in flags.items() if v is not None}  # noqa: E731
    return {**preset.model, **given(model_flags)}, {**preset.train, **given(train_flags)}

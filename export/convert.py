"""Keras model -> .tflite bytes, in one of the four quantization modes.

int8 is full-integer with a uint8 input that takes camera pixels untouched. Where the
normalisation is one integer mean and one std for all channels (EfficientNet-Lite: 127 and
128), it moves into the input quantization (scale 1/std, zero point mean): the model is
converted without its normalisation layer, and the pixel p *is* the quantized value of
(p - mean) / std — exact, where a quantized normalisation layer would round every pixel to
about 1.5 grey levels. Otherwise the layer stays and the calibration set spans exactly 0..255,
so the input quantization is scale 1, zero point 0. Outputs stay float32 (a dequantize at the
end), named by the model's output names in the signature.
"""
from __future__ import annotations

import numpy as np

from shelfsight.errors import ModelError
from shelfsight.preprocess import PreprocessSpec
from shelfsight.training.model import NORMALIZE
from shelfsight.training.tf_env import keras, tf

from .fold import fold_batchnorm
from .options import QuantizationConfig


def input_quantization(spec: PreprocessSpec) -> tuple[float, int] | None:
    """(scale, zero point) under which uint8 pixels are the normalised input, or None when the
    normalisation cannot be written that way (per-channel values, a non-integer mean)."""
    mean, std = set(spec.mean), set(spec.std)
    if len(mean) != 1 or len(std) != 1:
        return None
    (m,), (s,) = mean, std
    if m != round(m) or not 0 <= m <= 255:
        return None
    return 1.0 / s, int(m)


def without_normalisation(model: keras.Model) -> keras.Model:
    """``model`` minus its normalisation layer: its input is the normalised image."""
    return fold_batchnorm(model, skip=(NORMALIZE,))


def representative_set(images: np.ndarray, count: int, seed: int = 0) -> np.ndarray:
    """``count`` images drawn from ``images`` (uint8 N x S x S x 3).

    One pixel of the first image is set to 0 and one to 255, so the observed input range
    is exactly 0..255 (input scale 1, zero point 0) without adding black or white frames,
    whose extreme activations would widen the ranges of every layer behind the input.
    """
    rng = np.random.default_rng(seed)
    pick = images[rng.permutation(len(images))[:count]].copy()
    pick[0, 0, 0] = 0
    pick[0, 0, 1] = 255
    return pick


def to_tflite(model: keras.Model, config: QuantizationConfig, calibration: np.ndarray | None = None,
              quantize_aware: bool = False, normalised_input: tuple[float, int] | None = None) -> bytes:
    """Convert ``model`` (named outputs) to a .tflite flatbuffer.

    Args:
        model: takes pixels 0..255, or with ``normalised_input`` the normalised image.
        calibration: uint8 images for the int8 representative dataset.
        quantize_aware: the model went through QAT (its fake-quant ranges are used).
        normalised_input: (scale, zero point) of `input_quantization`, int8 only.
    Raises:
        ModelError: int8 without calibration images, or a conversion failure.
    """
    return convert_with(tf.lite.TFLiteConverter.from_keras_model(model), config, calibration, quantize_aware,
                        normalised_input)


def convert_with(converter: tf.lite.TFLiteConverter, config: QuantizationConfig,
                 calibration: np.ndarray | None = None, quantize_aware: bool = False,
                 normalised_input: tuple[float, int] | None = None) -> bytes:
    """Set ``config`` on a converter the caller made (from a Keras model, a concrete function,
    ...) and convert; see `to_tflite`."""
    if config.mode == "fp16":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]
    elif config.mode == "dynamic":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    elif config.mode == "int8":
        if calibration is None or len(calibration) == 0:
            raise ModelError("int8 export needs calibration images (the training images of the run)")
        reps = representative_set(calibration, config.calibration_images)
        scale, zero_point = normalised_input or (1.0, 0)

        def gen():
            for img in reps:
                yield [(img[None].astype(np.float32) - zero_point) * np.float32(scale)]

        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = gen
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = tf.uint8
        converter.inference_output_type = tf.float32
    if quantize_aware and config.mode != "int8":
        raise ModelError(f"a QAT model converts to int8 only, not {config.mode}")
    if normalised_input and config.mode != "int8":
        raise ModelError(f"normalisation moves into the input quantization in int8 only, not {config.mode}")
    try:
        tflite = converter.convert()
    except Exception as e:  # the converter raises ConverterError / RuntimeError with pages of MLIR text
        raise ModelError(f"TFLite conversion ({config.mode}) failed: {str(e).strip().splitlines()[0][:300]}") from None
    if config.mode == "int8":
        _check_pixel_input(tflite, normalised_input or (1.0, 0))
    return tflite


def _check_pixel_input(tflite: bytes, expected: tuple[float, int]) -> None:
    """The device feeds uint8 pixels as they are: the input quantization must be exactly the one
    that makes them the model's input."""
    details = tf.lite.Interpreter(model_content=tflite).get_input_details()[0]
    scale, zero_point = details["quantization"]
    if details["dtype"] != np.uint8 or zero_point != expected[1] or abs(scale - expected[0]) > 1e-6 * expected[0]:
        raise ModelError(f"int8 input quantization came out as scale {scale}, zero point {zero_point} "
                         f"({np.dtype(details['dtype']).name}); uint8 pixels need scale {expected[0]}, "
                         f"zero point {expected[1]}")

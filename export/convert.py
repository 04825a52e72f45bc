"""Keras model -> .tflite bytes, in one of the four quantization modes.

int8 is full-integer with a uint8 input: the calibration set spans exactly 0..255, so the
input quantization is scale 1, zero point 0, and the device feeds camera pixels untouched. Outputs stay float32 (a dequantize at the end), named by the
model's output names in the signature.
"""
from __future__ import annotations

import numpy as np

from shelfsight.errors import ModelError
from shelfsight.training.tf_env import keras, tf

from .options import QuantizationConfig


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
              quantize_aware: bool = False) -> bytes:
    """Convert ``model`` (pixels 0..255 in; named outputs) to a .tflite flatbuffer.

    Args:
        calibration: uint8 images for the int8 representative dataset.
        quantize_aware: the model went through QAT (its fake-quant ranges are used).
    Raises:
        ModelError: int8 without calibration images, or a conversion failure.
    """
    return convert_with(tf.lite.TFLiteConverter.from_keras_model(model), config, calibration, quantize_aware)


def convert_with(converter: tf.lite.TFLiteConverter, config: QuantizationConfig,
                 calibration: np.ndarray | None = None, quantize_aware: bool = False) -> bytes:
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

        def gen():
            for img in reps:
                yield [img[None].astype(np.float32)]

        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = gen
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = tf.uint8
        converter.inference_output_type = tf.float32
    if quantize_aware and config.mode != "int8":
        raise ModelError(f"a QAT model converts to int8 only, not {config.mode}")
    try:
        return converter.convert()
    except Exception as e:  # the converter raises ConverterError / RuntimeError with pages of MLIR text
        raise ModelError(f"TFLite conversion ({config.mode}) failed: {str(e).strip().splitlines()[0][:300]}") from None

"""Quantization-aware training with tensorflow-model-optimization.

BatchNorm is folded into the convolutions first (see fold.py), and every quantizer range
starts where the float model is, so QAT starts at PTQ's accuracy instead of collapsing. The
fine-tune then distils the float model into the quantized one (distill.py).

What the fake-quant graph simulates must be what TFLite runs:
- tfmot's LayerReLUQuantize transform drops *all* quantization of a Conv2D / DepthwiseConv2D
  that feeds a ReLU (it means to keep a fake-quant out from between the two), so 33 of
  EfficientNet-Lite's 49 convolutions trained with float weights while TFLite runs them with
  int8 ones. Those layers keep a per-channel weight quantizer here (`ConvWeightsQuantizeConfig`).
- The input quantizer is pinned to the pixel range, so whole pixels are represented exactly;
  where the normalisation moves into the input quantization (convert.input_quantization), the
  student starts at the normalised image.
Layers the 8-bit registry does not know (the embedding's unit normalisation, the cosine scale)
get a no-op config; the converter calibrates those, like everything in PTQ. After pruning,
tfmot's pruning-preserving scheme is used and the pruned zeros are kept zero in every step.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass

import numpy as np

from shelfsight.datasets import LoadedImages
from shelfsight.training.model import NORMALIZE
from shelfsight.training.tf_env import keras, tf

from .distill import distill
from .fold import fold_batchnorm
from .options import QATOptions

import tensorflow_model_optimization as tfmot  # noqa: E402  (after tf_env: Keras 2)
from tensorflow_model_optimization.python.core.quantization.keras.default_8bit import (  # noqa: E402
    default_8bit_quantize_registry as registry_module,
    default_8bit_quantizers,
    default_8bit_transforms,
)

qkeras = tfmot.quantization.keras


class NoOpQuantizeConfig(qkeras.QuantizeConfig):
    """Leave a layer unquantized during QAT."""

    def get_weights_and_quantizers(self, layer):
        return []

    def get_activations_and_quantizers(self, layer):
        return []

    def set_quantize_weights(self, layer, quantize_weights):
        pass

    def set_quantize_activations(self, layer, quantize_activations):
        pass

    def get_output_quantizers(self, layer):
        return []

    def get_config(self):
        return {}


class DepthwiseKernelQuantizer(qkeras.quantizers.Quantizer):
    """Symmetric int8 per channel for a depthwise kernel (kh, kw, channels, 1), as TFLite
    quantizes it; tfmot's per-axis quantizers only use the last axis (the multiplier)."""

    def build(self, tensor_shape, name, layer):
        return {}

    def __call__(self, inputs, training, weights, **kwargs):
        kernel = tf.transpose(inputs, [0, 1, 3, 2])  # channels last
        bound = tf.stop_gradient(tf.reduce_max(tf.abs(kernel), axis=[0, 1, 2]))
        quantized = tf.quantization.fake_quant_with_min_max_vars_per_channel(
            kernel, -bound, bound, num_bits=8, narrow_range=True)
        return tf.transpose(quantized, [0, 1, 3, 2])

    def get_config(self):
        return {}


class ConvWeightsQuantizeConfig(NoOpQuantizeConfig):
    """Quantize a convolution's kernel only: its output is quantized after the ReLU it feeds."""

    def get_weights_and_quantizers(self, layer):
        if isinstance(layer, keras.layers.DepthwiseConv2D):
            return [(layer.depthwise_kernel, DepthwiseKernelQuantizer())]
        return [(layer.kernel, default_8bit_quantizers.Default8BitConvWeightsQuantizer())]

    def set_quantize_weights(self, layer, quantize_weights):
        setattr(layer, "depthwise_kernel" if isinstance(layer, keras.layers.DepthwiseConv2D) else "kernel",
                quantize_weights[0])


class _ReLUKeepsConvWeights(default_8bit_transforms.LayerReLUQuantize):
    def replacement(self, match_layer):
        producer = match_layer.input_layers[0]
        if producer.layer["class_name"] in ("Conv2D", "DepthwiseConv2D"):
            producer.metadata["quantize_config"] = ConvWeightsQuantizeConfig()
            return match_layer
        return super().replacement(match_layer)

    def custom_objects(self):
        return {**super().custom_objects(), "ConvWeightsQuantizeConfig": ConvWeightsQuantizeConfig}


@contextlib.contextmanager
def _conv_weights_kept():
    """tfmot's layout transform looks LayerReLUQuantize up in its module on every apply."""
    original = default_8bit_transforms.LayerReLUQuantize
    default_8bit_transforms.LayerReLUQuantize = _ReLUKeepsConvWeights
    try:
        yield
    finally:
        default_8bit_transforms.LayerReLUQuantize = original


@dataclass(frozen=True)
class QATResult:
    model: keras.Model             # fake-quant layers in place
    embedding_cosine: list[float]  # student vs float model, mean per epoch


def quantize_aware_train(model: keras.Model, data: LoadedImages, options: QATOptions,
                         preserve_sparsity: bool = False, normalised_input: tuple[float, int] | None = None,
                         progress: bool = True) -> QATResult:
    """QAT fine-tune of ``model`` on ``data``.

    Args:
        normalised_input: (scale, zero point) of convert.input_quantization: the result takes
            the normalised image and its input quantizer is exactly that.
    """
    registry = registry_module.Default8BitQuantizeRegistry()

    def annotate(layer):
        # A normalisation layer that stays is left float (the converter calibrates it like in
        # PTQ); the pixels before it are quantized exactly (range pinned to 0..255 below).
        if isinstance(layer, keras.layers.InputLayer):
            return layer
        if registry.supports(layer) and layer.name != NORMALIZE:
            return qkeras.quantize_annotate_layer(layer)
        return qkeras.quantize_annotate_layer(layer, quantize_config=NoOpQuantizeConfig())

    float_model = fold_batchnorm(model)
    # Dropout does nothing at inference and would only add noise to what the student copies.
    skip = tuple(layer.name for layer in model.layers if isinstance(layer, keras.layers.Dropout))
    student = fold_batchnorm(model, skip=skip + ((NORMALIZE,) if normalised_input else ()))
    annotated = keras.models.clone_model(student, clone_function=annotate)
    scheme = (tfmot.experimental.combine.Default8BitPrunePreserveQuantizeScheme() if preserve_sparsity
              else qkeras.default_8bit.Default8BitQuantizeScheme())
    with qkeras.quantize_scope({"NoOpQuantizeConfig": NoOpQuantizeConfig,
                                "ConvWeightsQuantizeConfig": ConvWeightsQuantizeConfig}), _conv_weights_kept():
        qat = qkeras.quantize_apply(annotated, scheme)
    # quantize_apply renames every layer "quant_<name>"; the converted model's outputs must keep
    # the contract's names, so name them again with identity layers (removed by the converter).
    qat = keras.Model(qat.input, {name: keras.layers.Activation("linear", name=name)(qat.get_layer(f"quant_{name}").output)
                                  for name in ("scores", "embedding")}, name=model.name)
    scale, zero_point = normalised_input or (1.0, 0)

    def to_student(x):
        return (x - zero_point) * scale

    init_activation_ranges(qat, student, to_student(data.images[:64].astype(np.float32)))
    _pin_input_range(qat, to_student(0.0), to_student(255.0))
    masks = _zero_masks(qat) if preserve_sparsity else ()
    history = distill(qat, float_model, data.images, options.learning_rate, options.epochs, options.batch_size,
                      student_input=to_student, masks=masks, progress=progress)
    return QATResult(qat, history)


def _pin_input_range(qat: keras.Model, low: float, high: float) -> None:
    """The input quantizer tracks the extremes it sees (AllValuesQuantizer); starting at the
    full pixel range, which no input exceeds, it stays exactly there, and whole pixel values
    are quantized without error. Its variables are named after the layer, which Keras numbers
    when several QAT models are built in one process: found by type and name ending."""
    bounds = {"min": low, "max": high}
    for layer in qat.layers:
        if type(layer).__name__ == "QuantizeLayer":
            for variable in layer.weights:
                end = variable.name.split(":")[0].rsplit("_", 1)[-1]
                if end in bounds:
                    variable.assign(bounds[end])


def _zero_masks(qat: keras.Model) -> list[tuple[tf.Variable, np.ndarray]]:
    """(kernel, nonzero mask) for every pruned kernel, so training cannot revive its zeros."""
    masks = []
    for variable in qat.trainable_variables:
        if variable.name.split("/")[-1].startswith(("kernel", "depthwise_kernel")):
            mask = (variable.numpy() != 0).astype(np.float32)
            if mask.mean() < 1.0:
                masks.append((variable, mask))
    return masks


def init_activation_ranges(qat: keras.Model, float_model: keras.Model, images) -> int:
    """Start every activation quantizer at the range the float model's layer really has (the
    input quantizer is pinned separately, `_pin_input_range`).

    tfmot's moving-average quantizers start at [-6, 6] and move with an EMA decay of 0.999,
    so a short QAT fine-tune would spend its few hundred steps clipping activations (the
    model collapses). Returns how many ranges were set.
    """
    targets = {}
    for layer in qat.layers:
        name = layer.name.removeprefix("quant_")
        variables = {v.name.split("/")[-1].split(":")[0]: v for v in layer.weights}
        for prefix in ("post_activation", "output"):
            if f"{prefix}_min" in variables and name in {x.name for x in float_model.layers}:
                targets.setdefault(name, []).append((variables[f"{prefix}_min"], variables[f"{prefix}_max"]))
    probe = keras.Model(float_model.input, [float_model.get_layer(n).output for n in targets])
    outputs = probe.predict(images.astype("float32"), batch_size=16, verbose=0)
    outputs = outputs if isinstance(outputs, list) else [outputs]
    for (name, pairs), value in zip(targets.items(), outputs):
        low, high = min(0.0, float(value.min())), max(0.0, float(value.max()))
        for vmin, vmax in pairs:
            vmin.assign(low)
            vmax.assign(high)
    _init_weight_ranges(qat)
    return sum(len(p) for p in targets.values())


def _init_weight_ranges(qat: keras.Model) -> None:
    """Kernel quantizer ranges from the kernels themselves (tfmot sets them only in training
    steps); symmetric, as tfmot's 8-bit weight quantizers and TFLite's int8 kernels are."""
    for layer in qat.layers:
        variables = {v.name.split("/")[-1].split(":")[0]: v for v in layer.weights}
        for kernel_name in ("kernel", "depthwise_kernel"):
            if f"{kernel_name}_min" not in variables or kernel_name not in variables:
                continue
            kernel = np.abs(variables[kernel_name].numpy())
            vmin, vmax = variables[f"{kernel_name}_min"], variables[f"{kernel_name}_max"]
            if vmin.shape.rank and vmin.shape[0] > 1:  # per output channel
                bound = kernel.reshape(-1, kernel.shape[-1]).max(axis=0)
            else:
                bound = np.full(vmin.shape, kernel.max())
            vmin.assign(-bound)
            vmax.assign(bound)

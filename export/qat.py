"""Quantization-aware training with tensorflow-model-optimization.

BatchNorm is folded into the convolutions first (see fold.py), and every quantizer range
starts where the float model is, so QAT starts at PTQ's accuracy instead of collapsing.
Layers the default 8-bit registry does not know (the embedding's unit normalisation, the
cosine scale) get a no-op config; the input normalisation is left float. The converter
quantizes those from calibration, like everything in PTQ. After pruning, tfmot's
pruning-preserving scheme keeps the zeros.
"""
from __future__ import annotations

import numpy as np

from shelfsight.datasets import LoadedImages
from shelfsight.training import augment
from shelfsight.training.tf_env import keras

from .fold import fold_batchnorm
from .options import QATOptions

import tensorflow_model_optimization as tfmot  # noqa: E402  (after tf_env: Keras 2)
from tensorflow_model_optimization.python.core.quantization.keras.default_8bit import (  # noqa: E402
    default_8bit_quantize_registry as registry_module,
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


def quantize_aware_train(model: keras.Model, data: LoadedImages, num_classes: int, options: QATOptions,
                         preserve_sparsity: bool = False, progress: bool = True) -> keras.Model:
    """Return ``model`` after QAT fine-tuning on ``data`` (fake-quant layers in place)."""
    registry = registry_module.Default8BitQuantizeRegistry()

    def annotate(layer):
        # The input normalisation stays float: quantizing raw 0..255 pixels with ranges that
        # start at [-6, 6] would clip them; the converter calibrates it like in PTQ.
        if isinstance(layer, keras.layers.InputLayer) or layer.name == "normalize":
            return layer
        if registry.supports(layer):
            return qkeras.quantize_annotate_layer(layer)
        return qkeras.quantize_annotate_layer(layer, quantize_config=NoOpQuantizeConfig())

    float_model = fold_batchnorm(model)
    annotated = keras.models.clone_model(float_model, clone_function=annotate)
    scheme = (tfmot.experimental.combine.Default8BitPrunePreserveQuantizeScheme() if preserve_sparsity
              else qkeras.default_8bit.Default8BitQuantizeScheme())
    with qkeras.quantize_scope({"NoOpQuantizeConfig": NoOpQuantizeConfig}):
        qat = qkeras.quantize_apply(annotated, scheme)
    # quantize_apply renames every layer "quant_<name>"; the converted model's outputs must keep
    # the contract's names, so name them again with identity layers (removed by the converter).
    qat = keras.Model(qat.input, {name: keras.layers.Activation("linear", name=name)(qat.get_layer(f"quant_{name}").output)
                                  for name in ("scores", "embedding")}, name=model.name)
    init_activation_ranges(qat, float_model, data.images[:64])
    augment.fine_tune_scores(qat, data.images, data.label_ids, num_classes, options.learning_rate, options.epochs,
                             options.batch_size, progress=progress)
    return qat


def init_activation_ranges(qat: keras.Model, float_model: keras.Model, images) -> int:
    """Start every activation quantizer at the range the float model's layer really has.

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
        if layer.name.startswith("quantize_layer") and "quantize_layer_min" in variables:
            source = layer.inbound_nodes[0].inbound_layers
            source = source[0] if isinstance(source, list) else source
            targets.setdefault(source.name, []).append((variables["quantize_layer_min"], variables["quantize_layer_max"]))
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
    """Kernel quantizer ranges from the kernels themselves (tfmot sets them only in training steps)."""
    for layer in qat.layers:
        variables = {v.name.split("/")[-1].split(":")[0]: v for v in layer.weights}
        for kernel_name in ("kernel", "depthwise_kernel"):
            if f"{kernel_name}_min" not in variables or kernel_name not in variables:
                continue
            kernel = variables[kernel_name].numpy()
            vmin, vmax = variables[f"{kernel_name}_min"], variables[f"{kernel_name}_max"]
            if vmin.shape.rank and vmin.shape[0] > 1:  # per output channel
                flat = kernel.reshape(-1, kernel.shape[-1])
                low, high = flat.min(axis=0), flat.max(axis=0)
            else:
                low, high = np.full(vmin.shape, kernel.min()), np.full(vmin.shape, kernel.max())
            vmin.assign(np.minimum(low, 0.0))
            vmax.assign(np.maximum(high, 0.0))

"""Quantization-aware training with tensorflow-model-optimization.

Layers the default 8-bit registry does not know (our input normalisation, the embedding's
unit normalisation, the cosine scale) are annotated with a no-op config: they stay float
in training and the converter quantizes them from calibration, like everything in PTQ.
After pruning, tfmot's pruning-preserving scheme keeps the zeros.
"""
from __future__ import annotations

from shelfsight.datasets import LoadedImages
from shelfsight.training import augment
from shelfsight.training.tf_env import keras

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

    annotated = keras.models.clone_model(model, clone_function=annotate)
    float_model = model
    scheme = (tfmot.experimental.combine.Default8BitPrunePreserveQuantizeScheme() if preserve_sparsity
              else qkeras.default_8bit.Default8BitQuantizeScheme())
    with qkeras.quantize_scope({"NoOpQuantizeConfig": NoOpQuantizeConfig}):
        qat = qkeras.quantize_apply(annotated, scheme)
    # quantize_apply renames every layer "quant_<name>"; the converted model's outputs must keep
    # the contract's names, so name them again with identity layers (removed by the converter).
    qat = keras.Model(qat.input, {name: keras.layers.Activation("linear", name=name)(qat.get_layer(f"quant_{name}").output)
                                  for name in ("scores", "embedding")}, name=model.name)
    # BatchNorm keeps its trained statistics (inference mode), as in stage 2 of training: batch
    # statistics of small augmented batches wreck the folded conv weights QAT learns.
    for layer in qat.layers:
        inner = getattr(layer, "layer", layer)
        if isinstance(inner, keras.layers.BatchNormalization):
            layer.trainable = False
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
    return sum(len(p) for p in targets.values())

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
        if isinstance(layer, keras.layers.InputLayer):
            return layer
        if registry.supports(layer):
            return qkeras.quantize_annotate_layer(layer)
        return qkeras.quantize_annotate_layer(layer, quantize_config=NoOpQuantizeConfig())

    annotated = keras.models.clone_model(model, clone_function=annotate)
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
    augment.fine_tune_scores(qat, data.images, data.label_ids, num_classes, options.learning_rate, options.epochs,
                             options.batch_size, progress=progress)
    return qat

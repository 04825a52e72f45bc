"""Magnitude pruning with tensorflow-model-optimization during a short fine-tune.

Pointwise/standard convolutions and the embedding layer are pruned (they hold almost all
weights); depthwise kernels (tiny, and sensitive) and the unit-norm classifier are not.
By default the pruned model is distilled from the unpruned one while its weights are zeroed
(KL on the class scores + embedding cosine, as QAT does): the goal is the same model with
half its weights, not a model that re-learns the labels from a few thousand photos (the
label fine-tune cost 4.7 points at 50%). The pruning wrappers are stripped afterwards, so the
result is a plain Keras model whose zeros survive conversion (and gzip well).
"""
from __future__ import annotations

import numpy as np

from shelfsight.datasets import LoadedImages
from shelfsight.training import augment
from shelfsight.training.tf_env import keras

from .distill import distill
from .options import PruneOptions

import tensorflow_model_optimization as tfmot  # noqa: E402  (after tf_env: Keras 2)

SKIP = ("classifier",)  # the class vectors (an ensemble member's: m0_classifier, ...)


def prunable(layer) -> bool:
    return (isinstance(layer, (keras.layers.Conv2D, keras.layers.Dense))
            and not isinstance(layer, keras.layers.DepthwiseConv2D) and not layer.name.endswith(SKIP))


def layer_sparsity(model: keras.Model) -> dict[str, float]:
    """Share of exact zeros in each prunable layer's kernel."""
    out = {}
    for layer in model.layers:
        if prunable(layer):
            kernel = layer.get_weights()[0]
            out[layer.name] = round(float(np.mean(kernel == 0.0)), 4)
    return out


def prune_model(model: keras.Model, data: LoadedImages, num_classes: int, options: PruneOptions,
                progress: bool = True) -> tuple[keras.Model, dict]:
    """Prune ``model`` to ``options.sparsity`` while fine-tuning on ``data``.

    Returns:
        (stripped model, {"overall": share of zeros over pruned kernels, "layers": {name: share}}).
    """
    steps_per_epoch = int(np.ceil(len(data.images) / options.batch_size))
    total = steps_per_epoch * options.epochs
    frequency = min(options.frequency, max(1, total // 4))
    # tfmot prunes only on steps that are multiples of the frequency: an end step between two
    # of them never applies the final sparsity.
    end_step = max(frequency, int(total * options.end_fraction) // frequency * frequency)
    schedule = tfmot.sparsity.keras.PolynomialDecay(
        initial_sparsity=0.0, final_sparsity=options.sparsity, begin_step=0, end_step=end_step, frequency=frequency)

    def wrap(layer):  # wraps (or keeps) the original layer, so the trained weights carry over
        return tfmot.sparsity.keras.prune_low_magnitude(layer, pruning_schedule=schedule) if prunable(layer) else layer

    teacher = None
    if options.distill:  # its own copy: the pruned clone shares (and changes) the original's layers
        teacher = keras.models.clone_model(model)
        teacher.set_weights(model.get_weights())
    pruned = keras.models.clone_model(model, clone_function=wrap)
    for layer in pruned.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.trainable = False
    if teacher is None:
        augment.fine_tune_scores(pruned, data.images, data.label_ids, num_classes, options.learning_rate,
                                 options.epochs, options.batch_size, [tfmot.sparsity.keras.UpdatePruningStep()],
                                 progress)
    else:
        # tfmot's step callback in a custom loop: the wrappers count steps when called in training
        step = tfmot.sparsity.keras.UpdatePruningStep()
        step.set_model(pruned)
        step.on_train_begin()
        distill(pruned, teacher, data.images, options.learning_rate, options.epochs, options.batch_size,
                epoch_end=lambda: step.on_epoch_end(-1), stage="pruning", progress=progress)
    stripped = tfmot.sparsity.keras.strip_pruning(pruned)
    layers = layer_sparsity(stripped)
    sizes = {layer.name: layer.get_weights()[0].size for layer in stripped.layers if layer.name in layers}
    overall = sum(layers[n] * sizes[n] for n in layers) / max(1, sum(sizes.values()))
    return stripped, {"overall": round(overall, 4), "layers": layers}

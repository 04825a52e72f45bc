"""Fold BatchNormalization into the convolution before it (for QAT).

tfmot's default 8-bit scheme fake-quantizes convolution kernels *before* BatchNorm, and
depthwise kernels with one range per tensor; EfficientNet-Lite's unfolded depthwise kernels
have very different per-channel scales, so QAT on the unfolded model collapses. The TFLite
converter folds BatchNorm before quantizing; folding first makes QAT see the same weights.
"""
from __future__ import annotations

import numpy as np

from shelfsight.training.model import inbound_layers
from shelfsight.training.tf_env import keras

CONVS = (keras.layers.Conv2D, keras.layers.DepthwiseConv2D)


def fold_batchnorm(model: keras.Model, skip: tuple[str, ...] = ()) -> keras.Model:
    """A new model, equal in outputs, where every BatchNormalization that is the only consumer
    of a Conv2D / DepthwiseConv2D is folded into that layer's kernel and bias. Every layer is
    rebuilt from its config (the original model is left untouched).

    Args:
        skip: names of single-input layers to drop (their input goes straight through), such
            as dropout, which does nothing at inference.
    """
    consumers: dict[str, list] = {}
    for layer in model.layers:
        if not isinstance(layer, keras.layers.InputLayer):
            for src in inbound_layers(layer):
                consumers.setdefault(src.name, []).append(layer)
    folds = {conv.name: nxt[0] for conv in model.layers if isinstance(conv, CONVS)
             for nxt in [consumers.get(conv.name, [])]
             if len(nxt) == 1 and isinstance(nxt[0], keras.layers.BatchNormalization)}
    folded_bn = {bn.name: conv for conv, bn in folds.items()}

    tensors = {}
    for layer in model.layers:
        if isinstance(layer, keras.layers.InputLayer):
            tensors[layer.name] = keras.Input(tuple(layer.output.shape[1:]), name=layer.name)
            continue
        if layer.name in folded_bn or layer.name in skip:
            tensors[layer.name] = tensors[folded_bn.get(layer.name) or inbound_layers(layer)[0].name]
            continue
        args = [tensors[src.name] for src in inbound_layers(layer)]
        config = layer.get_config()
        weights = layer.get_weights()
        if layer.name in folds:
            config["use_bias"] = True
            weights = _folded(layer, folds[layer.name], weights)
        fresh = type(layer).from_config(config)
        tensors[layer.name] = fresh(args[0] if len(args) == 1 else args)
        fresh.set_weights(weights)
    outputs = {name: tensors[t.node.layer.name] for name, t in model.output.items()}
    return keras.Model(tensors[model.layers[0].name], outputs, name=model.name)


def _folded(conv, bn, weights: list[np.ndarray]) -> list[np.ndarray]:
    gamma, beta, mean, var = bn.get_weights()
    scale = gamma / np.sqrt(var + bn.epsilon)
    kernel = weights[0]
    bias = weights[1] if len(weights) > 1 else np.zeros_like(scale)
    if isinstance(conv, keras.layers.DepthwiseConv2D):  # (kh, kw, channels, multiplier)
        kernel = kernel * scale.reshape(1, 1, kernel.shape[2], kernel.shape[3])
    else:  # (kh, kw, in, out)
        kernel = kernel * scale
    return [kernel.astype(np.float32), ((bias - mean) * scale + beta).astype(np.float32)]

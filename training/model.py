"""The product model: pixels -> backbone -> pooled features -> (class scores, embedding).

One model, two named outputs, so the device gets both from one inference:

- ``embedding``: Dense + L2 normalisation, for similarity search;
- ``scores``: a cosine classifier on that embedding (unit-norm class vectors, softmax over
  ``scale * cos``). Classes are directions in embedding space, so search and
  classification agree, and a product can be added on the device by imprinting its mean
  embedding as a new class vector.

The input is RGB pixels in 0..255; the backbone's normalisation is the first layer.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from shelfsight.preprocess import PreprocessSpec

from .backbones import BACKBONES, build_backbone
from .options import ModelOptions
from .tf_env import keras

SCORES, EMBEDDING, FEATURES, NORMALIZE = "scores", "embedding", "pool", "normalize"


@dataclass
class ProductModel:
    """The full model plus the views training needs (they share weights)."""

    model: keras.Model          # image -> {"scores", "embedding"}
    features: keras.Model       # image -> pooled backbone features
    head: keras.Model           # pooled features -> scores (stage 1 on cached features)
    classifier: keras.Model     # image -> scores (stage 2)
    backbone_layers: list       # backbone layers, bottom to top


def preprocess_spec(options: ModelOptions) -> PreprocessSpec:
    spec = BACKBONES[options.backbone]
    return PreprocessSpec(size=options.image_size, mean=spec.mean, std=spec.std)


def build_model(options: ModelOptions, num_classes: int) -> ProductModel:
    spec = BACKBONES[options.backbone]
    image = keras.Input((options.image_size, options.image_size, 3), name="image")
    mean, std = np.array(spec.mean, np.float32), np.array(spec.std, np.float32)
    x = keras.layers.Rescaling(scale=(1.0 / std).tolist(), offset=(-mean / std).tolist(), name=NORMALIZE)(image)
    backbone = build_backbone(options.backbone, options.image_size, options.alpha, options.weights, input_tensor=x)
    # With input_tensor the backbone model starts at our input and normalisation layers.
    backbone_layers = [layer for layer in backbone.layers
                       if not isinstance(layer, keras.layers.InputLayer) and layer.name != NORMALIZE]
    pooled = keras.layers.GlobalAveragePooling2D(name=FEATURES)(backbone.output)

    dropout = keras.layers.Dropout(options.dropout, name="head_dropout")
    embed = keras.layers.Dense(options.embedding_dim, name="embedding_dense")
    unit = keras.layers.UnitNormalization(name=EMBEDDING)
    classify = keras.layers.Dense(num_classes, use_bias=False, name="classifier",
                                  kernel_constraint=keras.constraints.UnitNorm(axis=0))
    scale = keras.layers.Rescaling(options.cosine_scale, name="cosine_scale")
    softmax = keras.layers.Softmax(name=SCORES, dtype="float32")

    def heads(features):
        emb = unit(embed(dropout(features)))
        return softmax(scale(classify(emb))), emb

    scores, emb = heads(pooled)
    model = keras.Model(image, {SCORES: scores, EMBEDDING: emb}, name=f"shelfsight_{options.backbone}")
    feature_in = keras.Input((pooled.shape[-1],), name="features")
    head = keras.Model(feature_in, heads(feature_in)[0], name="head")
    return ProductModel(model=model, features=keras.Model(image, pooled, name="features"), head=head,
                        classifier=keras.Model(image, scores, name="classifier"),
                        backbone_layers=backbone_layers)


def set_trainable_top(pm: ProductModel, fraction: float, train_batchnorm: bool = False) -> int:
    """Freeze the backbone except its top ``fraction`` of layers. BatchNorm stays frozen
    (inference statistics) unless ``train_batchnorm``, as is usual when fine-tuning on a small
    dataset. Returns the number of trainable backbone layers."""
    layers = pm.backbone_layers
    start = int(round(len(layers) * (1.0 - fraction)))
    count = 0
    for i, layer in enumerate(layers):
        is_bn = isinstance(layer, keras.layers.BatchNormalization)
        layer.trainable = i >= start and (train_batchnorm or not is_bn)
        count += layer.trainable
    return count


def inbound_layers(layer) -> list:
    """The layers feeding ``layer`` in the one model it belongs to (a loaded run's model, whose
    layers are each called once)."""
    node = layer._inbound_nodes[0]
    return node.inbound_layers if isinstance(node.inbound_layers, list) else [node.inbound_layers]


def load_model(path) -> keras.Model:
    return keras.models.load_model(path, compile=False)


def predict(model: keras.Model, images: np.ndarray, batch_size: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """Scores and embeddings for uint8 RGB images, N x S x S x 3."""
    out = model.predict(images.astype(np.float32), batch_size=batch_size, verbose=0)
    return np.asarray(out[SCORES]), np.asarray(out[EMBEDDING])

"""Several training runs of one recipe shipped as one model: `train --ensemble N` and
`shelfsight ensemble RUN RUN ... --out OUT`.

The members share the input and its normalisation; each keeps its own backbone and heads
(layers renamed ``m0_``, ``m1_``, ...), and the model's two outputs keep the contract's names:

- ``scores``: the mean of the members' class scores (the classic ensemble average);
- ``embedding``: the members' unit embeddings concatenated and normalised again, so the
  cosine of two images is the mean of the members' cosines.

The graph is flat (no nested models), so export's BatchNorm folding, QAT and conversion
treat it like a single model, and the bundle stays one ``model.tflite``: the device runs N
backbones per image. On Grocery val two Lite0 seeds shipped this way gained 1.9 points over one
(fused with retrieval, mean of two pairs; README, Results) for 1.5 times the inference time and
twice the bundle size.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from shelfsight.datasets import load_dataset, load_images
from shelfsight.errors import ConfigError, DatasetError
from shelfsight.metrics import classification_report
from shelfsight.run import MODEL_FILE, Run

from .model import EMBEDDING, NORMALIZE, SCORES, inbound_layers, load_model, predict
from .tf_env import keras

MEMBERS_DIR = "members"


def ensemble_model(members: list[keras.Model]) -> keras.Model:
    """One flat Keras model averaging ``members`` (models of `model.build_model`'s shape with the
    same input size and normalisation). The members are left untouched."""
    if len(members) < 2:
        raise ConfigError(f"an ensemble needs at least 2 members, got {len(members)}")
    first = members[0]
    shape = tuple(first.input.shape[1:])
    norm_config = first.get_layer(NORMALIZE).get_config()
    for m in members[1:]:
        if tuple(m.input.shape[1:]) != shape or m.get_layer(NORMALIZE).get_config()["scale"] != norm_config["scale"]:
            raise ConfigError("ensemble members differ in input size or normalisation: train them with one recipe")
        if m.output[SCORES].shape[-1] != first.output[SCORES].shape[-1]:
            raise ConfigError("ensemble members differ in their number of classes")
    image = keras.Input(shape, name=first.layers[0].name)
    normalised = keras.layers.Rescaling.from_config(norm_config)(image)
    scores, embeddings = [], []
    for i, member in enumerate(members):
        tensors: dict[str, Any] = {}
        for layer in member.layers:
            if isinstance(layer, keras.layers.InputLayer):
                tensors[layer.name] = image
                continue
            if layer.name == NORMALIZE:
                tensors[layer.name] = normalised
                continue
            args = [tensors[src.name] for src in inbound_layers(layer)]
            config = {**layer.get_config(), "name": f"m{i}_{layer.name}"}
            fresh = type(layer).from_config(config)
            tensors[layer.name] = fresh(args[0] if len(args) == 1 else args)
            fresh.set_weights(layer.get_weights())
        scores.append(tensors[SCORES])
        embeddings.append(tensors[EMBEDDING])
    mean_scores = keras.layers.Average(name=SCORES)(scores)
    joint = keras.layers.UnitNormalization(name=EMBEDDING)(keras.layers.Concatenate(name="ensemble_embeddings")(embeddings))
    return keras.Model(image, {SCORES: mean_scores, EMBEDDING: joint}, name=f"{first.name}_x{len(members)}")


def combine_runs(runs: list[str | Path], out: str | Path, progress: bool = True) -> dict[str, Any]:
    """Write the ensemble of the training ``runs`` as a run directory ``out`` (export reads it
    like any run), with its val metrics.

    Raises:
        ConfigError: fewer than two runs, or runs of different classes or preprocessing.
        ModelError: a path that is not a finished run.
    """
    t0 = time.perf_counter()
    loaded = [Run.load(r) for r in runs]
    if len(loaded) < 2:
        raise ConfigError(f"an ensemble needs at least 2 runs, got {len(loaded)}")
    first = loaded[0]
    for run in loaded[1:]:
        if run.labels != first.labels:
            raise ConfigError(f"{run.root} has other classes than {first.root}: train every member on one dataset")
        if run.preprocess != first.preprocess:
            raise ConfigError(f"{run.root} prepares images unlike {first.root}: train every member with one backbone and size")
    model = ensemble_model([load_model(r.model_path) for r in loaded])
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    model.save(out / MODEL_FILE)
    config = {**first.config, "ensemble": {"members": [str(r.root.resolve()) for r in loaded],
                                           "scores": "mean", "embedding": "concatenated, normalised"}}
    Run.save(out, first.labels, first.preprocess, config, {"members": [r.metrics().get("val", {}).get("top1")
                                                                       for r in loaded]})
    metrics: dict[str, Any] = {"members": len(loaded), "wall_time_s": None}
    try:
        val = load_dataset(config["data"], "val")
    except DatasetError:
        val = None
    if val is not None:
        images = load_images(val.samples, first.preprocess, first.labels, progress, "val images")
        scores, _ = predict(model, images.images)
        metrics.update(val=classification_report(scores, images.label_ids, first.labels, first.coarse_of,
                                                  config["train"].get("accept_share", 0.95)),
                       val_images=len(images.images))
    metrics["wall_time_s"] = round(time.perf_counter() - t0, 1)
    Run.save_metrics(out, metrics)
    if progress:
        top1 = metrics.get("val", {}).get("top1")
        print(f"ensemble of {len(loaded)} runs -> {out}" + (f": val top-1 {top1:.4f}" if top1 is not None else ""),
              flush=True)
    return metrics

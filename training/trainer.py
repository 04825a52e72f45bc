"""`shelfsight train`: two-stage transfer learning into a run directory.

Stage 1 trains the heads on the frozen backbone from cached pooled features (seconds).
Stage 2 fine-tunes the top of the backbone with augmentation at a lower learning rate,
with early stopping on val accuracy. The run directory holds everything export needs:
model.keras, labels.txt, preprocess.json, config.json, history.json, metrics.json.
"""
from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from shelfsight.datasets import Dataset, load_dataset, load_images
from shelfsight.errors import DatasetError
from shelfsight.metrics import classification_report, plot_confusion

from . import augment
from .model import build_model, predict, preprocess_spec, set_trainable_top
from .options import ModelOptions, TrainOptions
from .tf_env import keras, tf

log = logging.getLogger(__name__)
MODEL_FILE = "model.keras"


def distribution_strategy() -> tf.distribute.Strategy:
    """Multi-worker from TF_CONFIG, mirrored across several GPUs, else the default (one device)."""
    if os.environ.get("TF_CONFIG"):
        return tf.distribute.MultiWorkerMirroredStrategy()
    if len(tf.config.list_physical_devices("GPU")) > 1:
        return tf.distribute.MirroredStrategy()
    return tf.distribute.get_strategy()


def _set_precision(mode: str) -> str:
    use = mode == "on" or (mode == "auto" and bool(tf.config.list_physical_devices("GPU")))
    policy = "mixed_float16" if use else "float32"
    keras.mixed_precision.set_global_policy(policy)
    return policy


class _Progress(keras.callbacks.Callback):
    """One log line per epoch (Keras' own bar is noisy in logs and CI)."""

    def __init__(self, stage: str, show: bool):
        super().__init__()
        self.stage, self.show, self.start = stage, show, time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        if self.show:
            logs = logs or {}
            parts = " ".join(f"{k}={v:.4f}" for k, v in logs.items() if k in ("loss", "accuracy", "val_loss", "val_accuracy"))
            print(f"  [{self.stage}] epoch {epoch + 1}: {parts} ({time.perf_counter() - self.start:.0f}s)", flush=True)


def train(data: str | Path, out: str | Path, model_options: ModelOptions, train_options: TrainOptions,
          progress: bool = True) -> dict[str, Any]:
    """Train a product model on ``data`` and write the run directory ``out``.

    Returns:
        The metrics dict also written to metrics.json.
    Raises:
        DatasetError: unreadable dataset; ModelError: backbone or weights problems.
    """
    t_start = time.perf_counter()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    keras.utils.set_random_seed(train_options.seed)
    policy = _set_precision(train_options.mixed_precision)

    train_set = load_dataset(data, "train")
    try:
        val_set: Dataset | None = load_dataset(data, "val")
    except DatasetError as e:
        if "no val" not in str(e) and "has no images" not in str(e):
            raise
        val_set = None
    labels = train_set.labels
    size = model_options.image_size
    pre = preprocess_spec(model_options)
    tr = load_images(train_set.samples, pre, labels, progress, "train images")
    va = load_images(val_set.samples, pre, labels, progress, "val images") if val_set else None
    if len(tr.images) == 0:
        raise DatasetError(f"{data}: no readable training images ({len(tr.skipped)} skipped)")
    n_cls = len(labels)
    if progress:
        print(f"data: {len(tr.images)} train / {len(va.images) if va else 0} val images, {n_cls} classes, "
              f"{len(tr.skipped) + (len(va.skipped) if va else 0)} unreadable skipped", flush=True)

    strategy = distribution_strategy()
    with strategy.scope():
        pm = build_model(model_options, n_cls)
    history: dict[str, Any] = {}

    # Stage 1: heads on cached features of the frozen backbone.
    t0 = time.perf_counter()
    feats_tr = pm.features.predict(tr.images.astype(np.float32), batch_size=64, verbose=0)
    feats_va = pm.features.predict(va.images.astype(np.float32), batch_size=64, verbose=0) if va else None
    y_tr = keras.utils.to_categorical(tr.label_ids, n_cls)
    w_tr = augment.sample_weights(tr.label_ids, n_cls, train_options.balance_classes)
    val_feats = (feats_va, keras.utils.to_categorical(va.label_ids, n_cls)) if va else None
    loss = keras.losses.CategoricalCrossentropy(label_smoothing=train_options.label_smoothing)
    with strategy.scope():
        pm.head.compile(optimizer=keras.optimizers.Adam(train_options.head_lr), loss=loss, metrics=["accuracy"])
    h1 = pm.head.fit(feats_tr, y_tr, sample_weight=w_tr, batch_size=train_options.batch_size,
                     epochs=train_options.head_epochs, validation_data=val_feats, verbose=0,
                     callbacks=_callbacks("heads", va is not None, train_options.patience * 3, progress))
    history["heads"] = _history(h1, time.perf_counter() - t0)

    # Stage 2: fine-tune the top of the backbone with augmentation.
    if train_options.finetune_epochs > 0:
        t0 = time.perf_counter()
        n_trainable = set_trainable_top(pm, train_options.finetune_fraction)
        steps = max(1, int(np.ceil(len(tr.images) / train_options.batch_size))) * train_options.finetune_epochs
        schedule = keras.optimizers.schedules.CosineDecay(train_options.finetune_lr, steps, alpha=0.05)
        with strategy.scope():
            pm.classifier.compile(optimizer=keras.optimizers.Adam(schedule), loss=loss, metrics=["accuracy"])
        ds = augment.training_dataset(tr.images, y_tr, w_tr, train_options.batch_size, size,
                                      train_options.augment, train_options.seed)
        val_ds = (va.images.astype(np.float32), keras.utils.to_categorical(va.label_ids, n_cls)) if va else None
        h2 = pm.classifier.fit(ds, epochs=train_options.finetune_epochs, validation_data=val_ds, verbose=0,
                               callbacks=_callbacks("fine-tune", va is not None, train_options.patience, progress))
        history["finetune"] = _history(h2, time.perf_counter() - t0) | {"trainable_backbone_layers": n_trainable}

    for layer in pm.model.layers:  # a reloaded model should not look half-frozen
        layer.trainable = True
    pm.model.save(out / MODEL_FILE)
    (out / "labels.txt").write_text("\n".join(labels) + "\n", encoding="utf-8")
    (out / "preprocess.json").write_text(json.dumps(pre.to_dict(), indent=2) + "\n")
    config = {"data": str(Path(data).resolve()), "layout": train_set.layout, "dataset_fingerprint": train_set.fingerprint(),
              "model": asdict(model_options), "train": asdict(train_options), "precision_policy": policy,
              "strategy": type(strategy).__name__, "coarse_of": train_set.coarse_of,
              "versions": {"tensorflow": tf.__version__, "tf_keras": keras.__version__}}
    (out / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    (out / "history.json").write_text(json.dumps(history, indent=2) + "\n")

    metrics: dict[str, Any] = {"train_images": len(tr.images), "skipped_images": [str(p) for p, _ in tr.skipped],
                               "wall_time_s": None}
    if va is not None:
        scores, _ = predict(pm.model, va.images)
        report = classification_report(scores, va.label_ids, labels, train_set.coarse_of, train_options.accept_share)
        plot_confusion(np.array(report["confusion_matrix"]), labels, out / "confusion.png", "val")
        metrics.update({"val": report, "val_images": len(va.images),
                        "skipped_images": metrics["skipped_images"] + [str(p) for p, _ in va.skipped]})
    metrics["wall_time_s"] = round(time.perf_counter() - t_start, 1)
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    keras.mixed_precision.set_global_policy("float32")
    return metrics


def _callbacks(stage: str, has_val: bool, patience: int, progress: bool) -> list:
    cbs: list = [_Progress(stage, progress)]
    if has_val:
        cbs.append(keras.callbacks.EarlyStopping(monitor="val_accuracy", patience=patience, mode="max",
                                                 restore_best_weights=True))
    return cbs


def _history(h, seconds: float) -> dict[str, Any]:
    return {"epochs": len(h.epoch), "seconds": round(seconds, 1),
            **{k: [round(float(v), 5) for v in vals] for k, vals in h.history.items()}}

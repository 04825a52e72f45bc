"""`shelfsight train`: two-stage transfer learning into a run directory.

Stage 1 trains the heads on cached pooled features of the frozen backbone (seconds).
Stage 2 fine-tunes the backbone with augmentation on a fixed warm-up + cosine schedule with
a weight EMA (see `TrainOptions` for why there is no early stopping by default), optionally
distilling a teacher run whose scores are computed once. The run directory (`shelfsight.run`)
holds everything export needs.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import numpy as np

from shelfsight.datasets import Dataset, LoadedImages, load_dataset, load_images
from shelfsight.errors import DatasetError
from shelfsight.metrics import classification_report, plot_confusion
from shelfsight.run import CONFIG_FILE, CONFUSION_FILE, METRICS_FILE, MODEL_FILE, Run

from . import augment
from .ensemble import MEMBERS_DIR, combine_runs
from .model import ProductModel, build_model, load_model, predict, preprocess_spec, set_trainable_top
from .options import ModelOptions, TrainOptions
from .progress import EpochProgress
from .tf_env import keras, tf

log = logging.getLogger(__name__)


def distribution_strategy() -> tf.distribute.Strategy:
    """Multi-worker from TF_CONFIG, mirrored across several GPUs, else the default (one device)."""
    if os.environ.get("TF_CONFIG"):
        return tf.distribute.MultiWorkerMirroredStrategy()
    if len(tf.config.list_physical_devices("GPU")) > 1:
        return tf.distribute.MirroredStrategy()
    return tf.distribute.get_strategy()


def _cluster_resolver():
    """The multi-worker cluster from TF_CONFIG, or None when training on one machine."""
    return tf.distribute.cluster_resolver.TFConfigClusterResolver() if os.environ.get("TF_CONFIG") else None


def is_chief(resolver) -> bool:
    """True on the one process that writes the run (always, unless multi-worker).

    Args:
        resolver: the strategy's cluster resolver, or None.
    """
    if resolver is None or not resolver.task_type:
        return True
    if resolver.task_type == "chief":
        return True
    has_chief = "chief" in resolver.cluster_spec().as_dict()
    return not has_chief and resolver.task_type == "worker" and resolver.task_id == 0


def _set_precision(mode: str) -> str:
    use = mode == "on" or (mode == "auto" and bool(tf.config.list_physical_devices("GPU")))
    policy = "mixed_float16" if use else "float32"
    keras.mixed_precision.set_global_policy(policy)
    return policy


def _load_data(data, options: TrainOptions, model_options: ModelOptions, progress: bool):
    train_set = load_dataset(data, "train")
    try:
        val_set: Dataset | None = load_dataset(data, "val")
    except DatasetError as e:
        if "no val" not in str(e) and "has no images" not in str(e):
            raise
        val_set = None
    samples = train_set.samples + (train_set.catalog if options.catalog_images else ())
    pre = preprocess_spec(model_options)
    tr = load_images(samples, pre, train_set.labels, progress, "train images")
    va = load_images(val_set.samples, pre, train_set.labels, progress, "val images") if val_set else None
    if len(tr.images) == 0:
        raise DatasetError(f"{data}: no readable training images ({len(tr.skipped)} skipped)")
    if progress:
        extra = f" (+{len(train_set.catalog)} catalog images)" if options.catalog_images and train_set.catalog else ""
        print(f"data: {len(tr.images)} train{extra} / {len(va.images) if va else 0} val images, "
              f"{len(train_set.labels)} classes, {len(tr.skipped) + (len(va.skipped) if va else 0)} unreadable skipped",
              flush=True)
    return train_set, tr, va


def teacher_scores(teacher: str | Path, samples, labels: tuple[str, ...], progress: bool) -> np.ndarray:
    """The teacher run's class scores for ``samples``, at the teacher's own preprocessing.

    Computed once before the student trains, so distillation costs the student's epochs
    nothing. The scores are of the un-augmented image; the student sees augmented views of it.
    An ensemble teacher is the mean of its members' scores (`_targets`).

    Raises:
        DatasetError: the teacher was trained on other classes.
    """
    run = Run.load(teacher)
    if run.labels != tuple(labels):
        raise DatasetError(f"teacher {teacher} has {len(run.labels)} classes that differ from the data's "
                           f"{len(labels)}: train the teacher on the same dataset")
    images = load_images(samples, run.preprocess, labels, progress, "teacher images")
    if len(images.images) != len(samples):
        raise DatasetError(f"teacher could not read {len(samples) - len(images.images)} training images")
    scores, _ = predict(load_model(run.model_path), images.images)
    return scores.astype(np.float32)


def _targets(tr: LoadedImages, labels: tuple[str, ...], options: TrainOptions, progress: bool) -> np.ndarray:
    y = keras.utils.to_categorical(tr.label_ids, len(labels)).astype(np.float32)
    if not options.teachers or options.distill_weight == 0:
        return y
    # Cross-entropy against this mixture has the gradient of CE(labels) plus KL to the teacher.
    soft = np.mean([teacher_scores(t, tr.samples, labels, progress) for t in options.teachers], axis=0)
    return (1.0 - options.distill_weight) * y + options.distill_weight * soft


def _fit_heads(pm: ProductModel, tr: LoadedImages, va: LoadedImages | None, y_tr: np.ndarray, w_tr: np.ndarray,
               options: TrainOptions, strategy, progress: bool) -> dict[str, Any]:
    t0 = time.perf_counter()
    n_cls = y_tr.shape[1]
    feats_tr = pm.features.predict(tr.images.astype(np.float32), batch_size=64, verbose=0)
    val = None
    if va is not None:
        val = (pm.features.predict(va.images.astype(np.float32), batch_size=64, verbose=0),
               keras.utils.to_categorical(va.label_ids, n_cls))
    loss = keras.losses.CategoricalCrossentropy(label_smoothing=options.label_smoothing)
    with strategy.scope():
        pm.head.compile(optimizer=keras.optimizers.Adam(options.head_lr), loss=loss, metrics=["accuracy"])
    # A fixed number of epochs here too: val is reported, never used to choose (so it stays unbiased).
    h = pm.head.fit(feats_tr, y_tr, sample_weight=w_tr, batch_size=options.batch_size, epochs=options.head_epochs,
                    validation_data=val, verbose=0)
    summary = _history(h, time.perf_counter() - t0)
    if progress:
        acc = f", val_accuracy={summary['val_accuracy'][-1]:.4f}" if val is not None else ""
        print(f"  [heads] {options.head_epochs} epochs: loss={summary['loss'][-1]:.4f}{acc} ({summary['seconds']:.0f}s)",
              flush=True)
    return summary


class WarmupCosine(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warm-up from 0 over ``warmup_steps``, then cosine decay to ``alpha`` x the peak."""

    def __init__(self, peak: float, total_steps: int, warmup_steps: int, alpha: float = 0.05):
        super().__init__()
        if total_steps < 1 or not 0 <= warmup_steps < total_steps + 1:
            raise ValueError(f"warm-up {warmup_steps} of {total_steps} steps")
        self.peak, self.total, self.warmup, self.alpha = peak, total_steps, warmup_steps, alpha

    def __call__(self, step):
        step = tf.cast(step, tf.float32)
        warm = self.peak * (step + 1.0) / max(self.warmup, 1)
        progress = tf.clip_by_value((step - self.warmup) / max(self.total - self.warmup, 1), 0.0, 1.0)
        cosine = self.peak * (self.alpha + (1.0 - self.alpha) * 0.5 * (1.0 + tf.cos(np.pi * progress)))
        return tf.where(step < self.warmup, warm, cosine)

    def get_config(self):
        return {"peak": self.peak, "total_steps": self.total, "warmup_steps": self.warmup, "alpha": self.alpha}


def _fine_tune(pm: ProductModel, tr: LoadedImages, va: LoadedImages | None, y_tr: np.ndarray, w_tr: np.ndarray,
               options: TrainOptions, size: int, strategy, progress: bool) -> dict[str, Any]:
    t0 = time.perf_counter()
    n_trainable = set_trainable_top(pm, options.finetune_fraction, options.train_batchnorm)
    per_epoch = max(1, int(np.ceil(len(tr.images) / options.batch_size)))
    total = per_epoch * options.finetune_epochs
    schedule = WarmupCosine(options.finetune_lr, total, int(round(options.warmup_epochs * per_epoch)))
    # Keras' EMA has no bias correction: cap its horizon, 1 / (1 - momentum), at a tenth of the
    # run so a short fine-tune is not mostly its starting point.
    momentum = min(options.ema_momentum, max(0.0, 1.0 - 10.0 / total))
    ema = {"use_ema": True, "ema_momentum": momentum} if momentum > 0 else {}
    loss = keras.losses.CategoricalCrossentropy(label_smoothing=options.label_smoothing)
    with strategy.scope():
        pm.classifier.compile(optimizer=keras.optimizers.Adam(schedule, **ema), loss=loss, metrics=["accuracy"])
    ds = augment.training_dataset(tr.images, y_tr, w_tr, options.batch_size, size, options.augment, options.seed,
                                  erasing=options.erasing, mix=options.mix, mix_alpha=options.mix_alpha,
                                  jpeg=options.jpeg)
    val = (va.images.astype(np.float32), keras.utils.to_categorical(va.label_ids, y_tr.shape[1])) if va else None
    callbacks = [EpochProgress("fine-tune", per_epoch, progress)]
    if va is not None and options.patience > 0:
        callbacks.append(keras.callbacks.EarlyStopping(monitor="val_accuracy", patience=options.patience,
                                                       mode="max", restore_best_weights=True))
    h = pm.classifier.fit(ds, epochs=options.finetune_epochs, validation_data=val, verbose=0, callbacks=callbacks)
    return _history(h, time.perf_counter() - t0) | {"trainable_backbone_layers": n_trainable,
                                                     "ema_momentum": momentum}


def train(data: str | Path, out: str | Path, model_options: ModelOptions, train_options: TrainOptions,
          progress: bool = True) -> dict[str, Any]:
    """Train a product model on ``data`` and write the run directory ``out``; with ``ensemble``
    N, train N seeds of the recipe into ``out/members/seed-S`` and write their ensemble
    (`ensemble.combine_runs`) as the run.

    Returns:
        The metrics dict also written to metrics.json.
    Raises:
        DatasetError: unreadable dataset; ModelError: backbone or weights problems.
    """
    if not train_options.ensemble:
        return _train_one(data, out, model_options, train_options, progress)
    t0 = time.perf_counter()
    members = []
    for i in range(train_options.ensemble):
        seed = train_options.seed + i
        member = Path(out) / MEMBERS_DIR / f"seed-{seed}"
        member_options = replace(train_options, seed=seed, ensemble=0)
        done = _finished_with(member, data, model_options, member_options)
        if progress:
            print(f"member {i + 1}/{train_options.ensemble}: seed {seed} -> {member}"
                  + (" (finished earlier with this recipe: reused)" if done else ""), flush=True)
        if not done:
            _train_one(data, member, model_options, member_options, progress)
        members.append(member)
    if not is_chief(_cluster_resolver()):
        return {}  # only the chief kept its member runs
    metrics = combine_runs(members, out, progress)
    metrics["wall_time_s"] = round(time.perf_counter() - t0, 1)  # the members' training included
    Run.save_metrics(out, metrics)
    return metrics


def _finished_with(run: Path, data, model_options: ModelOptions, train_options: TrainOptions) -> bool:
    """Whether ``run`` is a finished run (metrics written last) of exactly this data and recipe,
    so an interrupted `--preset best` resumes after the teachers it already trained."""
    if not (run / METRICS_FILE).is_file():
        return False
    try:
        config = json.loads((run / CONFIG_FILE).read_text())
    except (OSError, ValueError):
        return False
    as_json = lambda options: json.loads(json.dumps(asdict(options)))  # noqa: E731  (tuples -> lists)
    return (config.get("data") == str(Path(data).resolve())
            and config.get("dataset_fingerprint") == load_dataset(data, "train").fingerprint()
            and config.get("model") == as_json(model_options) and config.get("train") == as_json(train_options))


def _train_one(data: str | Path, out: str | Path, model_options: ModelOptions, train_options: TrainOptions,
               progress: bool) -> dict[str, Any]:
    t_start = time.perf_counter()
    strategy = distribution_strategy()  # first: multi-worker collectives must be set up before other TF work
    chief = is_chief(getattr(strategy, "cluster_resolver", None))
    # Every worker saves (saving may run collectives); only the chief's copy is the run.
    out = Path(out) if chief else Path(tempfile.mkdtemp(prefix="shelfsight-worker-"))
    out.mkdir(parents=True, exist_ok=True)
    progress = progress and chief
    keras.utils.set_random_seed(train_options.seed)
    policy = _set_precision(train_options.mixed_precision)
    train_set, tr, va = _load_data(data, train_options, model_options, progress)
    labels = train_set.labels
    y_tr = _targets(tr, labels, train_options, progress)
    w_tr = augment.sample_weights(tr.label_ids, len(labels), train_options.balance_classes)

    with strategy.scope():
        pm = build_model(model_options, len(labels))
    history = {"heads": _fit_heads(pm, tr, va, y_tr, w_tr, train_options, strategy, progress)}
    if train_options.finetune_epochs > 0:
        history["finetune"] = _fine_tune(pm, tr, va, y_tr, w_tr, train_options, model_options.image_size,
                                         strategy, progress)
    for layer in pm.model.layers:  # a reloaded model should not look half-frozen
        layer.trainable = True
    pm.model.save(out / MODEL_FILE)
    config = {"data": str(Path(data).resolve()), "layout": train_set.layout, "dataset_fingerprint": train_set.fingerprint(),
              "model": asdict(model_options), "train": asdict(train_options), "precision_policy": policy,
              "strategy": type(strategy).__name__, "coarse_of": train_set.coarse_of,
              "versions": {"tensorflow": tf.__version__, "tf_keras": keras.__version__}}
    Run.save(out, labels, preprocess_spec(model_options), config, history)

    metrics: dict[str, Any] = {"train_images": len(tr.images), "skipped_images": [str(p) for p, _ in tr.skipped],
                               "wall_time_s": None}
    if va is not None:
        scores, _ = predict(pm.model, va.images)
        report = classification_report(scores, va.label_ids, labels, train_set.coarse_of, train_options.accept_share)
        plot_confusion(np.array(report["confusion_matrix"]), labels, out / CONFUSION_FILE, "val")
        metrics.update({"val": report, "val_images": len(va.images),
                        "skipped_images": metrics["skipped_images"] + [str(p) for p, _ in va.skipped]})
    metrics["wall_time_s"] = round(time.perf_counter() - t_start, 1)
    Run.save_metrics(out, metrics)
    keras.mixed_precision.set_global_policy("float32")
    if not chief:
        shutil.rmtree(out, ignore_errors=True)
    return metrics


def _history(h, seconds: float) -> dict[str, Any]:
    return {"epochs": len(h.epoch), "seconds": round(seconds, 1),
            **{k: [round(float(v), 5) for v in vals] for k, vals in h.history.items()}}

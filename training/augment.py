"""Training-time data: augmentation on uint8 RGB images, balanced batches, short fine-tunes."""
from __future__ import annotations

import numpy as np

from .tf_env import keras, tf


def random_resized_crop(image, size: int, area=(0.45, 1.0), ratio=(0.75, 1.333), seed: int = 1):
    begin, extent, _ = tf.image.sample_distorted_bounding_box(
        tf.shape(image), bounding_boxes=tf.zeros([1, 0, 4]), min_object_covered=0.0,
        aspect_ratio_range=ratio, area_range=area, max_attempts=10, use_image_if_no_bounding_boxes=True, seed=seed)
    crop = tf.slice(image, begin, extent)
    return tf.image.resize(crop, (size, size), method="bilinear")


def augment_image(image, size: int, seed: int = 0):
    """Random resized crop, horizontal flip and colour jitter; float32 0..255 out.

    Every random op gets a non-zero seed: with TensorFlow's op determinism on (which some
    libraries switch on), unseeded ones refuse to run.
    """
    x = random_resized_crop(tf.cast(image, tf.float32), size, seed=seed + 1)
    x = tf.image.random_flip_left_right(x, seed=seed + 2)
    x = tf.image.random_brightness(x, 0.15 * 255.0, seed=seed + 3)
    x = tf.image.random_contrast(x, 0.8, 1.2, seed=seed + 4)
    x = tf.image.random_saturation(x, 0.75, 1.25, seed=seed + 5)
    x = tf.image.random_hue(x, 0.03, seed=seed + 6)
    return tf.clip_by_value(x, 0.0, 255.0)


def rotation_layer(seed: int) -> keras.layers.Layer:
    """Small rotations (about +-10 degrees), applied per batch."""
    return keras.layers.RandomRotation(0.03, fill_mode="reflect", seed=seed)


def sample_weights(label_ids: np.ndarray, num_classes: int, balance: bool = True) -> np.ndarray:
    """Per-sample weights that make every class count the same (inverse class frequency)."""
    if not balance:
        return np.ones(len(label_ids), np.float32)
    counts = np.bincount(label_ids, minlength=num_classes).astype(np.float32)
    weights = len(label_ids) / (num_classes * np.maximum(counts, 1.0))
    return weights[label_ids].astype(np.float32)


def training_dataset(images: np.ndarray, targets: np.ndarray, weights: np.ndarray, batch_size: int,
                     size: int, augment: bool = True, seed: int = 0):
    """Shuffled, augmented (x, y, sample_weight) batches from uint8 images already at ``size``."""
    ds = tf.data.Dataset.from_tensor_slices((images, targets.astype(np.float32), weights.astype(np.float32)))
    ds = ds.shuffle(len(images), seed=seed, reshuffle_each_iteration=True)
    if augment:
        rotate = rotation_layer(seed)
        ds = ds.map(lambda x, t, s: (augment_image(x, size, seed), t, s), num_parallel_calls=tf.data.AUTOTUNE)
        ds = ds.batch(batch_size).map(lambda x, t, s: (rotate(x, training=True), t, s),
                                      num_parallel_calls=tf.data.AUTOTUNE)
    else:
        ds = ds.map(lambda x, t, s: (tf.cast(x, tf.float32), t, s)).batch(batch_size)
    return ds.prefetch(tf.data.AUTOTUNE)


def fine_tune_scores(model, images: np.ndarray, label_ids: np.ndarray, num_classes: int, learning_rate: float,
                     epochs: int, batch_size: int, callbacks=(), progress: bool = True) -> None:
    """Fine-tune ``model`` (outputs {"scores", ...}) on the class scores, with augmentation and
    class balancing — the short fine-tune of pruning."""
    view = keras.Model(model.input, model.output["scores"])
    view.compile(optimizer=keras.optimizers.Adam(learning_rate),
                 loss=keras.losses.CategoricalCrossentropy(label_smoothing=0.1), metrics=["accuracy"])
    y = keras.utils.to_categorical(label_ids, num_classes)
    ds = training_dataset(images, y, sample_weights(label_ids, num_classes), batch_size, images.shape[1])
    view.fit(ds, epochs=epochs, verbose=1 if progress else 0, callbacks=list(callbacks))

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


def random_erasing(image, probability: float, seed: int = 0, area=(0.02, 0.25), ratio=(0.3, 3.3)):
    """With ``probability``, one rectangle of the image (``area`` share, aspect in ``ratio``)
    set to mid-grey: an occluding price tag, hand or neighbour, which a model trained on whole
    products has never seen. Float 0..255 in and out."""
    h, w = tf.shape(image)[0], tf.shape(image)[1]
    hf, wf = tf.cast(h, tf.float32), tf.cast(w, tf.float32)
    u = tf.random.uniform([5], seed=seed)
    share = area[0] + (area[1] - area[0]) * u[0]
    aspect = tf.exp(np.log(ratio[0]) + (np.log(ratio[1]) - np.log(ratio[0])) * u[1])
    eh = tf.clip_by_value(tf.cast(tf.round(tf.sqrt(share * hf * wf * aspect)), tf.int32), 1, h)
    ew = tf.clip_by_value(tf.cast(tf.round(tf.sqrt(share * hf * wf / aspect)), tf.int32), 1, w)
    top = tf.cast(u[2] * tf.cast(h - eh + 1, tf.float32), tf.int32)
    left = tf.cast(u[3] * tf.cast(w - ew + 1, tf.float32), tf.int32)
    rows, cols = tf.range(h)[:, None], tf.range(w)[None, :]
    inside = (rows >= top) & (rows < top + eh) & (cols >= left) & (cols < left + ew) & (u[4] < probability)
    return tf.where(inside[:, :, None], tf.constant(127.0), image)


def mix_batch(x, y, w, mode: str, alpha: float, seed: int = 0):
    """Mixup or CutMix within a batch: each sample is blended with a shuffled partner.

    mixup: x = l*x_a + (1-l)*x_b; cutmix: a box of x_b pasted into x_a, l = the share of x_a
    left. The targets are blended with the same l, so the loss is l*CE(a) + (1-l)*CE(b); the
    sample weights (class balancing) too. l ~ Beta(alpha, alpha), one per batch.
    """
    n = tf.shape(x)[0]
    partner = tf.random.shuffle(tf.range(n), seed=seed + 11)
    g1 = tf.random.gamma([], alpha, seed=seed + 12)
    g2 = tf.random.gamma([], alpha, seed=seed + 13)
    lam = g1 / (g1 + g2)
    xb, yb, wb = tf.gather(x, partner), tf.gather(y, partner), tf.gather(w, partner)
    if mode == "mixup":
        mixed = lam * x + (1.0 - lam) * xb
    elif mode == "cutmix":
        h, wd = tf.shape(x)[1], tf.shape(x)[2]
        cut = tf.sqrt(1.0 - lam)
        ch = tf.cast(tf.round(cut * tf.cast(h, tf.float32)), tf.int32)
        cw = tf.cast(tf.round(cut * tf.cast(wd, tf.float32)), tf.int32)
        u = tf.random.uniform([2], seed=seed + 14)
        top = tf.cast(u[0] * tf.cast(h - ch + 1, tf.float32), tf.int32)
        left = tf.cast(u[1] * tf.cast(wd - cw + 1, tf.float32), tf.int32)
        rows, cols = tf.range(h)[:, None], tf.range(wd)[None, :]
        box = (rows >= top) & (rows < top + ch) & (cols >= left) & (cols < left + cw)
        mixed = tf.where(box[None, :, :, None], xb, x)
        lam = 1.0 - tf.cast(ch * cw, tf.float32) / tf.cast(h * wd, tf.float32)  # the exact share kept
    else:
        raise ValueError(f"mix mode {mode!r}: expected mixup or cutmix")
    return mixed, lam * y + (1.0 - lam) * yb, lam * w + (1.0 - lam) * wb


def jpeg_round_trip(image, probability: float, seed: int = 0, quality=(40, 95)):
    """With ``probability``, the image JPEG-encoded and decoded at a random quality in
    ``quality``: the blocks and ringing a camera stream's compression (MJPEG, RTSP) puts on
    every frame the device sees, and the clean product photos of a catalog never show.
    Float 0..255 in and out."""
    image = tf.convert_to_tensor(image, tf.float32)

    def compress():
        x = tf.image.random_jpeg_quality(tf.cast(tf.round(image), tf.uint8), quality[0], quality[1], seed=seed)
        return tf.cast(x, tf.float32)

    return tf.cond(tf.random.uniform([], seed=seed + 1) < probability, compress, lambda: image)


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
                     size: int, augment: bool = True, seed: int = 0, erasing: float = 0.0,
                     mix: str = "none", mix_alpha: float = 0.2, jpeg: float = 0.0):
    """Shuffled, augmented (x, y, sample_weight) batches from uint8 images already at ``size``.

    With ``augment``: the per-image ops of `augment_image`, a JPEG round trip with probability
    ``jpeg``, random erasing with probability ``erasing``, a small rotation per batch, then
    mixup / cutmix (``mix``) within the batch.
    """
    ds = tf.data.Dataset.from_tensor_slices((images, targets.astype(np.float32), weights.astype(np.float32)))
    ds = ds.shuffle(len(images), seed=seed, reshuffle_each_iteration=True)
    if augment:
        rotate = rotation_layer(seed)

        def per_image(x, t, s):
            x = augment_image(x, size, seed)
            x = jpeg_round_trip(x, jpeg, seed + 9) if jpeg > 0 else x
            return (random_erasing(x, erasing, seed + 7) if erasing > 0 else x), t, s

        ds = ds.map(per_image, num_parallel_calls=tf.data.AUTOTUNE)
        ds = ds.batch(batch_size).map(lambda x, t, s: (rotate(x, training=True), t, s),
                                      num_parallel_calls=tf.data.AUTOTUNE)
        if mix != "none":
            ds = ds.map(lambda x, t, s: mix_batch(x, t, s, mix, mix_alpha, seed), num_parallel_calls=tf.data.AUTOTUNE)
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

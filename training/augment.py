"""Training-time augmentation on uint8 RGB images (stage 2 only)."""
from __future__ import annotations

from .tf_env import keras, tf


def random_resized_crop(image, size: int, area=(0.45, 1.0), ratio=(0.75, 1.333)):
    begin, extent, _ = tf.image.sample_distorted_bounding_box(
        tf.shape(image), bounding_boxes=tf.zeros([1, 0, 4]), min_object_covered=0.0,
        aspect_ratio_range=ratio, area_range=area, max_attempts=10, use_image_if_no_bounding_boxes=True)
    crop = tf.slice(image, begin, extent)
    return tf.image.resize(crop, (size, size), method="bilinear")


def augment_image(image, size: int):
    """Random resized crop, horizontal flip and colour jitter; float32 0..255 out."""
    x = random_resized_crop(tf.cast(image, tf.float32), size)
    x = tf.image.random_flip_left_right(x)
    x = tf.image.random_brightness(x, 0.15 * 255.0)
    x = tf.image.random_contrast(x, 0.8, 1.2)
    x = tf.image.random_saturation(x, 0.75, 1.25)
    x = tf.image.random_hue(x, 0.03)
    return tf.clip_by_value(x, 0.0, 255.0)


def rotation_layer(seed: int) -> keras.layers.Layer:
    """Small rotations (about +-10 degrees), applied per batch."""
    return keras.layers.RandomRotation(0.03, fill_mode="reflect", seed=seed)

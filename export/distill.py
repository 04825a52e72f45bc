"""The QAT fine-tune: the quantized student learns to reproduce the float teacher.

QAT is there to make the int8 model behave like the float model it came from, not to learn
the labels again: on a few thousand images a label loss moves the model away from what was
trained (grocery, label-loss QAT: embedding cosine to the float model 0.969, top-1 -2.7 points).
The student matches the teacher's class distribution (KL divergence) and embedding direction
(cosine) on augmented training images, rounded to whole pixel values as a camera delivers them.
"""
from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
from tqdm import tqdm

from shelfsight.training import augment
from shelfsight.training.tf_env import keras, tf

# The embedding term is ~1e-3 while the KL term is ~1e-2; weight it so both steer.
EMBEDDING_WEIGHT = 10.0


def distill(student: keras.Model, teacher: keras.Model, images: np.ndarray, learning_rate: float, epochs: int,
            batch_size: int, student_input: Callable | None = None, masks: Sequence = (),
            epoch_end: Callable[[], None] | None = None, stage: str = "QAT", progress: bool = True) -> list[float]:
    """Fine-tune ``student`` towards ``teacher`` (both output {"scores", "embedding"}).

    Args:
        images: uint8 training images, N x S x S x 3.
        student_input: maps the teacher's input (pixels 0..255) to the student's.
        masks: (variable, 0/1 array) pairs applied after every step (pruned zeros stay zero).
        epoch_end: called after each epoch (pruning re-applies its masks there).
        stage: what the progress bar calls the epochs ("QAT", "pruning").
    Returns:
        The mean embedding cosine between student and teacher in each epoch.
    """
    to_student = student_input or (lambda x: x)
    dummy = np.zeros((len(images), 1), np.float32)
    batches = augment.training_dataset(images, dummy, np.ones(len(images), np.float32), batch_size, images.shape[1])
    optimizer = keras.optimizers.Adam(learning_rate)
    teacher.trainable = False

    @tf.function
    def step(x):
        x = tf.clip_by_value(tf.round(x), 0.0, 255.0)
        target = teacher(x, training=False)
        with tf.GradientTape() as tape:
            out = student(to_student(x), training=True)
            cosine = tf.reduce_sum(out["embedding"] * target["embedding"], axis=-1)
            p = target["scores"]
            kl = tf.reduce_sum(p * (tf.math.log(p + 1e-8) - tf.math.log(out["scores"] + 1e-8)), axis=-1)
            loss = tf.reduce_mean(kl) + EMBEDDING_WEIGHT * tf.reduce_mean(1.0 - cosine)
        grads = tape.gradient(loss, student.trainable_variables)
        optimizer.apply_gradients(zip(grads, student.trainable_variables))
        for variable, mask in masks:
            variable.assign(variable * mask)
        return tf.reduce_mean(cosine)

    history = []
    steps = int(np.ceil(len(images) / batch_size))
    for epoch in range(epochs):
        cosines = [float(step(x)) for x, _, _ in tqdm(batches, total=steps, desc=f"{stage} epoch {epoch + 1}/{epochs}",
                                                       disable=not progress, leave=False)]
        history.append(round(float(np.mean(cosines)), 5))
        if epoch_end is not None:
            epoch_end()
    return history

"""Training progress: a bar over the batches of each epoch (ETA included), one line at its end."""
from __future__ import annotations

import time

from tqdm import tqdm

from .tf_env import keras

SHOWN = ("loss", "accuracy", "val_loss", "val_accuracy")


class EpochProgress(keras.callbacks.Callback):
    """Keras' own bar is noisy in logs and CI; this one is tqdm (which redraws in place on a
    terminal and stays quiet when not shown) plus one plain summary line per epoch.

    Args:
        stage: name printed with each line.
        steps: batches per epoch (0: no bar, only the epoch lines, e.g. for the fast head stage).
        show: False prints nothing.
    """

    def __init__(self, stage: str, steps: int, show: bool):
        super().__init__()
        self.stage, self.steps, self.show = stage, steps, show
        self.start = time.perf_counter()
        self.bar: tqdm | None = None

    def on_epoch_begin(self, epoch, logs=None):
        if self.show and self.steps:
            self.bar = tqdm(total=self.steps, desc=f"  [{self.stage}] epoch {epoch + 1}/{self.params.get('epochs', '?')}",
                            unit="batch", leave=False)

    def on_train_batch_end(self, batch, logs=None):
        if self.bar is not None:
            self.bar.update(1)
            if logs and "loss" in logs:
                self.bar.set_postfix(loss=f"{float(logs['loss']):.3f}", refresh=False)

    def on_epoch_end(self, epoch, logs=None):
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        if self.show:
            logs = logs or {}
            parts = " ".join(f"{k}={float(v):.4f}" for k, v in logs.items() if k in SHOWN)
            print(f"  [{self.stage}] epoch {epoch + 1}: {parts} ({time.perf_counter() - self.start:.0f}s)", flush=True)

"""Import TensorFlow with Keras 2 (tf_keras), which tensorflow-model-optimization needs.

Every training-side module gets TensorFlow and Keras from here, so the environment
variable is set before TensorFlow is first imported and only one Keras is ever used.
"""
import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import tensorflow as tf  # noqa: E402
import tf_keras as keras  # noqa: E402

__all__ = ["tf", "keras"]

"""Training side (TensorFlow + tf_keras): backbones, the product model, the trainer.

    from shelfsight.training import ModelOptions, TrainOptions, train
    train("grocery-store", "runs/lite0", ModelOptions(), TrainOptions())

Names load on first use (`shelfsight.lazy`): the options and presets need no TensorFlow,
the trainer and the model do.
"""
from shelfsight.lazy import lazy_exports

_EXPORTS = {"train": "trainer", "ModelOptions": "options", "TrainOptions": "options",
            "PRESETS": "presets", "DEFAULT_PRESET": "presets", "Preset": "presets",
            "BACKBONES": "backbones", "build_model": "model", "load_model": "model", "predict": "model"}
__all__ = sorted(_EXPORTS)
__getattr__ = lazy_exports(__name__, _EXPORTS)

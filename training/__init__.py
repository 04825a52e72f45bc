"""Training side (TensorFlow + tf_keras): backbones, the product model, the trainer.

Import submodules directly (`shelfsight.training.trainer`); importing this package alone
does not import TensorFlow.
"""

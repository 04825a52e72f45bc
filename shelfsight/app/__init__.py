"""The application layer, above every side: the `shelfsight` command line (`cli`), the
end-to-end demo (`demo`) and `eval`, which dispatches between a bundle (edge runtime) and
a training run (Keras). The core, edge, training and export import nothing from here.

Names load on first use (`shelfsight.lazy`): the command line starts without TensorFlow.
"""
from shelfsight.lazy import lazy_exports

_EXPORTS = {"main": "cli", "evaluate": "evaluation", "predict_target": "evaluation"}
__all__ = sorted(_EXPORTS)
__getattr__ = lazy_exports(__name__, _EXPORTS)

"""shelfsight: recognise retail products on the device that sees them.

The core package is the bottom layer and imports no side: the bundle contract (`bundle`),
the training run contract (`run`), "a run or a bundle" (`target`), the preprocessing spec
(`preprocess`), datasets, image reading, TF-free metrics, atomic writes, timing loops.
Device code is in `shelfsight.edge`, training in `shelfsight.training`, conversion in
`shelfsight.export`, tools in `shelfsight.tools`; `shelfsight.app` (CLI, demo, eval) sits
above them all.
"""
from .bundle import Bundle, load_bundle
from .errors import ShelfsightError
from .preprocess import PreprocessSpec
from .run import Run
from .target import Target, open_target

__version__ = "0.1.0"
__all__ = ["Bundle", "PreprocessSpec", "Run", "ShelfsightError", "Target", "load_bundle", "open_target",
           "__version__"]

"""shelfsight: recognise retail products on the device that sees them.

The core package holds what both sides share: the bundle contract (`bundle`), the
preprocessing spec (`preprocess`), datasets, image reading and TF-free metrics.
Device code is in `shelfsight.edge`, training in `shelfsight.training`, conversion in
`shelfsight.export`.
"""
from .bundle import Bundle, load_bundle
from .errors import ShelfsightError
from .preprocess import PreprocessSpec

__version__ = "0.1.0"
__all__ = ["Bundle", "PreprocessSpec", "ShelfsightError", "load_bundle", "__version__"]

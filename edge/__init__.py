"""shelfsight's device side: TFLite interpreter, recogniser, catalog search, capture, sinks,
health and sync. Imports numpy, OpenCV, Annoy and a TFLite runtime — never TensorFlow."""
from .interpreter import TFLiteModel, load_runtime
from .postprocess import Prediction, Recognition, top_k
from .recognizer import Recognizer, health_check
from .runner import RunOptions, RunSummary, run
from .search import CatalogIndex, Match
from .sinks import make_sinks
from .sources import open_source

__all__ = ["CatalogIndex", "Match", "Prediction", "Recognition", "Recognizer", "RunOptions", "RunSummary",
           "TFLiteModel", "health_check", "load_runtime", "make_sinks", "open_source", "run", "top_k"]

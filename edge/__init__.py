"""shelfsight's device side. Imports numpy, OpenCV, Annoy and a TFLite runtime — never TensorFlow.

    runtime/    interpreter adapter, recogniser, post-processing, hot reload
    pipeline/   sources, capture thread, quality gate, smoothing, events, sinks, health, the run loop
    catalog/    catalog items, vectors, Annoy/exact index, tuning, PCA, enrolment
    sync/       outbox and uploader, bundle store, signed updates, HTTP
    indexing    build a bundle's index with its own model (runtime + catalog)
    cli/        the device commands
"""
from .catalog import CatalogIndex, Match
from .pipeline import RunOptions, RunSummary, make_sinks, open_source, run
from .runtime import Prediction, Recognition, Recognizer, TFLiteModel, health_check, load_runtime, top_k

__all__ = ["CatalogIndex", "Match", "Prediction", "Recognition", "Recognizer", "RunOptions", "RunSummary",
           "TFLiteModel", "health_check", "load_runtime", "make_sinks", "open_source", "run", "top_k"]

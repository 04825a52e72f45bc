"""shelfsight's device side. Imports numpy, OpenCV, Annoy and a TFLite runtime — never TensorFlow.

    runtime/    interpreter adapter, recogniser and its running modes, post-processing, smoothing, hot reload
    pipeline/   sources, capture thread, quality gate, events, sinks, health, the run loop
    catalog/    catalog items, vectors, Annoy/exact index, its spec and generations, tuning, PCA, enrolment
    sync/       outbox and uploader, bundle store, signed updates, HTTP
    device      one device process: run loop + recogniser + sinks + sync, wired once (`shelfsight run`)
    indexing    build a bundle's index with its own model (runtime + catalog)
    cli/        the device commands
"""
from .catalog import CatalogIndex, IndexOptions, Match
from .device import Device, DeviceOptions
from .pipeline import RunOptions, RunSummary, make_sinks, open_source, run
from .runtime import (FrameRecognizer, Prediction, Recognition, Recognizer, RecognizerOptions, RunningMode,
                      SmoothingOptions, TFLiteModel, health_check, load_runtime, top_k)

__all__ = ["CatalogIndex", "Device", "DeviceOptions", "FrameRecognizer", "IndexOptions", "Match", "Prediction",
           "Recognition", "Recognizer", "RecognizerOptions", "RunOptions", "RunSummary", "RunningMode",
           "SmoothingOptions", "TFLiteModel", "health_check", "load_runtime", "make_sinks", "open_source", "run",
           "top_k"]

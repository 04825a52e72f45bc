"""The device runtime: a bundle's TFLite model in, recognitions out (no TensorFlow).

`TFLiteModel` adapts whichever TFLite interpreter is installed, `Recognizer` turns a BGR
frame into a `Recognition` (top-k classes and similar catalog items), `ReloadableRecognizer`
swaps bundles while a camera loop runs, and `postprocess` holds the plain-numpy functions.
"""
from .batch import predict_tflite
from .interpreter import TFLiteModel, load_runtime
from .postprocess import FrameRecognizer, Prediction, Recognition, top_k
from .recognizer import Recognizer, health_check
from .reload import ReloadableRecognizer

__all__ = ["FrameRecognizer", "Prediction", "Recognition", "Recognizer", "ReloadableRecognizer", "TFLiteModel", "health_check",
           "load_runtime", "predict_tflite", "top_k"]

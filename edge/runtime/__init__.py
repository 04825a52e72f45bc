"""The device runtime: a bundle's TFLite model in, recognitions out (no TensorFlow).

`TFLiteModel` adapts whichever TFLite interpreter is installed, `Recognizer` turns a BGR
frame into a `Recognition` (top-k classes and similar catalog items) in one of three running
modes (`RecognizerOptions`, `RunningMode`: image, video with temporal smoothing, live stream
with a result callback), `ReloadableRecognizer` swaps bundles while a camera loop runs, and
`postprocess` holds the plain-numpy functions.
"""
from .batch import predict_tflite
from .interpreter import TFLiteModel, load_runtime
from .options import RecognizerOptions, RunningMode
from .postprocess import FrameRecognizer, Prediction, Recognition, top_k
from .recognizer import Recognizer, health_check
from .reload import ReloadableRecognizer
from .smoothing import SmoothingOptions, TemporalSmoother

__all__ = ["FrameRecognizer", "Prediction", "Recognition", "Recognizer", "RecognizerOptions", "ReloadableRecognizer",
           "RunningMode", "SmoothingOptions", "TFLiteModel", "TemporalSmoother", "health_check", "load_runtime",
           "predict_tflite", "top_k"]

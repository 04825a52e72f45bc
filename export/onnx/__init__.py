"""Bring your own model: an ONNX image classifier or embedder -> a verified bundle (onnx2tf).

    graph      read the ONNX graph: its image input, which outputs are scores and embedding
    convert    onnx2tf and the TFLite conversion (TensorFlow)
    check      how closely a conversion reproduces onnxruntime, as plain numpy
    options    the input normalisation and conversion options
    importer   the whole import; cli: `shelfsight import-onnx`
"""
from .check import Agreement
from .options import ImportOptions, InputNormalization

__all__ = ["Agreement", "ImportOptions", "InputNormalization"]

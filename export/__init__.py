"""Export side: pruning, QAT, TFLite conversion and metadata, the bundle writer, ONNX import.

Import submodules directly (`shelfsight.export.exporter`); most need TensorFlow.
"""

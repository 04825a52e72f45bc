"""Export side: pruning, QAT, TFLite conversion and metadata, the bundle writer; `onnx/`
imports a model from ONNX.

Import submodules directly (`shelfsight.export.exporter`); most need TensorFlow.
"""

"""Export side: pruning, QAT, TFLite conversion and metadata, the bundle writer; `onnx/`
imports a model from ONNX.

    from shelfsight.export import ExportOptions, QATOptions, QuantizationConfig, export_run
    export_run("runs/lite0", "bundle/", ExportOptions(QuantizationConfig.for_int8(), qat=QATOptions()))

Names load on first use (`shelfsight.lazy`): most modules here need TensorFlow, the
options and the metadata reader do not.
"""
from shelfsight.lazy import lazy_exports

_EXPORTS = {"ExportResult": "exporter", "RegressionError": "exporter", "export_run": "exporter",
            "ExportOptions": "options", "PruneOptions": "options", "QATOptions": "options", "QuantizationConfig": "options",
            "GuardReport": "guard", "MetadataSpec": "metadata", "read_metadata": "metadata",
            "write_metadata": "metadata"}
__all__ = sorted(_EXPORTS)
__getattr__ = lazy_exports(__name__, _EXPORTS)

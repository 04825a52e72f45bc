"""A real, loadable bundle in milliseconds: a hand-built TFLite flatbuffer, no TensorFlow.

The model takes float32 1 x S x S x 3 pixels and gives ``scores`` = the mean of each channel
(1 x 3) and ``embedding`` = those means, L2-normalised (1 x 3): two builtin ops (MEAN,
L2_NORMALIZATION) that every TFLite runtime has. Good for tests of loading, unpacking,
reloading and the CLI, not of recognition quality.
"""
from __future__ import annotations

from pathlib import Path

import flatbuffers
import numpy as np
from ai_edge_litert import schema_py_generated as schema

from shelfsight.bundle import new_manifest, write_manifest
from shelfsight.preprocess import PreprocessSpec

LABELS = ("red", "green", "blue")


def _tensor(name: str, shape: list[int], dtype: int, buffer: int) -> schema.TensorT:
    t = schema.TensorT()
    t.name, t.shape, t.type, t.buffer = name, shape, dtype, buffer
    return t


def _operator(opcode: int, inputs: list[int], outputs: list[int], options_type: int, options) -> schema.OperatorT:
    op = schema.OperatorT()
    op.opcodeIndex, op.inputs, op.outputs = opcode, inputs, outputs
    op.builtinOptionsType, op.builtinOptions = options_type, options
    return op


def tiny_tflite(size: int = 32) -> bytes:
    """The model's flatbuffer (see the module docstring)."""
    buffers = [schema.BufferT() for _ in range(5)]  # buffer 0 is the empty sentinel
    buffers[2].data = list(np.array([1, 2], np.int32).tobytes())  # MEAN's axes
    f32, i32 = schema.TensorType.FLOAT32, schema.TensorType.INT32
    codes = []
    for builtin in (schema.BuiltinOperator.MEAN, schema.BuiltinOperator.L2_NORMALIZATION):
        code = schema.OperatorCodeT()
        code.builtinCode = code.deprecatedBuiltinCode = builtin
        code.version = 1
        codes.append(code)
    graph = schema.SubGraphT()
    graph.name = "main"
    graph.tensors = [_tensor("image", [1, size, size, 3], f32, 1), _tensor("axes", [2], i32, 2),
                     _tensor("scores", [1, len(LABELS)], f32, 3), _tensor("embedding", [1, len(LABELS)], f32, 4)]
    graph.inputs, graph.outputs = [0], [2, 3]
    graph.operators = [
        _operator(0, [0, 1], [2], schema.BuiltinOptions.ReducerOptions, schema.ReducerOptionsT()),
        _operator(1, [2], [3], schema.BuiltinOptions.L2NormOptions, schema.L2NormOptionsT())]
    model = schema.ModelT()
    model.version, model.description = 3, "shelfsight test model"
    model.operatorCodes, model.subgraphs, model.buffers = codes, [graph], buffers
    builder = flatbuffers.Builder(1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def make_tiny_bundle(root: Path, size: int = 32, bundle_id: str | None = None,
                     created_at: str = "2026-12-01T00:00:00+00:00") -> Path:
    """A verified bundle directory with the tiny model and the labels red, green, blue (its
    manifest the same bytes on every call with the same arguments and a ``bundle_id``)."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "model.tflite").write_bytes(tiny_tflite(size))
    (root / "labels.txt").write_text("\n".join(LABELS) + "\n", encoding="utf-8")
    manifest = new_manifest(model={"file": "model.tflite", "format": "tflite", "quantization": "float32"},
                            labels={"file": "labels.txt", "count": len(LABELS)},
                            preprocess=PreprocessSpec(size=size).to_dict(), thresholds={"unknown_score": 0.0},
                            index=None, metrics={}, provenance={})
    manifest["created_at"] = created_at
    if bundle_id is not None:
        manifest["bundle_id"] = bundle_id
    write_manifest(root, manifest)
    return root

"""What a detector's TFLite metadata says: the input's normalisation and the outputs' names.

Detectors exported by MediaPipe Model Maker or with tflite-support's object-detector writer
carry a ``TFLITE_METADATA`` flatbuffer (tflite-support's ``metadata_schema.fbs``): the
input's NormalizationOptions (mean, std) and one TensorMetadata per output, in the order of
the subgraph's outputs, named "location", "category", "score", "number of detections".
Only those few fields are read, straight from the flatbuffer (the schema's field slots are
below), so the device needs no tflite-support; without ai-edge-litert's model schema the
metadata is not read and the detector's options apply.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

METADATA_NAME = b"TFLITE_METADATA"
# field slots (declaration order) in metadata_schema.fbs
_MODEL_SUBGRAPHS = 3
_SUBGRAPH_INPUTS, _SUBGRAPH_OUTPUTS = 2, 3
_TENSOR_NAME, _TENSOR_PROCESS_UNITS = 0, 4
_UNIT_OPTIONS_TYPE, _UNIT_OPTIONS = 0, 1
_NORMALIZATION = 1  # ProcessUnitOptions.NormalizationOptions
_NORM_MEAN, _NORM_STD = 0, 1
# output names the object-detector metadata gives -> our roles
ROLE_NAMES = {"location": "boxes", "category": "classes", "score": "scores", "number of detections": "count"}


@dataclass(frozen=True)
class DetectorMetadata:
    """Attributes:
        mean, std: the input's normalisation, per channel (None: the metadata does not say).
        outputs: role ("boxes", ...) -> tensor index, for the outputs the metadata names.
    """

    mean: tuple[float, ...] | None
    std: tuple[float, ...] | None
    outputs: dict[str, int]


def read_detector_metadata(path: str | Path) -> DetectorMetadata | None:
    """The metadata of the model at ``path``; None when it has none (or it cannot be read here)."""
    try:
        import flatbuffers
        from ai_edge_litert import schema_py_generated as tfl
    except ImportError:
        return None
    data = bytearray(Path(path).read_bytes())
    model = tfl.Model.GetRootAs(data, 0)
    raw = None
    for i in range(model.MetadataLength()):
        entry = model.Metadata(i)
        if entry.Name() == METADATA_NAME:
            raw = model.Buffers(entry.Buffer()).DataAsNumpy()
    if raw is None or isinstance(raw, int) or len(raw) < 8:
        return None
    buf = bytearray(raw.tobytes())
    root = flatbuffers.table.Table(buf, flatbuffers.encode.Get(flatbuffers.packer.uoffset, buf, 0))
    subgraphs = _tables(root, _MODEL_SUBGRAPHS)
    if not subgraphs:
        return None
    inputs, outputs = _tables(subgraphs[0], _SUBGRAPH_INPUTS), _tables(subgraphs[0], _SUBGRAPH_OUTPUTS)
    mean = std = None
    for unit in _tables(inputs[0], _TENSOR_PROCESS_UNITS) if inputs else []:
        o = unit.Offset(_slot(_UNIT_OPTIONS_TYPE))
        if o and unit.Get(flatbuffers.number_types.Uint8Flags, o + unit.Pos) == _NORMALIZATION:
            options = flatbuffers.table.Table(bytearray(), 0)
            unit.Union(options, unit.Offset(_slot(_UNIT_OPTIONS)))
            mean, std = _floats(options, _NORM_MEAN), _floats(options, _NORM_STD)
    graph = model.Subgraphs(0)
    roles = {}
    for i, tensor in enumerate(outputs[:graph.OutputsLength()]):
        o = tensor.Offset(_slot(_TENSOR_NAME))
        name = tensor.String(o + tensor.Pos).decode("utf-8", "replace").lower() if o else ""
        if name in ROLE_NAMES:
            roles[ROLE_NAMES[name]] = int(graph.Outputs(i))
    return DetectorMetadata(mean, std, roles)


def _slot(field: int) -> int:
    return 4 + 2 * field


def _tables(table, field: int) -> list:
    import flatbuffers

    o = table.Offset(_slot(field))
    if not o:
        return []
    start = table.Vector(o)
    return [flatbuffers.table.Table(table.Bytes, table.Indirect(start + 4 * i)) for i in range(table.VectorLen(o))]


def _floats(table, field: int) -> tuple[float, ...] | None:
    import flatbuffers

    o = table.Offset(_slot(field))
    if not o:
        return None
    values = table.GetVectorAsNumpy(flatbuffers.number_types.Float32Flags, o)
    return tuple(float(v) for v in np.asarray(values).reshape(-1)) or None

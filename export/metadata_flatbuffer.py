"""The .tflite flatbuffer as metadata writing and reading need it: load and unpack a model,
name its outputs, put a metadata buffer in, pack it again, and the zip of associated files
appended after it (the layout the TFLite metadata populator writes and MediaPipe reads).
"""
from __future__ import annotations

import io
import os
import struct
import zipfile
from pathlib import Path
from typing import Any

import flatbuffers
import numpy as np
from ai_edge_litert import schema_py_generated as tfl

from shelfsight.errors import ModelError

METADATA_NAME = "TFLITE_METADATA"
MODEL_IDENTIFIER = b"TFL3"
ModelSource = str | os.PathLike | bytes | bytearray



def model_bytes(model: ModelSource) -> bytes:
    if isinstance(model, (bytes, bytearray)):
        return bytes(model)
    path = Path(model)
    if not path.is_file():
        raise ModelError(f"model file {path} not found")
    return path.read_bytes()


def model_root(data: bytes) -> tfl.Model:
    if len(data) < 8 or not tfl.Model.ModelBufferHasIdentifier(data, 0):
        raise ModelError(f"not a TFLite model: file identifier {data[4:8]!r}, expected {MODEL_IDENTIFIER!r}")
    return tfl.Model.GetRootAs(data, 0)


def unpack_model(data: bytes) -> tfl.ModelT:
    root = model_root(data)
    try:
        model = tfl.ModelT.InitFromObj(root)
    except (struct.error, IndexError, ValueError) as e:
        raise ModelError(f"TFLite model is corrupt ({e})") from None
    if not model.subgraphs:
        raise ModelError("TFLite model has no subgraph")
    return model


def output_names_of(model: tfl.ModelT) -> list[str]:
    graph = model.subgraphs[0]
    signature = next((s for s in model.signatureDefs or [] if s.subgraphIndex == 0), None)
    by_index = {m.tensorIndex: text(m.name) for m in (signature.outputs or [])} if signature else {}
    return [by_index.get(i, text(graph.tensors[i].name)) for i in graph.outputs]


def set_metadata_buffer(model: tfl.ModelT, payload: bytes) -> None:
    buffer = tfl.BufferT()
    buffer.data = np.frombuffer(payload, dtype=np.uint8)
    model.buffers = model.buffers or []
    model.metadata = model.metadata or []
    for entry in model.metadata:
        if text(entry.name) == METADATA_NAME:
            model.buffers[entry.buffer] = buffer
            return
    model.buffers.append(buffer)
    entry = tfl.MetadataT()
    entry.name, entry.buffer = METADATA_NAME, len(model.buffers) - 1
    model.metadata.append(entry)


def pack(obj: Any, identifier: bytes) -> bytes:
    builder = flatbuffers.Builder(1024)
    builder.Finish(obj.Pack(builder), file_identifier=identifier)
    return bytes(builder.Output())


def append_files(model_bytes: bytes, files: dict[str, bytes]) -> bytes:
    """Append files as an uncompressed zip (MediaPipe refuses compressed entries); offsets are
    absolute in the whole file, as zipfile's append mode writes them. Fixed timestamps keep
    the output byte-for-byte reproducible."""
    stream = io.BytesIO(model_bytes)
    with zipfile.ZipFile(stream, "a", compression=zipfile.ZIP_STORED) as zf:
        for name, payload in files.items():
            zf.writestr(zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0)), payload)
    return stream.getvalue()


def open_zip(data: bytes) -> zipfile.ZipFile | None:
    try:
        return zipfile.ZipFile(io.BytesIO(data))
    except zipfile.BadZipFile:
        return None


def text(value: bytes | str | None) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else (value or "")

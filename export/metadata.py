"""Embed and read TFLite model metadata: labels, input normalisation, output descriptions.

Writes the standard metadata schema that the TFLite Task Library (Android/iOS) and
MediaPipe Tasks read: a ``ModelMetadata`` flatbuffer (file identifier ``M001``) stored in a
model buffer that the model's ``metadata`` list names ``TFLITE_METADATA``, and the labels
file packed as an uncompressed zip appended to the model, the way the reference populator
does. The TFLite interpreter ignores both, so the model computes exactly what it did.

Our models take RGB pixels 0..255 and normalise inside the graph, so the input metadata
says mean 0 / std 1. What the readers do with it (MediaPipe Tasks'
``image_preprocessing_graph`` and ``image_tensor_specs``):

- float32 input: NormalizationOptions are required; the image is fed as floats in
  ``[(0 - mean) / std, (255 - mean) / std]``, so mean 0 / std 1 means raw pixels 0..255.
  Only one value for all channels is supported (1 or 3 equal values; different
  per-channel values are refused as "Per-channel image normalization is not available").
- uint8 input: raw pixels 0..255 are fed as they are; NormalizationOptions are parsed
  (mean and std must have the same length, 1 or 3) but not applied: the input tensor's own
  quantisation parameters map bytes to the values the graph expects.
- int8 input: refused by MediaPipe Tasks (uint8 or float32 only), and only one 1xHxWx3
  input and one subgraph are accepted.

The pieces: `metadata_tensors` builds the ModelMetadata, `metadata_flatbuffer` reads and
repacks the model flatbuffer; this module is the API (`MetadataSpec`, write, read).

Model schema: the object API of ``ai_edge_litert.schema_py_generated`` (the runtime's own,
current schema), not tflite-support 0.4.4's older copy, which lacks fields the TF 2.19
converter can write (Buffer.offset/size, Operator.builtin_options_2 and 23 option tables)
and would drop them silently on repacking.
"""
from __future__ import annotations

import math
import os
import re
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tensorflow_lite_support.metadata import metadata_schema_py_generated as md

from shelfsight.atomic import write_bytes
from shelfsight.errors import ConfigError, ModelError

from .metadata_flatbuffer import (METADATA_NAME, MODEL_IDENTIFIER, ModelSource, append_files, model_bytes,
                                  model_root, open_zip, output_names_of, pack, set_metadata_buffer,
                                  unpack_model)
from .metadata_tensors import MIN_PARSER_VERSION, model_metadata

METADATA_IDENTIFIER = b"M001"
LABELS_FILE = "labels.txt"
__all__ = ["LABELS_FILE", "METADATA_NAME", "MIN_PARSER_VERSION", "MetadataSpec", "ModelSource", "associated_files",
           "embed_metadata", "output_names", "read_associated_file", "read_metadata", "write_metadata"]


@dataclass(frozen=True)
class MetadataSpec:
    """What to embed in a model.

    Attributes:
        labels: class names in the order of the scores output.
        input_mean, input_std: normalisation in pixel units, 1 or 3 values each
            ((pixel - mean) / std is what the model's input expects).
        name, version, description, author, license: model-level fields.
        scores_output, embedding_output: signature names of the two outputs
            (embedding_output None for a classifier without embedding).
        labels_file: name of the packed labels file.
    """

    labels: tuple[str, ...]
    input_mean: tuple[float, ...]
    input_std: tuple[float, ...]
    name: str
    version: str
    description: str = ""
    author: str = ""
    license: str = ""
    scores_output: str = "scores"
    embedding_output: str | None = "embedding"
    labels_file: str = LABELS_FILE

    def __post_init__(self) -> None:
        # sequences in, tuples kept (frozen all the way down; the length checks below apply)
        object.__setattr__(self, "labels", tuple(self.labels))
        for name in ("input_mean", "input_std"):
            try:
                object.__setattr__(self, name, tuple(float(v) for v in getattr(self, name)))
            except (TypeError, ValueError):
                raise ConfigError(f"input {name.removeprefix('input_')} {getattr(self, name)!r} must be "
                                  f"1 or 3 numbers") from None
        if not self.labels:
            raise ConfigError("labels are empty, expected one label per class")
        bad = [label for label in self.labels if not label or label != label.strip() or label.splitlines() != [label]]
        if bad:
            raise ConfigError(f"labels {bad!r} are empty, padded or multi-line, expected one word or phrase each")
        if len(set(self.labels)) != len(self.labels):
            dupes = sorted({label for label in self.labels if self.labels.count(label) > 1})
            raise ConfigError(f"labels {dupes} appear more than once")
        if len(self.input_mean) != len(self.input_std) or len(self.input_mean) not in (1, 3):
            raise ConfigError(f"input mean {list(self.input_mean)} and std {list(self.input_std)} "
                              f"need the same length, 1 or 3 values")
        if not all(math.isfinite(v) for v in self.input_mean + self.input_std) or min(map(abs, self.input_std)) == 0:
            raise ConfigError(f"input std {list(self.input_std)} must be finite and non-zero")
        if not self.name or not self.version:
            raise ConfigError(f"model name {self.name!r} and version {self.version!r} must not be empty")
        if self.scores_output == self.embedding_output:
            raise ConfigError(f"scores and embedding outputs are both named {self.scores_output!r}")
        if not self.labels_file or "/" in self.labels_file:
            raise ConfigError(f"labels file name {self.labels_file!r} must be a plain file name")


def write_metadata(model: ModelSource, spec: MetadataSpec, out: str | os.PathLike | None = None) -> bytes:
    """Embed metadata and the labels file in a .tflite (any metadata already there is replaced).

    Args:
        model: path of a .tflite file, or its bytes.
        spec: the labels, input normalisation, output names and model-level fields.
        out: also write the result here, atomically (may be the input path).

    Returns:
        the model with metadata and packed labels.

    Raises:
        ModelError: not a TFLite model, or its input/outputs do not fit the labels and names.
    """
    data = embed_metadata(model_bytes(model), spec)
    if out is not None:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        write_bytes(Path(out), data)
    return data


def embed_metadata(data: bytes, spec: MetadataSpec) -> bytes:
    """The model with `spec` embedded; see `write_metadata`."""
    model = unpack_model(data)
    external = [i for i, b in enumerate(model.buffers or []) if getattr(b, "offset", 0) > 1]
    if external:
        raise ModelError(f"model keeps {len(external)} buffers outside the flatbuffer (a >2 GB layout), "
                         f"which metadata writing does not support")
    graph = model.subgraphs[0]
    metadata = model_metadata(model, graph, spec)
    set_metadata_buffer(model, pack(metadata, METADATA_IDENTIFIER))
    packed = pack(model, MODEL_IDENTIFIER)
    return append_files(packed, {spec.labels_file: ("\n".join(spec.labels) + "\n").encode("utf-8")})


def output_names(model: ModelSource) -> list[str]:
    """Output names in the model's output tensor order (what get_output_details lists).

    A name is the output's signature name (first signature of the main subgraph), else the
    tensor name, as `shelfsight.edge.interpreter` names them.
    """
    return output_names_of(unpack_model(model_bytes(model)))


def read_metadata(model: ModelSource) -> dict[str, Any]:
    """The embedded ModelMetadata as plain data (schema field names, enum values by name).

    Raises:
        ModelError: not a TFLite model, or it carries no metadata.
    """
    data = model_bytes(model)
    fb = model_root(data)
    for i in range(fb.MetadataLength()):
        entry = fb.Metadata(i)
        if entry.Name() == METADATA_NAME.encode():
            buffer = fb.Buffers(entry.Buffer())
            raw = buffer.DataAsNumpy().tobytes() if buffer.DataLength() else b""
            break
    else:
        raise ModelError(f"model has no TFLite metadata (no {METADATA_NAME!r} entry)")
    if not md.ModelMetadata.ModelMetadataBufferHasIdentifier(raw, 0):
        raise ModelError(f"{METADATA_NAME} buffer has identifier {raw[4:8]!r}, expected {METADATA_IDENTIFIER!r}")
    try:
        return _plain(md.ModelMetadataT.InitFromPackedBuf(raw, 0))
    except (struct.error, IndexError, ValueError) as e:
        raise ModelError(f"{METADATA_NAME} buffer is corrupt ({e})") from None


def associated_files(model: ModelSource) -> list[str]:
    """Names of the files packed after the model (empty when none are)."""
    zf = open_zip(model_bytes(model))
    return [] if zf is None else zf.namelist()


def read_associated_file(model: ModelSource, name: str) -> bytes:
    """The content of a file packed after the model.

    Raises:
        ModelError: no such file is packed.
    """
    zf = open_zip(model_bytes(model))
    names = [] if zf is None else zf.namelist()
    if name not in names:
        raise ModelError(f"associated file {name!r} is not packed in the model; packed: {names}")
    return zf.read(name)


def _enum_names(cls: type) -> dict[int, str]:
    return {v: k for k, v in vars(cls).items() if not k.startswith("_") and isinstance(v, int)}


_ENUM_FIELDS = {
    ("AssociatedFileT", "type"): _enum_names(md.AssociatedFileType),
    ("ImagePropertiesT", "colorSpace"): _enum_names(md.ColorSpaceType),
    ("ContentT", "contentPropertiesType"): _enum_names(md.ContentProperties),
    ("ProcessUnitT", "optionsType"): _enum_names(md.ProcessUnitOptions),
    ("BoundingBoxPropertiesT", "type"): _enum_names(md.BoundingBoxType),
    ("BoundingBoxPropertiesT", "coordinateType"): _enum_names(md.CoordinateType),
    ("ScoreCalibrationOptionsT", "scoreTransformation"): _enum_names(md.ScoreTransformationType),
}


def _plain(obj: Any) -> Any:
    """Object-API metadata as dicts/lists/str/numbers, keys in the schema's snake_case."""
    if isinstance(obj, bytes):
        return obj.decode("utf-8")
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if hasattr(obj, "__dict__"):
        out = {}
        for key, value in vars(obj).items():
            if value is None:
                continue
            names = _ENUM_FIELDS.get((type(obj).__name__, key))
            out[_snake(key)] = names.get(value, value) if names else _plain(value)
        return out
    return obj


def _snake(name: str) -> str:
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", name).lower()

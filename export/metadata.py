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

Model schema: the object API of ``ai_edge_litert.schema_py_generated`` (the runtime's own,
current schema), not tflite-support 0.4.4's older copy, which lacks fields the TF 2.19
converter can write (Buffer.offset/size, Operator.builtin_options_2 and 23 option tables)
and would drop them silently on repacking.
"""
from __future__ import annotations

import io
import math
import os
import re
import struct
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import flatbuffers
import numpy as np
from ai_edge_litert import schema_py_generated as tfl
from tensorflow_lite_support.metadata import metadata_schema_py_generated as md

from shelfsight.errors import ConfigError, ModelError

METADATA_NAME = "TFLITE_METADATA"
MODEL_IDENTIFIER = b"TFL3"
METADATA_IDENTIFIER = b"M001"
# Every table and enum value written here exists since metadata schema 1.0.0 (no tensor
# groups, process units on the subgraph, file versions or custom metadata).
MIN_PARSER_VERSION = "1.0.0"
LABELS_FILE = "labels.txt"

ModelSource = str | os.PathLike | bytes | bytearray
_PIXEL_MIN, _PIXEL_MAX = 0.0, 255.0
_INT_RANGES = {tfl.TensorType.UINT8: (0.0, 255.0), tfl.TensorType.INT8: (-128.0, 127.0)}
_TYPE_NAMES = {v: k for k, v in vars(tfl.TensorType).items() if not k.startswith("_")}


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


def write_metadata(model: ModelSource, labels: Sequence[str], *, input_mean: Sequence[float],
                   input_std: Sequence[float], name: str, version: str, description: str = "",
                   author: str = "", license: str = "", embedding_output: str | None = "embedding",
                   scores_output: str = "scores", out: str | os.PathLike | None = None) -> bytes:
    """Embed metadata and the labels file in a .tflite (any metadata already there is replaced).

    Args:
        model: path of a .tflite file, or its bytes.
        labels: class names in the order of the scores output.
        input_mean, input_std: see `MetadataSpec`; (0,0,0) / (1,1,1) for our models.
        out: also write the result here, atomically (may be the input path).

    Returns:
        the model with metadata and packed labels.

    Raises:
        ConfigError: bad labels or normalisation values.
        ModelError: not a TFLite model, or its input/outputs do not fit the labels and names.
    """
    spec = MetadataSpec(labels=tuple(labels), input_mean=tuple(float(v) for v in input_mean),
                        input_std=tuple(float(v) for v in input_std), name=name, version=version,
                        description=description, author=author, license=license,
                        scores_output=scores_output, embedding_output=embedding_output)
    data = embed_metadata(_model_bytes(model), spec)
    if out is not None:
        _write_atomic(Path(out), data)
    return data


def embed_metadata(model_bytes: bytes, spec: MetadataSpec) -> bytes:
    """The model with `spec` embedded; see `write_metadata`."""
    model = _unpack_model(model_bytes)
    external = [i for i, b in enumerate(model.buffers or []) if getattr(b, "offset", 0) > 1]
    if external:
        raise ModelError(f"model keeps {len(external)} buffers outside the flatbuffer (a >2 GB layout), "
                         f"which metadata writing does not support")
    graph = model.subgraphs[0]
    metadata = _model_metadata(model, graph, spec)
    _set_metadata_buffer(model, _pack(metadata, METADATA_IDENTIFIER))
    packed = _pack(model, MODEL_IDENTIFIER)
    return _append_files(packed, {spec.labels_file: ("\n".join(spec.labels) + "\n").encode("utf-8")})


def output_names(model: ModelSource) -> list[str]:
    """Output names in the model's output tensor order (what get_output_details lists).

    A name is the output's signature name (first signature of the main subgraph), else the
    tensor name, as `shelfsight.edge.interpreter` names them.
    """
    return _output_names(_unpack_model(_model_bytes(model)))


def read_metadata(model: ModelSource) -> dict[str, Any]:
    """The embedded ModelMetadata as plain data (schema field names, enum values by name).

    Raises:
        ModelError: not a TFLite model, or it carries no metadata.
    """
    data = _model_bytes(model)
    fb = _model_root(data)
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
    zf = _open_zip(_model_bytes(model))
    return [] if zf is None else zf.namelist()


def read_associated_file(model: ModelSource, name: str) -> bytes:
    """The content of a file packed after the model.

    Raises:
        ModelError: no such file is packed.
    """
    zf = _open_zip(_model_bytes(model))
    names = [] if zf is None else zf.namelist()
    if name not in names:
        raise ModelError(f"associated file {name!r} is not packed in the model; packed: {names}")
    return zf.read(name)


# -- building the metadata -------------------------------------------------------------------

def _model_metadata(model: tfl.ModelT, graph: tfl.SubGraphT, spec: MetadataSpec) -> md.ModelMetadataT:
    if len(graph.inputs) != 1:
        raise ModelError(f"model has {len(graph.inputs)} inputs, expected one image input")
    names = _output_names(model)
    wanted = [spec.scores_output] + ([spec.embedding_output] if spec.embedding_output else [])
    if sorted(names) != sorted(wanted):
        raise ModelError(f"model outputs are {names}, expected {wanted}")
    tensors = {n: graph.tensors[i] for n, i in zip(names, graph.outputs)}
    classes = int(tensors[spec.scores_output].shape[-1])
    if classes != len(spec.labels):
        raise ModelError(f"scores output has {classes} classes, got {len(spec.labels)} labels")

    sub = md.SubGraphMetadataT()
    sub.name = spec.name
    sub.inputTensorMetadata = [_input_metadata(graph.tensors[graph.inputs[0]], spec)]
    makers = {spec.scores_output: _scores_metadata, spec.embedding_output: _embedding_metadata}
    sub.outputTensorMetadata = [makers[n](tensors[n], spec) for n in names]
    meta = md.ModelMetadataT()
    meta.name, meta.version, meta.description = spec.name, spec.version, spec.description
    meta.author, meta.license = spec.author, spec.license
    meta.subgraphMetadata = [sub]
    meta.minParserVersion = MIN_PARSER_VERSION
    return meta


def _input_metadata(tensor: tfl.TensorT, spec: MetadataSpec) -> md.TensorMetadataT:
    shape = [int(v) for v in tensor.shape]
    if len(shape) != 4 or shape[0] != 1 or shape[3] != 3:
        raise ModelError(f"input shape {shape}, expected [1, height, width, 3] RGB")
    if tensor.type not in (tfl.TensorType.FLOAT32, *_INT_RANGES):
        raise ModelError(f"input type {_TYPE_NAMES.get(tensor.type, tensor.type)}, expected FLOAT32, UINT8 or INT8")
    image = md.ImagePropertiesT()
    image.colorSpace = md.ColorSpaceType.RGB
    image.defaultSize = md.ImageSizeT()
    image.defaultSize.height, image.defaultSize.width = shape[1], shape[2]
    norm = md.NormalizationOptionsT()
    norm.mean, norm.std = list(spec.input_mean), list(spec.input_std)
    unit = md.ProcessUnitT()
    unit.optionsType, unit.options = md.ProcessUnitOptions.NormalizationOptions, norm
    if tensor.type in _INT_RANGES:
        low, high = _INT_RANGES[tensor.type]
        stats = ([low], [high])
    else:
        stats = ([(_PIXEL_MIN - m) / s for m, s in zip(spec.input_mean, spec.input_std)],
                 [(_PIXEL_MAX - m) / s for m, s in zip(spec.input_mean, spec.input_std)])
    height, width = shape[1], shape[2]
    return _tensor_metadata("image", f"RGB image, {width}x{height}, pixels 0..255",
                            md.ContentProperties.ImageProperties, image, stats, process_units=[unit])


def _scores_metadata(tensor: tfl.TensorT, spec: MetadataSpec) -> md.TensorMetadataT:
    labels = md.AssociatedFileT()
    labels.name = spec.labels_file
    labels.description = "Class names of the scores output, one per line."
    labels.type = md.AssociatedFileType.TENSOR_AXIS_LABELS
    low, high = _INT_RANGES.get(tensor.type, (0.0, 1.0))
    return _tensor_metadata("scores", f"Probabilities of the {len(spec.labels)} classes.",
                            md.ContentProperties.FeatureProperties, md.FeaturePropertiesT(),
                            ([low], [high]), associated=[labels])


def _embedding_metadata(tensor: tfl.TensorT, spec: MetadataSpec) -> md.TensorMetadataT:
    low, high = _INT_RANGES.get(tensor.type, (-1.0, 1.0))
    return _tensor_metadata("embedding", f"L2-normalised image embedding of {int(tensor.shape[-1])} values "
                            f"for similarity search.", md.ContentProperties.FeatureProperties,
                            md.FeaturePropertiesT(), ([low], [high]))


def _tensor_metadata(name: str, description: str, content_type: int, properties: Any,
                     stats: tuple[list[float], list[float]], process_units: list | None = None,
                     associated: list | None = None) -> md.TensorMetadataT:
    t = md.TensorMetadataT()
    t.name, t.description = name, description
    t.content = md.ContentT()
    # Content.range stays null: it names the tensor dimensions the content spans (bounding
    # boxes, heatmaps); null means "all but the batch axis", true for all three tensors.
    t.content.contentPropertiesType, t.content.contentProperties = content_type, properties
    t.stats = md.StatsT()
    t.stats.min, t.stats.max = stats
    t.processUnits = process_units
    t.associatedFiles = associated
    return t


# -- the model flatbuffer --------------------------------------------------------------------

def _model_bytes(model: ModelSource) -> bytes:
    if isinstance(model, (bytes, bytearray)):
        return bytes(model)
    path = Path(model)
    if not path.is_file():
        raise ModelError(f"model file {path} not found")
    return path.read_bytes()


def _model_root(data: bytes) -> tfl.Model:
    if len(data) < 8 or not tfl.Model.ModelBufferHasIdentifier(data, 0):
        raise ModelError(f"not a TFLite model: file identifier {data[4:8]!r}, expected {MODEL_IDENTIFIER!r}")
    return tfl.Model.GetRootAs(data, 0)


def _unpack_model(data: bytes) -> tfl.ModelT:
    root = _model_root(data)
    try:
        model = tfl.ModelT.InitFromObj(root)
    except (struct.error, IndexError, ValueError) as e:
        raise ModelError(f"TFLite model is corrupt ({e})") from None
    if not model.subgraphs:
        raise ModelError("TFLite model has no subgraph")
    return model


def _output_names(model: tfl.ModelT) -> list[str]:
    graph = model.subgraphs[0]
    signature = next((s for s in model.signatureDefs or [] if s.subgraphIndex == 0), None)
    by_index = {m.tensorIndex: _text(m.name) for m in (signature.outputs or [])} if signature else {}
    return [by_index.get(i, _text(graph.tensors[i].name)) for i in graph.outputs]


def _set_metadata_buffer(model: tfl.ModelT, payload: bytes) -> None:
    buffer = tfl.BufferT()
    buffer.data = np.frombuffer(payload, dtype=np.uint8)
    model.buffers = model.buffers or []
    model.metadata = model.metadata or []
    for entry in model.metadata:
        if _text(entry.name) == METADATA_NAME:
            model.buffers[entry.buffer] = buffer
            return
    model.buffers.append(buffer)
    entry = tfl.MetadataT()
    entry.name, entry.buffer = METADATA_NAME, len(model.buffers) - 1
    model.metadata.append(entry)


def _pack(obj: Any, identifier: bytes) -> bytes:
    builder = flatbuffers.Builder(1024)
    builder.Finish(obj.Pack(builder), file_identifier=identifier)
    return bytes(builder.Output())


def _append_files(model_bytes: bytes, files: dict[str, bytes]) -> bytes:
    """Append files as an uncompressed zip (MediaPipe refuses compressed entries); offsets are
    absolute in the whole file, as zipfile's append mode writes them. Fixed timestamps keep
    the output byte-for-byte reproducible."""
    stream = io.BytesIO(model_bytes)
    with zipfile.ZipFile(stream, "a", compression=zipfile.ZIP_STORED) as zf:
        for name, payload in files.items():
            zf.writestr(zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0)), payload)
    return stream.getvalue()


def _open_zip(data: bytes) -> zipfile.ZipFile | None:
    try:
        return zipfile.ZipFile(io.BytesIO(data))
    except zipfile.BadZipFile:
        return None


def _write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


# -- reading back ----------------------------------------------------------------------------

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


def _text(value: bytes | str | None) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else (value or "")

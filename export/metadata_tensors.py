"""The ModelMetadata of a shelfsight model: one RGB image input with its normalisation, the
scores output with its labels file, the embedding output (see `metadata` for what MediaPipe
Tasks and the Task Library do with each field)."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ai_edge_litert import schema_py_generated as tfl
from tensorflow_lite_support.metadata import metadata_schema_py_generated as md

from shelfsight.errors import ModelError

from .metadata_flatbuffer import output_names_of

if TYPE_CHECKING:
    from .metadata import MetadataSpec

# Every table and enum value written here exists since metadata schema 1.0.0 (no tensor
# groups, process units on the subgraph, file versions or custom metadata).
MIN_PARSER_VERSION = "1.0.0"
_PIXEL_MIN, _PIXEL_MAX = 0.0, 255.0
_INT_RANGES = {tfl.TensorType.UINT8: (0.0, 255.0), tfl.TensorType.INT8: (-128.0, 127.0)}
_TYPE_NAMES = {v: k for k, v in vars(tfl.TensorType).items() if not k.startswith("_")}


def model_metadata(model: tfl.ModelT, graph: tfl.SubGraphT, spec: MetadataSpec) -> md.ModelMetadataT:
    if len(graph.inputs) != 1:
        raise ModelError(f"model has {len(graph.inputs)} inputs, expected one image input")
    names = output_names_of(model)
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

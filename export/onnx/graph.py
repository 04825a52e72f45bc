"""Reading an ONNX image model: its image input, and which of its tensors become the bundle's
"scores" and "embedding".

The model must have one float32 NCHW image input (N x 3 x H x W, square, batch 1 or
dynamic). Output tensors must hold one vector per image (1 x K, or 1 x K x 1 x 1).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx

from shelfsight.errors import ConfigError, ModelError

# ops that pass a vector through unchanged on the way back from the scores to the classifier
_PASS_THROUGH = frozenset({"Identity", "Flatten", "Reshape", "Squeeze", "Dropout"})


@dataclass(frozen=True)
class ImageInput:
    """The ONNX model's image input."""

    name: str
    size: int          # side of the square input the bundle will use
    dynamic: bool      # height/width were not fixed in the ONNX file


@dataclass(frozen=True)
class Heads:
    """Which ONNX tensors give the bundle's two outputs.

    Attributes:
        scores: tensor with one value per label.
        softmax: whether the converted model applies softmax to ``scores`` (they are logits).
        embedding: tensor used as the embedding (L2-normalised in the converted model).
        embedding_source: ``named`` (--embedding-output), ``output`` (the model's other output),
            ``penultimate`` (features entering the final Gemm/MatMul), ``logits`` or ``scores``.
        classes, embedding_dim: values per image of each.
    """

    scores: str
    softmax: bool
    embedding: str
    embedding_source: str
    classes: int
    embedding_dim: int

    @property
    def tensors(self) -> tuple[str, ...]:
        """The ONNX tensors the converted model must output, in order, without repeats."""
        return tuple(dict.fromkeys((self.scores, self.embedding)))

    def to_dict(self) -> dict:
        return {"scores": {"tensor": self.scores, "softmax_added": self.softmax, "classes": self.classes},
                "embedding": {"tensor": self.embedding, "source": self.embedding_source,
                              "dim": self.embedding_dim, "l2_normalized": True}}


def load_onnx(path: str | Path) -> onnx.ModelProto:
    """Read and check an ONNX file.

    Raises:
        ModelError: missing, unparsable or invalid file.
    """
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"ONNX model {path} not found")
    try:
        model = onnx.load(str(path))
        onnx.checker.check_model(model)
    except Exception as e:  # protobuf DecodeError, onnx ValidationError, ...: all mean "not a usable file"
        first = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
        raise ModelError(f"{path}: not a valid ONNX model ({first})") from None
    if not model.graph.node:
        raise ModelError(f"{path}: the ONNX graph has no nodes")
    return model


def image_input(model: onnx.ModelProto, input_size: int | None = None) -> ImageInput:
    """The model's single image input, checked: float32, N x 3 x H x W, square, batch 1.

    Args:
        input_size: the side to use when H and W are dynamic; must match them when fixed.
    Raises:
        ModelError: not exactly one input, wrong rank, type, channel count or batch.
        ConfigError: dynamic size without ``input_size``, or an ``input_size`` that contradicts the model.
    """
    initializers = {t.name for t in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in initializers]
    if len(inputs) != 1:
        raise ModelError(f"ONNX model has {len(inputs)} inputs ({', '.join(i.name for i in inputs)}), "
                         f"expected one image input")
    value = inputs[0]
    tensor = value.type.tensor_type
    if tensor.elem_type != onnx.TensorProto.FLOAT:
        raise ModelError(f"input {value.name!r} is {onnx.TensorProto.DataType.Name(tensor.elem_type)}, expected FLOAT")
    dims = [d.dim_value if d.HasField("dim_value") else None for d in tensor.shape.dim]
    shown = "x".join(str(d) if d is not None else "?" for d in dims)
    if len(dims) != 4:
        raise ModelError(f"input {value.name!r} has rank {len(dims)} ({shown}), expected a 4-D image N x 3 x H x W")
    batch, channels, height, width = dims
    if channels != 3:
        raise ModelError(f"input {value.name!r} is {shown}, expected N x 3 x H x W (NCHW RGB)")
    if batch not in (None, 1):
        raise ModelError(f"input {value.name!r} has a fixed batch of {batch}, expected 1 or dynamic")
    if height is None or width is None:
        if input_size is None:
            raise ConfigError(f"input {value.name!r} has a dynamic size ({shown}); pass --input-size")
        return ImageInput(value.name, input_size, dynamic=True)
    if height != width:
        raise ModelError(f"input {value.name!r} is {height}x{width}, expected a square image")
    if input_size is not None and input_size != height:
        raise ConfigError(f"--input-size {input_size}, but the model's input is fixed at {height}x{width}")
    return ImageInput(value.name, height, dynamic=False)


def with_outputs(model: onnx.ModelProto, names: tuple[str, ...] | list[str]) -> onnx.ModelProto:
    """A copy of ``model`` whose graph outputs are exactly ``names`` (any tensors of the graph)."""
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    known = {o.name: o for o in model.graph.output}
    if any(n not in known for n in names):  # intermediate tensors: typed and shaped by shape inference
        try:
            inferred = onnx.shape_inference.infer_shapes(model).graph.value_info
        except Exception:  # inference fails on some custom ops; outputs then go untyped
            inferred = []
        known = {**{v.name: v for v in inferred}, **known}
    outputs = [known.get(n) or onnx.helper.make_tensor_value_info(n, onnx.TensorProto.FLOAT, None) for n in names]
    del copy.graph.output[:]
    copy.graph.output.extend(outputs)
    return copy


def with_input_size(model: onnx.ModelProto, image: ImageInput) -> onnx.ModelProto:
    """A copy of ``model`` whose image input is fixed at 1 x 3 x size x size."""
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    value = next(i for i in copy.graph.input if i.name == image.name)
    for dim, size in zip(value.type.tensor_type.shape.dim, (1, 3, image.size, image.size)):
        dim.Clear()
        dim.dim_value = size
    return copy


def run_session(model: onnx.ModelProto, feeds: np.ndarray, input_name: str) -> list[dict[str, np.ndarray]]:
    """Outputs of ``model`` under onnxruntime (CPU) for each N x 3 x S x S float32 input, one at a time."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    try:
        session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    except Exception as e:  # onnxruntime's Fail / InvalidGraph / NotImplemented
        raise ModelError(f"onnxruntime cannot load the model ({str(e).strip().splitlines()[0][:200]})") from None
    names = [o.name for o in session.get_outputs()]
    results = []
    for x in feeds:
        values = session.run(names, {input_name: x[None].astype(np.float32)})
        results.append(dict(zip(names, values)))
    return results


def resolve_heads(model: onnx.ModelProto, image: ImageInput, classes: int, scores_output: str | None = None,
                  embedding_output: str | None = None, scores_are: str = "auto") -> Heads:
    """Decide which tensors become "scores" and "embedding" (see `Heads`).

    One probe inference (zeros) under onnxruntime gives every candidate's size.

    Raises:
        ConfigError: a named tensor is not in the graph or has the wrong size, no or several
            outputs fit the label count, several outputs could be the embedding.
        ModelError: a chosen tensor is not one vector per image.
    """
    graph = model.graph
    producers = {out: node for node in graph.node for out in node.output}
    for flag, name in (("--scores-output", scores_output), ("--embedding-output", embedding_output)):
        if name is not None and name not in producers:
            raise ConfigError(f"{flag} {name!r} is not a tensor computed by the model; "
                              f"its outputs are {', '.join(o.name for o in graph.output)}")
    outputs = [o.name for o in graph.output]
    sizes = _probe_sizes(model, image, outputs + [n for n in (scores_output, embedding_output) if n])

    if scores_output is not None:
        scores = scores_output
        if sizes[scores] != classes:
            raise ConfigError(f"scores tensor {scores!r} has {_shown(sizes[scores])} values per image, "
                              f"the labels file has {classes} labels")
    else:
        fits = [o for o in outputs if sizes[o] == classes]
        if len(fits) != 1:
            listed = ", ".join(f"{o} ({_shown(sizes[o])} values)" for o in outputs)
            if not fits:
                raise ConfigError(f"the labels file has {classes} labels, but no model output has {classes} values "
                                  f"per image: {listed}")
            raise ConfigError(f"outputs {', '.join(fits)} all have {classes} values per image; pass --scores-output")
        scores = fits[0]

    softmax_input = _softmax_input(producers, scores)
    softmax = scores_are == "logits" or (scores_are == "auto" and softmax_input is None)
    logits = scores if softmax else softmax_input

    if embedding_output is not None:
        embedding, source = embedding_output, "named"
    else:
        others = [o for o in outputs if o != scores and sizes[o] is not None]
        if len(others) > 1:
            raise ConfigError(f"outputs {', '.join(others)} could each be the embedding; pass --embedding-output")
        embedding, source = (others[0], "output") if others else (None, "")
    if embedding is None:
        constants = {t.name for t in graph.initializer}
        constants |= {out for node in graph.node if node.op_type == "Constant" for out in node.output}
        features = _classifier_input(producers, logits or scores, constants)
        candidates = [(features, "penultimate"), (logits, "logits"), (scores, "scores")]
        extra = _probe_sizes(model, image, [n for n, _ in candidates if n and n not in sizes])
        sizes.update(extra)
        embedding, source = next((n, s) for n, s in candidates if n and sizes[n] is not None)
    if sizes[embedding] is None:
        raise ModelError(f"embedding tensor {embedding!r} is not one vector per image")
    return Heads(scores, softmax, embedding, source, classes, sizes[embedding])


def _probe_sizes(model: onnx.ModelProto, image: ImageInput, names: list[str]) -> dict[str, int | None]:
    """Values per image of each tensor (None when it is not one vector per image)."""
    if not names:
        return {}
    names = list(dict.fromkeys(names))
    zeros = np.zeros((1, 3, image.size, image.size), np.float32)
    values = run_session(with_outputs(model, names), zeros, image.name)[0]
    return {n: _vector_size(values[n].shape) for n in names}


def _vector_size(shape: tuple[int, ...]) -> int | None:
    """K for a 1 x K (or 1 x K x 1 x 1, 1 x 1 x K, ...) tensor, else None."""
    if len(shape) < 2 or shape[0] != 1 or sum(d > 1 for d in shape[1:]) > 1:
        return None
    return int(np.prod(shape[1:]))


def _shown(size: int | None) -> str:
    return "not one vector of" if size is None else str(size)


def _softmax_input(producers: dict[str, onnx.NodeProto], tensor: str) -> str | None:
    """The tensor a Softmax ending the graph at ``tensor`` normalises (None: no Softmax there)."""
    node = producers.get(tensor)
    while node is not None and node.op_type in _PASS_THROUGH:
        node = producers.get(node.input[0])
    return node.input[0] if node is not None and node.op_type == "Softmax" else None


def _classifier_input(producers: dict[str, onnx.NodeProto], tensor: str, constants: set[str]) -> str | None:
    """The features entering the final Gemm/MatMul (through a bias Add) that computes ``tensor``."""
    node = producers.get(tensor)
    while node is not None:
        if node.op_type in _PASS_THROUGH:
            node = producers.get(node.input[0])
        elif node.op_type == "Add" and len(node.input) == 2 and any(i in constants for i in node.input):
            node = producers.get(next(i for i in node.input if i not in constants))
        elif node.op_type in ("Gemm", "MatMul"):
            variable = [i for i in node.input[:2] if i not in constants]
            return variable[0] if len(variable) == 1 else None
        else:
            return None
    return None

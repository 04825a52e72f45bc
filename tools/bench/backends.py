"""The runtimes a benchmark worker can load a model with, each as one small adapter.

- ``shelfsight``: the edge runtime itself, `TFLiteModel.run` ("invoke": prepared pixels
  in, dequantised outputs out) or `Recognizer.recognize` ("frame": a BGR frame through
  preprocessing, inference, top-k and the unknown threshold, as the device runs it).
- ``onnxruntime``: an ONNX file in an ``InferenceSession`` on the CPU provider.
- ``tflite``: TensorFlow's own ``tf.lite.Interpreter`` (only where TensorFlow is installed).

MediaPipe Tasks runs in its own environment (tools/peers/mediapipe_bench.py). Every
adapter takes prepared RGB uint8 pixels (S x S x 3) and returns the class scores (C,);
modules are imported only when that backend is loaded.
"""
from __future__ import annotations

import importlib
import importlib.util
import sys
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any, Callable

import cv2
import numpy as np

from shelfsight.errors import ConfigError, ModelError

MODES = ("invoke", "frame")
# backend -> (module it needs, distribution that names its version)
MODULES = {"onnxruntime": ("onnxruntime", "onnxruntime"), "tflite": ("tensorflow", "tensorflow")}


@dataclass(frozen=True)
class Loaded:
    """A model loaded on one backend: ``call(pixels) -> scores (C,)``."""

    backend: str
    version: str
    call: Callable[[np.ndarray], np.ndarray]
    close: Callable[[], None]
    threads_note: str = ""


def module_missing(backend: str) -> str | None:
    """None when ``backend``'s module can be imported here, else a one-line reason."""
    module, dist = MODULES[backend]
    top = module.split(".")[0]
    try:
        found = importlib.util.find_spec(top) is not None
    except (ImportError, ValueError):
        found = False
    return None if found else f"{top} is not installed in {sys.executable} (pip install {dist})"


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "unknown"


def scores_index(names: list[str], sizes: list[int], scores_size: int, where: str) -> int:
    """Which output holds the class scores: the one named "scores", else the only one with
    ``scores_size`` values.

    Raises:
        ModelError: no such output, or several of that size.
    """
    if "scores" in names:
        return names.index("scores")
    hits = [i for i, n in enumerate(sizes) if n == scores_size]
    if len(hits) != 1:
        raise ModelError(f"{where}: cannot tell the scores output among {list(zip(names, sizes))}: "
                         f"expected one named 'scores' or exactly one with {scores_size} values")
    return hits[0]


def load_shelfsight(model: Path, threads: int, mode: str, runtime: str = "auto",
                    bundle: Path | None = None) -> Loaded:
    """The edge runtime on ``model`` ("invoke") or the recogniser on ``bundle`` ("frame")."""
    if mode not in MODES:
        raise ConfigError(f"mode {mode!r} unknown, expected one of {', '.join(MODES)}")
    if mode == "frame":
        if bundle is None:
            raise ConfigError("frame mode needs a bundle (preprocessing and labels come from its manifest)")
        from shelfsight.bundle import load_bundle
        from shelfsight.edge.runtime.recognizer import Recognizer

        rec = Recognizer(load_bundle(bundle), runtime=runtime, threads=threads)
        position = {label: i for i, label in enumerate(rec.labels)}

        def frame(pixels: np.ndarray) -> np.ndarray:
            result = rec.recognize(pixels)  # pixels here are BGR frames (see worker)
            scores = np.zeros(len(position), np.float32)
            for p in result.predictions:
                scores[position[p.label]] = p.score
            return scores

        rt = rec.model.runtime
        return Loaded("shelfsight", f"{rt.name} {rt.version}", frame, rec.close)
    from shelfsight.edge.runtime.interpreter import TFLiteModel

    m = TFLiteModel(model, runtime, threads)
    name = "scores" if "scores" in m.outputs else next(iter(m.outputs))
    return Loaded("shelfsight", f"{m.runtime.name} {m.runtime.version}", lambda x: m.run(x)[name][0], m.close)


def load_onnxruntime(model: Path, threads: int, scores_size: int) -> Loaded:
    """An ONNX model on onnxruntime's CPU provider with ``threads`` intra-op threads."""
    ort = importlib.import_module("onnxruntime")
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    try:
        session = ort.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])
    except Exception as e:  # onnxruntime raises its own Fail/InvalidGraph/... types
        raise ModelError(f"{model}: onnxruntime cannot load it ({str(e).splitlines()[0][:200]})") from None
    inputs = session.get_inputs()
    if len(inputs) != 1:
        raise ModelError(f"{model}: expected one image input, found {len(inputs)}")
    feed_name, feed_type = inputs[0].name, inputs[0].type
    dtypes = {"tensor(uint8)": np.uint8, "tensor(float)": np.float32}
    if feed_type not in dtypes:
        raise ModelError(f"{model}: input type {feed_type}, expected uint8 or float pixels")
    outputs = session.get_outputs()
    which = scores_index([o.name for o in outputs], [int(o.shape[-1]) if isinstance(o.shape[-1], int) else -1
                                                     for o in outputs], scores_size, str(model))
    out_name, dtype = outputs[which].name, dtypes[feed_type]
    return Loaded("onnxruntime", _version("onnxruntime"),
                  lambda x: session.run([out_name], {feed_name: x[None].astype(dtype, copy=False)})[0][0],
                  lambda: None)


def load_tflite(model: Path, threads: int, scores_size: int) -> Loaded:
    """TensorFlow's ``tf.lite.Interpreter``, fed the way a plain TensorFlow user would."""
    tflite: Any = importlib.import_module("tensorflow").lite  # the API module; "tensorflow.lite" is the source tree
    interp = tflite.Interpreter(model_path=str(model), num_threads=threads)
    interp.allocate_tensors()
    detail = interp.get_input_details()[0]
    out_details = interp.get_output_details()
    names = [d["name"] for d in out_details]
    signatures = interp._get_full_signature_list() or {}  # name -> tensor index, as TFLiteModel reads it
    if signatures:
        by_index = {idx: name for name, idx in next(iter(signatures.values()))["outputs"].items()}
        names = [by_index.get(d["index"], d["name"]) for d in out_details]
    which = scores_index(names, [int(d["shape"][-1]) for d in out_details], scores_size, str(model))
    out = out_details[which]
    dtype, (scale, zero) = detail["dtype"], detail["quantization"]
    o_scale, o_zero = out["quantization"]

    def call(x: np.ndarray) -> np.ndarray:
        feed = x[None]
        if dtype == np.int8:
            feed = np.clip(np.round(feed / scale + zero), -128, 127).astype(np.int8)
        elif dtype != np.uint8:
            feed = feed.astype(dtype)
        interp.set_tensor(detail["index"], feed)
        interp.invoke()
        value = interp.get_tensor(out["index"])[0]
        return (value.astype(np.float32) - o_zero) * o_scale if o_scale else value

    return Loaded("tflite", _version("tensorflow"), call, lambda: None)


def to_bgr(pixels_rgb: np.ndarray) -> np.ndarray:
    """A camera-style BGR frame holding the same picture as prepared RGB pixels."""
    return cv2.cvtColor(pixels_rgb, cv2.COLOR_RGB2BGR)

"""One small adapter over the TFLite interpreters a device may have.

Tried in order: LiteRT (``ai_edge_litert``), ``tflite_runtime``, and TensorFlow's
``tf.lite`` as a last resort (a training machine). `TFLiteModel` feeds camera pixels
(uint8) to uint8 inputs as they are (their quantization holds the normalisation), to int8
or float32 inputs as values 0..255, and returns named, dequantised outputs.

Shapes: input 1 x S x S x 3 RGB pixels 0..255; outputs by signature name, e.g.
``scores`` 1 x C (float32) and ``embedding`` 1 x D (float32, unit norm).
"""
from __future__ import annotations

import importlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from shelfsight.errors import ModelError, RuntimeUnavailableError

RUNTIMES = ("litert", "tflite_runtime", "tensorflow")
_MODULES = {"litert": "ai_edge_litert.interpreter", "tflite_runtime": "tflite_runtime.interpreter",
            "tensorflow": "tensorflow"}
_DISTRIBUTIONS = {"litert": "ai-edge-litert", "tflite_runtime": "tflite-runtime", "tensorflow": "tensorflow"}


@dataclass(frozen=True)
class Runtime:
    name: str
    version: str
    interpreter_class: Any
    load_delegate: Any


def load_runtime(name: str = "auto") -> Runtime:
    """The interpreter implementation to use ("auto" = first one installed).

    Raises:
        RuntimeUnavailableError: the named runtime (or, for auto, every runtime) is missing.
    """
    if name != "auto" and name not in RUNTIMES:
        raise RuntimeUnavailableError(f"runtime {name!r} unknown, expected auto or one of {', '.join(RUNTIMES)}")
    for candidate in (RUNTIMES if name == "auto" else (name,)):
        try:
            module = importlib.import_module(_MODULES[candidate])
        except ImportError:
            continue
        from importlib.metadata import PackageNotFoundError, version

        try:
            ver = version(_DISTRIBUTIONS[candidate])
        except PackageNotFoundError:
            ver = "unknown"
        if candidate == "tensorflow":  # tf.lite is an attribute of the tensorflow package, not a module
            return Runtime(candidate, ver, module.lite.Interpreter, module.lite.experimental.load_delegate)
        return Runtime(candidate, ver, module.Interpreter, module.load_delegate)
    wanted = "any of " + ", ".join(_DISTRIBUTIONS.values()) if name == "auto" else _DISTRIBUTIONS[name]
    raise RuntimeUnavailableError(f"no TFLite runtime installed: pip install {wanted}")


@dataclass(frozen=True)
class TensorInfo:
    name: str
    index: int
    shape: tuple[int, ...]
    dtype: np.dtype
    scale: float
    zero_point: int

    @property
    def quantized(self) -> bool:
        return self.scale != 0.0 and self.dtype in (np.uint8, np.int8)


def dequantize(values: np.ndarray, scale: float, zero_point: int) -> np.ndarray:
    """Integer tensor to float32; the int64 cast keeps (q - zero_point) from overflowing."""
    return ((values.astype(np.int64) - zero_point) * scale).astype(np.float32)


def quantize(values: np.ndarray, info: TensorInfo) -> np.ndarray:
    """Float values to the integer type of a quantized input tensor."""
    limits = np.iinfo(info.dtype)
    q = np.round(values.astype(np.float32) / info.scale + info.zero_point)
    return np.clip(q, limits.min, limits.max).astype(info.dtype)


class TFLiteModel:
    """A loaded .tflite model with named inputs/outputs.

    Args:
        path: the .tflite file.
        runtime: "auto", "litert", "tflite_runtime" or "tensorflow".
        threads: interpreter threads (default: all cores).
        delegates: delegate library names or paths (e.g. "libedgetpu.so.1", a GPU delegate .so).
    """

    def __init__(self, path: str | Path, runtime: str = "auto", threads: int | None = None,
                 delegates: tuple[str, ...] = ()):
        self.path = Path(path)
        if not self.path.is_file():
            raise ModelError(f"model file {self.path} not found")
        self.runtime = load_runtime(runtime)
        loaded = []
        for lib in delegates:
            try:
                loaded.append(self.runtime.load_delegate(lib))
            except (ValueError, OSError, RuntimeError) as e:
                raise RuntimeUnavailableError(f"delegate {lib!r} could not be loaded ({e}); "
                                              f"is its library installed on this device?") from None
        self.threads = threads or os.cpu_count() or 1
        try:
            self._interp = self.runtime.interpreter_class(
                model_path=str(self.path), num_threads=self.threads, experimental_delegates=loaded or None)
            self._interp.allocate_tensors()
        except (ValueError, RuntimeError) as e:
            raise ModelError(f"{self.path}: not a loadable TFLite model ({str(e).splitlines()[0]})") from None
        self.inputs = tuple(self._info(d) for d in self._interp.get_input_details())
        self.outputs = self._named_outputs()
        if len(self.inputs) != 1:
            raise ModelError(f"{self.path}: expected one image input, found {len(self.inputs)}")
        self.input = self.inputs[0]

    def _info(self, d: dict, name: str | None = None) -> TensorInfo:
        scale, zp = d.get("quantization", (0.0, 0))
        return TensorInfo(name or d["name"], d["index"], tuple(int(v) for v in d["shape"]), np.dtype(d["dtype"]),
                          float(scale), int(zp))

    def _named_outputs(self) -> dict[str, TensorInfo]:
        details = {d["index"]: d for d in self._interp.get_output_details()}
        signatures = getattr(self._interp, "_get_full_signature_list", lambda: {})() or {}
        if signatures:
            outputs = next(iter(signatures.values()))["outputs"]
            return {name: self._info(details[idx], name) for name, idx in sorted(outputs.items())}
        return {d["name"]: self._info(d) for d in details.values()}

    @property
    def input_size(self) -> tuple[int, int]:
        return self.input.shape[1], self.input.shape[2]

    def run(self, pixels: np.ndarray) -> dict[str, np.ndarray]:
        """One inference on 1 x H x W x 3 RGB pixels (uint8 or float 0..255).

        Returns:
            output name -> float32 array (dequantised).
        """
        if pixels.ndim == 3:
            pixels = pixels[None]
        if pixels.shape[0] == 1 and self.input.shape[0] != 1:
            self._resize_batch(1)  # a single image after `run_batch` left the input at N rows
        if tuple(pixels.shape[1:3]) != self.input_size:
            raise ModelError(f"input size {pixels.shape[2]}x{pixels.shape[1]}, "
                             f"model expects {self.input_size[1]}x{self.input_size[0]}")
        info = self.input
        if info.dtype == np.uint8:  # camera pixels as they are; the input quantization is the normalisation
            feed = pixels if pixels.dtype == np.uint8 else np.clip(np.round(pixels), 0, 255).astype(np.uint8)
        elif info.quantized:
            feed = quantize(pixels, info)
        else:
            feed = pixels.astype(info.dtype)
        self._interp.set_tensor(info.index, feed)
        self._interp.invoke()
        out = {}
        for name, o in self.outputs.items():
            value = self._interp.get_tensor(o.index)
            out[name] = dequantize(value, o.scale, o.zero_point) if o.quantized else value.astype(np.float32)
        return out

    @property
    def batch_resizable(self) -> bool:
        """Whether the input's batch dimension may be resized (its shape signature says -1)."""
        signature = self._interp.get_input_details()[0].get("shape_signature")
        return signature is not None and len(signature) > 0 and int(signature[0]) == -1

    def run_batch(self, pixels: np.ndarray) -> dict[str, np.ndarray]:
        """`run` on N x H x W x 3 pixels at once, the input resized to batch N first (needs
        `batch_resizable`). Outputs have N rows."""
        batch = int(pixels.shape[0])
        if batch != self.input.shape[0]:
            self._resize_batch(batch)
        return self.run(pixels)

    def _resize_batch(self, batch: int) -> None:
        self._interp.resize_tensor_input(self.input.index, [batch, *self.input.shape[1:]])
        self._interp.allocate_tensors()
        self.input = self._info(self._interp.get_input_details()[0], self.input.name)

    def close(self) -> None:
        self._interp = None

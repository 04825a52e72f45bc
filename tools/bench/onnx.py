"""A .tflite model as ONNX, for the onnxruntime side of `shelfsight bench --compare`.

    python -m shelfsight.tools.bench.onnx MODEL.tflite OUT.onnx INPUTS.npy

Converted with tf2onnx's TFLite reader (it needs TensorFlow; the bench runs this in a
subprocess so that its own process never imports it). Quantized models become ONNX
QuantizeLinear/DequantizeLinear graphs. The outputs get the model's signature names
("scores", "embedding") through Identity nodes. The conversion is then checked, not
trusted: both models run on the benchmark inputs (LiteRT vs onnxruntime, one thread) and
the largest score difference and the top-1 agreement are reported.

Prints one JSON object: ``ok``, ``tf2onnx``, ``opset``, ``seconds``, ``bytes``,
``max_abs_diff_scores``, ``top1_agreement``, or ``error``.
"""
from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from shelfsight.atomic import write_via

OPSET = 17


def signature_names(model: Path) -> dict[str, str]:
    """TFLite output tensor name -> signature output name (empty without a signature)."""
    from shelfsight.edge.runtime.interpreter import load_runtime

    interp = load_runtime("auto").interpreter_class(model_path=str(model), num_threads=1)
    details = {d["index"]: d["name"] for d in interp.get_output_details()}
    signatures = interp._get_full_signature_list() or {}
    if not signatures:
        return {}
    return {details[idx]: name for name, idx in next(iter(signatures.values()))["outputs"].items()}


def rename_outputs(model_proto: Any, names: dict[str, str]) -> None:
    """Expose graph outputs under new names through Identity nodes (in place)."""
    from onnx import helper

    graph = model_proto.graph
    for out in graph.output:
        new = names.get(out.name)
        if new and new != out.name:
            graph.node.append(helper.make_node("Identity", [out.name], [new], name=f"rename_{new}"))
            out.name = new


def convert(model: Path, out: Path, opset: int = OPSET) -> dict[str, Any]:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import onnx
    import tf2onnx

    t0 = time.perf_counter()
    proto, _ = tf2onnx.convert.from_tflite(str(model), opset=opset)
    rename_outputs(proto, signature_names(model))
    out.parent.mkdir(parents=True, exist_ok=True)
    write_via(out, lambda tmp: onnx.save(proto, str(tmp)))
    return {"tf2onnx": tf2onnx.__version__, "opset": opset, "seconds": time.perf_counter() - t0,
            "bytes": out.stat().st_size}


def check(model: Path, onnx_path: Path, inputs: np.ndarray) -> dict[str, Any]:
    """Largest |score difference| and top-1 agreement of the two models on ``inputs``."""
    from shelfsight.edge.runtime.interpreter import TFLiteModel

    from .backends import load_onnxruntime

    reference = TFLiteModel(model, threads=1)
    size = reference.outputs["scores"].shape[-1] if "scores" in reference.outputs else 0
    onnx_model = load_onnxruntime(onnx_path, 1, size)
    a = np.stack([reference.run(x)["scores"][0] for x in inputs])
    b = np.stack([onnx_model.call(x) for x in inputs]).astype(np.float32)
    reference.close()
    return {"max_abs_diff_scores": float(np.abs(a - b).max()),
            "top1_agreement": float(np.mean(a.argmax(1) == b.argmax(1)))}


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 3:
        print("usage: python -m shelfsight.tools.bench.onnx MODEL.tflite OUT.onnx INPUTS.npy", file=sys.stderr)
        return 2
    model, out, inputs = Path(args[0]), Path(args[1]), Path(args[2])
    try:
        result = {"ok": True, **convert(model, out), **check(model, out, np.load(inputs))}
    except Exception as e:  # tf2onnx raises anything from ValueError to its own errors; report, don't trace
        result = {"ok": False, "error": f"{type(e).__name__}: {str(e).splitlines()[0][:300] if str(e) else ''}"}
    sys.stdout.write(json.dumps(result) + "\n")
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())

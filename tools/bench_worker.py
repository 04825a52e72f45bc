"""One measurement in a fresh process, so that load time and peak memory belong to one model.

    python -m shelfsight.tools.bench_worker < request.json > result.json

Request (JSON on stdin): ``backend`` (shelfsight | onnxruntime | tflite), ``model`` (the file
to load), ``inputs`` (.npy, N x S x S x 3 RGB uint8), ``threads``, ``mode`` (invoke | frame;
frame needs ``bundle``), ``runtime`` (shelfsight's interpreter choice), ``scores_size``,
``min_time``, ``warmup``, ``min_runs``.

Result (one JSON object on stdout): ``ok``; on success ``version``, ``import_s`` (importing
the backend), ``load_s`` (building the model/session), ``first_ms`` (first call),
``warmup_ms`` (each warm-up call), ``times_s`` (each timed call), ``top1`` (class index per
input, from one untimed pass after timing), ``rss`` (``baseline_bytes`` before loading,
``peak_bytes`` for the whole process) and ``cpu_per_wall`` (process CPU seconds per wall
second while timing: about the number of busy cores). On failure ``error``, one line.
"""
from __future__ import annotations

import json
import os
import resource
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from shelfsight.errors import ShelfsightError

from .bench_backends import Loaded, load_onnxruntime, load_shelfsight, load_tflite, to_bgr
from .bench_stats import TimingOptions, time_calls


def _rss_now() -> int:
    try:
        import psutil

        return int(psutil.Process().memory_info().rss)
    except ImportError:
        with open(f"/proc/{os.getpid()}/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def peak_rss_bytes() -> int:
    """The process's peak resident set size (ru_maxrss is KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)


def _load(request: dict[str, Any]) -> Loaded:
    backend, model, threads = request["backend"], Path(request["model"]), int(request["threads"])
    if backend == "shelfsight":
        bundle = request.get("bundle")
        return load_shelfsight(model, threads, request.get("mode", "invoke"), request.get("runtime", "auto"),
                               Path(bundle) if bundle else None)
    if backend == "onnxruntime":
        return load_onnxruntime(model, threads, int(request["scores_size"]))
    if backend == "tflite":
        return load_tflite(model, threads, int(request["scores_size"]))
    raise ShelfsightError(f"backend {backend!r} unknown, expected shelfsight, onnxruntime or tflite")


def _import_backend(backend: str) -> None:
    """Import the backend's libraries first, so that load_s is the model's own cost."""
    if backend == "onnxruntime":
        import onnxruntime  # noqa: F401
    elif backend == "tflite":
        import tensorflow  # noqa: F401
    else:
        import shelfsight.edge.recognizer  # noqa: F401


def measure(request: dict[str, Any]) -> dict[str, Any]:
    """Run one request (see the module docstring) and return its result."""
    options = TimingOptions(float(request["min_time"]), int(request["warmup"]), int(request["min_runs"]))
    pixels = np.load(request["inputs"])
    frames = [to_bgr(p) for p in pixels] if request.get("mode") == "frame" else list(pixels)
    t0 = time.perf_counter()
    _import_backend(request["backend"])
    import_s = time.perf_counter() - t0
    baseline = _rss_now()
    t0 = time.perf_counter()
    loaded = _load(request)
    load_s = time.perf_counter() - t0
    cpu0, wall0 = time.process_time(), time.perf_counter()
    timed = time_calls(loaded.call, frames, options)
    cpu_per_wall = (time.process_time() - cpu0) / max(time.perf_counter() - wall0, 1e-9)
    top1 = [int(np.argmax(loaded.call(x))) for x in frames]
    loaded.close()
    return {"ok": True, "backend": loaded.backend, "version": loaded.version, "import_s": import_s,
            "load_s": load_s, "first_ms": timed.first * 1e3, "warmup_ms": [t * 1e3 for t in timed.warmup],
            "times_s": list(timed.times), "top1": top1, "cpu_per_wall": cpu_per_wall,
            "rss": {"baseline_bytes": baseline, "peak_bytes": peak_rss_bytes()}}


def main() -> int:
    try:
        request = json.loads(sys.stdin.read())
        result = measure(request)
    except ShelfsightError as e:
        result = {"ok": False, "error": str(e)}
    except (ImportError, OSError, ValueError, RuntimeError, KeyError) as e:
        result = {"ok": False, "error": f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"}
    sys.stdout.write(json.dumps(result) + "\n")
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())

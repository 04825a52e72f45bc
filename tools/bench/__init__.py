"""`shelfsight bench` and the benchmarks beside it.

    cli        the `shelfsight bench` command
    options    what to measure: threads, timing, inputs, peers
    runner     the measurement of one report, and its JSON schema
    targets    bundles and bare .tflite files, and the pixels every backend gets
    worker     one model in its own process (JSON lines); backends: the loaders it uses
    compare    peer backends (MediaPipe, onnxruntime, tf.lite) and their processes
    stats, device, quality, report    latency statistics, device fingerprint, accuracy, rendering
    results_table, onnx, runtime, search    README tables, tf2onnx, the device program, the index
    objects    the per-object mode on generated videos with ground truth (issue 16)

Names are loaded on first use, so that a worker process (``python -m
shelfsight.tools.bench.worker``) imports only what it measures with.
"""
from __future__ import annotations

from .. import lazy_exports

_EXPORTS = {"SCHEMA": "runner", "SCHEMA_VERSION": "runner", "SLICE_REWARM": "runner", "Bench": "runner",
            "run_bench": "runner", "write_outputs": "runner", "BenchOptions": "options",
            "default_threads": "options", "parse_threads": "options", "bench": "cli"}
__all__ = sorted(_EXPORTS)
__getattr__ = lazy_exports(__name__, _EXPORTS)

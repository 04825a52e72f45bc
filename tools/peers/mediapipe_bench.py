"""Time MediaPipe Tasks' ImageClassifier on a .tflite for `shelfsight bench --compare mediapipe`.

    .venv-peers/bin/python tools/peers/mediapipe_bench.py < request.json > result.json

Standalone (the peer environment has mediapipe and numpy 2, not shelfsight). Request and
result are those of shelfsight's bench worker (``shelfsight.tools.bench_worker``):
request ``model``, ``inputs`` (.npy, N x S x S x 3 RGB uint8, the same pixels every backend
gets), ``scores_size``, ``min_time``, ``warmup``, ``min_runs``, ``top_k``; result ``ok``,
``version``, ``import_s``, ``load_s``, ``first_ms``, ``warmup_ms``, ``times_s``, ``top1``,
``rss``, ``cpu_per_wall``, ``threads_note``, or ``error``. The timing loop follows
``shelfsight.tools.bench_stats.time_calls``: one first call, ``warmup`` calls, then calls
until both ``min_time`` seconds and ``min_runs`` runs are reached, cycling the inputs.

Each timed call is ``ImageClassifier.classify(mp.Image)`` on an S x S SRGB image made
before timing: MediaPipe's own image-to-tensor step, the inference and its result
post-processing (``max_results = top_k`` per head), the per-frame cost a MediaPipe user
pays. The scores head is the one named "scores" in the model's metadata, or else the one
with ``scores_size`` categories (found by one untimed call that asks for every category).
MediaPipe's Python API sets no thread count: on desktop Linux its XNNPACK delegate uses
one thread (Android/iOS: cores / 2, 1..4); ``cpu_per_wall`` shows what it used.
"""
from __future__ import annotations

import json
import resource
import sys
import time
from typing import Any


def _timed(fn, inputs: list, min_time: float, warmup: int, min_runs: int) -> tuple[float, list, list]:
    n = len(inputs)
    t0 = time.perf_counter()
    fn(inputs[0])
    first = time.perf_counter() - t0
    warm = []
    for i in range(warmup):
        t0 = time.perf_counter()
        fn(inputs[(i + 1) % n])
        warm.append(time.perf_counter() - t0)
    times: list[float] = []
    start, i = time.perf_counter(), 0
    while len(times) < min_runs or time.perf_counter() - start < min_time:
        x = inputs[i % n]
        t0 = time.perf_counter()
        fn(x)
        times.append(time.perf_counter() - t0)
        i += 1
    return first, warm, times


def _rss_now() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize()


def _scores_head(vision: Any, base_options: Any, image: Any, scores_size: int) -> int:
    every = vision.ImageClassifierOptions(base_options=base_options, max_results=-1)
    with vision.ImageClassifier.create_from_options(every) as task:
        heads = task.classify(image).classifications
    named = [h.head_index for h in heads if h.head_name == "scores"]
    sized = [h.head_index for h in heads if len(h.categories) == scores_size]
    if named or len(sized) == 1:
        return (named or sized)[0]
    raise ValueError(f"cannot tell the scores head among {[(h.head_name, len(h.categories)) for h in heads]}: "
                     f"expected one named 'scores' or exactly one with {scores_size} categories")


def measure(request: dict[str, Any]) -> dict[str, Any]:
    t0 = time.perf_counter()
    import mediapipe as mp
    import numpy as np
    from mediapipe.tasks.python import BaseOptions, vision

    import_s = time.perf_counter() - t0
    pixels = np.load(request["inputs"])
    images = [mp.Image(image_format=mp.ImageFormat.SRGB, data=np.ascontiguousarray(p)) for p in pixels]
    base = BaseOptions(model_asset_path=str(request["model"]))
    baseline = _rss_now()
    options = vision.ImageClassifierOptions(base_options=base, max_results=int(request.get("top_k", 5)))
    t0 = time.perf_counter()
    task = vision.ImageClassifier.create_from_options(options)
    load_s = time.perf_counter() - t0
    try:
        cpu0, wall0 = time.process_time(), time.perf_counter()
        first, warm, times = _timed(task.classify, images, float(request["min_time"]), int(request["warmup"]),
                                    int(request["min_runs"]))
        cpu_per_wall = (time.process_time() - cpu0) / max(time.perf_counter() - wall0, 1e-9)
        tops = [{h.head_index: h.categories[0].index for h in task.classify(image).classifications}
                for image in images]
    finally:
        task.close()
    head = _scores_head(vision, base, images[0], int(request["scores_size"]))  # after timing: load_s stays cold
    top1 = [int(t[head]) for t in tops]
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"ok": True, "backend": "mediapipe", "version": mp.__version__, "import_s": import_s, "load_s": load_s,
            "first_ms": first * 1e3, "warmup_ms": [t * 1e3 for t in warm], "times_s": times, "top1": top1,
            "cpu_per_wall": cpu_per_wall,
            "rss": {"baseline_bytes": baseline, "peak_bytes": peak if sys.platform == "darwin" else peak * 1024},
            "threads_note": "not settable from MediaPipe's Python API (XNNPACK default: 1 thread on desktop "
                            "Linux, cores/2 clamped to 1..4 on Android/iOS)"}


def main() -> int:
    try:
        result = measure(json.loads(sys.stdin.read()))
    except ImportError as e:
        result = {"ok": False, "error": f"mediapipe is not importable here ({e})"}
    except (RuntimeError, ValueError, OSError, KeyError) as e:
        result = {"ok": False, "error": f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"}
    sys.stdout.write(json.dumps(result) + "\n")
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())

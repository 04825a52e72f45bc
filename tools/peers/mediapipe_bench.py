"""Time MediaPipe Tasks' ImageClassifier on a .tflite for `shelfsight bench --compare mediapipe`.

    .venv-peers/bin/python tools/peers/mediapipe_bench.py   (JSON lines in, JSON lines out)

Standalone (the peer environment has mediapipe and numpy 2, not shelfsight); it speaks the
line protocol of shelfsight's bench worker (``shelfsight.tools.bench.worker``): first the
request (``model``, ``inputs`` .npy of N x S x S x 3 RGB uint8, the same pixels every backend
gets, ``scores_size``, ``top_k``), answered with ``ok``, ``version``, ``import_s``,
``load_s``, ``threads_note`` or ``error``; then ``time`` (``first_ms``, ``warmup_ms``,
``times_s``, ``cpu_per_wall``), ``top1`` and ``close`` (``rss``). The timing loop follows
``shelfsight.tools.bench.stats.time_calls``: one first call, ``warmup`` calls, then calls
until both ``min_time`` seconds and ``min_runs`` runs are reached, cycling the inputs.

Each timed call is ``ImageClassifier.classify(mp.Image)`` on an S x S SRGB image made
before timing: MediaPipe's own image-to-tensor step, the inference and its result
post-processing (``max_results = top_k`` per head), the per-frame cost a MediaPipe user
pays. MediaPipe numbers its heads in output tensor order; the request's ``scores_head`` says
which is the scores output. Without it, the head named "scores" in the model's metadata, or
else the one with ``scores_size`` categories, found by one untimed call with a second task
(created after the timed one, so ``load_s`` stays a first load; the peak memory then
includes that second task).
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


def _peak_rss() -> int:
    """VmHWM (this program's high-water mark; ru_maxrss would include the parent's size at
    fork on Linux), else ru_maxrss. The same as `shelfsight.tools.bench.worker`'s on purpose:
    this script runs in the peer venv, where shelfsight is not installed."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024


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


class Session:
    def __init__(self, request: dict[str, Any]):
        t0 = time.perf_counter()
        import mediapipe as mp
        import numpy as np
        from mediapipe.tasks.python import BaseOptions, vision

        self.import_s = time.perf_counter() - t0
        self.version = mp.__version__
        pixels = np.load(request["inputs"])
        self.images = [mp.Image(image_format=mp.ImageFormat.SRGB, data=np.ascontiguousarray(p)) for p in pixels]
        base = BaseOptions(model_asset_path=str(request["model"]))
        self.baseline = _rss_now()
        options = vision.ImageClassifierOptions(base_options=base, max_results=int(request.get("top_k", 5)))
        t0 = time.perf_counter()
        self.task = vision.ImageClassifier.create_from_options(options)
        self.load_s = time.perf_counter() - t0
        head = request.get("scores_head")
        self.head = int(head) if head is not None else _scores_head(vision, base, self.images[0],
                                                                   int(request["scores_size"]))

    def hello(self) -> dict[str, Any]:
        return {"ok": True, "backend": "mediapipe", "version": self.version, "import_s": self.import_s,
                "load_s": self.load_s,
                "threads_note": "not settable from MediaPipe's Python API (XNNPACK default: 1 thread on desktop "
                                "Linux, cores/2 clamped to 1..4 on Android/iOS)"}

    def time(self, min_time: float, min_runs: int, warmup: int) -> dict[str, Any]:
        cpu0, wall0 = time.process_time(), time.perf_counter()
        first, warm, times = _timed(self.task.classify, self.images, min_time, warmup, min_runs)
        cpu_per_wall = (time.process_time() - cpu0) / max(time.perf_counter() - wall0, 1e-9)
        return {"ok": True, "first_ms": first * 1e3, "warmup_ms": [t * 1e3 for t in warm], "times_s": times,
                "cpu_per_wall": cpu_per_wall}

    def top1(self) -> dict[str, Any]:
        top = []
        for image in self.images:
            heads = self.task.classify(image).classifications
            top.append(int(next(h for h in heads if h.head_index == self.head).categories[0].index))
        return {"ok": True, "top1": top}

    def close(self) -> dict[str, Any]:
        self.task.close()
        return {"ok": True, "rss": {"baseline_bytes": self.baseline, "peak_bytes": _peak_rss()}}


def _send(message: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


def _error(e: BaseException) -> dict[str, Any]:
    if isinstance(e, ImportError):
        return {"ok": False, "error": f"mediapipe is not importable here ({e})"}
    return {"ok": False, "error": f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"}


def main() -> int:
    try:
        session = Session(json.loads(sys.stdin.readline()))
    except (ImportError, RuntimeError, ValueError, OSError, KeyError) as e:
        _send(_error(e))
        return 1
    _send(session.hello())
    for line in sys.stdin:
        try:
            message = json.loads(line)
            cmd = message.get("cmd")
            if cmd == "time":
                reply = session.time(float(message["min_time"]), int(message["min_runs"]), int(message["warmup"]))
            elif cmd == "top1":
                reply = session.top1()
            elif cmd == "close":
                _send(session.close())
                return 0
            else:
                reply = {"ok": False, "error": f"command {cmd!r} unknown, expected time, top1 or close"}
        except (RuntimeError, ValueError, OSError, KeyError, StopIteration) as e:
            reply = _error(e)
        _send(reply)
    return 0


if __name__ == "__main__":
    sys.exit(main())

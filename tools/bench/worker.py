"""A model held in its own process, timed in slices on request, so that load time and peak
memory belong to one model and the timings of several backends can be interleaved.

    python -m shelfsight.tools.bench.worker     (JSON lines on stdin, JSON lines on stdout)

Protocol (one JSON object per line each way; tools/peers/mediapipe_bench.py speaks it too):

1. parent: the request: ``backend`` (shelfsight | onnxruntime | tflite), ``model`` (the file
   to load), ``inputs`` (.npy, N x S x S x 3 RGB uint8), ``threads``, ``mode`` (invoke | frame;
   frame needs ``bundle``), ``runtime`` (shelfsight's interpreter choice), ``scores_size``.
   worker: ``ok``, ``backend``, ``version``, ``import_s`` (importing the backend), ``load_s``
   (building the model/session), or ``ok`` false and ``error`` (one line), then it exits.
2. parent: ``{"cmd": "time", "min_time": s, "min_runs": n, "warmup": w}``; worker: ``first_ms``
   (the slice's first call, untimed in ``times_s``), ``warmup_ms``, ``times_s`` (each timed
   call), ``cpu_per_wall`` (process CPU seconds per wall second while timing: about the
   number of busy cores). Sent as often as the parent likes; inputs are cycled.
3. parent: ``{"cmd": "top1"}``; worker: ``top1``, the class index of every input.
4. parent: ``{"cmd": "close"}``; worker: ``rss`` {``baseline_bytes`` before loading,
   ``peak_bytes`` of the process} and exits.
"""
from __future__ import annotations

import json
import os
import resource
import sys
import time
from pathlib import Path
from typing import IO, Any

import numpy as np

from shelfsight.timing import TimingOptions, time_calls
from shelfsight.errors import ShelfsightError

from .backends import Loaded, load_onnxruntime, load_shelfsight, load_tflite, to_bgr


def _rss_now() -> int:
    try:
        import psutil

        return int(psutil.Process().memory_info().rss)
    except ImportError:
        with open(f"/proc/{os.getpid()}/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def peak_rss_bytes() -> int:
    """The process's peak resident set size since it started this program.

    Linux: VmHWM of /proc/self/status, the high-water mark of this program's memory. Not
    ru_maxrss: Linux carries the parent's resident size at fork into the child's
    ru_maxrss across exec, so every worker would report at least the bench's own size.
    Elsewhere ru_maxrss (bytes on macOS, KiB on other systems).
    """
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)


def _import_backend(backend: str) -> None:
    """Import the backend's libraries first, so that load_s is the model's own cost."""
    if backend == "onnxruntime":
        import onnxruntime  # noqa: F401
    elif backend == "tflite":
        import tensorflow  # noqa: F401
    elif backend == "shelfsight":
        import shelfsight.edge.runtime.recognizer  # noqa: F401
    else:
        raise ShelfsightError(f"backend {backend!r} unknown, expected shelfsight, onnxruntime or tflite")


def _load(request: dict[str, Any]) -> Loaded:
    backend, model, threads = request["backend"], Path(request["model"]), int(request["threads"])
    if backend == "shelfsight":
        bundle = request.get("bundle")
        return load_shelfsight(model, threads, request.get("mode", "invoke"), request.get("runtime", "auto"),
                               Path(bundle) if bundle else None)
    if backend == "onnxruntime":
        return load_onnxruntime(model, threads, int(request["scores_size"]))
    return load_tflite(model, threads, int(request["scores_size"]))


class Session:
    """One loaded model and its inputs (see the module docstring for what it answers)."""

    def __init__(self, request: dict[str, Any]):
        pixels = np.load(request["inputs"])
        self.inputs = [to_bgr(p) for p in pixels] if request.get("mode") == "frame" else list(pixels)
        t0 = time.perf_counter()
        _import_backend(request["backend"])
        self.import_s = time.perf_counter() - t0
        self.baseline = _rss_now()
        t0 = time.perf_counter()
        self.loaded = _load(request)
        self.load_s = time.perf_counter() - t0

    def hello(self) -> dict[str, Any]:
        return {"ok": True, "backend": self.loaded.backend, "version": self.loaded.version,
                "import_s": self.import_s, "load_s": self.load_s}

    def time(self, min_time: float, min_runs: int, warmup: int) -> dict[str, Any]:
        cpu0, wall0 = time.process_time(), time.perf_counter()
        timed = time_calls(self.loaded.call, self.inputs, TimingOptions(min_time, warmup, min_runs))
        cpu_per_wall = (time.process_time() - cpu0) / max(time.perf_counter() - wall0, 1e-9)
        return {"ok": True, "first_ms": timed.first * 1e3, "warmup_ms": [t * 1e3 for t in timed.warmup],
                "times_s": list(timed.times), "cpu_per_wall": cpu_per_wall}

    def top1(self) -> dict[str, Any]:
        return {"ok": True, "top1": [int(np.argmax(self.loaded.call(x))) for x in self.inputs]}

    def close(self) -> dict[str, Any]:
        self.loaded.close()
        return {"ok": True, "rss": {"baseline_bytes": self.baseline, "peak_bytes": peak_rss_bytes()}}


def _error(e: BaseException) -> dict[str, Any]:
    if isinstance(e, ShelfsightError):
        return {"ok": False, "error": str(e)}
    return {"ok": False, "error": f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"}


def _send(out: IO[str], message: dict[str, Any]) -> None:
    out.write(json.dumps(message) + "\n")
    out.flush()


def serve(stdin: IO[str], stdout: IO[str]) -> int:
    """Answer the protocol on these streams until "close" or end of input."""
    try:
        session = Session(json.loads(stdin.readline()))
    except (ShelfsightError, ImportError, OSError, ValueError, RuntimeError, KeyError) as e:
        _send(stdout, _error(e))
        return 1
    _send(stdout, session.hello())
    for line in stdin:
        try:
            message = json.loads(line)
            cmd = message.get("cmd")
            if cmd == "time":
                reply = session.time(float(message["min_time"]), int(message["min_runs"]), int(message["warmup"]))
            elif cmd == "top1":
                reply = session.top1()
            elif cmd == "close":
                _send(stdout, session.close())
                return 0
            else:
                reply = {"ok": False, "error": f"command {cmd!r} unknown, expected time, top1 or close"}
        except (ShelfsightError, OSError, ValueError, RuntimeError, KeyError) as e:
            reply = _error(e)
        _send(stdout, reply)
    return 0


def measure(request: dict[str, Any]) -> dict[str, Any]:
    """Load, one timed slice, top-1 and memory in this process: the whole protocol at once.

    ``request`` also holds ``min_time``, ``min_runs`` and ``warmup``.
    """
    session = Session(request)
    result = {**session.hello(), **session.time(float(request["min_time"]), int(request["min_runs"]),
                                                int(request["warmup"]))}
    return {**result, **session.top1(), **session.close()}


if __name__ == "__main__":
    sys.exit(serve(sys.stdin, sys.stdout))

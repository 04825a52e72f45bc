"""`shelfsight bench`: how a bundle behaves on this device, and against the runtimes one
would run instead.

    shelfsight bench BUNDLE [MODEL.tflite ...] [--variants DIR] [--threads 1,2,4]
        [--min-time 2] [--warmup 10] [--rounds 10] [--data DIR --split val]
        [--compare mediapipe,onnxruntime,tflite] [--out DIR] [--json]

Every measurement (one target, one backend, one thread count, one mode) holds its model
in its own process (`bench_worker`, or tools/peers/mediapipe_bench.py in the peer
environment), so load time and peak memory belong to that model alone. The processes of a
target are timed in ``--rounds`` interleaved slices (each process once per round) that
share ``--min-time`` and ``--min-runs``, so that a change in the machine's load is spread
over all backends instead of landing on one. All backends time the same input
pixels. Nothing here imports TensorFlow: only ``--compare tflite`` and the ONNX
conversion for ``--compare onnxruntime`` do, in their own processes.

Modes: ``invoke`` is `TFLiteModel.run` on prepared pixels (the interpreter's cost, like
onnxruntime's and tf.lite's); ``frame`` (bundles) is `Recognizer.recognize` on a BGR frame:
preprocessing, inference, retrieval fusion where the bundle's index has it (then its top-1 may
differ from invoke's classifier alone), top-k and the unknown threshold, the per-frame cost the
device pays, and what MediaPipe's ``ImageClassifier.classify`` (its image conversion, inference and
result post-processing) is compared with.

JSON report (``bench.json``; ``schema`` "shelfsight.bench", ``schema_version`` 1). Keys are
only ever added within a schema version::

    schema, schema_version, created_at (UTC ISO 8601)
    device        fingerprint, see bench_device.device_fingerprint: cpu_model, cores_logical,
                  cores_physical, arch, os, kernel, memory_bytes, python, numpy, opencv,
                  shelfsight, runtime {name, version}, cpu_governor, cpu_mhz_current,
                  cpu_mhz_max, temperatures_c {zone: C}, load_average [1, 5, 15 min]
    options       threads [int], rounds, min_time_s, warmup, min_runs, runtime, compare [str],
                  inputs {source: "synthetic"|"data", data, split, count}
    targets[]     name, path, kind ("bundle"|"tflite"), model_file, quantization,
                  input {size [h, w], dtype}, scores_size,
                  sizes {model_bytes, model_gzip_bytes, bundle_bytes (bundles)}
      runs[]      backend ("shelfsight"|"onnxruntime"|"tflite"|"mediapipe"), version,
                  mode ("invoke"|"frame"|"classify"), threads (null: backend default),
                  threads_note, model_file (what was loaded, e.g. the .onnx), rounds,
                  import_s, load_s, first_ms, warmup {calls, mean_ms} (first slice),
                  latency {runs, mean_ms, std_ms, min_ms, p50_ms, p90_ms, p99_ms, max_ms,
                           outliers, outlier_fence_ms, throughput_fps},
                  rss {baseline_mb, peak_mb, model_mb}, cpu_per_wall,
                  top1_agreement (share of inputs with the same top-1 class as shelfsight
                  invoke at the same threads; null for that run itself), times_ms [every run]
      ratios[]    backend, mode, threads, against {backend, mode, threads},
                  p50_ratio, mean_ratio (peer / shelfsight: above 1 = shelfsight faster)
      mediapipe_target  null or {rule, shelfsight_p50_ms, mediapipe_p50_ms, met}
      conversions {onnx: {ok, source ("tf2onnx"|"user"), file, tf2onnx, opset, seconds,
                  bytes, max_abs_diff_scores, top1_agreement} or {ok false, error}}
      accuracy    null or {data, split, samples, top1, top5, macro_f1, coarse_top1,
                  skipped_images}  (bundles with --data, via shelfsight.app.evaluation)
      search      null or {queries, recall_at_k {"1", "5"}, definition}  (bundles with an index)
      skipped[]   backend, threads, reason (not installed, or failed: one line)

With ``--out DIR``: bench.json, report.md, latency.png, accuracy.png (when accuracy was
measured) and onnx/ (converted models).
"""
from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import numpy as np

from shelfsight.errors import ModelError

from . import compare as peers
from .device import device_fingerprint
from .options import BenchOptions
from .quality import accuracy
from .report import markdown_report, plot_accuracy, plot_latency
from .stats import latency_stats
from .targets import BenchTarget, data_inputs, synthetic_inputs

SCHEMA, SCHEMA_VERSION = "shelfsight.bench", 1
SLICE_REWARM = 2  # untimed calls before each later slice: caches are cold after other workers ran
MB = 1e6


def run_record(result: dict[str, Any], mode: str, threads: int | None, model_file: Path,
               reference_top1: list[int] | None) -> dict[str, Any]:
    """A worker's result as one ``runs[]`` entry of the report."""
    stats = latency_stats(result["times_s"])
    warm = result["warmup_ms"]
    baseline, peak = result["rss"]["baseline_bytes"], result["rss"]["peak_bytes"]
    agreement = None
    if reference_top1 is not None:
        agreement = float(np.mean(np.asarray(result["top1"]) == np.asarray(reference_top1)))
    return {"backend": result["backend"], "version": result["version"], "mode": mode, "threads": threads,
            "threads_note": result.get("threads_note", ""), "model_file": str(model_file),
            "rounds": result.get("rounds", 1),
            "import_s": result["import_s"], "load_s": result["load_s"], "first_ms": result["first_ms"],
            "warmup": {"calls": len(warm), "mean_ms": float(np.mean(warm)) if warm else None},
            "latency": stats.to_dict(),
            "rss": {"baseline_mb": baseline / MB, "peak_mb": peak / MB, "model_mb": (peak - baseline) / MB},
            "cpu_per_wall": result["cpu_per_wall"], "top1_agreement": agreement,
            "times_ms": [round(t * 1e3, 4) for t in result["times_s"]], "top1": result["top1"]}


def ratios(runs: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
    """Peer / shelfsight latency ratios at the same threads, and the MediaPipe target check.

    onnxruntime and tf.lite are set against shelfsight invoke at their thread count;
    MediaPipe (one XNNPACK thread on desktop Linux) against shelfsight frame (bundles) and
    invoke at the fewest threads measured.
    """
    own = {(r["mode"], r["threads"]): r for r in runs if r["backend"] == "shelfsight"}
    fewest = min((t for _, t in own), default=None)
    out, goal = [], None
    for r in runs:
        if r["backend"] == "shelfsight":
            continue
        modes = ("frame", "invoke") if r["backend"] == "mediapipe" else ("invoke",)
        threads = fewest if r["threads"] is None else r["threads"]
        for mode in modes:
            base = own.get((mode, threads))
            if base is None:
                continue
            out.append({"backend": r["backend"], "mode": r["mode"], "threads": r["threads"],
                        "against": {"backend": "shelfsight", "mode": mode, "threads": threads},
                        "p50_ratio": r["latency"]["p50_ms"] / base["latency"]["p50_ms"],
                        "mean_ratio": r["latency"]["mean_ms"] / base["latency"]["mean_ms"]})
            if r["backend"] == "mediapipe" and goal is None:
                goal = {"rule": f"shelfsight {mode} p50 <= MediaPipe classify p50 ({threads} thread)",
                        "shelfsight_p50_ms": base["latency"]["p50_ms"], "mediapipe_p50_ms": r["latency"]["p50_ms"],
                        "met": base["latency"]["p50_ms"] <= r["latency"]["p50_ms"]}
    return out, goal


@dataclass(frozen=True, eq=False)
class Job:
    """One measurement: a worker command and its request, run once per round."""

    backend: str
    mode: str
    threads: int | None
    model: Path
    command: tuple[str, ...]
    request: dict[str, Any]


def merge_slices(hello: dict[str, Any], slices: list[dict[str, Any]], top1: list[int],
                 rss: dict[str, int]) -> dict[str, Any]:
    """One worker's replies as one result: timings of every slice pooled in order; the first
    call and warm-up are those of the first slice."""
    return {**hello, "rounds": len(slices), "first_ms": slices[0]["first_ms"], "warmup_ms": slices[0]["warmup_ms"],
            "times_s": [t for r in slices for t in r["times_s"]],
            "cpu_per_wall": float(np.mean([r["cpu_per_wall"] for r in slices])), "top1": top1, "rss": rss}


class Bench:
    """Runs the measurements of one report; ``say`` gets one progress line per step.

    All measurements of a target are loaded first, each in its own worker process (one
    at a time, so load times do not overlap), then timed in ``rounds`` interleaved slices
    (every worker once per round, the order rotating), each slice timing
    ``min_time / rounds`` seconds after `SLICE_REWARM` untimed calls, so that a change in
    the machine's load is spread over all backends instead of landing on one.
    """

    def __init__(self, options: BenchOptions, work: Path, onnx_dir: Path, say: Callable[[str], None]):
        self.options, self.work, self.onnx_dir, self.say = options, work, onnx_dir, say

    def request(self, target: BenchTarget, inputs: Path, **extra: Any) -> dict[str, Any]:
        return {"model": str(target.model), "inputs": str(inputs), "scores_size": target.scores_size,
                "scores_head": target.scores_head, "runtime": self.options.runtime, **extra}

    def slice_message(self, round_no: int) -> dict[str, Any]:
        """What a worker is asked in round ``round_no`` (0-based)."""
        t, rounds = self.options.timing, self.options.rounds
        return {"cmd": "time", "min_time": t.min_time / rounds, "min_runs": -(-t.min_runs // rounds),
                "warmup": t.warmup if round_no == 0 else SLICE_REWARM}

    def measure(self, target: BenchTarget) -> dict[str, Any]:
        o = self.options
        inputs = (data_inputs(target, o.data, o.split, o.input_count) if o.data is not None
                  else synthetic_inputs(target.input_size, o.input_count))
        inputs_file = self.work / f"{_slug(target.name)}-inputs.npy"
        np.save(inputs_file, inputs)
        skipped: list[peers.Skip] = []
        conversions: dict[str, Any] = {}
        jobs = self._own_jobs(target, inputs_file)
        for backend in o.compare:
            jobs += getattr(self, f"_peer_{backend}")(target, inputs_file, skipped, conversions)
        results = self._run(target, jobs, skipped)
        reference = {j.threads: results[j]["top1"] for j in jobs if j.backend == "shelfsight" and j.mode == "invoke"}
        fewest = min(o.threads)
        runs = []
        for job in jobs:
            if job not in results:
                continue
            own_reference = job.backend == "shelfsight" and job.mode == "invoke"
            ref = None if own_reference else reference[fewest if job.threads is None else job.threads]
            run = run_record(results[job], job.mode, job.threads, job.model, ref)
            run.pop("top1")
            runs.append(run)
        rat, goal = ratios(runs)
        acc, search = accuracy(target, o.data, o.split) if o.data is not None else (None, None)
        if o.data is not None and target.bundle is None:
            skipped.append(peers.Skip("accuracy", "needs a bundle (labels and preprocessing), not a bare .tflite"))
        return {"name": target.name, "path": str(target.path), "kind": target.kind, "model_file": str(target.model),
                "quantization": target.quantization,
                "input": {"size": list(target.input_size), "dtype": target.input_dtype},
                "scores_size": target.scores_size, "sizes": target.sizes(), "runs": runs, "ratios": rat,
                "mediapipe_target": goal, "conversions": conversions, "accuracy": acc, "search": search,
                "skipped": [s.to_dict() for s in skipped]}

    def _failed(self, target: BenchTarget, job: Job, error: str, skipped: list[peers.Skip]) -> None:
        where = f"{job.backend} {job.mode}, " + ("default threads" if job.threads is None
                                                  else f"{job.threads} thread(s)")
        if job.backend == "shelfsight":
            raise ModelError(f"{target.name}: shelfsight {where} failed: {error}")
        skipped.append(peers.Skip(job.backend, f"failed: {error}", job.threads))
        self.say(f"[{target.name}] {where} failed: {error}")

    def _run(self, target: BenchTarget, jobs: list[Job], skipped: list[peers.Skip]) -> dict[Job, dict[str, Any]]:
        live: dict[Job, peers.WorkerProcess] = {}
        slices: dict[Job, list[dict[str, Any]]] = {}
        results: dict[Job, dict[str, Any]] = {}
        try:
            for job in jobs:
                worker = peers.WorkerProcess(list(job.command), job.request)
                if worker.hello.get("ok"):
                    live[job], slices[job] = worker, []
                else:
                    self._failed(target, job, worker.hello.get("error", "no reply"), skipped)
            self.say(f"[{target.name}] {len(live)} models loaded, timing {self.options.rounds} interleaved rounds")
            for round_no in range(self.options.rounds):
                order = list(live)
                order = order[round_no % len(order):] + order[:round_no % len(order)] if order else order
                for job in order:
                    reply = live[job].ask(self.slice_message(round_no))
                    if reply.get("ok"):
                        slices[job].append(reply)
                    else:
                        live.pop(job).close()
                        self._failed(target, job, reply.get("error", "no reply"), skipped)
                p50 = {j: float(np.median(slices[j][-1]["times_s"])) * 1e3 for j in live}
                self.say(f"[{target.name}] round {round_no + 1}/{self.options.rounds}: " + ", ".join(
                    f"{j.backend} {j.mode} {'-' if j.threads is None else j.threads}t {v:.1f}" for j, v in p50.items())
                    + " ms (p50)")
            for job in list(live):
                worker = live.pop(job)
                top1, closing = worker.ask({"cmd": "top1"}), worker.close()
                if not (top1.get("ok") and closing.get("ok")):
                    self._failed(target, job, (top1 if not top1.get("ok") else closing).get("error", ""), skipped)
                    continue
                results[job] = merge_slices(worker.hello, slices[job], top1["top1"], closing["rss"])
        finally:
            for worker in live.values():
                worker.close()
        return results

    def _own_jobs(self, target: BenchTarget, inputs: Path) -> list[Job]:
        modes = ("invoke", "frame") if target.bundle is not None else ("invoke",)
        bundle = str(target.bundle.root) if target.bundle else None
        return [Job("shelfsight", mode, threads, target.model, tuple(peers.worker_command()),
                    self.request(target, inputs, backend="shelfsight", threads=threads, mode=mode, bundle=bundle))
                for threads in self.options.threads for mode in modes]

    def _worker_jobs(self, target: BenchTarget, backend: str, model: Path, inputs: Path) -> list[Job]:
        return [Job(backend, "invoke", threads, model, tuple(peers.worker_command()),
                    self.request(target, inputs, backend=backend, threads=threads, model=str(model)))
                for threads in self.options.threads]

    def _peer_onnxruntime(self, target: BenchTarget, inputs: Path, skipped: list, conversions: dict) -> list[Job]:
        onnx, why = peers.onnx_source(target.model)
        if onnx is not None:
            conversions["onnx"] = {"ok": True, "source": "user", "file": str(onnx)}
        elif why == "convert":
            onnx = self.onnx_dir / f"{_slug(target.name)}.onnx"
            self.say(f"[{target.name}] converting to ONNX (tf2onnx)")
            conv = peers.convert_to_onnx(target.model, onnx, inputs)
            conversions["onnx"] = {**conv, "source": "tf2onnx", "file": str(onnx)}
            if not conv.get("ok"):
                skipped.append(peers.Skip("onnxruntime", f"ONNX conversion failed: {conv.get('error')}"))
                self.say(f"[{target.name}] onnxruntime skipped: ONNX conversion failed: {conv.get('error')}")
                return []
        else:
            skipped.append(peers.Skip("onnxruntime", why))
            self.say(f"[{target.name}] onnxruntime skipped: {why}")
            return []
        return self._worker_jobs(target, "onnxruntime", onnx, inputs)

    def _peer_tflite(self, target: BenchTarget, inputs: Path, skipped: list, conversions: dict) -> list[Job]:
        missing = peers.module_missing("tflite")
        if missing:
            skipped.append(peers.Skip("tflite", missing))
            self.say(f"[{target.name}] tflite skipped: {missing}")
            return []
        return self._worker_jobs(target, "tflite", target.model, inputs)

    def _peer_mediapipe(self, target: BenchTarget, inputs: Path, skipped: list, conversions: dict) -> list[Job]:
        python, why = peers.mediapipe_python()
        if python is None:
            skipped.append(peers.Skip("mediapipe", why))
            self.say(f"[{target.name}] mediapipe skipped: {why}")
            return []
        return [Job("mediapipe", "classify", None, target.model, tuple(peers.mediapipe_command(python)),
                    self.request(target, inputs, top_k=5))]


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)


def run_bench(targets: list[BenchTarget], options: BenchOptions, onnx_dir: Path | None = None,
              say: Callable[[str], None] = lambda _: None) -> dict[str, Any]:
    """Measure every target and return the report (see the module docstring for its schema).

    Args:
        onnx_dir: where converted ONNX models are kept (default: a temporary directory).
    """
    device = device_fingerprint(options.runtime)
    with tempfile.TemporaryDirectory(prefix="shelfsight-bench-") as tmp:
        bench = Bench(options, Path(tmp), onnx_dir or Path(tmp) / "onnx", say)
        measured = [bench.measure(t) for t in targets]
    device["load_average_end"] = [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None
    source = "data" if options.data is not None else "synthetic"
    return {"schema": SCHEMA, "schema_version": SCHEMA_VERSION,
            "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"), "device": device,
            "options": {"threads": list(options.threads), "rounds": options.rounds,
                        "min_time_s": options.timing.min_time,
                        "warmup": options.timing.warmup, "min_runs": options.timing.min_runs,
                        "runtime": options.runtime, "compare": list(options.compare),
                        "inputs": {"source": source, "data": str(options.data) if options.data else None,
                                   "split": options.split if options.data else None, "count": options.input_count}},
            "targets": measured}


def write_outputs(report: dict[str, Any], out: Path) -> dict[str, Path]:
    """bench.json, latency.png, accuracy.png (if any accuracy) and report.md in ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    written = {"json": out / "bench.json"}
    written["json"].write_text(json.dumps(report, indent=1) + "\n")
    plots = {}
    if plot_latency(report, out / "latency.png"):
        plots["Latency distribution"] = "latency.png"
        written["latency"] = out / "latency.png"
    if plot_accuracy(report, out / "accuracy.png"):
        plots["Accuracy against size and latency"] = "accuracy.png"
        written["accuracy"] = out / "accuracy.png"
    written["markdown"] = out / "report.md"
    written["markdown"].write_text(markdown_report(report, plots))
    return written

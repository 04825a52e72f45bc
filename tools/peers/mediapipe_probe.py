"""Run MediaPipe Tasks on a .tflite and print what it sees as JSON (run inside .venv-peers).

    .venv-peers/bin/python tools/peers/mediapipe_probe.py MODEL IMAGE [IMAGE ...]
        [--top-k 3] [--runs 10] [--warmup 2] [--tasks classifier,embedder]

Standalone on purpose: the peer environment has mediapipe and numpy 2 but not shelfsight.
What MediaPipe Tasks accepts (measured with mediapipe 1.2.2 on shelfsight's two-output
models, scores 1xC and embedding 1xD):

- ImageClassifier treats every output tensor as a classification head, in output tensor
  order, named by the output TensorMetadata; labels come from that tensor's
  TENSOR_AXIS_LABELS file. So the "embedding" output shows up as an extra label-less head,
  and the real classes are the head named "scores".
- ImageEmbedder returns every output as an embedding head, so "scores" comes back as a
  C-value embedding beside the real one; use the head named "embedding".
- Input: one 1xHxWx3 tensor, uint8 (fed raw pixels) or float32 (NormalizationOptions
  metadata required, else the task refuses the model); int8 inputs are refused.

Output (one JSON object on stdout): mediapipe version, and per task either
{"ok": false, "error": ...} or {"ok": true, "heads": [...], "images": [...]} where a
classifier head lists the labels MediaPipe read from the metadata (null when it has none),
each image has the top-k per head (classifier) or the vectors (embedder), and
"latency_ms" summarises the timed calls (after warm-up) of that image.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable

TASKS = ("classifier", "embedder")


def _latency(call: Callable[[], Any], runs: int, warmup: int) -> tuple[Any, dict[str, float]]:
    for _ in range(warmup):
        call()
    times, result = [], None
    for _ in range(runs):
        start = time.perf_counter()
        result = call()
        times.append((time.perf_counter() - start) * 1000.0)
    return result, {"runs": runs, "median": statistics.median(times), "mean": statistics.fmean(times),
                    "min": min(times), "max": max(times)}


def _classifier(mp: Any, model: Path, images: list[Path], top_k: int, runs: int, warmup: int) -> dict[str, Any]:
    from mediapipe.tasks.python import BaseOptions, vision

    every = vision.ImageClassifierOptions(base_options=BaseOptions(model_asset_path=str(model)), max_results=-1)
    top = vision.ImageClassifierOptions(base_options=BaseOptions(model_asset_path=str(model)), max_results=top_k)
    with vision.ImageClassifier.create_from_options(every) as task:
        first = task.classify(mp.Image.create_from_file(str(images[0])))
    heads = []
    for head in first.classifications:
        named = sorted((c.index, c.category_name) for c in head.categories)
        labels = [name for _, name in named] if all(name for _, name in named) else None
        heads.append({"head_index": head.head_index, "head_name": head.head_name, "size": len(named),
                      "labels": labels})
    out = []
    with vision.ImageClassifier.create_from_options(top) as task:
        for path in images:
            image = mp.Image.create_from_file(str(path))
            result, latency = _latency(lambda: task.classify(image), runs, warmup)
            out.append({"image": str(path), "latency_ms": latency, "heads": [
                {"head_index": h.head_index, "head_name": h.head_name,
                 "top_k": [{"index": c.index, "label": c.category_name, "score": c.score} for c in h.categories]}
                for h in result.classifications]})
    return {"ok": True, "heads": heads, "images": out}


def _embedder(mp: Any, model: Path, images: list[Path], runs: int, warmup: int) -> dict[str, Any]:
    from mediapipe.tasks.python import BaseOptions, vision

    options = vision.ImageEmbedderOptions(base_options=BaseOptions(model_asset_path=str(model)))
    out, heads = [], None
    with vision.ImageEmbedder.create_from_options(options) as task:
        for path in images:
            image = mp.Image.create_from_file(str(path))
            result, latency = _latency(lambda: task.embed(image), runs, warmup)
            vectors = [{"head_index": e.head_index, "head_name": e.head_name,
                        "values": [float(v) for v in e.embedding]} for e in result.embeddings]
            heads = heads or [{"head_index": v["head_index"], "head_name": v["head_name"], "size": len(v["values"])}
                              for v in vectors]
            out.append({"image": str(path), "latency_ms": latency, "embeddings": vectors})
    return {"ok": True, "heads": heads, "images": out}


def probe(model: Path, images: list[Path], tasks: tuple[str, ...], top_k: int, runs: int,
          warmup: int) -> dict[str, Any]:
    """Run the chosen MediaPipe tasks; a task that refuses the model reports its error."""
    import mediapipe as mp

    report: dict[str, Any] = {"mediapipe_version": mp.__version__, "model": str(model)}
    for name in tasks:
        try:
            if name == "classifier":
                report["image_classifier"] = _classifier(mp, model, images, top_k, runs, warmup)
            else:
                report["image_embedder"] = _embedder(mp, model, images, runs, warmup)
        except (RuntimeError, ValueError, OSError) as e:
            report["image_classifier" if name == "classifier" else "image_embedder"] = {
                "ok": False, "error": f"{type(e).__name__}: {e}"}
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", type=Path, help=".tflite model (with TFLite metadata)")
    parser.add_argument("images", type=Path, nargs="+", help="image files (JPEG/PNG)")
    parser.add_argument("--top-k", type=int, default=3, help="categories per classification head (default 3)")
    parser.add_argument("--runs", type=int, default=10, help="timed calls per image (default 10)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed calls per image first (default 2)")
    parser.add_argument("--tasks", default=",".join(TASKS), help="comma list of: classifier, embedder")
    args = parser.parse_args(argv)
    tasks = tuple(t.strip() for t in args.tasks.split(",") if t.strip())
    unknown = sorted(set(tasks) - set(TASKS))
    missing = [str(p) for p in [args.model, *args.images] if not p.is_file()]
    if unknown or missing or args.top_k < 1 or args.runs < 1 or args.warmup < 0:
        problem = (f"unknown tasks {unknown}, expected {list(TASKS)}" if unknown else
                   f"files not found: {missing}" if missing else
                   f"--top-k {args.top_k} / --runs {args.runs} must be >= 1 and --warmup {args.warmup} >= 0")
        print(f"mediapipe_probe: {problem}", file=sys.stderr)
        return 2
    try:
        import mediapipe  # noqa: F401
    except ImportError:
        print("mediapipe_probe: mediapipe is not installed here; run it with .venv-peers/bin/python "
              "(bash tools/peers/setup_env.sh)", file=sys.stderr)
        return 2
    json.dump(probe(args.model, args.images, tasks, args.top_k, args.runs, args.warmup), sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

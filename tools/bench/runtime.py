"""Benchmark the device program itself: `shelfsight run` on a video, as a user starts it.

Starts `shelfsight run BUNDLE --source VIDEO --every-frame` in a subprocess (so start-up,
model load and imports count), samples its resident memory, and reads the run summary:
sustained frames per second, per-frame latency p50/p99, time from process start to the
first event, peak RSS.

    python -m shelfsight.tools.bench.runtime BUNDLE --video V.mp4 [--threads 2] [--json OUT]
    python -m shelfsight.tools.bench.runtime BUNDLE --make-video-from DIR   # 640x480 from images
"""
from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import click
import psutil

from shelfsight.images import IMAGE_SUFFIXES


def measure(bundle: Path, video: Path, threads: int | None, extra: tuple[str, ...] = ()) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        summary, events = Path(tmp) / "summary.json", Path(tmp) / "events.jsonl"
        cmd = [sys.executable, "-m", "shelfsight", "-q", "run", str(bundle), "--source", str(video), "--every-frame",
               "--sink", f"jsonl:{events}", "--summary", str(summary), *extra]
        if threads:
            cmd += ["--threads", str(threads)]
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        ps, peak, first_event = psutil.Process(proc.pid), 0, None
        while proc.poll() is None:
            try:
                peak = max(peak, ps.memory_info().rss)
            except psutil.NoSuchProcess:
                break
            if first_event is None and events.exists() and events.stat().st_size > 0:
                first_event = time.perf_counter() - start
            time.sleep(0.005)
        wall = time.perf_counter() - start
        if proc.returncode != 0:
            raise click.ClickException(f"shelfsight run failed: {proc.stderr.read()[-500:]}")
        report = json.loads(summary.read_text())
    return {"bundle": str(bundle), "video": str(video), "threads": threads, "frames": report["frames"],
            "events": report["events"], "fps": report["fps"], "latency_p50_ms": report["latency_p50_ms"],
            "latency_p99_ms": report["latency_p99_ms"], "inference_p50_ms": report["inference_p50_ms"],
            "inference_p99_ms": report["inference_p99_ms"], "first_event_from_process_start_s": first_event,
            "first_event_from_run_start_s": report["first_event_s"], "peak_rss_mb": round(peak / 1e6, 1),
            "process_wall_s": round(wall, 2)}


@click.command()
@click.argument("bundle", type=click.Path(exists=True, path_type=Path))
@click.option("--video", type=click.Path(exists=True, path_type=Path), help="640x480 video to run on.")
@click.option("--make-video-from", type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="Make the video from the images in this folder (recursively).")
@click.option("--threads", type=int, default=None)
@click.option("--json", "json_out", type=click.Path(path_type=Path))
def main(bundle, video, make_video_from, threads, json_out):
    """Sustained FPS, latency, memory and time to first event of `shelfsight run`."""
    from ..make_video import make_video

    if video is None:
        if make_video_from is None:
            raise click.UsageError("give --video or --make-video-from")
        images = sorted(p for p in make_video_from.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
        video = make_video(images, Path(tempfile.mkdtemp()) / "bench.mp4", fps=30, hold=10, gap=2)
    result = measure(bundle, video, threads)
    click.echo(json.dumps(result, indent=2))
    if json_out:
        json_out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()

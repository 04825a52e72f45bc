"""`shelfsight demo`: the whole pipeline end to end on the sample in assets/.

train (EfficientNet-Lite0, real ImageNet weights) -> export int8 bundle -> index the
catalog -> run the edge runtime on a video made from val images training never saw ->
short benchmark (`shelfsight bench`, in its own process as a user would run it).
Prints what it recognised and where the bundle is.
"""
from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import click

from shelfsight.console import progress_disabled

SAMPLE = Path(__file__).resolve().parents[2] / "assets" / "grocery-sample"


def val_samples(data):
    from shelfsight.datasets import load_dataset

    return load_dataset(data, "val").samples


def _step(title: str) -> float:
    click.secho(f"\n== {title}", bold=True)
    return time.perf_counter()


@click.command()
@click.option("--out", type=click.Path(), default="demo-out", show_default=True, help="Where everything is written.")
@click.option("--data", type=click.Path(), default=str(SAMPLE), show_default=True)
@click.option("--image-size", type=click.IntRange(96, 320), default=224, show_default=True)
@click.option("--sync", "with_sync", is_flag=True,
              help="Also start the reference sync server on loopback and send the events to it.")
def demo(out, data, image_size, with_sync):
    """Train, export, index, run and benchmark on the bundled sample, end to end."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    run_dir, bundle_dir = out / "run", out / "bundle"
    progress = not progress_disabled()
    _train_step(data, run_dir, image_size, progress)
    _export_step(run_dir, bundle_dir, data, progress)
    _index_step(bundle_dir, data, progress)
    video, picks = _run_step(out, bundle_dir, data)
    _bench_step(out, bundle_dir, data)
    if with_sync:
        _sync_step(out, bundle_dir, video)
    click.secho(f"\nbundle: {bundle_dir.resolve()}", bold=True)
    click.echo(f"try:    shelfsight classify {bundle_dir} {picks[0].path}")


def _train_step(data, run_dir: Path, image_size: int, progress: bool) -> None:
    from shelfsight.training.options import ModelOptions, TrainOptions
    from shelfsight.training.trainer import train

    t = _step(f"1. train efficientnet_lite0 @ {image_size}px on {data}")
    metrics = train(data, run_dir, ModelOptions(image_size=image_size),
                    TrainOptions(head_epochs=30, finetune_epochs=2, patience=4), progress=progress)
    val = metrics.get("val", {})
    click.echo(f"   val top-1 {val.get('top1', float('nan')):.3f} ({time.perf_counter() - t:.0f}s) -> {run_dir}")


def _export_step(run_dir: Path, bundle_dir: Path, data, progress: bool) -> None:
    from shelfsight.export.exporter import export_run
    from shelfsight.export.options import ExportOptions, QuantizationConfig

    t = _step("2. export an int8 bundle")
    result = export_run(run_dir, bundle_dir, ExportOptions(QuantizationConfig.for_int8(), data=str(data)),
                        progress=progress)
    m = result.manifest
    click.echo(f"   model.tflite {m['files']['model.tflite']['size'] / 1e6:.2f} MB, val top-1 "
               f"{m['metrics'].get('val_top1', float('nan')):.3f}, agreement with float "
               f"{m['metrics']['float_comparison']['top1_agreement']:.3f} ({time.perf_counter() - t:.0f}s)")


def _index_step(bundle_dir: Path, data, progress: bool) -> None:
    from shelfsight.edge.indexing import build_index
    from shelfsight.edge.runtime.recognizer import Recognizer
    from shelfsight.images import read_image

    t = _step("3. index the catalog (iconic + train images) with the bundle's own model")
    report = build_index(bundle_dir, data, progress=progress)
    click.echo(f"   {report['items']} items, {report['catalog_images']} images; val natural->catalog recall@1 "
               f"{report.get('recall_at_1', float('nan')):.3f}, @5 {report.get('recall_at_5', float('nan')):.3f} "
               f"({time.perf_counter() - t:.0f}s)")
    with Recognizer.create_from_bundle(bundle_dir, search_k=3) as rec:
        probe = val_samples(data)[0]
        hits = rec.index.search(rec.embed(read_image(probe.path)), 3)
    click.echo(f"   search {probe.path.name}: " + ", ".join(f"{m.item_id} {m.similarity:.3f}" for m in hits))


def _run_step(out: Path, bundle_dir: Path, data) -> tuple[Path, list]:
    """The edge runtime on a video of one val image per product; returns the video and its products."""
    from shelfsight.edge.pipeline.runner import RunOptions, run
    from shelfsight.edge.pipeline.sinks import JsonlSink
    from shelfsight.edge.pipeline.sources import open_source
    from shelfsight.edge.runtime.recognizer import Recognizer
    from shelfsight.tools.make_video import make_video

    t = _step("4. run the edge runtime on a video of val images (never seen in training)")
    picks, seen = [], set()
    for s in val_samples(data):
        if s.label not in seen:
            seen.add(s.label)
            picks.append(s)
    hold, gap = 12, 6
    video = make_video([s.path for s in picks], out / "val-products.mp4", fps=30, hold=hold, gap=gap)
    events_path = out / "events.jsonl"
    with Recognizer.create_from_bundle(bundle_dir) as rec:
        summary = run(open_source(str(video)), rec, [JsonlSink(events_path)], RunOptions(), handle_signals=False)
    events = [json.loads(line) for line in events_path.read_text().splitlines()]
    right = sum(1 for e in events if e["label"] == picks[e["frame"] // (hold + gap)].label)
    click.echo(f"   shown in order: {', '.join(s.label for s in picks)}")
    click.echo(f"   recognised:     {', '.join(str(e['label']) for e in events)}")
    click.echo(f"   {summary.events} events for {len(picks)} products ({right} name the product on screen), "
               f"{summary.frames} frames at {summary.fps:.0f} fps, inference p50 {summary.inference_p50_ms:.1f} ms "
               f"({time.perf_counter() - t:.0f}s) -> {events_path}")
    return video, picks


def _bench_step(out: Path, bundle_dir: Path, data) -> None:
    t = _step("5. benchmark the bundle on this device")
    bench = subprocess.run([sys.executable, "-m", "shelfsight", "bench", str(bundle_dir), "--threads", "1,2",
                            "--min-time", "2", "--data", str(data), "--out", str(out / "bench")])
    if bench.returncode != 0:
        click.echo(f"   benchmark failed (exit {bench.returncode}); the bundle itself is fine", err=True)
    click.echo(f"   report: {out / 'bench' / 'report.md'} ({time.perf_counter() - t:.0f}s)")


def _sync_step(out: Path, bundle_dir: Path, video: Path) -> None:
    """Run the device program with a durable outbox against the reference server on loopback."""
    import os
    import secrets

    from shelfsight.tools.server import ServerConfig, SyncServer

    t = _step("6. sync: device outbox -> reference server on loopback")
    token = secrets.token_hex(16)
    outbox = out / "outbox.db"
    env = dict(os.environ, SHELFSIGHT_SYNC_TOKEN=token)
    with SyncServer(ServerConfig(data_dir=out / "sync-server", token=token, port=0, bundle=bundle_dir)) as server:
        device = [sys.executable, "-m", "shelfsight", "-q"]
        subprocess.run(device + ["run", str(bundle_dir), "--source", str(video), "--sink", f"jsonl:{out / 'events-sync.jsonl'}",
                                 "--outbox", str(outbox), "--endpoint", server.url], env=env, check=True,
                       stderr=subprocess.DEVNULL)
        subprocess.run(device + ["sync", "--once", "--endpoint", server.url, "--outbox", str(outbox)], env=env,
                       check=True)
        stats = server.state.store.stats()
    sent = len((out / "events-sync.jsonl").read_text().splitlines())
    click.echo(f"   {sent} events produced, {stats['events']} distinct events stored by the server "
               f"({stats['redeliveries']} redeliveries absorbed) at {server.url} ({time.perf_counter() - t:.0f}s)")

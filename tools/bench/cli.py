"""`shelfsight bench`: parse the options, measure, print and write the report (see `runner`)."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from shelfsight.timing import TimingOptions

from . import compare as peers
from .options import RUNTIMES, BenchOptions, parse_threads
from .report import text_report
from .runner import run_bench, write_outputs
from .targets import open_bench_targets, variant_paths


@click.command("bench")
@click.argument("targets", nargs=-1, type=click.Path(path_type=Path))
@click.option("--variants", type=click.Path(path_type=Path),
              help="Also every bundle (subdir with manifest.json) in DIR.")
@click.option("--threads", help="Comma list of thread counts (default: 1, powers of two, all cores).")
@click.option("--min-time", type=float, default=2.0, show_default=True,
              help="Seconds of timed runs per measurement, over all rounds.")
@click.option("--warmup", type=int, default=10, show_default=True, help="Untimed calls after the first one.")
@click.option("--min-runs", type=int, default=20, show_default=True, help="Timed runs at least, whatever the time.")
@click.option("--rounds", type=int, default=10, show_default=True,
              help="Interleaved timing slices per measurement (fairer on a busy machine).")
@click.option("--inputs", "input_count", type=int, default=16, show_default=True, help="Input images to cycle through.")
@click.option("--data", type=click.Path(path_type=Path), help="Dataset: real inputs, top-1/top-5 and search recall.")
@click.option("--split", default="val", show_default=True, help="Split of --data to use.")
@click.option("--compare", default="", help="Peers on the same model and inputs: mediapipe,onnxruntime,tflite.")
@click.option("--runtime", type=click.Choice(RUNTIMES), default="auto", show_default=True,
              help="shelfsight's TFLite runtime.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path),
              help="Write bench.json, report.md, plots and converted models here.")
@click.option("--json", "as_json", is_flag=True, help="Print the JSON report instead of the table.")
def bench(targets: tuple[Path, ...], variants: Path | None, threads: str | None, min_time: float, warmup: int,
          min_runs: int, rounds: int, input_count: int, data: Path | None, split: str, compare: str, runtime: str,
          out: Path | None, as_json: bool) -> None:
    """Benchmark bundles or .tflite files on this device (latency, memory, size, accuracy)."""
    paths = list(targets) + (variant_paths(variants) if variants else [])
    if not paths:
        raise click.UsageError("give at least one TARGET (bundle dir, .tar.gz or .tflite) or --variants DIR")
    options = BenchOptions(parse_threads(threads), TimingOptions(min_time, warmup, min_runs), input_count, data,
                           split, peers.parse_compare(compare), runtime, rounds)
    opened = open_bench_targets(paths)
    say = (lambda line: click.echo(line, err=True))
    report = run_bench(opened, options, out / "onnx" if out is not None else None, say)
    if out is not None:
        written = write_outputs(report, out)
        say("wrote " + ", ".join(str(p) for p in written.values()))
    if as_json:
        sys.stdout.write(json.dumps(report, indent=1) + "\n")
    else:
        click.echo(text_report(report))

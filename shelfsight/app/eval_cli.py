"""`shelfsight eval`."""
from __future__ import annotations

import json

import click

from shelfsight.console import progress_disabled


@click.command(name="eval")
@click.argument("target", type=click.Path())
@click.option("--data", required=True, type=click.Path(), help="Dataset to evaluate on.")
@click.option("--split", type=click.Choice(["train", "val", "test"]), default="val", show_default=True)
@click.option("--out", type=click.Path(), help="Write report.json and confusion.png here.")
@click.option("--accept-share", type=click.FloatRange(0.01, 1.0), default=0.95, show_default=True,
              help="Share of the split the calibrated 'unknown' threshold accepts.")
@click.option("--json", "as_json", is_flag=True, help="Print the full report as JSON.")
def eval_command(target, data, split, out, accept_share, as_json):
    """Evaluate a training run or a bundle (through the edge runtime) on a dataset split."""
    from .evaluation import evaluate

    report = evaluate(target, data, split, out, accept_share, progress=not progress_disabled())
    if as_json:
        click.echo(json.dumps(report, indent=2))
        return
    click.echo(f"{report['kind']} {report['target']} on {split}: {report['samples']} images")
    click.echo(f"  top-1 {report['top1']:.4f}  top-5 {report['top5']:.4f}  macro-F1 {report['macro_f1']:.4f}"
               + (f"  coarse top-1 {report['coarse_top1']:.4f}" if "coarse_top1" in report else ""))
    click.echo(f"  unknown threshold {report['unknown_threshold']:.4f} accepts {accept_share:.0%} of {split}")
    if report["skipped"]:
        click.echo(f"  skipped {len(report['skipped'])} unreadable images")
    worst = sorted(report["per_class"].items(), key=lambda kv: kv[1]["recall"])[:5]
    click.echo("  lowest recall: " + ", ".join(f"{k} {v['recall']:.2f}" for k, v in worst))

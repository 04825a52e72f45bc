"""`shelfsight export`."""
from __future__ import annotations

import dataclasses
import json

import click

from shelfsight.bundle import pack_archive
from shelfsight.console import progress_disabled
from shelfsight.run import Run


@click.command()
@click.argument("run_dir", type=click.Path())
@click.option("--out", required=True, type=click.Path(), help="Bundle directory to write.")
@click.option("--quantize", type=click.Choice(["int8", "fp16", "dynamic", "float32"]), default="int8", show_default=True)
@click.option("--prune", "sparsity", type=click.FloatRange(0.0, 0.95, min_open=True), default=None,
              help="Magnitude-prune to this sparsity during a short fine-tune.")
@click.option("--prune-epochs", type=int, default=2, show_default=True)
@click.option("--prune-distill/--prune-labels", default=True, show_default=True,
              help="While pruning, learn from the unpruned model (distil) or from the labels.")
@click.option("--qat/--ptq", default=None,
              help="int8: quantization-aware training, distilling the float model (the default, ~1 pt better), "
                   "or post-training quantization only (--ptq: minutes faster).")
@click.option("--qat-epochs", type=int, default=3, show_default=True)
@click.option("--calibration-images", type=int, default=300, show_default=True)
@click.option("--margin", type=float, default=10.0, show_default=True,
              help="Name classes that lose more than this many points against the float model.")
@click.option("--max-drop", type=float, default=None, help="Fail instead of shipping when a class loses more points.")
@click.option("--data", type=click.Path(), help="Dataset for calibration/comparison (default: the run's).")
@click.option("--archive", is_flag=True, help="Also write BUNDLE.tar.gz for transport.")
@click.option("--index/--no-index", "with_index", default=True, show_default=True,
              help="Index the dataset's catalog and train photos into the bundle (search, and retrieval fusion "
                   "for classification); what `shelfsight index B --catalog DATA` does.")
def export(run_dir, out, quantize, sparsity, prune_epochs, prune_distill, qat, qat_epochs, calibration_images, margin,
           max_drop, data, archive, with_index):
    """Compress and convert a training run into a bundle the edge runtime loads."""
    from .exporter import export_run
    from .options import ExportOptions, PruneOptions, QATOptions, QuantizationConfig

    if qat is None:
        qat = quantize == "int8"
    elif qat and quantize != "int8":
        raise click.UsageError(f"--qat needs --quantize int8, got {quantize}")
    options = ExportOptions(QuantizationConfig(quantize, calibration_images),
                            prune=PruneOptions(sparsity=sparsity, epochs=prune_epochs, distill=prune_distill) if sparsity else None,
                            qat=QATOptions(epochs=qat_epochs) if qat else None, archive=archive, margin=margin,
                            max_drop=max_drop, data=data)
    result = export_run(run_dir, out, options if not with_index else dataclasses.replace(options, archive=False),
                        progress=not progress_disabled())
    m = result.manifest
    summary = {"bundle": str(result.bundle), "quantization": quantize,
               "model_bytes": m["files"]["model.tflite"]["size"], "qat": bool(qat),
               **{k: v for k, v in m["metrics"].items() if k.startswith("val_")}}
    if result.guard:
        summary.update(top1_drop_points=round(result.guard.top1_drop_points, 2),
                       top1_agreement=round(result.guard.agreement, 4),
                       embedding_cosine_mean=round(result.guard.embedding_cosine_mean, 4),
                       classes_over_margin=list(result.guard.failing))
    if with_index:
        summary["index"] = _index(result.bundle, data or Run.load(run_dir).config["data"])
    if archive:  # packed last, so that it carries the index
        summary["archive"] = str(pack_archive(result.bundle, result.bundle.with_name(result.bundle.name + ".tar.gz")))
    click.echo(json.dumps(summary))


def _index(bundle, data) -> dict:
    """The bundle's search index, built by the device's own indexing with the bundle's model."""
    from shelfsight.edge.indexing import build_index

    report = build_index(bundle, data, progress=not progress_disabled())
    keep = ("items", "catalog_images", "recall_at_1", "recall_at_5", "val_top1_classifier", "val_top1_fused", "fusion")
    return {k: report[k] for k in keep if k in report}

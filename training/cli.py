"""`shelfsight train`."""
from __future__ import annotations

import json

import click

from shelfsight.cli import progress_disabled

BACKBONE_NAMES = ("efficientnet_lite0", "mobilenet_v2", "mobilenet_v3_small", "mobilenet_v3_large", "efficientnet_b0")


@click.command()
@click.option("--data", required=True, type=click.Path(), help="Dataset: class folders, CSV manifest or Grocery layout.")
@click.option("--out", required=True, type=click.Path(), help="Run directory to write.")
@click.option("--backbone", type=click.Choice(BACKBONE_NAMES), default="efficientnet_lite0", show_default=True)
@click.option("--image-size", type=click.IntRange(96, 320), default=224, show_default=True)
@click.option("--alpha", type=float, default=1.0, show_default=True, help="Width multiplier (MobileNet).")
@click.option("--weights", default="imagenet", show_default=True, help="imagenet, none, or a weights file.")
@click.option("--embedding-dim", type=int, default=128, show_default=True)
@click.option("--epochs", "head_epochs", type=int, default=40, show_default=True, help="Stage 1 (heads) epochs.")
@click.option("--finetune-epochs", type=int, default=8, show_default=True, help="Stage 2 epochs (0: no fine-tuning).")
@click.option("--finetune-fraction", type=float, default=0.35, show_default=True,
              help="Share of backbone layers (from the top) trained in stage 2.")
@click.option("--batch-size", type=int, default=32, show_default=True)
@click.option("--lr", "finetune_lr", type=float, default=3e-4, show_default=True, help="Stage 2 learning rate.")
@click.option("--augment/--no-augment", default=True, show_default=True)
@click.option("--balance/--no-balance", "balance_classes", default=True, show_default=True)
@click.option("--patience", type=int, default=3, show_default=True, help="Early stopping on val accuracy.")
@click.option("--mixed-precision", type=click.Choice(["auto", "on", "off"]), default="auto", show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
def train(data, out, backbone, image_size, alpha, weights, embedding_dim, head_epochs, finetune_epochs,
          finetune_fraction, batch_size, finetune_lr, augment, balance_classes, patience, mixed_precision, seed):
    """Fine-tune an ImageNet backbone on product photos; write model, labels and metrics to OUT."""
    from .options import ModelOptions, TrainOptions
    from .trainer import train as run_training

    mo = ModelOptions(backbone=backbone, image_size=image_size, alpha=alpha, weights=weights,
                      embedding_dim=embedding_dim)
    to = TrainOptions(batch_size=batch_size, head_epochs=head_epochs, finetune_epochs=finetune_epochs,
                      finetune_fraction=finetune_fraction, finetune_lr=finetune_lr, augment=augment,
                      balance_classes=balance_classes, patience=patience, mixed_precision=mixed_precision, seed=seed)
    metrics = run_training(data, out, mo, to, progress=not progress_disabled())
    val = metrics.get("val")
    summary = {"run": out, "wall_time_s": metrics["wall_time_s"]}
    if val:
        summary.update(val_top1=round(val["top1"], 4), val_top5=round(val["top5"], 4),
                       val_macro_f1=round(val["macro_f1"], 4))
        if "coarse_top1" in val:
            summary["val_coarse_top1"] = round(val["coarse_top1"], 4)
    click.echo(json.dumps(summary))

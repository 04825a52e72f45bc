"""`shelfsight train`."""
from __future__ import annotations

import json

import click

from shelfsight.console import progress_disabled

BACKBONE_NAMES = ("efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2", "mobilenet_v2",
                  "mobilenet_v3_small", "mobilenet_v3_large", "efficientnet_b0")
PRESET_NAMES = ("fast", "balanced", "best")


@click.command()
@click.option("--data", required=True, type=click.Path(), help="Dataset: class folders, CSV manifest or Grocery layout.")
@click.option("--out", required=True, type=click.Path(), help="Run directory to write.")
@click.option("--preset", type=click.Choice(PRESET_NAMES), default="balanced", show_default=True,
              help="Named recipe; the flags below override its values.")
@click.option("--backbone", type=click.Choice(BACKBONE_NAMES), help="[preset] Backbone network.")
@click.option("--image-size", type=click.IntRange(96, 320), help="[preset] Input side in pixels.")
@click.option("--alpha", type=float, help="Width multiplier (MobileNet).")
@click.option("--weights", help="imagenet (default), none, or a weights file.")
@click.option("--embedding-dim", type=int, help="Embedding size (default 128).")
@click.option("--cosine-scale", type=float, help="Cosine classifier scale: logits = scale * cos (default 16).")
@click.option("--epochs", "head_epochs", type=int, help="Stage 1 (heads) epochs (default 40).")
@click.option("--finetune-epochs", type=int, help="[preset] Stage 2 epochs (0: no fine-tuning).")
@click.option("--finetune-fraction", type=float, help="[preset] Share of backbone layers (from the top) trained in stage 2.")
@click.option("--warmup-epochs", type=float, help="[preset] Stage 2 learning-rate warm-up epochs.")
@click.option("--ema", "ema_momentum", type=float, help="Weight EMA momentum in stage 2 (default 0.99; 0: off).")
@click.option("--train-bn/--freeze-bn", "train_batchnorm", default=None, help="Update BatchNorm in stage 2 (default: frozen).")
@click.option("--catalog/--no-catalog", "catalog_images", default=None,
              help="Add the dataset's catalog (iconic) images to training (default: on).")
@click.option("--teacher", type=click.Path(), multiple=True,
              help="A training run to distil (its scores are soft targets); repeat for an ensemble (scores averaged).")
@click.option("--distill-weight", type=float, help="Share of the target from the teacher (default 0.5).")
@click.option("--ensemble", type=int,
              help="[preset] Train this many seeds of the recipe and ship their ensemble as one model (0: one run).")
@click.option("--batch-size", type=int, help="Batch size (default 32).")
@click.option("--lr", "finetune_lr", type=float, help="Stage 2 peak learning rate (default 3e-4).")
@click.option("--label-smoothing", type=float, help="Label smoothing (default 0.1).")
@click.option("--augment/--no-augment", default=None, help="Augmentation in stage 2 (default: on).")
@click.option("--jpeg", type=click.FloatRange(0, 1),
              help="Probability of a JPEG round trip (quality 40-95) per image, as camera streams compress "
                   "(default 0.5; 0: off).")
@click.option("--erasing", type=click.FloatRange(0, 1), help="Random erasing probability per image (default 0).")
@click.option("--mix", type=click.Choice(["none", "mixup", "cutmix"]), help="Mix images within a batch (default mixup).")
@click.option("--mix-alpha", type=float, help="Beta(a, a) of mixup / cutmix (default 0.2).")
@click.option("--balance/--no-balance", "balance_classes", default=None, help="Class-balanced weights (default: on).")
@click.option("--patience", type=int, help="Early stopping on val accuracy (default 0: the fixed schedule).")
@click.option("--mixed-precision", type=click.Choice(["auto", "on", "off"]), help="Default auto (on with a GPU).")
@click.option("--seed", type=int, help="Random seed (default 0).")
def train(data, out, preset, backbone, image_size, alpha, weights, embedding_dim, cosine_scale, **train_flags):
    """Fine-tune an ImageNet backbone on product photos; write model, labels and metrics to OUT."""
    from shelfsight.datasets import load_dataset

    from . import presets
    from .options import ModelOptions, TrainOptions
    from .trainer import train as run_training

    model_kw, train_kw = presets.resolve(preset, dict(backbone=backbone, image_size=image_size, alpha=alpha,
                                                      weights=weights, embedding_dim=embedding_dim,
                                                      cosine_scale=cosine_scale), train_flags)
    if backbone and image_size is None and backbone != presets.PRESETS[preset].model.get("backbone"):
        model_kw.pop("image_size", None)  # another backbone than the preset's: its own resolution
    mo, to = ModelOptions(**model_kw), TrainOptions(**train_kw)
    load_dataset(data, "train")  # a wrong path is one line, before the preset is described
    progress = not progress_disabled()
    if progress:
        p = presets.PRESETS[preset]
        click.echo(f"preset {preset}: {p.summary}; expected cost {p.cost}", err=True)
        click.echo(f"  {mo.backbone} {mo.image_size} px, {to.finetune_epochs} fine-tune epochs "
                   f"(fraction {to.finetune_fraction}), lr {to.finetune_lr}, EMA {to.ema_momentum}"
                   + (f", {to.mix} (alpha {to.mix_alpha})" if to.mix != "none" else "")
                   + (f", random erasing {to.erasing}" if to.erasing else "")
                   + (f", JPEG round trips {to.jpeg}" if to.jpeg else "")
                   + (f", teacher {' + '.join(to.teachers)} x{to.distill_weight}" if to.teachers else "")
                   + (f", an ensemble of {to.ensemble} seeds in one model" if to.ensemble else ""), err=True)
    metrics = run_training(data, out, mo, to, progress=progress)
    val = metrics.get("val")
    summary = {"run": out, "preset": preset, "wall_time_s": metrics["wall_time_s"]}
    if val:
        summary.update(val_top1=round(val["top1"], 4), val_top3=round(val["top3"], 4),
                       val_top5=round(val["top5"], 4), val_macro_f1=round(val["macro_f1"], 4))
        if "coarse_top1" in val:
            summary["val_coarse_top1"] = round(val["coarse_top1"], 4)
    click.echo(json.dumps(summary))


@click.command("ensemble")
@click.argument("runs", nargs=-1, required=True, type=click.Path())
@click.option("--out", required=True, type=click.Path(), help="Run directory to write.")
def ensemble_command(runs, out):
    """Combine training RUNS of one dataset and recipe into one run whose model averages them."""
    from .ensemble import combine_runs

    metrics = combine_runs(list(runs), out, progress=not progress_disabled())
    val = metrics.get("val")
    click.echo(json.dumps({"run": out, "members": len(runs)}
                          | ({"val_top1": round(val["top1"], 4), "val_top3": round(val["top3"], 4)} if val else {})))

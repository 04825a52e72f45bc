"""Evaluate a training run at other input sizes than it was trained at (the FixRes effect).

    python -m shelfsight.tools.probe_resolution RUN --sizes 224,256,288

Random resized crops (area 0.45-1) show products larger in training than a centre crop does at
test time; FixRes (Touvron et al., 2019) found a larger test input makes up for it. The
backbone is fully convolutional, so the run's weights go unchanged into the same model built at
each size; the val split is read at that size with the run's own preprocessing. Float Keras,
prints one JSON line per size.
"""
from __future__ import annotations

import json
from pathlib import Path

import click


@click.command()
@click.argument("run", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--sizes", default="224,256,288", show_default=True, help="Input sides to evaluate, comma-separated.")
def main(run: Path, sizes: str) -> None:
    from shelfsight.datasets import load_dataset, load_images
    from shelfsight.metrics import classification_report
    from shelfsight.run import Run
    from shelfsight.training.model import build_model, load_model, predict, preprocess_spec
    from shelfsight.training.options import ModelOptions

    trained = Run.load(run)
    config = trained.config
    if trained.ensemble_members:
        raise click.ClickException(f"{run} is an ensemble: probe its members ({', '.join(trained.ensemble_members)})")
    weights = load_model(trained.model_path).get_weights()
    val = load_dataset(config["data"], "val")
    for size in (int(s) for s in sizes.split(",")):
        options = ModelOptions(**{**config["model"], "image_size": size, "weights": "none"})
        model = build_model(options, len(trained.labels)).model
        model.set_weights(weights)
        images = load_images(val.samples, preprocess_spec(options), trained.labels, False, "val")
        scores, _ = predict(model, images.images)
        report = classification_report(scores, images.label_ids, trained.labels, config.get("coarse_of"))
        click.echo(json.dumps({"size": size, **{k: round(report[k], 4) for k in ("top1", "top3", "coarse_top1")
                                                 if report.get(k) is not None}}))


if __name__ == "__main__":
    main()

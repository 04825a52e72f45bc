"""`shelfsight import-onnx`."""
from __future__ import annotations

import json

import click

from shelfsight.console import progress_disabled

from ..options import MODES
from .options import PRESETS, SCORES_ARE, UNITS


@click.command("import-onnx")
@click.argument("model", type=click.Path())
@click.option("--calib", required=True, type=click.Path(),
              help="Folder of images (searched recursively) for int8 calibration and the ONNX/TFLite comparison.")
@click.option("--labels", "labels_file", required=True, type=click.Path(),
              help="Class names, one per line, in the order of the model's scores.")
@click.option("--out", required=True, type=click.Path(), help="Bundle directory to write.")
@click.option("--quantize", type=click.Choice(MODES), default="int8", show_default=True)
@click.option("--normalize", default="imagenet", show_default=True,
              help=f"Input normalisation the ONNX model expects: a preset ({', '.join(PRESETS)}) or 'MEAN,STD' / "
                   f"'M1,M2,M3,S1,S2,S3' (RGB) in --normalize-units.")
@click.option("--normalize-units", type=click.Choice(UNITS), default="unit", show_default=True,
              help="unit: the model takes (pixel/255 - mean) / std (PyTorch style); pixel: (pixel - mean) / std.")
@click.option("--input-size", type=int, default=None,
              help="Input side in pixels; required when the ONNX input's height/width are dynamic.")
@click.option("--crop-fraction", type=float, default=1.0, show_default=True,
              help="Centre crop kept before resizing (torchvision eval: 0.875).")
@click.option("--scores-output", default=None, help="ONNX tensor with the class scores (default: the output "
                                                    "with one value per label).")
@click.option("--embedding-output", default=None,
              help="ONNX tensor to use as the embedding (default: the other output, else the features entering "
                   "the final Gemm/MatMul, else the logits).")
@click.option("--scores-are", type=click.Choice(SCORES_ARE), default="auto", show_default=True,
              help="logits get a softmax; auto: probabilities when a Softmax ends the graph.")
@click.option("--calibration-images", type=int, default=300, show_default=True)
@click.option("--compare-images", type=int, default=64, show_default=True,
              help="Calibration images on which ONNX and TFLite outputs are compared.")
@click.option("--archive", is_flag=True, help="Also write BUNDLE.tar.gz for transport.")
def import_onnx_command(model, calib, labels_file, out, quantize, normalize, normalize_units, input_size,
                        crop_fraction, scores_output, embedding_output, scores_are, calibration_images,
                        compare_images, archive):
    """Convert an ONNX image classifier (NCHW, e.g. from PyTorch) into a verified bundle."""
    from .importer import import_onnx
    from .options import ImportOptions, InputNormalization
    from ..options import QuantizationConfig

    options = ImportOptions(QuantizationConfig(quantize, calibration_images),
                            InputNormalization.parse(normalize, normalize_units), input_size=input_size,
                            crop_fraction=crop_fraction, scores_output=scores_output,
                            embedding_output=embedding_output, scores_are=scores_are, compare_images=compare_images)
    result = import_onnx(model, calib, labels_file, out, options, archive=archive, progress=not progress_disabled())
    m = result.manifest
    summary = {"bundle": str(result.bundle), "quantization": quantize,
               "model_bytes": m["files"]["model.tflite"]["size"],
               "heads": m["provenance"]["onnx"]["heads"],
               "onnx_comparison": m["metrics"]["onnx_comparison"]}
    if result.archive:
        summary["archive"] = str(result.archive)
    click.echo(json.dumps(summary))

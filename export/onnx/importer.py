"""`shelfsight import-onnx`: an ONNX classifier or embedder -> a verified bundle.

ONNX file -> checks (one N x 3 x H x W float input; outputs) -> which tensors give
"scores" and "embedding" -> onnx2tf, offline (NCHW -> NHWC) -> pixels 0..255 ->
normalisation -> converted graph -> softmax (logits) / L2 norm -> .tflite (int8
calibrated on the --calib images, fp16, dynamic or float32) + TFLite metadata ->
compared with onnxruntime on the calibration images -> bundle (manifest.json,
model.tflite, labels.txt [, .tar.gz]) that `index`, `run`, `eval` and `bench` take like
any other.

Every import converts a float32 model first and refuses to continue when it does not
reproduce onnxruntime (see `check`); the shipped model is then compared too. Both
comparisons are returned, logged and stored in the manifest as ``metrics.onnx_comparison``.

When the model has one output, the embedding is the feature vector entering its final
Gemm/MatMul (what an ImageEmbedder would use), else its logits; the manifest states which
(``provenance.onnx.heads``).
"""
from __future__ import annotations

import logging
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from shelfsight import bundle as bundle_format
from shelfsight.datasets import LoadedImages, Sample, load_images
from shelfsight.embeddings import l2_normalize
from shelfsight.errors import ConfigError, DatasetError, ModelError
from shelfsight.images import IMAGE_SUFFIXES, is_image_file
from shelfsight.preprocess import PreprocessSpec

from ..bundle_writer import TRAINING_TOOLS, check_bundle_dir, embed_metadata, model_section, prepare_bundle_dir, \
    tool_versions
from ..options import QuantizationConfig
from .check import Agreement, agreement, looks_like_probabilities, softmax
from .graph import Heads, ImageInput, image_input, load_onnx, resolve_heads, run_session, with_outputs
from .options import ImportOptions, InputNormalization

log = logging.getLogger(__name__)

ONNX_TOOLS = ("onnx", "onnxruntime", "onnx2tf")
MIN_QUANTIZED_AGREEMENT = 0.9  # below this top-1 agreement the shipped model gets a warning


@dataclass(frozen=True)
class ImportResult:
    bundle: Path
    archive: Path | None
    manifest: dict[str, Any]
    comparison: dict[str, Agreement]  # "float32" and the shipped mode


def import_onnx(model_path: str | Path, calib: str | Path, labels_path: str | Path, out: str | Path,
                options: ImportOptions, archive: bool = False, progress: bool = True) -> ImportResult:
    """Convert an ONNX image model into a bundle and verify it against onnxruntime.

    Args:
        model_path: the .onnx file (one float32 N x 3 x H x W input).
        calib: a folder of images (searched recursively) or one image: int8 calibration,
            onnx2tf's check images and the comparison set.
        labels_path: one class name per line, in the order of the scores output.
        out: bundle directory to write (replaced when it is a bundle).
    Raises:
        ModelError: unreadable or unsupported model, failed or unfaithful conversion.
        ConfigError: labels or options that do not fit the model.
        DatasetError: no readable calibration image.
    """
    labels = read_labels(labels_path)
    out = check_bundle_dir(out)
    model = load_onnx(model_path)
    image = image_input(model, options.input_size)
    norm = options.normalization
    spec = PreprocessSpec(size=image.size, crop_fraction=options.crop_fraction, mean=norm.mean, std=norm.std)
    heads = resolve_heads(model, image, len(labels), options.scores_output, options.embedding_output,
                          options.scores_are)
    loaded = load_calibration(calib, spec, max(options.quantization.calibration_images, options.compare_images),
                              progress)
    images = loaded.images
    compare_set = images[spread(len(images), options.compare_images)]
    trimmed = with_outputs(model, heads.tensors)
    ref_scores, ref_embedding = onnx_reference(trimmed, image, heads, norm, compare_set, options.scores_are)
    log.info("scores from %s (%s), embedding from %s (%s)", heads.scores,
             "softmax added" if heads.softmax else "probabilities", heads.embedding, heads.embedding_source)

    mode = options.quantization.mode
    shipped, float_check = _convert(trimmed, image, heads, options, images, compare_set, (ref_scores, ref_embedding),
                                    name=Path(model_path).stem)

    out = prepare_bundle_dir(out)
    model_file = _write_model(out, shipped, labels, Path(model_path).stem)
    comparison = {"float32": float_check, mode: tflite_agreement(model_file, compare_set, ref_scores, ref_embedding)}
    log.info("%s model in the bundle vs onnxruntime: %s", mode, comparison[mode].summary())
    if comparison[mode].top1_agreement < MIN_QUANTIZED_AGREEMENT:
        log.warning("%s model agrees with the ONNX model on only %.0f%% of calibration images", mode,
                    100 * comparison[mode].top1_agreement)

    manifest = bundle_format.new_manifest(
        model=model_section(model_file, mode),
        labels={"file": bundle_format.LABELS_FILE, "count": len(labels)},
        preprocess=spec.to_dict(),
        thresholds={"unknown_score": 0.0},  # no labelled val set to calibrate it on
        index=None,
        metrics={"onnx_comparison": {"images": len(compare_set), "set": "calibration images",
                                     **{k: v.to_dict() for k, v in comparison.items()}}},
        provenance=_provenance(model_path, model, image, norm, heads, calib, loaded),
    )
    manifest = bundle_format.write_manifest(out, manifest)
    archive_path = bundle_format.pack_archive(out, out.with_name(out.name + ".tar.gz")) if archive else None
    return ImportResult(out, archive_path, manifest, comparison)


def _write_model(out: Path, tflite: bytes, labels: tuple[str, ...], stem: str) -> Path:
    """model.tflite (with embedded metadata) and labels.txt in the bundle directory."""
    model_file = out / bundle_format.MODEL_FILE
    model_file.write_bytes(tflite)
    (out / bundle_format.LABELS_FILE).write_text("\n".join(labels) + "\n", encoding="utf-8")
    embed_metadata(model_file, labels, name=f"shelfsight onnx {stem}",
                   description="Image classifier imported from ONNX, with an embedding output for similarity search")
    return model_file


def _convert(model, image: ImageInput, heads: Heads, options: ImportOptions, images: np.ndarray,
             compare_set: np.ndarray, reference: tuple[np.ndarray, np.ndarray], name: str) -> tuple[bytes, Agreement]:
    """The .tflite to ship, once a float32 conversion has been shown to reproduce onnxruntime.

    Raises:
        ModelError: onnx2tf or TFLite conversion fails, or the float32 model is not faithful.
    """
    from .convert import bundle_model, bundle_tflite, convert_onnx, onnx2tf_sample  # TensorFlow from here on

    norm = options.normalization
    converted = convert_onnx(model, image, onnx2tf_sample(images, norm))
    keras_model = bundle_model(converted, image, heads, norm, name=f"shelfsight_onnx_{name}")
    float_tflite = bundle_tflite(keras_model, image.size, QuantizationConfig.for_float32())
    with tempfile.TemporaryDirectory(prefix="shelfsight-onnx-check-") as tmp:
        float_path = Path(tmp) / "float32.tflite"
        float_path.write_bytes(float_tflite)
        float_check = tflite_agreement(float_path, compare_set, *reference)
    log.info("float32 TFLite vs onnxruntime: %s", float_check.summary())
    if not float_check.faithful:
        raise ModelError(f"the converted model does not reproduce the ONNX model ({float_check.summary()}); "
                         f"onnx2tf mis-converted an op; not shipped")
    if options.quantization.mode == "float32":
        return float_tflite, float_check
    return bundle_tflite(keras_model, image.size, options.quantization, calibration=images), float_check


def read_labels(path: str | Path) -> tuple[str, ...]:
    """Class names, one per line (trailing blank lines ignored).

    Raises:
        ConfigError: missing file, no labels, a blank line between labels, repeated labels.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"labels file {path} not found")
    lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
    while lines and not lines[-1]:
        lines.pop()
    if not lines:
        raise ConfigError(f"labels file {path} is empty, expected one class name per line")
    if "" in lines:
        raise ConfigError(f"labels file {path}: line {lines.index('') + 1} is blank, expected one class name per line")
    repeated = sorted({label for label in lines if lines.count(label) > 1})
    if repeated:
        raise ConfigError(f"labels file {path}: {', '.join(repeated[:5])} appear more than once")
    return tuple(lines)


def load_calibration(data: str | Path, spec: PreprocessSpec, limit: int, progress: bool = False) -> LoadedImages:
    """Up to ``limit`` images (spread evenly over the sorted file list) from a folder, searched
    recursively, or one image file; prepared as the device prepares frames.

    Raises:
        DatasetError: missing path, or no readable image.
    """
    data = Path(data)
    if data.is_dir():
        files = sorted(p for p in data.rglob("*") if is_image_file(p))
    elif is_image_file(data):
        files = [data]
    else:
        raise DatasetError(f"calibration data {data} is neither a folder of images nor an image file")
    if not files:
        raise DatasetError(f"calibration folder {data} holds no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
    picked = [files[i] for i in spread(len(files), limit)]
    loaded = load_images([Sample(p, "") for p in picked], spec, progress=progress, desc="calibration images")
    if len(loaded.images) == 0:
        raise DatasetError(f"calibration data {data}: none of {len(picked)} images could be read")
    return loaded


def spread(count: int, limit: int) -> np.ndarray:
    """Indices of at most ``limit`` of ``count`` items, evenly spaced, first and last included."""
    return np.unique(np.linspace(0, count - 1, min(count, limit)).round().astype(int))


def onnx_reference(model, image: ImageInput, heads: Heads, norm: InputNormalization, images: np.ndarray,
                   scores_are: str = "auto") -> tuple[np.ndarray, np.ndarray]:
    """What the bundle should output for ``images`` (uint8 RGB), computed with onnxruntime.

    Raises:
        ConfigError: the scores already look like probabilities although softmax would be added
            (``scores_are="auto"`` and no Softmax ends the graph).
    """
    nchw = ((images.astype(np.float32) - np.float32(norm.mean)) / np.float32(norm.std)).transpose(0, 3, 1, 2)
    runs = run_session(model, nchw, image.name)
    scores = np.stack([r[heads.scores].reshape(-1) for r in runs])
    embedding = np.stack([r[heads.embedding].reshape(-1) for r in runs])
    if heads.softmax:
        if scores_are == "auto" and looks_like_probabilities(scores):
            raise ConfigError(f"tensor {heads.scores!r} already sums to 1 on every calibration image although no "
                              f"Softmax ends the graph; pass --scores-are probabilities (or logits)")
        scores = softmax(scores)
    return scores, l2_normalize(embedding, axis=1)


def tflite_agreement(model_path: Path, images: np.ndarray, ref_scores: np.ndarray,
                     ref_embedding: np.ndarray) -> Agreement:
    """Run ``model_path`` through the edge interpreter and compare with the ONNX reference."""
    from shelfsight.edge.runtime import predict_tflite

    scores, embedding = predict_tflite(model_path, images, threads=1)
    return agreement(ref_scores, ref_embedding, scores, embedding)


def _provenance(model_path, model, image: ImageInput, norm: InputNormalization, heads: Heads, calib,
                loaded: LoadedImages) -> dict[str, Any]:
    path = Path(model_path)
    return {"source": "onnx", "backbone": f"onnx:{path.stem}",
            "onnx": {"file": str(path.resolve()), "sha256": bundle_format.sha256_file(path),
                     "producer": f"{model.producer_name} {model.producer_version}".strip(),
                     "opsets": {o.domain or "ai.onnx": o.version for o in model.opset_import},
                     "input": asdict(image), "normalization": norm.to_dict(), "heads": heads.to_dict()},
            "calibration": {"data": str(Path(calib).resolve()), "images": len(loaded.images),
                            "skipped": len(loaded.skipped)},
            "tools": tool_versions(TRAINING_TOOLS + ONNX_TOOLS)}


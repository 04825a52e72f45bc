"""`shelfsight export`: a training run -> a verified bundle.

run dir -> [prune] -> [QAT] -> .tflite (int8 | fp16 | dynamic | float32) + metadata
        -> evaluate through the edge interpreter on val, compare with the float model
        -> bundle: manifest.json, model.tflite, labels.txt [, .tar.gz]
"""
from __future__ import annotations

import logging
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from shelfsight import bundle as bundle_format
from shelfsight.datasets import load_dataset, load_images
from shelfsight.errors import DatasetError, ShelfsightError
from shelfsight.edge.runtime import predict_tflite
from shelfsight.metrics import classification_report
from shelfsight.run import Run

from .bundle_writer import embed_metadata, model_section, prepare_bundle_dir, tool_versions
from .guard import GuardReport, compare
from .options import ExportOptions, PruneOptions, QATOptions, QuantizationConfig

log = logging.getLogger(__name__)


class RegressionError(ShelfsightError):
    """The quantized model loses more than --max-drop points on some class."""


@dataclass(frozen=True)
class ExportResult:
    bundle: Path
    archive: Path | None
    manifest: dict[str, Any]
    guard: GuardReport | None


def export_run(run_dir: str | Path, out: str | Path, options: ExportOptions = ExportOptions(),
               progress: bool = True) -> ExportResult:
    """Export a training run as a bundle (see `ExportOptions` for the choices)."""
    from shelfsight.training.model import load_model, predict

    quantization, prune, qat, margin = options.quantization, options.prune, options.qat, options.margin
    run = Run.load(run_dir)
    train_images, val = _load_data(run, options.data, progress)
    model = load_model(run.model_path)
    # The guard compares the shipped model with the float model as trained; predict before
    # pruning, which changes the trained layers in place.
    float_val = predict(model, val.images) if val is not None and len(val.images) else None
    tflite, sparsity, qat_cosine = _convert(model, run, train_images, quantization, prune, qat, progress)

    out = prepare_bundle_dir(out)  # re-export replaces the bundle; index files would be stale
    model_path = _write_model(out, tflite, run)
    metrics, thresholds, guard = _evaluate(model_path, run, val, float_val, margin if options.max_drop is None else options.max_drop,
                                           progress)
    config = run.config
    manifest = bundle_format.new_manifest(
        model=model_section(model_path, quantization.mode),
        labels={"file": bundle_format.LABELS_FILE, "count": len(run.labels)},
        preprocess=run.preprocess.to_dict(),
        thresholds=thresholds,
        index=None,
        metrics=metrics,
        provenance={"run": str(run.root.resolve()), "backbone": config["model"]["backbone"],
                    "ensemble_members": len(run.ensemble_members) or None,
                    "image_size": config["model"]["image_size"], "dataset": config["data"],
                    "dataset_fingerprint": config.get("dataset_fingerprint"),
                    "pruning": ({**asdict(prune), "achieved": sparsity} if prune else None),
                    "qat": {**asdict(qat), "embedding_cosine": qat_cosine} if qat else None,
                    "tools": tool_versions()},
    )
    manifest = bundle_format.write_manifest(out, manifest)
    _check_guard(guard, out, quantization.mode, margin, options.max_drop)
    archive_path = bundle_format.pack_archive(out, out.with_name(out.name + ".tar.gz")) if options.archive else None
    return ExportResult(out, archive_path, manifest, guard)


def _load_data(run: Run, data: str | Path | None, progress: bool) -> tuple[Any, Any]:
    """Prepared train images (calibration, pruning, QAT) and val images (None without a val split)."""
    labels, spec = run.labels, run.preprocess
    data = Path(data or run.config["data"])
    if not data.exists():
        raise DatasetError(f"dataset {data} (for calibration and comparison) not found; pass --data")
    train = load_dataset(data, "train")
    if train.labels != labels:
        raise DatasetError(f"{data}: its classes differ from the run's labels.txt ({len(train.labels)} vs {len(labels)})")
    train_images = load_images(train.samples, spec, labels, progress, "train images")
    try:
        val = load_images(load_dataset(data, "val").samples, spec, labels, progress, "val images")
    except DatasetError:
        val = None
    return train_images, val


def _convert(model: Any, run: Run, train_images: Any, quantization: QuantizationConfig, prune: PruneOptions | None,
             qat: QATOptions | None, progress: bool) -> tuple[bytes, float | None, float | None]:
    """[prune] -> [QAT] -> TFLite; returns the model bytes, the sparsity reached, QAT's embedding cosine."""
    from .convert import input_quantization, to_tflite, without_normalisation

    sparsity = qat_cosine = None
    if prune:
        from .prune import prune_model

        model, sparsity = prune_model(model, train_images, len(run.labels), prune, progress)
    normalised_input = input_quantization(run.preprocess) if quantization.mode == "int8" else None
    if qat:
        from .qat import quantize_aware_train

        trained = quantize_aware_train(model, train_images, qat, preserve_sparsity=bool(prune),
                                       normalised_input=normalised_input, progress=progress)
        model, qat_cosine = trained.model, trained.embedding_cosine
    elif normalised_input:
        model = without_normalisation(model)
    tflite = to_tflite(model, quantization, calibration=train_images.images, quantize_aware=bool(qat),
                       normalised_input=normalised_input)
    return tflite, sparsity, qat_cosine


def _write_model(out: Path, tflite: bytes, run: Run) -> Path:
    """model.tflite (with embedded metadata) and labels.txt in the bundle directory."""
    model_path = out / bundle_format.MODEL_FILE
    model_path.write_bytes(tflite)
    (out / bundle_format.LABELS_FILE).write_text("\n".join(run.labels) + "\n", encoding="utf-8")
    members = len(run.ensemble_members)
    embed_metadata(model_path, run.labels, name=f"shelfsight {run.backbone}" + (f" x{members}" if members else ""),
                   description="Retail product classifier with an embedding output for similarity search")
    return model_path


def _evaluate(model_path: Path, run: Run, val: Any, float_val: tuple | None, margin: float,
              progress: bool) -> tuple[dict[str, Any], dict[str, float], GuardReport | None]:
    """The manifest's metrics and thresholds, and the float-vs-shipped comparison, from val."""
    if float_val is None:
        return {}, {"unknown_score": 0.0}, None
    labels = run.labels
    q_scores, q_emb = predict_tflite(model_path, val.images, progress=progress)
    f_scores, f_emb = float_val
    report = classification_report(q_scores, val.label_ids, labels, run.config.get("coarse_of") or None)
    guard = compare(f_scores, q_scores, f_emb, q_emb, val.label_ids, labels, margin)
    metrics = {"val_top1": report["top1"], "val_top3": report["top3"], "val_top5": report["top5"],
               "val_macro_f1": report["macro_f1"], "val_coarse_top1": report.get("coarse_top1"),
               "val_images": report["samples"], "unknown_accept_share": report["unknown_accept_share"],
               "float_comparison": guard.to_dict()}
    return metrics, {"unknown_score": report["unknown_threshold"]}, guard


def _check_guard(guard: GuardReport | None, out: Path, mode: str, margin: float, max_drop: float | None) -> None:
    """Name the classes the conversion hurt; with ``max_drop``, remove the bundle and refuse."""
    if not (guard and guard.failing):
        return
    names = ", ".join(f"{c} (-{guard.per_class_drop[c]:.0f})" for c in guard.failing[:8])
    if max_drop is not None:
        shutil.rmtree(out)
        raise RegressionError(f"{mode} model loses more than {max_drop} points on: {names}; not shipped (try --qat)")
    log.warning("classes losing more than %.0f points after %s: %s (try --qat)", margin, mode, names)

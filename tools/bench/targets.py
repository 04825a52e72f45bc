"""What `shelfsight bench` measures: bundles (directories or .tar.gz) and bare .tflite files,
and the input pixels every backend gets for them.

A bundle brings its preprocessing, labels, quantization and index; a bare .tflite only its
tensors, so accuracy, the "frame" mode and search need a bundle. Inputs are the first
images of a dataset split (prepared exactly as the device prepares frames) or, without
data, fixed synthetic pictures (gradients, shapes and seeded noise), so that runs on two
devices time the same pixels.
"""
from __future__ import annotations

import gzip
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from shelfsight.bundle import ARCHIVE_SUFFIXES, MANIFEST, Bundle, load_bundle
from shelfsight.errors import BundleError, ConfigError, DatasetError
from shelfsight.preprocess import PreprocessSpec
from shelfsight.target import is_bundle


@dataclass(frozen=True)
class BenchTarget:
    """One model to benchmark (a bundle, or a bare .tflite: what `shelfsight bench` takes beside bundles).

    Attributes:
        name: short unique name for tables and plots.
        path: what the user named (bundle dir, archive or .tflite).
        kind: "bundle" or "tflite".
        model: the .tflite file.
        bundle: the verified bundle (None for a bare .tflite).
        quantization: from the manifest, else "unknown".
        input_size: (height, width) of the model input.
        input_dtype, scores_size: input tensor type name and number of classes.
        scores_head: position of the scores tensor among the model's outputs (the head
            number MediaPipe gives it).
    """

    name: str
    path: Path
    kind: str
    model: Path
    bundle: Bundle | None
    quantization: str
    input_size: tuple[int, int]
    input_dtype: str
    scores_size: int
    scores_head: int = 0

    @property
    def spec(self) -> PreprocessSpec:
        """The bundle's preprocessing, or a plain resize to the model's input size."""
        return self.bundle.preprocess if self.bundle else PreprocessSpec(size=self.input_size[0])

    def sizes(self) -> dict[str, Any]:
        """Bytes of the model file, of it gzipped (level 9), and of the whole bundle."""
        data = self.model.read_bytes()
        out: dict[str, Any] = {"model_bytes": len(data), "model_gzip_bytes": len(gzip.compress(data, 9, mtime=0))}
        if self.bundle is not None:
            out["bundle_bytes"] = sum(e["size"] for e in self.bundle.manifest.get("files", {}).values())
        return out


def _describe(model: Path) -> tuple[tuple[int, int], str, int, int]:
    """Input size, input dtype name, number of scores, position of the scores output."""
    from shelfsight.edge.runtime.interpreter import TFLiteModel

    m = TFLiteModel(model, threads=1)
    try:
        scores = m.outputs.get("scores") or next(iter(m.outputs.values()))
        order = [d["index"] for d in m.runtime.interpreter_class(model_path=str(model)).get_output_details()]
        return m.input_size, np.dtype(m.input.dtype).name, int(scores.shape[-1]), order.index(scores.index)
    finally:
        m.close()


def open_bench_target(path: str | Path, name: str | None = None) -> BenchTarget:
    """A bundle directory, bundle archive or .tflite file as a BenchTarget.

    Raises:
        ConfigError: the path is none of those.
        BundleError, ModelError: a damaged bundle or an unloadable model.
    """
    p = Path(path)
    if not p.exists():
        raise ConfigError(f"target {p} not found")
    if is_bundle(p):
        bundle = load_bundle(p)
        size, dtype, scores, head = _describe(bundle.model_path)
        if scores != len(bundle.labels):
            raise BundleError(f"{p}: model gives {scores} scores for {len(bundle.labels)} labels")
        default = p.name[: -len(next(a for a in ARCHIVE_SUFFIXES if p.name.endswith(a)))] if p.is_file() else p.name
        return BenchTarget(name or default, p, "bundle", bundle.model_path, bundle,
                           str(bundle.manifest["model"].get("quantization", "unknown")), size, dtype, scores, head)
    if p.is_file() and p.suffix == ".tflite":
        size, dtype, scores, head = _describe(p)
        return BenchTarget(name or p.stem, p, "tflite", p, None, "unknown", size, dtype, scores, head)
    raise ConfigError(f"target {p}: expected a bundle directory (with {MANIFEST}), a bundle .tar.gz or a .tflite file")


def variant_paths(directory: str | Path) -> list[Path]:
    """Every bundle (subdirectory with a manifest) in ``directory``, by name.

    Raises:
        ConfigError: not a directory, or no bundle in it.
    """
    d = Path(directory)
    if not d.is_dir():
        raise ConfigError(f"--variants {d}: not a directory")
    found = sorted(p for p in d.iterdir() if p.is_dir() and (p / MANIFEST).is_file())
    if not found:
        raise ConfigError(f"--variants {d}: no bundle in it (expected subdirectories with {MANIFEST})")
    return found


def open_bench_targets(paths: list[str | Path]) -> list[BenchTarget]:
    """Targets with unique names (a repeated name gets its parent directory's name in front)."""
    targets = [open_bench_target(p) for p in paths]
    names = [t.name for t in targets]
    out = []
    for t in targets:
        if names.count(t.name) > 1:
            t = open_bench_target(t.path, f"{t.path.resolve().parent.name}/{t.name}")
        out.append(t)
    if len({t.name for t in out}) != len(out):
        raise ConfigError(f"targets repeat: {', '.join(sorted(str(t.path) for t in out))}")
    return out


def synthetic_inputs(size: tuple[int, int], count: int, seed: int = 0) -> np.ndarray:
    """``count`` fixed RGB uint8 pictures (H x W x 3): gradients, a bright box, seeded noise."""
    if count < 1:
        raise ConfigError(f"input count {count} must be >= 1")
    h, w = size
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    out = np.empty((count, h, w, 3), np.uint8)
    for i in range(count):
        phase = i / count
        base = np.stack([255 * x / w, 255 * y / h, 255 * ((x + y) / (h + w) + phase) % 255], -1)
        noise = rng.normal(0, 24, (h, w, 3))
        img = np.clip(base + noise, 0, 255)
        top, left = int(h * (0.2 + 0.3 * phase)), int(w * (0.5 - 0.3 * phase))
        img[top: top + h // 4, left: left + w // 3] = rng.integers(0, 256, 3)
        out[i] = img.astype(np.uint8)
    return out


def data_inputs(target: BenchTarget, data: str | Path, split: str, count: int) -> np.ndarray:
    """Up to ``count`` images of the split, evenly spaced, prepared as the device would.

    Raises:
        DatasetError: no readable image in the split.
    """
    from shelfsight.datasets import load_dataset, load_images

    ds = load_dataset(data, split)
    samples = list(ds.samples)
    if count < len(samples):
        samples = [samples[i] for i in np.linspace(0, len(samples) - 1, count).round().astype(int)]
    loaded = load_images(samples, target.spec, progress=False, desc=f"{split} images")
    if len(loaded.images) == 0:
        raise DatasetError(f"{data}: no readable images in split {split}")
    return loaded.images

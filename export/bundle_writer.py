"""Pieces every bundle writer shares: the output directory, the model section of the
manifest, embedded TFLite metadata and tool versions.

Used by `exporter` (our own training runs) and `onnx.importer` (a model from elsewhere), so
both write the same bundle the edge reads.
"""
from __future__ import annotations

import logging
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from shelfsight import bundle as bundle_format
from shelfsight.errors import ConfigError

log = logging.getLogger(__name__)

TRAINING_TOOLS = ("shelfsight", "tensorflow", "tf-keras", "tensorflow-model-optimization")


def check_bundle_dir(out: str | Path) -> Path:
    """``out`` as a Path, if a bundle may be written there (absent, empty or a bundle).

    Raises:
        ConfigError: ``out`` holds files but is not a bundle.
    """
    out = Path(out)
    if out.exists() and not (out / bundle_format.MANIFEST).is_file() and any(out.iterdir()):
        raise ConfigError(f"{out} exists and is not a bundle; refusing to write into it")
    return out


def prepare_bundle_dir(out: str | Path) -> Path:
    """Create ``out`` or empty an existing bundle there (its index files would be stale).

    Raises:
        ConfigError: ``out`` holds files but is not a bundle.
    """
    out = check_bundle_dir(out)
    out.mkdir(parents=True, exist_ok=True)
    for stale in out.iterdir():
        if stale.is_file():
            stale.unlink()
    return out


def embed_metadata(model_path: Path, labels: Sequence[str], name: str, description: str) -> None:
    """Embed labels and input normalisation (raw pixels: mean 0, std 1) in the .tflite, in place.

    Skipped with a warning when the metadata schema package is not installed.
    """
    try:
        from .metadata import MetadataSpec, write_metadata
    except ImportError as e:  # the metadata writer needs tflite-support's schema modules
        log.warning("TFLite metadata not embedded (%s)", e)
        return
    spec = MetadataSpec(labels=tuple(labels), input_mean=(0.0,) * 3, input_std=(1.0,) * 3, name=name, version="1",
                        description=description, author="shelfsight", license="see bundle provenance")
    data = write_metadata(model_path.read_bytes(), spec)
    model_path.write_bytes(data)


def model_section(model_path: Path, mode: str) -> dict[str, Any]:
    """The manifest's "model" section, read from the .tflite through the edge interpreter."""
    from shelfsight.edge.runtime import TFLiteModel

    m = TFLiteModel(model_path, threads=1)

    def tensor(t):
        return {"name": t.name, "shape": list(t.shape), "dtype": np.dtype(t.dtype).name,
                "quantization": {"scale": t.scale, "zero_point": t.zero_point} if t.scale else None}

    section = {"file": bundle_format.MODEL_FILE, "format": "tflite", "quantization": mode,
               "input": tensor(m.input), "outputs": {name: tensor(t) for name, t in m.outputs.items()}}
    m.close()
    return section


def tool_versions(packages: Sequence[str] = TRAINING_TOOLS) -> dict[str, str]:
    """Installed version of each package ("unknown" when it is not installed)."""
    out = {}
    for pkg in packages:
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = "unknown"
    return out

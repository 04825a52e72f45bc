"""The training run directory: the contract between `train` and everything that reads a run.

`train` writes it through `Run.save_*`, `export` and `eval` read it through `Run.load`; the
file names exist only here. The model itself is a Keras file that needs TensorFlow to open,
so this module only names it.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import ModelError
from .preprocess import PreprocessSpec

MODEL_FILE = "model.keras"
LABELS_FILE = "labels.txt"
PREPROCESS_FILE = "preprocess.json"
CONFIG_FILE = "config.json"
HISTORY_FILE = "history.json"
METRICS_FILE = "metrics.json"
CONFUSION_FILE = "confusion.png"


def is_run(path: str | Path) -> bool:
    return (Path(path) / MODEL_FILE).is_file()


@dataclass(frozen=True)
class Run:
    """A training run as export and evaluation see it."""

    root: Path
    labels: tuple[str, ...]
    preprocess: PreprocessSpec
    config: dict[str, Any]

    @property
    def model_path(self) -> Path:
        return self.root / MODEL_FILE

    @property
    def backbone(self) -> str:
        return self.config["model"]["backbone"]

    @property
    def ensemble_members(self) -> tuple[str, ...]:
        """The runs this run's model averages (`training.ensemble`); empty for one model."""
        return tuple(self.config.get("ensemble", {}).get("members", ()))

    @property
    def coarse_of(self) -> dict[str, str] | None:
        return self.config.get("coarse_of") or None

    def metrics(self) -> dict[str, Any]:
        path = self.root / METRICS_FILE
        return json.loads(path.read_text()) if path.is_file() else {}

    @classmethod
    def load(cls, path: str | Path) -> "Run":
        """Raises: ModelError when ``path`` is not a complete run directory."""
        root = Path(path)
        if not is_run(root):
            raise ModelError(f"{root}: not a training run (no {MODEL_FILE})")
        try:
            labels = tuple((root / LABELS_FILE).read_text(encoding="utf-8").splitlines())
            spec = PreprocessSpec.from_dict(json.loads((root / PREPROCESS_FILE).read_text()))
            config = json.loads((root / CONFIG_FILE).read_text())
        except (OSError, ValueError, KeyError) as e:
            raise ModelError(f"{root}: incomplete training run ({e})") from None
        return cls(root, labels, spec, config)

    @staticmethod
    def save(root: str | Path, labels: tuple[str, ...] | list[str], preprocess: PreprocessSpec,
             config: dict[str, Any], history: dict[str, Any]) -> None:
        """Write everything but the model (the trainer saves that with Keras) and metrics."""
        from .atomic import write_text

        root = Path(root)
        write_text(root / LABELS_FILE, "\n".join(labels) + "\n")
        write_text(root / PREPROCESS_FILE, json.dumps(preprocess.to_dict(), indent=2) + "\n")
        write_text(root / CONFIG_FILE, json.dumps(config, indent=2) + "\n")
        write_text(root / HISTORY_FILE, json.dumps(history, indent=2) + "\n")

    @staticmethod
    def save_metrics(root: str | Path, metrics: dict[str, Any]) -> None:
        from .atomic import write_text

        write_text(Path(root) / METRICS_FILE, json.dumps(metrics, indent=2) + "\n")

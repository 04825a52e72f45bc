"""Shared fixtures: the sample dataset from assets/ and one small trained run, built once."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("SHELFSIGHT_DEVICE_KEY", "test-device-key")  # enrolment seals; no key file in $HOME

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "assets" / "grocery-sample"


@pytest.fixture(scope="session")
def sample_data() -> Path:
    return SAMPLE


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> Path:
    """EfficientNet-Lite0 (real ImageNet weights) at 96 px, trained briefly on the sample."""
    from shelfsight.training.options import ModelOptions, TrainOptions
    from shelfsight.training.trainer import train

    out = tmp_path_factory.mktemp("run") / "lite0-96"
    train(SAMPLE, out, ModelOptions(image_size=96, embedding_dim=32),
          TrainOptions(head_epochs=12, finetune_epochs=1, patience=5), progress=False)
    return out


@pytest.fixture(scope="session")
def int8_bundle(tiny_run, tmp_path_factory) -> Path:
    from shelfsight.export.exporter import export_run
    from shelfsight.export.options import ExportOptions, QuantizationConfig

    out = tmp_path_factory.mktemp("bundle") / "int8"
    export_run(tiny_run, out, ExportOptions(QuantizationConfig.for_int8(64)), progress=False)
    return out


@pytest.fixture
def bundle_copy(int8_bundle, tmp_path) -> Path:
    """A private copy of the int8 bundle that a test may alter."""
    dst = tmp_path / "bundle"
    shutil.copytree(int8_bundle, dst)
    return dst

"""`shelfsight ensemble`: training runs combined into one run, exported as one bundle."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from cli_run import run_cli


@pytest.fixture(scope="module")
def twin_ensemble(tiny_run, tmp_path_factory):
    """tiny_run combined with itself: every answer must be the member's own."""
    out = tmp_path_factory.mktemp("ensemble") / "twin"
    from shelfsight.training.ensemble import combine_runs

    combine_runs([tiny_run, tiny_run], out, progress=False)
    return out


def test_the_cli_combines_runs_into_one_that_scores_as_its_members(tiny_run, tmp_path, capsys):
    out = tmp_path / "twin"
    code, stdout, err = run_cli(["ensemble", tiny_run, tiny_run, "--out", out], capsys)
    assert code == 0, err
    member = json.loads((tiny_run / "metrics.json").read_text())["val"]
    summary = json.loads(stdout.strip().splitlines()[-1])
    assert (summary["members"], summary["val_top1"], summary["val_top3"]) == (2, round(member["top1"], 4),
                                                                             round(member["top3"], 4))
    config = json.loads((out / "config.json").read_text())
    assert config["ensemble"]["members"] == [str(tiny_run.resolve())] * 2
    assert (out / "labels.txt").read_text() == (tiny_run / "labels.txt").read_text()


def test_runs_of_other_classes_are_refused_in_one_line(tiny_run, tmp_path, capsys):
    other = tmp_path / "other"
    shutil.copytree(tiny_run, other)
    labels = (other / "labels.txt").read_text().splitlines()
    (other / "labels.txt").write_text("\n".join(labels[:-1]) + "\n")
    code, _, err = run_cli(["ensemble", tiny_run, other, "--out", tmp_path / "e"], capsys)
    assert code == 2
    assert err.strip().splitlines() == [f"error: {other} has other classes than {tiny_run}: train every member on one dataset"]
    code, _, err = run_cli(["ensemble", tiny_run, "--out", tmp_path / "e"], capsys)
    assert (code, err.strip()) == (2, "error: an ensemble needs at least 2 runs, got 1")
    code, _, err = run_cli(["ensemble", tiny_run, tmp_path / "nothing", "--out", tmp_path / "e"], capsys)
    assert (code, err.strip()) == (2, f"error: {tmp_path / 'nothing'}: not a training run (no model.keras)")


def test_an_ensemble_exports_to_one_int8_model_answering_as_its_member(twin_ensemble, int8_bundle, tmp_path):
    """The bundle holds one model.tflite with both backbones; with twin members, its int8 scores
    are the single model's up to quantization noise (the mean of the two score heads is requantized:
    on average under a step of 1/256, the output's scale, and at most a few steps; 6.2 was seen in
    CI), so it names what the single model names except in near-ties; its
    embedding is the two (equal) embeddings side by side."""
    from shelfsight.datasets import load_dataset, load_images
    from shelfsight.edge.runtime import predict_tflite
    from shelfsight.export.exporter import export_run
    from shelfsight.export.options import ExportOptions, QuantizationConfig
    from shelfsight.run import Run

    out = tmp_path / "bundle"
    export_run(twin_ensemble, out, ExportOptions(QuantizationConfig.for_int8(64)), progress=False)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["provenance"]["ensemble_members"] == 2
    run = Run.load(twin_ensemble)
    val = load_images(load_dataset(run.config["data"], "val").samples, run.preprocess, run.labels, False)
    scores, emb = predict_tflite(out / "model.tflite", val.images, progress=False)
    single_scores, single_emb = predict_tflite(int8_bundle / "model.tflite", val.images, progress=False)
    assert emb.shape[1] == 2 * single_emb.shape[1]
    step, bound = 1 / 256, 12 / 256
    diff = np.abs(scores - single_scores)
    assert diff.mean() <= step and diff.max() <= bound
    named = scores.argmax(1) == single_scores.argmax(1)
    top2 = np.sort(single_scores, axis=1)[:, -2:]
    assert named.sum() >= 55 and np.all(top2[~named, 1] - top2[~named, 0] <= 2 * bound)  # only near-ties differ


def test_the_resolution_probe_names_an_ensembles_members(twin_ensemble, tiny_run):
    from click.testing import CliRunner

    from shelfsight.tools.probe_resolution import main

    result = CliRunner().invoke(main, [str(twin_ensemble), "--sizes", "96"])
    assert result.exit_code == 1
    assert result.output.strip() == f"Error: {twin_ensemble} is an ensemble: probe its members ({tiny_run.resolve()}, {tiny_run.resolve()})"

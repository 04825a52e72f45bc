"""The training recipe: presets, the learning-rate schedule, the EMA horizon, split-folder
aliases, and distillation from a cached teacher."""
from __future__ import annotations

import json
import shutil
from dataclasses import replace

import numpy as np
import pytest

from shelfsight.errors import ConfigError


def test_presets_resolve_to_the_documented_options():
    from shelfsight.training.presets import PRESETS, resolve

    assert sorted(PRESETS) == ["balanced", "best", "fast"]
    model, train = resolve("balanced", {"backbone": None, "image_size": None}, {"seed": None})
    assert model == {"backbone": "efficientnet_lite0", "image_size": 224}
    assert train == {"finetune_epochs": 10, "finetune_fraction": 1.0, "warmup_epochs": 1.0}
    model, train = resolve("best", {}, {})
    assert model == {"backbone": "efficientnet_lite0", "image_size": 224}
    assert train == {"finetune_epochs": 10, "finetune_fraction": 1.0, "warmup_epochs": 1.0, "ensemble": 2,
                     "mix": "none", "jpeg": 0.0}
    _, train = resolve("fast", {}, {})
    assert train == {"finetune_epochs": 4, "finetune_fraction": 1.0, "warmup_epochs": 0.5}


def test_flags_given_win_over_the_preset():
    from shelfsight.training.presets import resolve

    model, train = resolve("fast", {"image_size": 160, "backbone": None}, {"finetune_epochs": 7, "seed": 3})
    assert model == {"backbone": "efficientnet_lite0", "image_size": 160}
    assert train == {"finetune_epochs": 7, "finetune_fraction": 1.0, "warmup_epochs": 0.5, "seed": 3}
    with pytest.raises(ConfigError, match="preset 'slow' unknown, expected one of fast, balanced, best"):
        resolve("slow", {}, {})


def test_default_options_are_the_balanced_recipe():
    from shelfsight.training.options import ModelOptions, TrainOptions

    t = TrainOptions()
    assert (t.finetune_epochs, t.finetune_fraction, t.patience, t.ema_momentum, t.catalog_images) == (10, 1.0, 0, 0.99, True)
    assert (t.mix, t.mix_alpha, t.erasing, t.jpeg) == ("mixup", 0.2, 0.0, 0.5)
    assert ModelOptions().image_size == 224
    assert ModelOptions(backbone="efficientnet_lite1").image_size == 240
    assert ModelOptions(backbone="efficientnet_lite2").image_size == 260
    assert ModelOptions(backbone="efficientnet_lite2", image_size=224).image_size == 224
    with pytest.raises(ConfigError, match="warm-up 3 epochs out of range 0..2"):
        TrainOptions(finetune_epochs=2, warmup_epochs=3)
    with pytest.raises(ConfigError, match="teacher .*nothing: not a training run"):
        TrainOptions(teacher="/nothing")


def test_warmup_then_cosine_schedule():
    from shelfsight.training.trainer import WarmupCosine

    s = WarmupCosine(1e-3, total_steps=110, warmup_steps=10, alpha=0.05)
    lr = [float(s(i)) for i in (0, 4, 9, 10, 60, 110, 200)]
    np.testing.assert_allclose(lr, [1e-4, 5e-4, 1e-3, 1e-3, 1e-3 * (0.05 + 0.95 * 0.5), 5e-5, 5e-5], rtol=1e-5)


def test_validation_folder_is_read_as_val(sample_data, tmp_path):
    from shelfsight.datasets import load_dataset
    from shelfsight.errors import DatasetError

    root = tmp_path / "keras-style"  # train/ and validation/, as Keras and Roboflow exports have
    for split, folder in (("train", "train"), ("val", "validation")):
        for sample in load_dataset(sample_data, split).samples:
            if sample.label in ("Banana", "Lemon"):
                dst = root / folder / sample.label / sample.path.name
                dst.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy(sample.path, dst)
    val, train = load_dataset(root, "val"), load_dataset(root, "train")
    assert val.labels == train.labels == ("Banana", "Lemon")
    assert {s.path.parent.parent.name for s in val.samples} == {"validation"}
    assert len(val) == len(list((root / "validation").rglob("*.jpg"))) == 10
    with pytest.raises(DatasetError, match="no test/, testing/ folder"):
        load_dataset(root, "test")


@pytest.mark.slow
def test_distillation_lowers_the_students_kl_to_the_teacher(tiny_run, sample_data, tmp_path):
    """Same data, seed and schedule; only the targets differ (labels vs labels + cached teacher scores)."""
    from shelfsight.datasets import load_dataset, load_images
    from shelfsight.preprocess import PreprocessSpec
    from shelfsight.training.model import load_model, predict
    from shelfsight.training.options import ModelOptions, TrainOptions
    from shelfsight.training.trainer import teacher_scores, train

    ds = load_dataset(sample_data, "train")
    teacher = teacher_scores(tiny_run, ds.samples, ds.labels, progress=False)
    images = load_images(ds.samples, PreprocessSpec(size=96), ds.labels, progress=False).images

    def kl_after(weight: float) -> float:
        out = tmp_path / f"student-{weight}"
        # a real (ImageNet) backbone: the heads can only follow a teacher through meaningful features
        train(sample_data, out, ModelOptions(image_size=96, embedding_dim=32),
              TrainOptions(head_epochs=30, finetune_epochs=0, teacher=str(tiny_run), distill_weight=weight,
                           catalog_images=False), progress=False)
        student, _ = predict(load_model(out / "model.keras"), images)
        return float(np.mean(np.sum(teacher * (np.log(teacher + 1e-8) - np.log(student + 1e-8)), axis=1)))

    plain, distilled = kl_after(0.0), kl_after(0.9)
    assert distilled < 0.8 * plain, (plain, distilled)
    config = json.loads((tmp_path / "student-0.9" / "config.json").read_text())
    assert config["train"]["teacher"] == str(tiny_run) and config["train"]["distill_weight"] == 0.9


@pytest.mark.slow
def test_teacher_on_other_classes_is_refused(tiny_run, tmp_path):
    from shelfsight.datasets import Sample
    from shelfsight.errors import DatasetError
    from shelfsight.training.trainer import teacher_scores

    with pytest.raises(DatasetError, match="teacher .* has 12 classes that differ from the data's 2"):
        teacher_scores(tiny_run, [Sample(tmp_path / "a.jpg", "a")], ("a", "b"), progress=False)


def test_an_ensemble_teacher_is_the_mean_of_its_members(tiny_run, tmp_path, monkeypatch):
    """`--teacher A --teacher B`: the soft target is the mean of A's and B's scores, mixed with the labels."""
    from shelfsight.datasets import LoadedImages, Sample
    from shelfsight.training import trainer
    from shelfsight.training.options import TrainOptions

    other = tmp_path / "other-run"
    shutil.copytree(tiny_run, other)
    scores = {str(tiny_run): np.array([[0.6, 0.4], [0.2, 0.8]], np.float32),
              str(other): np.array([[1.0, 0.0], [0.4, 0.6]], np.float32)}
    monkeypatch.setattr(trainer, "teacher_scores", lambda t, *_a, **_k: scores[str(t)])
    options = TrainOptions(teacher=(str(tiny_run), str(other)), distill_weight=0.5)
    assert options.teachers == (str(tiny_run), str(other))
    tr = LoadedImages(np.zeros((2, 4, 4, 3), np.uint8), np.array([0, 1]), [Sample(tmp_path / f"{i}.jpg", "ab"[i]) for i in range(2)], [])
    y = trainer._targets(tr, ("a", "b"), options, progress=False)
    np.testing.assert_allclose(y, [[0.9, 0.1], [0.15, 0.85]], atol=1e-6)
    assert TrainOptions(teacher=str(tiny_run)).teachers == (str(tiny_run),) and TrainOptions().teachers == ()


@pytest.mark.slow
def test_mix_erasing_and_cosine_scale_flags_reach_the_run(sample_data, tmp_path, capsys):
    from cli_run import run_cli
    from shelfsight.training.model import load_model

    out = tmp_path / "mixed"
    code, stdout, err = run_cli(["train", "--data", sample_data, "--out", out, "--preset", "fast", "--image-size", "96",
                                 "--epochs", "2", "--finetune-epochs", "1", "--warmup-epochs", "0",
                                 "--embedding-dim", "16", "--mix", "cutmix", "--mix-alpha", "1.0", "--erasing", "0.5",
                                 "--cosine-scale", "24"], capsys)
    assert code == 0, err
    assert "cutmix (alpha 1.0), random erasing 0.5" in err
    config = json.loads((out / "config.json").read_text())
    assert (config["train"]["mix"], config["train"]["mix_alpha"], config["train"]["erasing"]) == ("cutmix", 1.0, 0.5)
    assert config["model"]["cosine_scale"] == 24.0
    assert load_model(out / "model.keras").get_layer("cosine_scale").scale == 24.0
    assert json.loads(stdout.strip().splitlines()[-1])["run"] == str(out)


@pytest.mark.slow
def test_an_ensemble_trains_its_members_and_ships_their_mean(sample_data, tmp_path, monkeypatch):
    """`ensemble=2` (the best preset): seeds S and S+1 train into OUT/members/, and OUT is one model
    whose scores are the members' mean and whose embedding cosine is the mean of theirs; a rerun
    reuses the finished members."""
    from shelfsight.datasets import load_dataset, load_images
    from shelfsight.run import Run
    from shelfsight.training import trainer
    from shelfsight.training.model import load_model, predict
    from shelfsight.training.options import ModelOptions, TrainOptions

    out = tmp_path / "best"
    model = ModelOptions(image_size=96, embedding_dim=16, weights="none")
    options = TrainOptions(head_epochs=2, finetune_epochs=0, ensemble=2, seed=5, catalog_images=False)
    metrics = trainer.train(sample_data, out, model, options, progress=False)
    members = [out / "members" / "seed-5", out / "members" / "seed-6"]
    for member, seed in zip(members, (5, 6)):
        assert json.loads((member / "config.json").read_text())["train"]["seed"] == seed
    run = Run.load(out)
    assert run.config["ensemble"]["members"] == [str(m.resolve()) for m in members]
    assert run.labels == Run.load(members[0]).labels

    val = load_images(load_dataset(sample_data, "val").samples, run.preprocess, run.labels, False)
    scores, emb = predict(load_model(out / "model.keras"), val.images)
    parts = [predict(load_model(m / "model.keras"), val.images) for m in members]
    np.testing.assert_allclose(scores, (parts[0][0] + parts[1][0]) / 2, atol=1e-5)
    np.testing.assert_allclose(emb @ emb.T, (parts[0][1] @ parts[0][1].T + parts[1][1] @ parts[1][1].T) / 2, atol=1e-5)
    assert metrics["val"]["top1"] == pytest.approx(float(np.mean(scores.argmax(1) == val.label_ids)))
    assert metrics["members"] == 2 and metrics["wall_time_s"] > 0

    # Run again (an interrupted best preset): the finished members are reused, nothing trains.
    trained = []
    real_one = trainer._train_one
    monkeypatch.setattr(trainer, "_train_one", lambda d, o, *a, **k: (trained.append(str(o)), real_one(d, o, *a, **k))[1])
    trainer.train(sample_data, out, model, options, progress=False)
    assert trained == []
    member = members[0]
    assert trainer._finished_with(member, sample_data, model, replace(options, seed=5, ensemble=0))
    assert not trainer._finished_with(member, sample_data, model, replace(options, seed=5, ensemble=0, head_epochs=3))
    (member / "metrics.json").unlink()  # a member stopped before its end is trained again
    assert not trainer._finished_with(member, sample_data, model, replace(options, seed=5, ensemble=0))
    with pytest.raises(ConfigError, match="ensemble: 0 .one run. or at least 2 members, got 1"):
        TrainOptions(ensemble=1)


def test_resolution_probe_reproduces_the_runs_val_at_its_own_size(tiny_run):
    """The probe copies the run's weights into the model built at each size: at the trained size
    it gives exactly the run's own val figures, at another it evaluates a real, different input."""
    from click.testing import CliRunner

    from shelfsight.tools.probe_resolution import main

    result = CliRunner().invoke(main, [str(tiny_run), "--sizes", "96,128"])
    assert result.exit_code == 0, result.output
    at_96, at_128 = (json.loads(line) for line in result.output.strip().splitlines())
    val = json.loads((tiny_run / "metrics.json").read_text())["val"]
    assert (at_96["size"], at_128["size"]) == (96, 128)
    assert at_96["top1"] == round(val["top1"], 4) and at_96["top3"] == round(val["top3"], 4)

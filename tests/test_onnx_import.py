"""`shelfsight import-onnx`: ONNX models built here with onnx.helper (no downloads) become
bundles the edge recogniser loads, and those agree with onnxruntime."""
from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from shelfsight.errors import ConfigError, DatasetError, ModelError
from shelfsight.export.onnx.check import agreement, softmax
from shelfsight.export.onnx.graph import image_input, load_onnx, resolve_heads, with_outputs
from shelfsight.export.onnx.importer import import_onnx, read_labels, spread
from shelfsight.export.onnx.options import ImportOptions, InputNormalization
from shelfsight.export.options import QuantizationConfig

CLASSES = 12
SAMPLE_FILE = "calibration_image_sample_data_20x128x128x3_float32.npy"
IMAGENET = InputNormalization.parse("imagenet")


def tiny_cnn(path: Path, size: int | None = 32, classes: int = CLASSES, embedding_output: bool = False,
             softmax_end: bool = False, input_dims: list | None = None, seed: int = 0) -> Path:
    """conv(stride 2) -> relu -> conv -> relu -> global average pool -> flatten ("features")
    -> gemm ("logits") [-> softmax ("probs")] [+ gemm -> "embedding" as a second output]."""
    rng = np.random.default_rng(seed)

    def weight(name, *shape, scale=0.3):
        return numpy_helper.from_array(rng.normal(0, scale, shape).astype(np.float32), name)

    inits = [weight("w1", 8, 3, 3, 3), weight("b1", 8, scale=0.1), weight("w2", 16, 8, 3, 3, scale=0.2),
             weight("b2", 16, scale=0.1), weight("wf", classes, 16, scale=0.8), weight("bf", classes, scale=0.1)]
    nodes = [helper.make_node("Conv", ["input", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1], strides=[2, 2]),
             helper.make_node("Relu", ["c1"], ["r1"]),
             helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c2"], ["r2"]),
             helper.make_node("GlobalAveragePool", ["r2"], ["gap"]),
             helper.make_node("Flatten", ["gap"], ["features"]),
             helper.make_node("Gemm", ["features", "wf", "bf"], ["logits"], transB=1)]
    outputs = [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", classes])]
    if softmax_end:
        nodes.append(helper.make_node("Softmax", ["logits"], ["probs"], axis=1))
        outputs = [helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["N", classes])]
    if embedding_output:
        inits += [weight("we", 10, 16)]
        nodes.append(helper.make_node("Gemm", ["features", "we"], ["embedding"], transB=1))
        outputs.append(helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["N", 10]))
    dims = input_dims or ["N", 3, size or "H", size or "W"]
    graph = helper.make_graph(nodes, "tiny_cnn", [helper.make_tensor_value_info("input", TensorProto.FLOAT, dims)],
                              outputs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], producer_name="shelfsight-tests")
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


@pytest.fixture(scope="module")
def calib(sample_data, tmp_path_factory) -> Path:
    """12 grocery photos, one per class, in a folder of their own."""
    out = tmp_path_factory.mktemp("calib")
    for d in sorted(p for p in (sample_data / "val").rglob("*") if p.is_dir() and any(p.glob("*.jpg"))):
        src = sorted(d.glob("*.jpg"))[0]
        shutil.copy(src, out / f"{d.name}_{src.name}")
    return out


@pytest.fixture
def labels(tmp_path) -> Path:
    path = tmp_path / "labels.txt"
    path.write_text("".join(f"product-{i}\n" for i in range(CLASSES)))
    return path


def _options(mode="float32", **kw) -> ImportOptions:
    return ImportOptions(QuantizationConfig(mode, 64), IMAGENET, compare_images=12, **kw)


def _onnx_outputs(model_path: Path, images: np.ndarray, names: list[str]) -> list[np.ndarray]:
    """Independent reference: onnxruntime on imagenet-normalised NCHW input."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(model_path), providers=["CPUExecutionProvider"])
    x = ((images.astype(np.float32) / 255 - np.float32([0.485, 0.456, 0.406])) /
         np.float32([0.229, 0.224, 0.225])).transpose(0, 3, 1, 2)
    return session.run(names, {"input": x})


def _prepared(calib: Path, spec) -> np.ndarray:
    from shelfsight.images import read_image
    from shelfsight.preprocess import prepare

    return np.stack([prepare(read_image(p), spec) for p in sorted(calib.iterdir())])


# -- options and graph reading (no TensorFlow) -----------------------------------------------

def test_normalization_presets_and_units():
    assert IMAGENET.mean == (123.675, 116.28, 103.53) and IMAGENET.std == (58.395, 57.12, 57.375)
    assert InputNormalization.parse("raw") == InputNormalization((0, 0, 0), (1, 1, 1))
    assert InputNormalization.parse("0.5,0.25") == InputNormalization((127.5,) * 3, (63.75,) * 3)
    assert InputNormalization.parse("127.5,127.5", units="pixel") == InputNormalization((127.5,) * 3, (127.5,) * 3)
    assert InputNormalization.parse("1,2,3,4,5,6", units="pixel") == InputNormalization((1, 2, 3), (4, 5, 6))
    with pytest.raises(ConfigError, match=r"has 3 numbers, expected 2 \(MEAN,STD\) or 6"):
        InputNormalization.parse("1,2,3")
    with pytest.raises(ConfigError, match="expected a preset"):
        InputNormalization.parse("imagenette")
    with pytest.raises(ConfigError, match="std must be finite and > 0"):
        InputNormalization.parse("0.5,0")


def test_malformed_onnx_file_is_a_model_error(tmp_path, calib, labels):
    bad = tmp_path / "model.onnx"
    bad.write_bytes(b"\x08\x07this is not a protobuf" * 10)
    with pytest.raises(ModelError, match="model.onnx: not a valid ONNX model"):
        import_onnx(bad, calib, labels, tmp_path / "out", _options())
    with pytest.raises(ModelError, match="ONNX model .*missing.onnx not found"):
        load_onnx(tmp_path / "missing.onnx")
    assert not (tmp_path / "out").exists()


def test_wrong_input_rank_is_a_model_error(tmp_path, calib, labels):
    x = helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, 32])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 32])
    model = helper.make_model(helper.make_graph([helper.make_node("Relu", ["input"], ["y"])], "g", [x], [y]),
                              opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, str(tmp_path / "rank3.onnx"))
    with pytest.raises(ModelError, match=r"input 'input' has rank 3 \(1x3x32\), expected a 4-D image N x 3 x H x W"):
        import_onnx(tmp_path / "rank3.onnx", calib, labels, tmp_path / "out", _options())


def test_nhwc_input_fixed_batch_and_dynamic_size_are_refused(tmp_path):
    nhwc = load_onnx(tiny_cnn(tmp_path / "nhwc.onnx", input_dims=[1, 32, 32, 3]))
    with pytest.raises(ModelError, match=r"input 'input' is 1x32x32x3, expected N x 3 x H x W"):
        image_input(nhwc)
    batch4 = load_onnx(tiny_cnn(tmp_path / "b4.onnx", input_dims=[4, 3, 32, 32]))
    with pytest.raises(ModelError, match="fixed batch of 4, expected 1 or dynamic"):
        image_input(batch4)
    dynamic = load_onnx(tiny_cnn(tmp_path / "dyn.onnx", size=None))
    with pytest.raises(ConfigError, match=r"dynamic size \(\?x3x\?x\?\); pass --input-size"):
        image_input(dynamic)
    assert image_input(dynamic, 48).size == 48
    fixed = load_onnx(tiny_cnn(tmp_path / "fixed.onnx"))
    with pytest.raises(ConfigError, match="--input-size 64, but the model's input is fixed at 32x32"):
        image_input(fixed, 64)


def test_labels_that_fit_no_output_are_a_config_error(tmp_path, calib):
    model = tiny_cnn(tmp_path / "m.onnx")
    ten = tmp_path / "ten.txt"
    ten.write_text("".join(f"c{i}\n" for i in range(10)))
    with pytest.raises(ConfigError, match=r"labels file has 10 labels, but no model output has 10 values per image: "
                                          r"logits \(12 values\)"):
        import_onnx(model, calib, ten, tmp_path / "out", _options())
    with pytest.raises(ConfigError, match=r"scores tensor 'features' has 16 values per image, the labels file has 12"):
        resolve_heads(load_onnx(model), image_input(load_onnx(model)), CLASSES, scores_output="features")


def test_labels_file_checks(tmp_path):
    path = tmp_path / "labels.txt"
    path.write_text("a\nb\n\n")
    assert read_labels(path) == ("a", "b")
    path.write_text("a\n\nb\n")
    with pytest.raises(ConfigError, match="line 2 is blank"):
        read_labels(path)
    path.write_text("a\nb\na\n")
    with pytest.raises(ConfigError, match="a appear more than once"):
        read_labels(path)
    with pytest.raises(ConfigError, match="labels file .*nope.txt not found"):
        read_labels(tmp_path / "nope.txt")


def test_missing_or_empty_calibration_data_is_a_dataset_error(tmp_path, labels):
    model = tiny_cnn(tmp_path / "m.onnx")
    with pytest.raises(DatasetError, match="neither a folder of images nor an image file"):
        import_onnx(model, tmp_path / "nothing", labels, tmp_path / "out", _options())
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="holds no images"):
        import_onnx(model, tmp_path / "empty", labels, tmp_path / "out", _options())


def test_probabilities_hidden_from_the_graph_need_scores_are(tmp_path, calib, labels):
    model = onnx.load(str(tiny_cnn(tmp_path / "m.onnx", softmax_end=True)))
    model.graph.initializer.append(numpy_helper.from_array(np.float32(1.0), "one"))
    model.graph.node.append(helper.make_node("Mul", ["probs", "one"], ["scaled"]))
    del model.graph.output[:]
    model.graph.output.append(helper.make_tensor_value_info("scaled", TensorProto.FLOAT, ["N", CLASSES]))
    onnx.save(model, str(tmp_path / "scaled.onnx"))
    with pytest.raises(ConfigError, match="'scaled' already sums to 1 on every calibration image .*"
                                          "pass --scores-are probabilities"):
        import_onnx(tmp_path / "scaled.onnx", calib, labels, tmp_path / "out", _options())


def test_cli_reports_a_malformed_model_in_one_line(tmp_path, calib, labels):
    import subprocess
    import sys

    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not an onnx model at all")
    out = subprocess.run([sys.executable, "-m", "shelfsight", "import-onnx", str(bad), "--calib", str(calib),
                          "--labels", str(labels), "--out", str(tmp_path / "b")],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    lines = [line for line in out.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "bad.onnx: not a valid ONNX model" in lines[0], out.stderr


def test_heads_single_output_uses_penultimate_features(tmp_path):
    model = load_onnx(tiny_cnn(tmp_path / "m.onnx"))
    heads = resolve_heads(model, image_input(model), CLASSES)
    assert (heads.scores, heads.softmax, heads.embedding, heads.embedding_source, heads.embedding_dim) == \
        ("logits", True, "features", "penultimate", 16)
    assert heads.tensors == ("logits", "features")


def test_heads_softmax_end_is_used_as_probabilities(tmp_path):
    model = load_onnx(tiny_cnn(tmp_path / "m.onnx", softmax_end=True))
    heads = resolve_heads(model, image_input(model), CLASSES)
    assert (heads.scores, heads.softmax, heads.embedding, heads.embedding_source) == \
        ("probs", False, "features", "penultimate")
    forced = resolve_heads(model, image_input(model), CLASSES, scores_are="logits")
    assert forced.softmax is True


def test_heads_second_output_or_named_tensor_is_the_embedding(tmp_path):
    model = load_onnx(tiny_cnn(tmp_path / "m.onnx", embedding_output=True))
    heads = resolve_heads(model, image_input(model), CLASSES)
    assert (heads.embedding, heads.embedding_source, heads.embedding_dim) == ("embedding", "output", 10)
    named = resolve_heads(model, image_input(model), CLASSES, embedding_output="features")
    assert (named.embedding, named.embedding_source, named.embedding_dim) == ("features", "named", 16)
    with pytest.raises(ConfigError, match="--embedding-output 'nope' is not a tensor computed by the model"):
        resolve_heads(model, image_input(model), CLASSES, embedding_output="nope")
    with pytest.raises(ModelError, match="embedding tensor 'r2' is not one vector per image"):
        resolve_heads(model, image_input(model), CLASSES, embedding_output="r2")


def test_agreement_and_spread_are_plain_numpy():
    ref = softmax(np.array([[2.0, 1.0, 0.0], [0.0, 3.0, 0.0]], np.float32))
    np.testing.assert_allclose(ref.sum(1), 1.0, atol=1e-6)
    other = ref.copy()
    other[1] = [0.6, 0.3, 0.1]
    emb = np.array([[1.0, 0.0], [0.0, 2.0]], np.float32)
    a = agreement(ref, emb, other, np.array([[1.0, 0.0], [1.0, 1.0]], np.float32))
    assert a.images == 2 and a.top1_agreement == 0.5
    assert a.max_abs_score_diff == pytest.approx(abs(0.3 - ref[1, 1]), abs=1e-6)
    assert a.embedding_cosine_min == pytest.approx(np.sqrt(0.5), abs=1e-6) and not a.faithful
    assert spread(10, 4).tolist() == [0, 3, 6, 9] and spread(3, 64).tolist() == [0, 1, 2]


# -- conversions (TensorFlow, onnx2tf) ----------------------------------------------------------

@pytest.mark.slow
def test_onnx2tf_sample_is_20_normalised_128px_images_from_ours():
    from shelfsight.export.onnx.convert import SAMPLE_FILE as name, onnx2tf_sample

    images = np.stack([np.full((32, 32, 3), v, np.uint8) for v in (0, 255, 128)])
    sample = onnx2tf_sample(images, InputNormalization.parse("127.5,127.5", units="pixel"))
    assert name == SAMPLE_FILE and sample.shape == (20, 128, 128, 3) and sample.dtype == np.float32
    np.testing.assert_allclose(sample[:4, 0, 0], [[-1.0] * 3, [1.0] * 3, [0.5 / 127.5] * 3, [-1.0] * 3])


@pytest.mark.slow
def test_float32_import_agrees_with_onnxruntime_and_leaves_no_sample_file(tmp_path, calib, labels, monkeypatch):
    from shelfsight.bundle import load_bundle
    from shelfsight.edge.runtime.recognizer import Recognizer
    from shelfsight.export.metadata import read_associated_file

    model = tiny_cnn(tmp_path / "two_outputs.onnx", embedding_output=True)
    cwd, tmp = tmp_path / "cwd", tmp_path / "tmp"
    cwd.mkdir()
    tmp.mkdir()
    monkeypatch.chdir(cwd)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp))
    result = import_onnx(model, calib, labels, tmp_path / "bundle", _options("float32"), progress=False)

    assert not list(tmp_path.rglob(SAMPLE_FILE)), "onnx2tf's sample file was left behind"
    assert not list(cwd.iterdir()) and not list(tmp.glob("shelfsight-*"))
    bundle = load_bundle(result.bundle)
    assert bundle.labels == tuple(f"product-{i}" for i in range(CLASSES))
    comparison = bundle.manifest["metrics"]["onnx_comparison"]
    assert comparison["images"] == 12 and comparison["float32"]["top1_agreement"] == 1.0
    assert comparison["float32"]["max_abs_score_diff"] < 1e-4
    heads = bundle.manifest["provenance"]["onnx"]["heads"]
    assert heads["embedding"] == {"tensor": "embedding", "source": "output", "dim": 10, "l2_normalized": True}
    assert read_associated_file(bundle.model_path, "labels.txt").decode().split() == list(bundle.labels)

    images = _prepared(calib, bundle.preprocess)
    logits, emb = _onnx_outputs(model, images, ["logits", "embedding"])
    with Recognizer.create_from_bundle(result.bundle) as rec:
        assert rec.model.input.dtype == np.float32 and rec.model.input_size == (32, 32)
        outs = [rec.infer(img) for img in images]
    scores = np.stack([o[0] for o in outs])
    np.testing.assert_allclose(scores, softmax(logits), atol=1e-5)
    cosine = np.sum(np.stack([o[1] for o in outs]) * emb / np.linalg.norm(emb, axis=1, keepdims=True), axis=1)
    assert cosine.min() > 0.99999


@pytest.mark.slow
def test_a_conversion_that_does_not_reproduce_the_onnx_model_is_not_shipped(tmp_path, calib, labels, monkeypatch):
    from shelfsight.export.onnx import convert as onnx_convert

    other = load_onnx(tiny_cnn(tmp_path / "other.onnx", seed=7))
    real = onnx_convert.convert_onnx
    monkeypatch.setattr(onnx_convert, "convert_onnx", lambda model, image, sample: real(
        with_outputs(other, ("logits", "features")), image, sample))  # a mis-conversion
    with pytest.raises(ModelError, match=r"does not reproduce the ONNX model \(top-1 agreement"):
        import_onnx(tiny_cnn(tmp_path / "m.onnx"), calib, labels, tmp_path / "out", _options())
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_int8_import_through_the_cli_takes_uint8_pixels_and_agrees(tmp_path, calib, labels, capsys):
    from shelfsight.app.cli import main
    from shelfsight.edge.runtime.recognizer import Recognizer

    model = tiny_cnn(tmp_path / "probs64.onnx", size=None, softmax_end=True, seed=3)
    main(["-q", "import-onnx", str(model), "--calib", str(calib), "--labels", str(labels),
          "--out", str(tmp_path / "bundle"), "--quantize", "int8", "--input-size", "64",
          "--calibration-images", "12", "--compare-images", "12"])
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["heads"]["scores"] == {"tensor": "probs", "softmax_added": False, "classes": CLASSES}
    assert summary["heads"]["embedding"]["source"] == "penultimate"
    int8 = summary["onnx_comparison"]["int8"]
    assert summary["onnx_comparison"]["float32"]["max_abs_score_diff"] < 1e-4
    assert int8["top1_agreement"] >= 11 / 12 and int8["embedding_cosine_min"] >= 0.98, int8

    with Recognizer.create_from_bundle(tmp_path / "bundle") as rec:
        info = rec.model.input
        assert (info.dtype, info.shape, info.scale, info.zero_point) == (np.uint8, (1, 64, 64, 3), 1.0, 0)
        images = _prepared(calib, rec.spec)
        scores = np.stack([rec.infer(img)[0] for img in images])
    (probs,) = _onnx_outputs(model, images, ["probs"])
    assert np.mean(scores.argmax(1) == probs.argmax(1)) >= 11 / 12
    assert np.abs(scores - probs).max() < 0.05


# -- the project's own EfficientNet-Lite0, as a PyTorch-layout ONNX model -------------------

@pytest.fixture(scope="module")
def lite0_96(tmp_path_factory) -> Path:
    from shelfsight.tools.lite0_onnx import write_lite0_onnx

    return write_lite0_onnx(tmp_path_factory.mktemp("lite0") / "lite0_96.onnx", size=96)


@pytest.mark.slow
def test_lite0_onnx_reproduces_the_keras_port(lite0_96, calib):
    import onnxruntime as ort

    from shelfsight.preprocess import PreprocessSpec
    from shelfsight.training.efficientnet_lite import efficientnet_lite0

    images = (_prepared(calib, PreprocessSpec(size=96))[:4].astype(np.float32) - 127.0) / 128.0
    keras_logits = efficientnet_lite0((96, 96, 3), include_top=True)(images, training=False).numpy()
    session = ort.InferenceSession(str(lite0_96), providers=["CPUExecutionProvider"])
    onnx_logits = np.concatenate([session.run(["logits"], {"input": x[None].transpose(0, 3, 1, 2)})[0]
                                  for x in images])
    np.testing.assert_allclose(onnx_logits, keras_logits, atol=1e-3)


@pytest.mark.slow
def test_lite0_int8_import_agrees_with_onnxruntime(lite0_96, calib, tmp_path):
    from shelfsight.bundle import load_bundle

    imagenet = tmp_path / "imagenet.txt"
    imagenet.write_text("".join(f"imagenet-{i}\n" for i in range(1000)))
    options = ImportOptions(QuantizationConfig("int8", 12), InputNormalization.parse("127,128", units="pixel"),
                            compare_images=12)
    result = import_onnx(lite0_96, calib, imagenet, tmp_path / "bundle", options, progress=False)
    float32, int8 = result.comparison["float32"], result.comparison["int8"]
    assert float32.top1_agreement == 1.0 and float32.max_abs_score_diff < 1e-4, float32
    assert int8.top1_agreement >= 10 / 12 and int8.embedding_cosine_min >= 0.98, int8
    manifest = load_bundle(result.bundle).manifest
    assert manifest["provenance"]["onnx"]["heads"]["embedding"]["dim"] == 1280
    assert manifest["preprocess"]["mean"] == [127.0] * 3 and manifest["preprocess"]["std"] == [128.0] * 3
    assert manifest["model"]["input"]["dtype"] == "uint8"

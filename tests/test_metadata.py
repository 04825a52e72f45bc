"""TFLite metadata: written with the standard schema, read back, model outputs untouched, and
(slow, in .venv-peers) read by MediaPipe Tasks."""
from __future__ import annotations

import csv
import io
import json
import os
import re
import subprocess
import zipfile
from pathlib import Path

import cv2
import flatbuffers
import numpy as np
import pytest

os.environ["TF_USE_LEGACY_KERAS"] = "1"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import tensorflow as tf  # noqa: E402
import tf_keras as keras  # noqa: E402
from ai_edge_litert import schema_py_generated as tfl  # noqa: E402
from ai_edge_litert.interpreter import Interpreter  # noqa: E402

from shelfsight.errors import ConfigError, ModelError  # noqa: E402
from shelfsight.export.metadata import (  # noqa: E402
    METADATA_NAME, MIN_PARSER_VERSION, MetadataSpec, associated_files, output_names,
    read_associated_file, read_metadata, write_metadata)
from shelfsight.images import read_image  # noqa: E402
from shelfsight.preprocess import PreprocessSpec, prepare  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "assets" / "grocery-sample"
PEERS_PYTHON = ROOT / ".venv-peers" / "bin" / "python"
PROBE = ROOT / "tools" / "peers" / "mediapipe_probe.py"
SIZE, EMBED_DIM = 32, 8
INFO = dict(name="tiny-grocery", version="3.1.0", description="Test classifier with an embedding head.",
            author="shelfsight tests", license="Apache-2.0")
IDENTITY = dict(input_mean=[0.0, 0.0, 0.0], input_std=[1.0, 1.0, 1.0])


def _labels() -> list[str]:
    with (SAMPLE / "classes.csv").open(newline="") as handle:
        return [row[0] for row in list(csv.reader(handle))[1:]]


LABELS = _labels()


def _spec(labels=None, **changes) -> MetadataSpec:
    """The spec of the tests' models: LABELS, identity normalisation, INFO; ``changes`` on top."""
    return MetadataSpec(labels=LABELS if labels is None else labels, **{**IDENTITY, **INFO, **changes})


def _pixels() -> np.ndarray:
    """Four real val images, prepared as the device does: N x 32 x 32 x 3 RGB uint8."""
    lines = (SAMPLE / "val.txt").read_text().splitlines()
    paths = [SAMPLE / line.split(",")[0].strip() for line in lines[::max(1, len(lines) // 4)][:4]]
    return np.stack([prepare(read_image(p), PreprocessSpec(size=SIZE)) for p in paths])


@pytest.fixture(scope="module")
def pixels() -> np.ndarray:
    return _pixels()


@pytest.fixture(scope="module")
def models(pixels: np.ndarray) -> dict[str, bytes]:
    """A tiny two-output tf_keras model converted to float32 and to int8 with uint8 input/output."""
    keras.utils.set_random_seed(7)
    image = keras.Input((SIZE, SIZE, 3), name="image")
    x = keras.layers.Rescaling(1 / 127.5, offset=-1.0)(image)
    x = keras.layers.Conv2D(8, 3, activation="relu")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    scores = keras.layers.Dense(len(LABELS), activation="softmax", name="scores")(x)
    embedding = keras.layers.UnitNormalization(name="embedding")(keras.layers.Dense(EMBED_DIM)(x))
    model = keras.Model(image, {"scores": scores, "embedding": embedding})

    out = {"float32": tf.lite.TFLiteConverter.from_keras_model(model).convert()}
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = lambda: ([p[None].astype(np.float32)] for p in pixels)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = tf.uint8
    converter.inference_output_type = tf.uint8
    out["int8"] = converter.convert()
    return out


@pytest.fixture(scope="module")
def with_metadata(models: dict[str, bytes]) -> dict[str, bytes]:
    return {kind: write_metadata(data, _spec()) for kind, data in models.items()}


def _run(model: bytes, pixels: np.ndarray) -> list[dict[str, np.ndarray]]:
    interp = Interpreter(model_content=model)
    interp.allocate_tensors()
    index = interp.get_input_details()[0]["index"]
    results = []
    for p in pixels:
        interp.set_tensor(index, p[None].astype(interp.get_input_details()[0]["dtype"]))
        interp.invoke()
        results.append({d["name"]: interp.get_tensor(d["index"]).copy() for d in interp.get_output_details()})
    return results


def _signature_output_order(model: bytes) -> list[str]:
    """Signature names in get_output_details order, the way edge/interpreter.py maps them."""
    interp = Interpreter(model_content=model)
    by_index = {i: n for n, i in next(iter(interp._get_full_signature_list().values()))["outputs"].items()}
    return [by_index[d["index"]] for d in interp.get_output_details()]


@pytest.mark.parametrize("kind", ["float32", "int8"])
def test_model_with_metadata_gives_identical_outputs(kind, models, with_metadata, pixels):
    before, after = _run(models[kind], pixels), _run(with_metadata[kind], pixels)
    for b, a in zip(before, after):
        assert b.keys() == a.keys()
        for name in b:
            assert a[name].dtype == b[name].dtype
            np.testing.assert_array_equal(a[name], b[name])


@pytest.mark.parametrize("kind", ["float32", "int8"])
def test_model_level_fields_and_input_normalisation_round_trip(kind, with_metadata):
    meta = read_metadata(with_metadata[kind])
    assert {k: meta[k] for k in INFO} == INFO
    assert meta["min_parser_version"] == MIN_PARSER_VERSION == "1.0.0"
    [sub] = meta["subgraph_metadata"]
    [image] = sub["input_tensor_metadata"]
    assert image["content"] == {"content_properties_type": "ImageProperties",
                                "content_properties": {"color_space": "RGB",
                                                       "default_size": {"width": SIZE, "height": SIZE}}}
    assert image["process_units"] == [{"options_type": "NormalizationOptions",
                                       "options": {"mean": [0.0, 0.0, 0.0], "std": [1.0, 1.0, 1.0]}}]
    expected_stats = ({"min": [0.0, 0.0, 0.0], "max": [255.0, 255.0, 255.0]} if kind == "float32"
                      else {"min": [0.0], "max": [255.0]})
    assert image["stats"] == expected_stats


@pytest.mark.parametrize("kind", ["float32", "int8"])
def test_output_metadata_follows_output_tensor_order(kind, models, with_metadata):
    order = _signature_output_order(models[kind])
    assert sorted(order) == ["embedding", "scores"]
    assert output_names(with_metadata[kind]) == order
    outputs = read_metadata(with_metadata[kind])["subgraph_metadata"][0]["output_tensor_metadata"]
    assert [o["name"] for o in outputs] == order
    by_name = {o["name"]: o for o in outputs}
    high = 1.0 if kind == "float32" else 255.0
    assert by_name["scores"]["content"]["content_properties_type"] == "FeatureProperties"
    assert by_name["scores"]["stats"] == {"min": [0.0], "max": [high]}
    assert by_name["scores"]["associated_files"] == [
        {"name": "labels.txt", "description": "Class names of the scores output, one per line.",
         "type": "TENSOR_AXIS_LABELS"}]
    assert by_name["embedding"]["content"] == {"content_properties_type": "FeatureProperties",
                                               "content_properties": {}}
    assert by_name["embedding"]["stats"] == ({"min": [-1.0], "max": [1.0]} if kind == "float32"
                                             else {"min": [0.0], "max": [255.0]})
    assert "associated_files" not in by_name["embedding"]


def test_labels_are_packed_as_an_uncompressed_zip_after_the_flatbuffer(with_metadata):
    data = with_metadata["int8"]
    assert associated_files(data) == ["labels.txt"]
    assert read_associated_file(data, "labels.txt").decode("utf-8").splitlines() == LABELS
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        [info] = zf.infolist()
    assert info.compress_type == zipfile.ZIP_STORED  # MediaPipe refuses compressed entries
    assert tfl.Model.ModelBufferHasIdentifier(data, 0)


def test_model_content_is_unchanged_apart_from_metadata(models, with_metadata):
    def canonical(data: bytes, drop_ours: bool) -> bytes:
        model = tfl.ModelT.InitFromObj(tfl.Model.GetRootAs(data, 0))
        if drop_ours:
            [ours] = [m for m in model.metadata if m.name.decode() == METADATA_NAME]
            assert ours.buffer == len(model.buffers) - 1
            model.metadata.remove(ours)
            model.buffers.pop()
        builder = flatbuffers.Builder(0)
        builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
        return bytes(builder.Output())

    for kind in models:
        assert canonical(with_metadata[kind], drop_ours=True) == canonical(models[kind], drop_ours=False)


def test_converter_metadata_entries_are_kept(models, with_metadata):
    def entries(data: bytes) -> dict[str, bytes]:
        model = tfl.Model.GetRootAs(data, 0)
        return {model.Metadata(i).Name().decode(): model.Buffers(model.Metadata(i).Buffer()).DataAsNumpy().tobytes()
                for i in range(model.MetadataLength())}

    before, after = entries(models["int8"]), entries(with_metadata["int8"])
    assert "min_runtime_version" in before
    assert set(after) == set(before) | {METADATA_NAME}
    assert {k: after[k] for k in before} == before


def test_rewriting_replaces_metadata_and_labels(with_metadata, tmp_path):
    renamed = [f"sku-{i}" for i in range(len(LABELS))]
    path = tmp_path / "model.tflite"
    path.write_bytes(with_metadata["float32"])
    data = write_metadata(path, _spec(renamed, version="3.2.0"), out=path)
    assert path.read_bytes() == data
    assert associated_files(path) == ["labels.txt"]
    assert read_associated_file(path, "labels.txt").decode().splitlines() == renamed
    assert read_metadata(path)["version"] == "3.2.0"
    model = tfl.Model.GetRootAs(data, 0)
    names = [model.Metadata(i).Name().decode() for i in range(model.MetadataLength())]
    assert names.count(METADATA_NAME) == 1


def test_output_is_reproducible(models):
    first = write_metadata(models["int8"], _spec())
    assert write_metadata(models["int8"], _spec()) == first


def test_single_value_normalisation_for_a_float_model(models):
    data = write_metadata(models["float32"], _spec(input_mean=[127.5], input_std=[127.5]))
    image = read_metadata(data)["subgraph_metadata"][0]["input_tensor_metadata"][0]
    assert image["process_units"][0]["options"] == {"mean": [127.5], "std": [127.5]}
    assert image["stats"] == {"min": [-1.0], "max": [1.0]}


def test_label_count_must_match_scores(models):
    with pytest.raises(ModelError, match=rf"scores output has {len(LABELS)} classes, got 3 labels"):
        write_metadata(models["float32"], _spec(LABELS[:3]))


def test_output_names_must_match(models):
    with pytest.raises(ModelError,
                       match=r"model outputs are \['embedding', 'scores'\], expected \['probs', 'embedding'\]"):
        write_metadata(models["float32"], _spec(scores_output="probs"))
    with pytest.raises(ModelError, match=r"expected \['scores'\]"):
        write_metadata(models["float32"], _spec(embedding_output=None))


@pytest.mark.parametrize("mean, std, message", [
    ([0.0, 0.0], [1.0, 1.0], r"need the same length, 1 or 3 values"),
    ([0.0, 0.0, 0.0], [1.0], r"need the same length"),
    ([0.0], [0.0], r"must be finite and non-zero"),
])
def test_bad_normalisation_is_refused(models, mean, std, message):
    with pytest.raises(ConfigError, match=message):
        write_metadata(models["float32"], _spec(input_mean=mean, input_std=std))


@pytest.mark.parametrize("labels, message", [
    ([], r"labels are empty"),
    (["a", "a", "b"], r"labels \['a'\] appear more than once"),
    (["a", "two\nlines"], r"empty, padded or multi-line"),
])
def test_bad_labels_are_refused(models, labels, message):
    with pytest.raises(ConfigError, match=message):
        write_metadata(models["float32"], _spec(labels))


def test_not_a_model_and_missing_metadata(models, tmp_path):
    with pytest.raises(ModelError, match=re.escape(r"not a TFLite model: file identifier b'\r\n\x1a\n', "
                                                   r"expected b'TFL3'")):
        write_metadata(b"\x89PNG\r\n\x1a\n" + bytes(64), _spec())
    with pytest.raises(ModelError, match=r"model file .*absent.tflite not found"):
        read_metadata(tmp_path / "absent.tflite")
    with pytest.raises(ModelError, match=r"model has no TFLite metadata"):
        read_metadata(models["float32"])
    with pytest.raises(ModelError, match=r"associated file 'labels.txt' is not packed in the model; packed: \[\]"):
        read_associated_file(models["float32"], "labels.txt")


# -- MediaPipe Tasks, in the peer environment --------------------------------------------------

def _probe(model: Path, images: list[Path]) -> dict:
    done = subprocess.run([str(PEERS_PYTHON), str(PROBE), str(model), *map(str, images), "--top-k", "3",
                           "--runs", "3", "--warmup", "1"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout)


@pytest.mark.slow
@pytest.mark.skipif(not PEERS_PYTHON.is_file(),
                    reason=".venv-peers is absent (create it with: bash tools/peers/setup_env.sh)")
def test_mediapipe_tasks_read_labels_from_our_metadata(models, with_metadata, pixels, tmp_path):
    images = []
    for i, p in enumerate(pixels):  # already model-sized, so MediaPipe's resize changes nothing
        images.append(tmp_path / f"img{i}.png")
        cv2.imwrite(str(images[-1]), cv2.cvtColor(p, cv2.COLOR_RGB2BGR))
    for kind, data in with_metadata.items():
        path = tmp_path / f"{kind}.tflite"
        path.write_bytes(data)
        report = _probe(path, images)
        order = output_names(data)
        classifier, embedder = report["image_classifier"], report["image_embedder"]
        assert classifier["ok"] and embedder["ok"], report
        # every output is a head, in output order, named from our tensor metadata
        assert [h["head_name"] for h in classifier["heads"]] == order
        assert [h["head_name"] for h in embedder["heads"]] == order
        heads = {h["head_name"]: h for h in classifier["heads"]}
        assert heads["scores"]["labels"] == LABELS
        assert heads["embedding"]["labels"] is None
        ours = _run(data, pixels)
        names = dict(zip(order, Interpreter(model_content=data).get_output_details()))
        for mine, seen in zip(ours, classifier["images"]):
            raw = mine[names["scores"]["name"]][0]
            scale, zero = names["scores"]["quantization"]
            probs = (raw.astype(np.float64) - zero) * scale if kind == "int8" else raw.astype(np.float64)
            [head] = [h for h in seen["heads"] if h["head_name"] == "scores"]
            top = head["top_k"][0]
            assert top["label"] == LABELS[top["index"]]
            assert top["score"] == pytest.approx(probs.max(), abs=1e-5 if kind == "float32" else 1 / 255)
            assert probs[top["index"]] == pytest.approx(probs.max(), abs=1e-6)
            assert seen["latency_ms"]["runs"] == 3
        for mine, seen in zip(ours, embedder["images"]):
            [vector] = [e["values"] for e in seen["embeddings"] if e["head_name"] == "embedding"]
            raw = mine[names["embedding"]["name"]][0].astype(np.float64)
            scale, zero = names["embedding"]["quantization"]
            reference = (raw - zero) * scale if kind == "int8" else raw
            cosine = np.dot(vector, reference) / np.linalg.norm(vector) / np.linalg.norm(reference)
            assert cosine > 0.9999

    # without metadata MediaPipe refuses a float input: the normalisation is what lets it feed pixels
    bare = tmp_path / "bare.tflite"
    bare.write_bytes(models["float32"])
    refused = _probe(bare, images[:1])["image_classifier"]
    assert refused == {"ok": False, "error": "FileNotFoundError: Input tensor has type float32: it requires "
                       "specifying NormalizationOptions metadata to preprocess input images."}


def test_spec_keeps_sequences_as_tuples_and_refuses_non_numbers():
    spec = MetadataSpec(labels=["a", "b"], input_mean=[0, 0, 0], input_std=[1, 1, 1], name="m", version="1")
    assert (spec.labels, spec.input_mean, spec.input_std) == (("a", "b"), (0.0, 0.0, 0.0), (1.0, 1.0, 1.0))
    with pytest.raises(ConfigError, match=r"input std 'one' must be 1 or 3 numbers"):
        MetadataSpec(labels=["a"], input_mean=[0.0], input_std="one", name="m", version="1")

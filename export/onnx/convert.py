"""ONNX -> Keras with onnx2tf, offline, then the bundle's model around it.

onnx2tf turns NCHW into NHWC. Before converting it runs sample images through the model
to check its work, and it reads them from
``calibration_image_sample_data_20x128x128x3_float32.npy`` in the current directory, or
downloads them when the file is not there. So conversion runs in a fresh temporary
directory holding that file, made from the user's own calibration images; the directory
(and everything onnx2tf writes) is removed afterwards, and the working directory is
restored even when conversion fails. The process-wide working directory changes for the
duration, so conversion must not run beside other threads that use relative paths.
The input is fixed at 1 x 3 x S x S and the graph simplified with onnxsim first.

The bundle's model: RGB pixels 0..255 (1 x S x S x 3) -> (pixel - mean) / std -> the
converted graph -> "scores" (softmax added when the ONNX tensor holds logits) and
"embedding" (L2-normalised), as `shelfsight.edge.runtime.recognizer` reads them.
"""
from __future__ import annotations

import contextlib
import io
import logging
import os
import re
import tempfile
from pathlib import Path

import cv2
import numpy as np
import onnx

from shelfsight.errors import ModelError
from shelfsight.training.tf_env import keras, tf

from ..convert import convert_with
from ..options import QuantizationConfig
from .graph import Heads, ImageInput, with_input_size
from .options import InputNormalization

SAMPLE_FILE = "calibration_image_sample_data_20x128x128x3_float32.npy"
SAMPLE_COUNT, SAMPLE_SIZE = 20, 128
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
log = logging.getLogger(__name__)


def onnx2tf_sample(images: np.ndarray, normalization: InputNormalization) -> np.ndarray:
    """onnx2tf's 20 x 128 x 128 x 3 float32 check images, from ours (uint8 RGB, any count >= 1),
    normalised the way the ONNX model expects; images repeat when there are fewer than 20."""
    if len(images) == 0:
        raise ModelError("conversion needs at least one calibration image")
    picks = [images[i % len(images)] for i in range(SAMPLE_COUNT)]
    resized = np.stack([cv2.resize(img, (SAMPLE_SIZE, SAMPLE_SIZE), interpolation=cv2.INTER_AREA) for img in picks])
    return ((resized.astype(np.float32) - np.float32(normalization.mean)) / np.float32(normalization.std))


def convert_onnx(model: onnx.ModelProto, image: ImageInput, sample: np.ndarray) -> keras.Model:
    """Convert ``model`` (NCHW) with onnx2tf into a tf_keras model taking 1 x S x S x 3 (NHWC)
    normalised input, with the ONNX graph's outputs in order.

    Args:
        sample: `onnx2tf_sample` output, written where onnx2tf looks for it.
    Raises:
        ModelError: onnx2tf fails or returns a model of another shape.
    """
    import onnx2tf

    with tempfile.TemporaryDirectory(prefix="shelfsight-onnx2tf-") as tmp:
        work = Path(tmp)
        source = work / "model.onnx"
        onnx.save(simplify(with_input_size(model, image)), str(source))
        np.save(work / SAMPLE_FILE, sample.astype(np.float32))
        log = io.StringIO()
        cuda = os.environ.get("CUDA_VISIBLE_DEVICES")  # onnx2tf hides the GPU from the whole process
        try:
            with contextlib.chdir(work), contextlib.redirect_stdout(log):
                converted = onnx2tf.convert(
                    input_onnx_file_path=str(source), output_folder_path=str(work / "out"),
                    onnxruntime_output_memmap_dir=str(work / "memmap"),
                    not_use_onnxsim=True, disable_model_save=True, non_verbose=True)
        except SystemExit:  # onnx2tf logs an error and calls sys.exit(1)
            raise ModelError(f"onnx2tf could not convert the model: {_last_error(log.getvalue())}") from None
        except Exception as e:
            raise ModelError(f"onnx2tf could not convert the model: {type(e).__name__}: "
                             f"{str(e).strip().splitlines()[0][:300] if str(e).strip() else ''}") from None
        finally:
            if cuda is None:
                os.environ.pop("CUDA_VISIBLE_DEVICES", None)
            else:
                os.environ["CUDA_VISIBLE_DEVICES"] = cuda
    expected = (image.size, image.size, 3)
    got = tuple(converted.inputs[0].shape[1:]) if len(converted.inputs) == 1 else None
    if got != expected:
        raise ModelError(f"onnx2tf gave a model taking {[tuple(i.shape) for i in converted.inputs]}, "
                         f"expected one 1 x {image.size} x {image.size} x 3 input")
    if len(converted.outputs) != len(model.graph.output):
        raise ModelError(f"onnx2tf gave {len(converted.outputs)} outputs for {len(model.graph.output)} ONNX outputs")
    return converted


def simplify(model: onnx.ModelProto) -> onnx.ModelProto:
    """``model`` after onnxsim's constant folding and shape inference, when onnxsim is installed
    and succeeds; else ``model`` as it is (onnx2tf converts unsimplified graphs too).

    onnxsim runs here, in-process, rather than inside onnx2tf, which starts it as a program
    found on PATH and silently skips it when a virtual environment is not activated.
    """
    try:
        import onnxsim
    except ImportError:
        log.info("onnxsim is not installed; converting the graph unsimplified")
        return model
    try:
        simplified, ok = onnxsim.simplify(model)
    except Exception as e:  # onnxsim raises RuntimeError / ValueError / onnx errors on graphs it cannot fold
        log.info("onnxsim could not simplify the graph (%s); converting it unsimplified", str(e).splitlines()[0][:200])
        return model
    return simplified if ok else model


def bundle_model(converted: keras.Model, image: ImageInput, heads: Heads, normalization: InputNormalization,
                 name: str = "shelfsight_onnx") -> keras.Model:
    """Pixels 0..255 -> normalisation -> ``converted`` -> {"scores", "embedding"}.

    ``converted`` outputs ``heads.tensors`` in order (see `convert_onnx`).
    """
    mean, std = np.array(normalization.mean), np.array(normalization.std)
    pixels = keras.Input((image.size, image.size, 3), batch_size=1, name="image")
    x = keras.layers.Rescaling(scale=(1.0 / std).tolist(), offset=(-mean / std).tolist(), name="normalize")(pixels)
    outputs = converted(x)
    outputs = outputs if isinstance(outputs, (list, tuple)) else [outputs]
    by_name = dict(zip(heads.tensors, outputs))
    scores = keras.layers.Flatten(name="scores_flat")(by_name[heads.scores])
    scores = (keras.layers.Softmax(name="scores") if heads.softmax
              else keras.layers.Activation("linear", name="scores"))(scores)
    embedding = keras.layers.Flatten(name="embedding_flat")(by_name[heads.embedding])
    embedding = keras.layers.UnitNormalization(name="embedding")(embedding)
    return keras.Model(pixels, {"scores": scores, "embedding": embedding}, name=name)


def bundle_tflite(model: keras.Model, size: int, config: QuantizationConfig,
                  calibration: np.ndarray | None = None) -> bytes:
    """``model`` (from `bundle_model`) as a .tflite in ``config``'s mode.

    Converted from a traced function, not with ``from_keras_model``: onnx2tf keeps the weights
    as constants in its layers' configs, which the Keras path serialises to JSON (minutes for
    EfficientNet-Lite0, against seconds this way).
    """
    module = tf.Module()
    module.serve = tf.function(lambda image: model(image, training=False),
                               input_signature=[tf.TensorSpec([1, size, size, 3], tf.float32, name="image")])
    converter = tf.lite.TFLiteConverter.from_concrete_functions([module.serve.get_concrete_function()], module)
    return convert_with(converter, config, calibration)


def _last_error(text: str) -> str:
    lines = [_ANSI.sub("", line).strip() for line in text.splitlines()]
    errors = [line for line in lines if line.startswith("ERROR")] or [line for line in lines if line]
    return errors[-1][:300] if errors else "no message"

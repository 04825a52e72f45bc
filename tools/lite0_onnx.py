"""EfficientNet-Lite0 as an ONNX graph in PyTorch's layout (NCHW), built with onnx.helper from
the same ImageNet state dict the Keras port loads: a real network for `import-onnx`, with no
PyTorch and no download.

    python -m shelfsight.tools.lite0_onnx OUT.onnx [--size 224]

The graph follows `shelfsight.training.efficientnet_lite`: TensorFlow SAME padding (ONNX
``auto_pad=SAME_UPPER``), BatchNormalization with epsilon 1e-3, ReLU6 (Clip 0..6), RGB input
normalised as (pixel - 127) / 128 (``--normalize 127,128 --normalize-units pixel``).
Output "logits" (1 x 1000, ImageNet-1k); the pooled 1280-d "features" feed the classifier.
"""
from __future__ import annotations

from os import PathLike
from pathlib import Path

import click
import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from shelfsight.errors import ModelError

# (repeats, kernel, stride, expand, filters_in, filters_out), as LITE0_STAGES in efficientnet_lite
STAGES = ((1, 3, 1, 1, 32, 16), (2, 3, 2, 6, 16, 24), (2, 5, 2, 6, 24, 40), (3, 3, 2, 6, 40, 80),
          (3, 5, 1, 6, 80, 112), (4, 5, 2, 6, 112, 192), (1, 3, 1, 6, 192, 320))
BN_EPSILON = 1e-3
OPSET = 13


class _Graph:
    """Nodes and initializers being collected."""

    def __init__(self, state: dict[str, np.ndarray]):
        self.state, self.nodes, self.inits = state, [], []

    def weight(self, key: str) -> str:
        if key not in self.state:
            raise ModelError(f"state dict lacks {key}, expected an EfficientNet-Lite0 state dict")
        self.inits.append(numpy_helper.from_array(np.asarray(self.state[key], np.float32), key))
        return key

    def node(self, op: str, inputs: list[str], output: str, **attrs) -> str:
        self.nodes.append(helper.make_node(op, inputs, [output], name=output, **attrs))
        return output

    def conv_bn(self, x: str, conv: str, bn: str, out: str, stride: int = 1, groups: int = 1,
                relu: bool = True) -> str:
        kernel = self.state[f"{conv}.weight"].shape[-1]
        x = self.node("Conv", [x, self.weight(f"{conv}.weight")], f"{out}_conv", auto_pad="SAME_UPPER",
                      strides=[stride, stride], kernel_shape=[kernel, kernel], group=groups)
        x = self.node("BatchNormalization", [x] + [self.weight(f"{bn}.{k}") for k in
                                                  ("weight", "bias", "running_mean", "running_var")],
                      f"{out}_bn", epsilon=BN_EPSILON)
        return self.node("Clip", [x, "zero", "six"], f"{out}_relu6") if relu else x


def lite0_onnx(state: dict[str, np.ndarray], size: int | None = 224) -> onnx.ModelProto:
    """EfficientNet-Lite0 with its ImageNet classifier as an ONNX model.

    Args:
        state: the PyTorch state dict (`shelfsight.training.torch_weights.load_torch_state_dict`).
        size: input side; None leaves height and width dynamic.
    """
    g = _Graph(state)
    g.inits += [numpy_helper.from_array(np.float32(0.0), "zero"), numpy_helper.from_array(np.float32(6.0), "six")]
    x = g.conv_bn("input", "_conv_stem", "_bn0", "stem", stride=2)
    index = 0
    for repeats, _, stride, expand, filters_in, filters_out in STAGES:
        for r in range(repeats):
            block, inputs = f"_blocks.{index}", x
            channels = (filters_in if r == 0 else filters_out) * expand
            if expand != 1:
                x = g.conv_bn(x, f"{block}._expand_conv", f"{block}._bn0", f"block{index}_expand")
            x = g.conv_bn(x, f"{block}._depthwise_conv", f"{block}._bn1", f"block{index}_dw",
                          stride=stride if r == 0 else 1, groups=channels)
            x = g.conv_bn(x, f"{block}._project_conv", f"{block}._bn2", f"block{index}_project", relu=False)
            if r > 0 or (stride == 1 and filters_in == filters_out):
                x = g.node("Add", [x, inputs], f"block{index}_add")
            index += 1
    x = g.conv_bn(x, "_conv_head", "_bn1", "head")
    x = g.node("GlobalAveragePool", [x], "pool")
    x = g.node("Flatten", [x], "features", axis=1)
    g.node("Gemm", [x, g.weight("_fc.weight"), g.weight("_fc.bias")], "logits", transB=1)
    dims = ["N", 3, size or "H", size or "W"]
    graph = helper.make_graph(g.nodes, "efficientnet_lite0",
                              [helper.make_tensor_value_info("input", TensorProto.FLOAT, dims)],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 1000])], g.inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name="shelfsight.tools.lite0_onnx")
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def write_lite0_onnx(out: str | PathLike[str], size: int | None = 224,
                     weights: str | PathLike[str] | None = None) -> Path:
    """Write `lite0_onnx` built from ``weights`` (default: the installed ImageNet state dict)."""
    from shelfsight.training.torch_weights import load_torch_state_dict

    if weights is None:
        from shelfsight.training.efficientnet_lite import default_lite0_weights_path

        weights = default_lite0_weights_path()
    out = Path(out)
    onnx.save(lite0_onnx(load_torch_state_dict(weights), size), str(out))
    return out


@click.command()
@click.argument("out", type=click.Path(path_type=Path))
@click.option("--size", type=int, default=224, show_default=True, help="Input side (0: dynamic).")
def main(out: Path, size: int) -> None:
    """Write EfficientNet-Lite0 (ImageNet) as an NCHW ONNX model."""
    click.echo(str(write_lite0_onnx(out, size or None)))


if __name__ == "__main__":
    main()

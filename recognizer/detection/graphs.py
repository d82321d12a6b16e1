"""MTCNN's three networks as ONNX graphs built from numpy weights with `onnx.helper`, no torch.

Each graph is node for node what `torch.onnx.export` (opset 17, the TorchScript exporter) writes
for facenet-pytorch's PNet, RNet and ONet with each PReLU as clamp(x, min=0) + a * clamp(x, max=0)
(networks.py's former export): the same operators in the same order, the same attributes, the
same constants and bit-identical weights, so ONNX Runtime computes the same numbers (`==`);
tests/test_core_install.py checks both against a torch export. Only value names differ.
"""
from __future__ import annotations

import numpy as np

__all__ = ["IR_VERSION", "OPSET", "build_model", "layers"]

OPSET = 17
IR_VERSION = 8  # what torch's exporter writes for opset 17

# The layers in forward order: ("conv", name), ("prelu", name), ("pool", kernel, stride),
# ("flatten",) (permute(0, 3, 2, 1) then view(n, -1)), ("dense", name); then the heads.
_BODY = {
    "pnet": [("conv", "conv1"), ("prelu", "prelu1"), ("pool", 2, 2), ("conv", "conv2"), ("prelu", "prelu2"),
             ("conv", "conv3"), ("prelu", "prelu3")],
    "rnet": [("conv", "conv1"), ("prelu", "prelu1"), ("pool", 3, 2), ("conv", "conv2"), ("prelu", "prelu2"),
             ("pool", 3, 2), ("conv", "conv3"), ("prelu", "prelu3"), ("flatten",), ("dense", "dense4"),
             ("prelu", "prelu4")],
    "onet": [("conv", "conv1"), ("prelu", "prelu1"), ("pool", 3, 2), ("conv", "conv2"), ("prelu", "prelu2"),
             ("pool", 3, 2), ("conv", "conv3"), ("prelu", "prelu3"), ("pool", 2, 2), ("conv", "conv4"),
             ("prelu", "prelu4"), ("flatten",), ("dense", "dense5"), ("prelu", "prelu5")],
}
# Heads in forward order: (layer, output name, softmax?); the graph's outputs in `_OUTPUTS` order.
_HEADS = {
    "pnet": [("conv4_1", "prob", True), ("conv4_2", "reg", False)],
    "rnet": [("dense5_1", "prob", True), ("dense5_2", "reg", False)],
    "onet": [("dense6_1", "prob", True), ("dense6_2", "reg", False), ("dense6_3", "points", False)],
}
_OUTPUTS = {"pnet": ["reg", "prob"], "rnet": ["reg", "prob"], "onet": ["reg", "points", "prob"]}
_INPUT_DIMS = {"pnet": ["n", 3, "h", "w"], "rnet": ["n", 3, 24, 24], "onet": ["n", 3, 48, 48]}


def layers(name: str) -> list[tuple]:
    """The network's body layers (see `_BODY`)."""
    return list(_BODY[name])


class _Graph:
    def __init__(self, helper, numpy_helper, state: dict[str, np.ndarray]) -> None:
        self.h, self.nh, self.state = helper, numpy_helper, state
        self.nodes, self.params, self.slopes = [], [], []

    def node(self, op: str, inputs: list[str], out: str, **attrs) -> str:
        self.nodes.append(self.h.make_node(op, inputs, [out], **attrs))
        return out

    def const(self, out: str, value: np.ndarray) -> str:
        return self.node("Constant", [], out, value=self.nh.from_array(value, out))

    def param(self, key: str) -> str:
        self.params.append(self.nh.from_array(np.ascontiguousarray(self.state[key], np.float32), key))
        return key

    def conv(self, x: str, layer: str) -> str:
        w = self.state[f"{layer}.weight"]
        return self.node("Conv", [x, self.param(f"{layer}.weight"), self.param(f"{layer}.bias")], f"/{layer}/Conv_output_0",
                         dilations=[1, 1], group=1, kernel_shape=list(w.shape[2:]), pads=[0, 0, 0, 0], strides=[1, 1])

    def dense(self, x: str, layer: str, out: str | None = None) -> str:
        return self.node("Gemm", [x, self.param(f"{layer}.weight"), self.param(f"{layer}.bias")],
                         out or f"/{layer}/Gemm_output_0", alpha=1.0, beta=1.0, transB=1)

    def prelu(self, x: str, layer: str, rank: int) -> str:
        """max(x, 0) + a * min(x, 0), as Clip, Clip, Mul, Add (torch.clamp's export)."""
        a = self.state[f"{layer}.weight"].astype(np.float32).reshape(1, -1, *([1] * (rank - 2)))
        slope = f"{layer}.slope"
        self.slopes.append(self.nh.from_array(np.ascontiguousarray(a), slope))
        zero = np.array(0.0, np.float32)
        lo = self.const(f"/{layer}/Constant_output_0", zero)
        pos = self.node("Clip", [x, lo, ""], f"/{layer}/Clip_output_0")
        hi = self.const(f"/{layer}/Constant_1_output_0", zero)
        neg = self.node("Clip", [x, "", hi], f"/{layer}/Clip_1_output_0")
        scaled = self.node("Mul", [slope, neg], f"/{layer}/Mul_output_0")
        return self.node("Add", [pos, scaled], f"/{layer}/Add_output_0")

    def pool(self, x: str, kernel: int, stride: int, i: int) -> str:
        return self.node("MaxPool", [x], f"/pool{i}/MaxPool_output_0", ceil_mode=1, dilations=[1, 1],
                         kernel_shape=[kernel, kernel], pads=[0, 0, 0, 0], strides=[stride, stride])

    def flatten(self, x: str) -> str:
        """x.permute(0, 3, 2, 1).contiguous().view(x.shape[0], -1), as the exporter writes it."""
        t = self.node("Transpose", [x], "/Transpose_output_0", perm=[0, 3, 2, 1])
        shape = self.node("Shape", [t], "/Shape_output_0")
        n = self.node("Gather", [shape, self.const("/Constant_output_0", np.array(0, np.int64))], "/Gather_output_0", axis=0)
        n1 = self.node("Unsqueeze", [n, self.const("/Unsqueeze_axes", np.array([0], np.int64))], "/Unsqueeze_output_0")
        dims = self.node("Concat", [n1, self.const("/Constant_1_output_0", np.array([-1], np.int64))], "/Concat_output_0", axis=0)
        return self.node("Reshape", [t, dims], "/Reshape_output_0", allowzero=0)


def _body(g: _Graph, name: str) -> tuple[str, int]:
    x, rank, pools = "x", 4, 0
    for spec in _BODY[name]:
        kind = spec[0]
        if kind == "conv":
            x = g.conv(x, spec[1])
        elif kind == "prelu":
            x = g.prelu(x, spec[1], rank)
        elif kind == "pool":
            pools += 1
            x = g.pool(x, spec[1], spec[2], pools)
        elif kind == "flatten":
            x, rank = g.flatten(x), 2
        else:
            x = g.dense(x, spec[1])
    return x, rank


def build_model(name: str, state: dict[str, np.ndarray]) -> bytes:
    """The serialized ONNX model of MTCNN network `name` ("pnet", "rnet" or "onet") with the
    weights in `state` (facenet-pytorch's state dict, as float32 arrays)."""
    from onnx import TensorProto, checker, helper, numpy_helper  # slow to import: only building a graph needs it

    g = _Graph(helper, numpy_helper, state)
    x, rank = _body(g, name)
    for layer, out, softmax in _HEADS[name]:
        if rank == 4:
            y = g.node("Conv", [x, g.param(f"{layer}.weight"), g.param(f"{layer}.bias")],
                       f"/{layer}/Conv_output_0" if softmax else out, dilations=[1, 1], group=1,
                       kernel_shape=list(state[f"{layer}.weight"].shape[2:]), pads=[0, 0, 0, 0], strides=[1, 1])
        else:
            y = g.dense(x, layer, None if softmax else out)
        if softmax:
            g.node("Softmax", [y], out, axis=1)
    sizes = {n: int(state[f"{layer}.bias"].shape[0]) for layer, n, _ in _HEADS[name]}
    spatial = ["oh", "ow"] if rank == 4 else []
    outputs = [helper.make_tensor_value_info(o, TensorProto.FLOAT, ["n", sizes[o], *spatial]) for o in _OUTPUTS[name]]
    graph = helper.make_graph(g.nodes, "main_graph", [helper.make_tensor_value_info("x", TensorProto.FLOAT, _INPUT_DIMS[name])],
                              outputs, initializer=g.params + g.slopes)
    model = helper.make_model(graph, producer_name="facetool", opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = IR_VERSION
    checker.check_model(model)
    return model.SerializeToString()

"""ONNX graphs of the heads, the small text models and the digits models (onnx.helper only)."""
from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from common import OPSET


class G:
    """Minimal graph builder."""

    def __init__(self):
        self.nodes, self.inits, self.n = [], [], 0

    def const(self, arr, prefix="c"):
        self.n += 1
        name = f"{prefix}_{self.n}"
        self.inits.append(numpy_helper.from_array(np.asarray(arr), name))
        return name

    def op(self, typ, inputs, out=None, **attrs):
        self.n += 1
        out = out or f"{typ.lower()}_{self.n}"
        self.nodes.append(helper.make_node(typ, inputs, [out], name=out, **attrs))
        return out

    def model(self, name, inputs, outputs):
        graph = helper.make_graph(self.nodes, name, inputs, outputs, self.inits)
        m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
        m.ir_version = 8
        onnx.checker.check_model(m)
        return m


def _mlp(g: G, x: str, head, T: float, out="probs"):
    """Head params {W1,b1,W2,b2} or {W2,b2}; temperature folded into the last layer."""
    p = head.p
    if "W1" in p:
        x = g.op("Relu", [g.op("Add", [g.op("MatMul", [x, g.const(p["W1"].astype(np.float32), "W1")]),
                                       g.const(p["b1"].astype(np.float32), "b1")])])
    z = g.op("Add", [g.op("MatMul", [x, g.const((p["W2"] / T).astype(np.float32), "W2")]),
                     g.const((p["b2"] / T).astype(np.float32), "b2")])
    return g.op("Softmax", [z], out=out, axis=-1)


def head_graph(head, T: float, dim: int):
    """embedding float32 [1, dim] -> probs float32 [1, C]."""
    g = G()
    C = head.p["W2"].shape[1]
    _mlp(g, "embedding", head, T)
    return g.model("head", [helper.make_tensor_value_info("embedding", TensorProto.FLOAT, [1, dim])],
                   [helper.make_tensor_value_info("probs", TensorProto.FLOAT, [1, C])])


def quantize_columns(table: np.ndarray):
    """Symmetric int8 per column: table ~= q * scale[None, :]."""
    scale = np.abs(table).max(0) / 127.0
    scale = np.where(scale == 0, 1.0, scale).astype(np.float32)
    q = np.clip(np.round(table / scale), -127, 127).astype(np.int8)
    return q, scale


def small_text_graph(q_table: np.ndarray, scale: np.ndarray, weights: np.ndarray,
                     remap: np.ndarray | None, b1: np.ndarray, W2: np.ndarray | None,
                     b2: np.ndarray | None, T: float):
    """input_ids int64 [1, N] -> probs float32 [1, C].

    rows = remap[ids] (if remap); e_t = dequant(table_int8[rows]) (int8, one scale per column);
    w_t = weights[rows]; a = sum_t w_t e_t / sum_t w_t + b1;
    logits = relu(a) W2 + b2 (MLP head) or a (linear head); probs = softmax(logits / T).
    """
    g = G()
    rows = "input_ids"
    if remap is not None:
        rows = g.op("Gather", [g.const(remap.astype(np.int64), "remap"), rows], axis=0)  # [1, N]
    eq = g.op("Gather", [g.const(q_table, "table_int8"), rows], axis=0)  # [1, N, k] int8
    e = g.op("DequantizeLinear", [eq, g.const(scale.astype(np.float32), "table_scale"),
                                  g.const(np.zeros(len(scale), np.int8), "table_zero")], axis=2)
    w = g.op("Gather", [g.const(weights.astype(np.float32), "token_weight"), rows], axis=0)  # [1, N]
    w3 = g.op("Unsqueeze", [w, g.const(np.array([2], np.int64))])  # [1, N, 1]
    ax1 = g.const(np.array([1], np.int64))
    num = g.op("ReduceSum", [g.op("Mul", [e, w3]), ax1], keepdims=0)  # [1, k]
    den = g.op("ReduceSum", [w3, ax1], keepdims=0)  # [1, 1]
    a = g.op("Add", [g.op("Div", [num, g.op("Max", [den, g.const(np.float32(1e-6))])]),
                     g.const(b1.astype(np.float32), "b1")])
    if W2 is not None:
        h = g.op("Relu", [a])
        z = g.op("Add", [g.op("MatMul", [h, g.const((W2 / T).astype(np.float32), "W2")]),
                         g.const((b2 / T).astype(np.float32), "b2")])
        C = W2.shape[1]
    else:
        z = g.op("Mul", [a, g.const(np.float32(1.0 / T), "inv_T")])
        C = len(b1)
    g.op("Softmax", [z], out="probs", axis=-1)
    return g.model("small_text", [helper.make_tensor_value_info("input_ids", TensorProto.INT64, [1, "N"])],
                   [helper.make_tensor_value_info("probs", TensorProto.FLOAT, [1, C])])


def dequant_table(q_table, scale):
    return q_table.astype(np.float32) * scale[None, :]



"""all-MiniLM-L6-v2 without torch: a numpy reference, an ONNX graph built with onnx.helper from the
safetensors weights, and its per-channel dynamic int8 quantization (minilm-int8.onnx).

Graph: input_ids, attention_mask, token_type_ids (int64 [1, N]) -> BERT (6 layers, 384 wide, 12 heads)
-> attention-masked mean pooling -> L2 normalisation -> embedding (float32 [1, 384]).
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from common import OPSET, minilm_dir

H, HEADS, LAYERS, FF = 384, 12, 6, 1536
DH = H // HEADS
EPS = 1e-12


def load_weights() -> dict[str, np.ndarray]:
    from safetensors.numpy import load_file

    w = load_file(str(minilm_dir() / "model.safetensors"))
    # some exports prefix the keys with "bert."
    return {k[5:] if k.startswith("bert.") else k: v.astype(np.float32) for k, v in w.items()}


# ---------------------------------------------------------------- numpy reference

def _ln(x, g, b):
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + EPS) * g + b


def _gelu(x):
    from scipy.special import erf

    return 0.5 * x * (1.0 + erf(x / math.sqrt(2.0)))


def forward_hidden(w, ids: np.ndarray, mask: np.ndarray, tt: np.ndarray | None = None) -> np.ndarray:
    """Last hidden states [B, N, 384] of a padded batch (numpy float32 reference)."""
    B, N = ids.shape
    tt = np.zeros_like(ids) if tt is None else tt
    x = (w["embeddings.word_embeddings.weight"][ids]
         + w["embeddings.position_embeddings.weight"][np.arange(N)][None]
         + w["embeddings.token_type_embeddings.weight"][tt])
    x = _ln(x, w["embeddings.LayerNorm.weight"], w["embeddings.LayerNorm.bias"])
    bias = ((1.0 - mask.astype(np.float32)) * -10000.0)[:, None, None, :]
    for i in range(LAYERS):
        p = f"encoder.layer.{i}."

        def lin(t, name):
            wt = w[p + name + ".weight"]
            y = t.reshape(-1, t.shape[-1]) @ wt.T + w[p + name + ".bias"]
            return y.reshape(t.shape[:-1] + (wt.shape[0],))

        def heads(t):
            return t.reshape(B, N, HEADS, DH).transpose(0, 2, 1, 3)

        q = heads(lin(x, "attention.self.query"))
        k = heads(lin(x, "attention.self.key"))
        v = heads(lin(x, "attention.self.value"))
        s = q @ k.transpose(0, 1, 3, 2) / math.sqrt(DH) + bias
        s = s - s.max(-1, keepdims=True)
        e = np.exp(s)
        a = e / e.sum(-1, keepdims=True)
        c = (a @ v).transpose(0, 2, 1, 3).reshape(B, N, H)
        x = _ln(lin(c, "attention.output.dense") + x,
                w[p + "attention.output.LayerNorm.weight"], w[p + "attention.output.LayerNorm.bias"])
        f = lin(_gelu(lin(x, "intermediate.dense")), "output.dense")
        x = _ln(f + x, w[p + "output.LayerNorm.weight"], w[p + "output.LayerNorm.bias"])
    return x.astype(np.float32)


def pool_normalize(hidden, mask):
    m = mask.astype(np.float32)[..., None]
    s = (hidden * m).sum(1) / np.clip(m.sum(1), 1e-9, None)
    return (s / np.clip(np.linalg.norm(s, axis=1, keepdims=True), 1e-12, None)).astype(np.float32)


def embed_numpy(w, seqs: list[list[int]], batch: int = 64) -> np.ndarray:
    """Sentence embeddings (fp32 reference) of id sequences that already include [CLS]/[SEP]."""
    out = np.zeros((len(seqs), H), np.float32)
    order = np.argsort([len(s) for s in seqs], kind="stable")
    for start in range(0, len(seqs), batch):
        idx = order[start:start + batch]
        n = max(len(seqs[i]) for i in idx)
        ids = np.zeros((len(idx), n), np.int64)
        mask = np.zeros((len(idx), n), np.int64)
        for r, i in enumerate(idx):
            ids[r, :len(seqs[i])] = seqs[i]
            mask[r, :len(seqs[i])] = 1
        out[idx] = pool_normalize(forward_hidden(w, ids, mask), mask)
    return out


# ---------------------------------------------------------------- ONNX graph

def build_onnx(w):
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    nodes, inits = [], []
    cnt = [0]

    def name(prefix):
        cnt[0] += 1
        return f"{prefix}_{cnt[0]}"

    def const(arr, prefix="c"):
        n = name(prefix)
        inits.append(numpy_helper.from_array(np.asarray(arr), n))
        return n

    def op(typ, inputs, prefix=None, **attrs):
        out = name(prefix or typ.lower())
        nodes.append(helper.make_node(typ, inputs, [out], name=out, **attrs))
        return out

    def weight(key, transpose=False):
        a = w[key]
        return const(np.ascontiguousarray(a.T) if transpose else a, key.replace(".", "_"))

    def layernorm(x, g, b):
        mu = op("ReduceMean", [x], axes=[-1], keepdims=1)
        d = op("Sub", [x, mu])
        var = op("ReduceMean", [op("Mul", [d, d])], axes=[-1], keepdims=1)
        std = op("Sqrt", [op("Add", [var, const(np.float32(EPS))])])
        return op("Add", [op("Mul", [op("Div", [d, std]), weight(g)]), weight(b)])

    def linear(x, p):
        return op("Add", [op("MatMul", [x, weight(p + ".weight", transpose=True)]), weight(p + ".bias")])

    ids, mask, tt = "input_ids", "attention_mask", "token_type_ids"
    # embeddings
    we = op("Gather", [weight("embeddings.word_embeddings.weight"), ids], axis=0)
    shape = op("Shape", [ids])
    n = op("Gather", [shape, const(np.array(1, np.int64))], axis=0)
    pos = op("Range", [const(np.array(0, np.int64)), n, const(np.array(1, np.int64))])
    pe = op("Gather", [weight("embeddings.position_embeddings.weight"), pos], axis=0)
    te = op("Gather", [weight("embeddings.token_type_embeddings.weight"), tt], axis=0)
    x = op("Add", [op("Add", [we, pe]), te])
    x = layernorm(x, "embeddings.LayerNorm.weight", "embeddings.LayerNorm.bias")
    # attention bias [1, 1, 1, N]
    mf = op("Cast", [mask], to=TensorProto.FLOAT)
    bias = op("Mul", [op("Sub", [const(np.float32(1.0)), mf]), const(np.float32(-10000.0))])
    bias = op("Unsqueeze", [bias, const(np.array([1, 2], np.int64))])
    split_shape = const(np.array([1, -1, HEADS, DH], np.int64))
    merge_shape = const(np.array([1, -1, H], np.int64))
    scale = const(np.float32(1.0 / math.sqrt(DH)))
    for i in range(LAYERS):
        p = f"encoder.layer.{i}."

        def heads(t, perm):
            return op("Transpose", [op("Reshape", [t, split_shape])], perm=perm)

        q = heads(linear(x, p + "attention.self.query"), [0, 2, 1, 3])
        k = heads(linear(x, p + "attention.self.key"), [0, 2, 3, 1])
        v = heads(linear(x, p + "attention.self.value"), [0, 2, 1, 3])
        s = op("Add", [op("Mul", [op("MatMul", [q, k]), scale]), bias])
        a = op("Softmax", [s], axis=-1)
        c = op("Reshape", [op("Transpose", [op("MatMul", [a, v])], perm=[0, 2, 1, 3]), merge_shape])
        x = layernorm(op("Add", [linear(c, p + "attention.output.dense"), x]),
                      p + "attention.output.LayerNorm.weight", p + "attention.output.LayerNorm.bias")
        h = linear(x, p + "intermediate.dense")
        g = op("Mul", [op("Mul", [h, const(np.float32(0.5))]),
                       op("Add", [op("Erf", [op("Div", [h, const(np.float32(math.sqrt(2.0)))])]),
                                  const(np.float32(1.0))])])
        x = layernorm(op("Add", [linear(g, p + "output.dense"), x]),
                      p + "output.LayerNorm.weight", p + "output.LayerNorm.bias")
    # masked mean pooling + L2 normalisation
    m3 = op("Unsqueeze", [mf, const(np.array([2], np.int64))])  # [1, N, 1]
    axis1 = const(np.array([1], np.int64))
    summed = op("ReduceSum", [op("Mul", [x, m3]), axis1], keepdims=0)  # [1, 384]
    count = op("Max", [op("ReduceSum", [m3, axis1], keepdims=0), const(np.float32(1e-9))])  # [1, 1]
    mean = op("Div", [summed, count])
    axism1 = const(np.array([-1], np.int64))
    norm = op("Sqrt", [op("ReduceSum", [op("Mul", [mean, mean]), axism1], keepdims=1)])
    norm = op("Max", [norm, const(np.float32(1e-12))])
    nodes.append(helper.make_node("Div", [mean, norm], ["embedding"], name="embedding"))

    dyn = [1, "N"]
    graph = helper.make_graph(
        nodes, "minilm",
        [helper.make_tensor_value_info(k, TensorProto.INT64, dyn) for k in (ids, mask, tt)],
        [helper.make_tensor_value_info("embedding", TensorProto.FLOAT, [1, H])],
        inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def quantize(fp32_path: Path, out_path: Path):
    """Dynamic int8 quantization, per-channel weights (MatMul -> MatMulInteger, embeddings Gather)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(str(fp32_path), str(out_path), per_channel=True, weight_type=QuantType.QInt8,
                     op_types_to_quantize=["MatMul", "Gather"])

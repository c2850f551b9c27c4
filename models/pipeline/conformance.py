"""The conformance suite of `edgecascade run --model`: small MLP and CNN models, built with
onnx.helper (no download), in float and in every format onnxruntime's quantizer writes
(QOperator and QDQ; u8 and s8 activations; per-tensor and per-channel weights; dynamic), each
with a batch of inputs. The end-to-end test `cli::conformance_every_model_format_matches_the_onnx_reference`
runs every case through the sandbox and compares.

    python3 models/pipeline/conformance.py      # rewrites tests/fixtures/conformance/

The reference is ONNX's own: `onnx.reference.ReferenceEvaluator`, with the com.microsoft
QOperator ops defined below by their documented meaning (dequantize, the float op, quantize).
onnxruntime's outputs are saved too (`<case>.onnxruntime.npy`), but they are not the reference:
its fused integer kernels round differently, and on x86 its u8 x s8 products can saturate.
Each case's tolerance, in cases.json:
- float models: 1e-5 of the output's largest magnitude (engines sum in other orders);
- statically quantized models: one step of the output's final DequantizeLinear per
  requantizing node (an engine that fuses a layer into integer kernels may round it one step
  apart, and layers add up);
- dynamically quantized models: 1e-4 of the output's largest magnitude (inputs are quantized
  at run time by one formula; only float rounding may differ).
"""
import json
import os

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper
from onnx.reference import ReferenceEvaluator
from onnx.reference.op_run import OpRun
from onnxruntime.quantization import (CalibrationDataReader, QuantFormat, QuantType, quantize_dynamic,
                                      quantize_static)

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "..", "..", "tests", "fixtures", "conformance")
BATCH = 8


def weights(rng, name, shape):
    return numpy_helper.from_array(rng.normal(0, 0.5, shape).astype(np.float32), name)


def mlp(rng):
    """Gemm → Relu → MatMul + Add → Sigmoid: a classifier head."""
    nodes = [
        helper.make_node("Gemm", ["x", "w1", "b1"], ["h"], transB=1),
        helper.make_node("Relu", ["h"], ["r"]),
        helper.make_node("MatMul", ["r", "w2"], ["m"]),
        helper.make_node("Add", ["m", "b2"], ["logits"]),
        helper.make_node("Sigmoid", ["logits"], ["y"]),
    ]
    inits = [weights(rng, "w1", [16, 12]), weights(rng, "b1", [16]), weights(rng, "w2", [16, 4]),
             weights(rng, "b2", [4])]
    return nodes, inits, [1, 12], [1, 4]


def cnn(rng):
    """Conv → Relu → Conv → residual Add and Mul → pools → Concat → Gemm."""
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"], pads=[1, 1, 1, 1]),
        helper.make_node("Add", ["c2", "r1"], ["sum"]),
        helper.make_node("Mul", ["sum", "r1"], ["product"]),
        helper.make_node("AveragePool", ["product"], ["pooled"], kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("LeakyRelu", ["pooled"], ["leaky"], alpha=0.1),
        helper.make_node("Sigmoid", ["leaky"], ["gate"]),
        helper.make_node("Concat", ["gate", "leaky"], ["both"], axis=1),
        helper.make_node("MaxPool", ["both"], ["maxed"], kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("GlobalAveragePool", ["maxed"], ["global"]),
        helper.make_node("Flatten", ["global"], ["flat"]),
        helper.make_node("Gemm", ["flat", "wg", "bg"], ["y"], transB=1),
    ]
    inits = [weights(rng, "w1", [4, 1, 3, 3]), weights(rng, "b1", [4]), weights(rng, "w2", [4, 4, 3, 3]),
             weights(rng, "b2", [4]), weights(rng, "wg", [3, 8]), weights(rng, "bg", [3])]
    return nodes, inits, [1, 1, 8, 8], [1, 3]


class Calibration(CalibrationDataReader):
    def __init__(self, rng, shape):
        self.batches = iter([{"x": rng.normal(0, 1, shape).astype(np.float32)} for _ in range(16)])

    def get_next(self):
        return next(self.batches, None)


# The com.microsoft QOperator ops, for ReferenceEvaluator: dequantize, the float op, quantize.
def dq(x, s, z):
    z = 0 if z is None else z.astype(np.float32)
    return (x.astype(np.float32) - z) * s

def q(y, s, z):
    dt = np.uint8 if z is None or z.dtype == np.uint8 else np.int8
    info = np.iinfo(dt)
    z0 = 0 if z is None else z.astype(np.float32)
    return np.clip(np.rint(y / s) + z0, info.min, info.max).astype(dt)

class _Q(OpRun):
    op_domain = "com.microsoft"

class QLinearAdd(_Q):
    def _run(self, a, sa, za, b, sb, zb, sc, zc=None):
        return (q(dq(a, sa, za) + dq(b, sb, zb), sc, zc),)

class QLinearMul(_Q):
    def _run(self, a, sa, za, b, sb, zb, sc, zc=None):
        return (q(dq(a, sa, za) * dq(b, sb, zb), sc, zc),)

class QLinearSigmoid(_Q):
    def _run(self, x, sx, zx, sy, zy=None):
        return (q(1 / (1 + np.exp(-dq(x, sx, zx))), sy, zy),)

class QLinearLeakyRelu(_Q):
    def _run(self, x, sx, zx, sy, zy=None, alpha=0.01):
        v = dq(x, sx, zx)
        return (q(np.where(v >= 0, v, v * alpha), sy, zy),)

class QLinearGlobalAveragePool(_Q):
    def _run(self, x, sx, zx, sy, zy=None, channels_last=0):
        v = dq(x, sx, zx)
        return (q(v.mean(axis=tuple(range(2, v.ndim)), keepdims=True), sy, zy),)

class QLinearAveragePool(_Q):
    def _run(self, x, sx, zx, sy, zy=None, kernel_shape=None, strides=None, pads=None, auto_pad=None,
             ceil_mode=0, count_include_pad=0, channels_last=0):
        v = dq(x, sx, zx)
        (kh, kw), (sh, sw) = kernel_shape, strides
        assert not pads or not any(pads), pads
        n, c, h, w = v.shape
        oh, ow = (h - kh) // sh + 1, (w - kw) // sw + 1
        out = np.zeros((n, c, oh, ow), np.float32)
        for i in range(oh):
            for j in range(ow):
                out[:, :, i, j] = v[:, :, i * sh:i * sh + kh, j * sw:j * sw + kw].mean(axis=(2, 3))
        return (q(out, sy, zy),)

class QLinearConcat(_Q):
    def _run(self, sy, zy, *rest, axis=None):
        parts = [dq(rest[i], rest[i + 1], rest[i + 2]) for i in range(0, len(rest), 3)]
        return (q(np.concatenate(parts, axis=axis), sy, zy),)

class QGemm(_Q):
    def _run(self, a, sa, za, b, sb, zb, c=None, sy=None, zy=None, alpha=1.0, transA=0, transB=0):
        A = dq(a, sa, za)
        sb_ = sb.reshape(-1, 1) if (transB and sb.size > 1) else sb
        zb_ = None if zb is None else (zb.reshape(-1, 1) if (transB and zb.size > 1) else zb)
        B = dq(b, sb_, zb_)
        A = A.T if transA else A
        B = B.T if transB else B
        y = alpha * (A @ B)
        if c is not None:
            y = y + c.astype(np.float32) * (sa * sb)
        return (y,) if sy is None else (q(y, sy, zy),)

CONTRIB = [QLinearAdd, QLinearMul, QLinearSigmoid, QLinearLeakyRelu, QLinearGlobalAveragePool, QLinearAveragePool,
           QLinearConcat, QGemm]


def reference(model, xs):
    """ONNX's reference outputs. Its DequantizeLinear starts at opset 19; the quantizer writes
    opset 17, and the ops it uses mean the same in both."""
    model = onnx.ModelProto.FromString(model.SerializeToString())
    for imp in model.opset_import:
        if imp.domain in ("", "ai.onnx"):
            imp.version = 21
    evaluator = ReferenceEvaluator(model, new_ops=CONTRIB)
    return np.concatenate([evaluator.run(None, {"x": x})[0] for x in xs])


def requantizing_nodes(model):
    return sum(n.op_type == "QuantizeLinear" or n.op_type.startswith("QLinear") or n.op_type == "QGemm"
               for n in model.graph.node)


def output_step(model):
    """The scale of the DequantizeLinear that produces the graph's output, if one does."""
    out = model.graph.output[0].name
    last = next(n for n in model.graph.node if out in n.output)
    if last.op_type != "DequantizeLinear":
        return None
    scale = next(i for i in model.graph.initializer if i.name == last.input[1])
    return float(numpy_helper.to_array(scale).reshape(-1)[0])


def main():
    os.makedirs(OUT, exist_ok=True)
    cases = []
    for family, build in [("mlp", mlp), ("cnn", cnn)]:
        rng = np.random.default_rng(0)
        nodes, inits, in_shape, out_shape = build(rng)
        graph = helper.make_graph(nodes, family, [helper.make_tensor_value_info("x", TensorProto.FLOAT, in_shape)],
                                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, out_shape)], inits)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
        model.ir_version = 8
        onnx.checker.check_model(model)
        float_path = os.path.join(OUT, f"{family}-float.onnx")
        onnx.save(model, float_path)
        variants = [(f"{family}-float", float_path, "float")]
        for fmt in ["QOperator", "QDQ"]:
            for activations in [QuantType.QUInt8, QuantType.QInt8]:
                for per_channel in [False, True]:
                    name = f"{family}-{fmt.lower()}-{'u8' if activations == QuantType.QUInt8 else 's8'}" \
                           f"{'-per-channel' if per_channel else ''}"
                    path = os.path.join(OUT, f"{name}.onnx")
                    quantize_static(float_path, path, Calibration(rng, in_shape),
                                    quant_format=getattr(QuantFormat, fmt), activation_type=activations,
                                    weight_type=QuantType.QInt8, per_channel=per_channel)
                    variants.append((name, path, "static"))
        if family == "mlp":
            for weight_type in [QuantType.QUInt8, QuantType.QInt8]:
                name = f"mlp-dynamic-{'u8' if weight_type == QuantType.QUInt8 else 's8'}"
                path = os.path.join(OUT, f"{name}.onnx")
                quantize_dynamic(float_path, path, weight_type=weight_type)
                variants.append((name, path, "dynamic"))

        batch = rng.normal(0, 1, [BATCH] + in_shape).astype(np.float32)
        batch_name = f"{family}.batch.jsonl"
        with open(os.path.join(OUT, batch_name), "w") as f:
            for x in batch:
                tensor = {"name": "x", "shape": list(x.shape), "dtype": "f32", "data": [float(v) for v in x.ravel()]}
                f.write(json.dumps({"inputs": [tensor]}) + "\n")
        for name, path, kind in variants:
            quantized = onnx.load(path)
            expected = reference(quantized, batch)
            np.save(os.path.join(OUT, f"{name}.expected.npy"), expected.astype(np.float32))
            session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
            by_ort = np.concatenate([session.run(None, {"x": x})[0] for x in batch])
            np.save(os.path.join(OUT, f"{name}.onnxruntime.npy"), by_ort)
            scale = max(float(np.abs(expected).max()), 1e-6)
            step = output_step(quantized) if kind == "static" else None
            tolerance = {"float": 1e-5 * scale, "static": step and step * requantizing_nodes(quantized),
                         "dynamic": 1e-4 * scale}[kind]
            ops = sorted({("com.microsoft::" if n.domain == "com.microsoft" else "") + n.op_type
                          for n in quantized.graph.node})
            cases.append({"name": name, "model": f"{name}.onnx", "batch": batch_name, "kind": kind,
                          "expected": f"{name}.expected.npy", "onnxruntime": f"{name}.onnxruntime.npy",
                          "step": step, "tolerance": tolerance,
                          "onnxruntime_vs_reference": float(np.abs(by_ort - expected).max()), "ops": ops})
    with open(os.path.join(OUT, "cases.json"), "w") as f:
        json.dump(cases, f, indent=1)
        f.write("\n")
    print(f"{len(cases)} cases in {os.path.relpath(OUT)}")


if __name__ == "__main__":
    main()

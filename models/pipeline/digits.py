"""Digits models (sklearn's load_digits, 8x8, values 0..16).

digits-small: MLP 64-32-10, static int8 QDQ (per-channel weights, uint8 activations, calibrated on
              the train split with onnxruntime.quantization.quantize_static).
digits-large: MLP 64-256-128-10, fp32.
Both: input pixels float32 [1, 64] raw 0..16 (scaled by 1/16 inside the graph), temperature-scaled
softmax fitted on the validation split. Training data is augmented with 1-pixel shifts.
"""
from __future__ import annotations

import numpy as np
from onnx import TensorProto, helper

import golden
import nn
from common import (CACHE, LABELS, SEED, accuracy, best_local_share, cascade_curve, ece,
                    io_spec, load_split, save_onnx)
from graphs import G

SMALL_HIDDEN = (32,)
LARGE_HIDDEN = (256, 128)


def xy(split):
    rows = load_split("digits", split)
    return (np.array([r["pixels"] for r in rows], np.float32),
            np.array([int(r["label"]) for r in rows]))


def augment(X, y):
    """Original images plus 1-pixel shifts up/down/left/right (zero fill)."""
    imgs = X.reshape(-1, 8, 8)
    out = [imgs]
    for dy, dx in [(1, 0), (-1, 0), (0, 1), (0, -1)]:
        s = np.roll(imgs, (dy, dx), axis=(1, 2))
        if dy == 1:
            s[:, 0, :] = 0
        if dy == -1:
            s[:, -1, :] = 0
        if dx == 1:
            s[:, :, 0] = 0
        if dx == -1:
            s[:, :, -1] = 0
        out.append(s)
    return np.concatenate(out).reshape(-1, 64), np.tile(y, len(out))


def train_mlp(hidden, X, y, seed):
    from sklearn.neural_network import MLPClassifier

    return MLPClassifier(hidden, alpha=1e-3, max_iter=500, random_state=seed, early_stopping=False).fit(X / 16.0, y)


def mlp_logits(m, X):
    h = X / 16.0
    for i, (W, b) in enumerate(zip(m.coefs_, m.intercepts_)):
        h = h @ W + b
        if i < len(m.coefs_) - 1:
            h = np.maximum(h, 0)
    return h


def mlp_graph(m, T):
    g = G()
    h = g.op("Mul", ["pixels", g.const(np.float32(1.0 / 16.0), "scale")])
    n = len(m.coefs_)
    for i, (W, b) in enumerate(zip(m.coefs_, m.intercepts_)):
        if i == n - 1:
            W, b = W / T, b / T
        h = g.op("Add", [g.op("MatMul", [h, g.const(W.astype(np.float32), f"W{i}")]),
                         g.const(b.astype(np.float32), f"b{i}")])
        if i < n - 1:
            h = g.op("Relu", [h])
    g.op("Softmax", [h], out="probs", axis=-1)
    return g.model("digits_mlp", [helper.make_tensor_value_info("pixels", TensorProto.FLOAT, [1, 64])],
                   [helper.make_tensor_value_info("probs", TensorProto.FLOAT, [1, 10])])


def quantize_qdq(fp32_model, calib: np.ndarray):
    """Static int8 QDQ: per-channel int8 weights, uint8 activations (MinMax on `calib`)."""
    import onnx
    from onnxruntime.quantization import (CalibrationDataReader, QuantFormat, QuantType,
                                          quantize_static)

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.it = iter([{"pixels": x[None].astype(np.float32)} for x in calib])

        def get_next(self):
            return next(self.it, None)

    src, dst = CACHE / "digits-small-fp32.onnx", CACHE / "digits-small-int8.onnx"
    onnx.save(fp32_model, str(src))
    quantize_static(str(src), str(dst), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                    op_types_to_quantize=["MatMul", "Add", "Relu"])
    return onnx.load(str(dst))


def run(metrics: dict) -> None:
    from common import ort_session

    Xtr, ytr = xy("train")
    Xva, yva = xy("val")
    Xte, yte = xy("test")
    Xa, ya = augment(Xtr, ytr)
    spec_in = [io_spec("pixels", "float32", [1, 64])]
    spec_out = [io_spec("probs", "float32", [1, 10])]
    probs = {}
    for name, hidden in [("digits-large", LARGE_HIDDEN), ("digits-small", SMALL_HIDDEN)]:
        m = train_mlp(hidden, Xa, ya, SEED % 1000)
        T = nn.fit_temperature(mlp_logits(m, Xva), yva)
        model = mlp_graph(m, T)
        if name == "digits-small":
            model = quantize_qdq(model, Xtr)
            # refit the temperature on the quantised model's validation logits
            tmp = CACHE / "digits-small-int8.onnx"
            sess = ort_session(tmp)
            pv = np.concatenate([sess.run(None, {"pixels": x[None]})[0] for x in Xva])
            T2 = nn.fit_temperature(np.log(np.clip(pv, 1e-30, None)), yva)
            model = quantize_qdq(mlp_graph(m, T * T2), Xtr)
            T = T * T2
        fmt = "int8 QDQ (static, per-channel)" if name == "digits-small" else "fp32"
        path = save_onnx(model, name, LABELS["digits"], spec_in, spec_out,
                         extra={"format": fmt, "hidden": list(hidden), "temperature": round(float(T), 6),
                                "input_scale": "raw 0..16, divided by 16 inside the graph"})
        sess = ort_session(path)
        p = {s: np.concatenate([sess.run(None, {"pixels": x[None]})[0] for x in X])
             for s, X in [("val", Xva), ("test", Xte)]}
        probs[name] = p
        golden.digits(name)
        metrics[name] = {"test": {"accuracy": accuracy(p["test"], yte), "ece": ece(p["test"], yte),
                                  "n": len(yte)},
                         "val": {"accuracy": accuracy(p["val"], yva), "ece": ece(p["val"], yva)},
                         "temperature": T, "bytes": path.stat().st_size, "format": fmt}
        print(f"[digits] {name}: test acc {metrics[name]['test']['accuracy']:.4f} "
              f"ece {metrics[name]['test']['ece']:.4f} ({path.stat().st_size} bytes)")
    ps, pl = probs["digits-small"]["test"], probs["digits-large"]["test"]
    la = accuracy(pl, yte)
    metrics["digits-small"]["cascade_test"] = [{"local_share": s, "accuracy": a}
                                               for _, s, a in cascade_curve(ps, pl, yte)]
    metrics["digits-small"]["local_share_at_100pct_of_large"] = best_local_share(ps, pl, yte, la)
    metrics["digits-small"]["local_share_at_99pct_of_large"] = best_local_share(ps, pl, yte, 0.99 * la)
    metrics["digits-small"]["local_share_at_97pct_of_large"] = best_local_share(ps, pl, yte, 0.97 * la)

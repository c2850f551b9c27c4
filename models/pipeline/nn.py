"""A tiny deterministic numpy trainer: softmax regression or a one-hidden-layer MLP, trained with
Adam on soft targets (distillation: a mix of the teacher's probabilities and the gold label),
early-stopped on validation loss. Also temperature scaling."""
from __future__ import annotations

import numpy as np


def softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(1, keepdims=True)


class Head:
    """logits = relu(x W1 + b1) W2 + b2 (hidden > 0) or x W2 + b2 (hidden == 0)."""

    def __init__(self, params: dict[str, np.ndarray]):
        self.p = params

    @property
    def hidden(self) -> int:
        return 0 if "W1" not in self.p else self.p["W1"].shape[1]

    def logits(self, x: np.ndarray) -> np.ndarray:
        h = x
        if "W1" in self.p:
            h = np.maximum(x @ self.p["W1"] + self.p["b1"], 0.0)
        return h @ self.p["W2"] + self.p["b2"]

    def probs(self, x: np.ndarray, T: float = 1.0) -> np.ndarray:
        return softmax(self.logits(x) / T)


def soft_targets(y: np.ndarray, C: int, teacher: np.ndarray | None, alpha: float,
                 smooth: float = 0.0) -> np.ndarray:
    onehot = np.eye(C, dtype=np.float64)[y]
    if smooth:
        onehot = onehot * (1 - smooth) + smooth / C
    if teacher is None or alpha == 0:
        return onehot
    return alpha * teacher + (1 - alpha) * onehot


def train_head(x, t, xv, yv, hidden=0, l2=1e-4, lr=3e-3, epochs=200, batch=256, seed=0,
               dropout=0.0, patience=20, tv=None, sample_weight=None):
    """Train on soft targets t [n, C]; early stop on validation NLL against gold yv
    (or soft tv if given). Returns (Head, info)."""
    rng = np.random.default_rng(seed)
    n, d = x.shape
    C = t.shape[1]
    p = {}
    if hidden:
        p["W1"] = rng.normal(0, np.sqrt(2.0 / d), (d, hidden))
        p["b1"] = np.zeros(hidden)
        p["W2"] = rng.normal(0, np.sqrt(1.0 / hidden), (hidden, C))
    else:
        p["W2"] = np.zeros((d, C))
    p["b2"] = np.zeros(C)
    m = {k: np.zeros_like(v) for k, v in p.items()}
    v2 = {k: np.zeros_like(v) for k, v in p.items()}
    sw = np.ones(n) if sample_weight is None else sample_weight
    step = 0
    best, best_p, bad, best_ep = np.inf, None, 0, 0
    for ep in range(epochs):
        perm = rng.permutation(n)
        for s in range(0, n, batch):
            idx = perm[s:s + batch]
            xb, tb, wb = x[idx], t[idx], sw[idx]
            if hidden:
                a = xb @ p["W1"] + p["b1"]
                h = np.maximum(a, 0.0)
                if dropout:
                    keep = (rng.random(h.shape) >= dropout) / (1 - dropout)
                    h = h * keep
                z = h @ p["W2"] + p["b2"]
            else:
                z = xb @ p["W2"] + p["b2"]
            g = (softmax(z) - tb) * wb[:, None] / wb.sum()
            grads = {"b2": g.sum(0)}
            if hidden:
                grads["W2"] = h.T @ g + l2 * p["W2"]
                gh = g @ p["W2"].T
                if dropout:
                    gh = gh * keep
                ga = gh * (a > 0)
                grads["W1"] = xb.T @ ga + l2 * p["W1"]
                grads["b1"] = ga.sum(0)
            else:
                grads["W2"] = xb.T @ g + l2 * p["W2"]
            step += 1
            for k in p:
                m[k] = 0.9 * m[k] + 0.1 * grads[k]
                v2[k] = 0.999 * v2[k] + 0.001 * grads[k] ** 2
                mh = m[k] / (1 - 0.9 ** step)
                vh = v2[k] / (1 - 0.999 ** step)
                p[k] = p[k] - lr * mh / (np.sqrt(vh) + 1e-8)
        pv = Head(p).probs(xv)
        if tv is not None:
            loss = float(-(tv * np.log(np.clip(pv, 1e-12, None))).sum(1).mean())
        else:
            loss = float(-np.log(np.clip(pv[np.arange(len(yv)), yv], 1e-12, None)).mean())
        if loss < best - 1e-5:
            best, best_p, bad, best_ep = loss, {k: v.copy() for k, v in p.items()}, 0, ep
        else:
            bad += 1
            if bad >= patience:
                break
    return Head(best_p), {"val_loss": best, "epoch": best_ep}


def fit_temperature(logits: np.ndarray, y: np.ndarray) -> float:
    """Temperature minimising NLL on (logits, y); golden-section search over log T."""
    def nll(logT):
        pr = softmax(logits / np.exp(logT))
        return -np.log(np.clip(pr[np.arange(len(y)), y], 1e-12, None)).mean()

    return golden_temperature(nll)


def golden_temperature(loss) -> float:
    """The temperature in [0.05, 20] minimising loss(log T): 80 steps of golden-section search."""
    lo, hi = np.log(0.05), np.log(20.0)
    g = (np.sqrt(5) - 1) / 2
    a, b = hi - g * (hi - lo), lo + g * (hi - lo)
    fa, fb = loss(a), loss(b)
    for _ in range(80):
        if fa < fb:
            hi, b, fb = b, a, fa
            a = hi - g * (hi - lo)
            fa = loss(a)
        else:
            lo, a, fa = a, b, fb
            b = lo + g * (hi - lo)
            fb = loss(b)
    return float(np.exp((lo + hi) / 2))


def train_bow_mlp(xe, xb, t, xev, xbv, yv, hidden=128, l2=1e-4, l2_bow=1e-3, lr=2e-3, lr_bow=None,
                  epochs=200, batch=256, seed=0, patience=15, use_bow=True, sample_weight=None):
    """Joint model on a pooled sentence vector xe [n, d] (dense) and the weighted bag of tokens
    xb [n, V] (scipy CSR, rows sum to 1):
        a = xe W1 + xb B1 + b1;  logits = relu(a) W2 + b2     (hidden > 0)
        logits = xe W1 + xb B1 + b1                            (hidden == 0)
    B1 is a per-token correction of the folded table, L2-regularised by l2_bow. Because the bag is
    a weighted mean, W1 and B1 fold into one token table T = E W1 + B1 (see fold()).
    Early-stops on validation NLL (gold labels). Adam; B1 updated lazily on the touched rows."""
    rng = np.random.default_rng(seed)
    n, d = xe.shape
    V = xb.shape[1]
    C = t.shape[1]
    k = hidden or C
    p = {"W1": rng.normal(0, np.sqrt(1.0 / d), (d, k)) if hidden else np.zeros((d, k)),
         "b1": np.zeros(k)}
    if hidden:
        p["W2"] = rng.normal(0, np.sqrt(2.0 / k), (k, C))
        p["b2"] = np.zeros(C)
    B1 = np.zeros((V, k))
    st = {key: (np.zeros_like(v), np.zeros_like(v)) for key, v in p.items()}
    mB, vB, tB = np.zeros((V, k)), np.zeros((V, k)), np.zeros(V, np.int64)
    lr_bow = lr if lr_bow is None else lr_bow
    sw = np.ones(n) if sample_weight is None else np.asarray(sample_weight, np.float64)

    def fwd(xe_, xb_, train_p, B):
        a = xe_ @ train_p["W1"] + train_p["b1"]
        if use_bow:
            a = a + xb_ @ B
        if not hidden:
            return a, None
        h = np.maximum(a, 0)
        return h @ train_p["W2"] + train_p["b2"], (a, h)

    best, best_state, bad, step, best_ep = np.inf, None, 0, 0, 0
    for ep in range(epochs):
        perm = rng.permutation(n)
        for s in range(0, n, batch):
            idx = perm[s:s + batch]
            xe_b, xb_b, tb, wb = xe[idx], xb[idx], t[idx], sw[idx]
            z, cache = fwd(xe_b, xb_b, p, B1)
            g = (softmax(z) - tb) * (wb / wb.sum())[:, None]
            grads = {}
            if hidden:
                a, h = cache
                grads["W2"] = h.T @ g + l2 * p["W2"]
                grads["b2"] = g.sum(0)
                ga = (g @ p["W2"].T) * (a > 0)
            else:
                ga = g
            grads["W1"] = xe_b.T @ ga + l2 * p["W1"]
            grads["b1"] = ga.sum(0)
            step += 1
            for key in p:
                m_, v_ = st[key]
                m_ *= 0.9; m_ += 0.1 * grads[key]
                v_ *= 0.999; v_ += 0.001 * grads[key] ** 2
                p[key] -= lr * (m_ / (1 - 0.9 ** step)) / (np.sqrt(v_ / (1 - 0.999 ** step)) + 1e-8)
            if use_bow:
                gB = xb_b.T @ ga  # [V, k] sparse rows
                rows = np.unique(xb_b.indices)
                gr = np.asarray(gB[rows]) + l2_bow * B1[rows]
                # lazy Adam on touched rows
                tB[rows] += 1
                mB[rows] = 0.9 * mB[rows] + 0.1 * gr
                vB[rows] = 0.999 * vB[rows] + 0.001 * gr ** 2
                tr = tB[rows][:, None]
                B1[rows] -= lr_bow * (mB[rows] / (1 - 0.9 ** tr)) / (np.sqrt(vB[rows] / (1 - 0.999 ** tr)) + 1e-8)
        zv, _ = fwd(xev, xbv, p, B1)
        pv = softmax(zv)
        loss = float(-np.log(np.clip(pv[np.arange(len(yv)), yv], 1e-12, None)).mean())
        if loss < best - 1e-5:
            best, bad, best_ep = loss, 0, ep
            best_state = ({key: v.copy() for key, v in p.items()}, B1.copy())
        else:
            bad += 1
            if bad >= patience:
                break
    p, B1 = best_state
    return {"params": p, "B1": B1 if use_bow else None, "hidden": hidden}, {"val_loss": best, "epoch": best_ep}


def bow_mlp_logits(model, xe, xb):
    p = model["params"]
    a = xe @ p["W1"] + p["b1"]
    if model["B1"] is not None:
        a = a + xb @ model["B1"]
    if not model["hidden"]:
        return a
    return np.maximum(a, 0) @ p["W2"] + p["b2"]

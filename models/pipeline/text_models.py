"""The text models: large heads (on minilm-int8 embeddings) and small static-table models.

Small model (per task), all folded into one int8 token table:
    pooled  = sum_t w_t E[t] / sum_t w_t          E: static MiniLM token table (30522 x 384),
                                                  w: IDF of the token in the task's train split
    a       = standardise(pooled) W1 + bag B1 + b1   (B1: optional learned per-token correction)
    logits  = relu(a) W2 + b2  (MLP head)  or  a (linear head);  probs = softmax(logits / T)
Since the bag is a weighted mean, T_table = (E / sd) W1 + B1 folds everything before the bias into
one table of 30522 x k rows, stored int8 with one scale per column. Trained on soft targets
alpha * teacher + (1 - alpha) * gold (distillation from the large model), temperature T fitted
on the validation split.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp

import graphs
import nn
import teacher
from common import (CACHE, LABELS, LARGE_MAX_TOKENS, SEED, SMALL_MAX_TOKENS, accuracy, ece,
                    encode, io_spec, load_split, save_onnx, small_ids)

V = 30522

# Large heads: an MLP (or LR when hidden=0) on the 384-d int8 MiniLM embedding.
LARGE_CFG = {
    "news": {"hidden": 0, "l2": 3e-3, "lr": 3e-3, "dropout": 0.0},  # logistic regression
    "sentiment": {"hidden": 256, "l2": 1e-4, "lr": 1e-3, "dropout": 0.3},
}


@dataclass
class SmallCfg:
    src: str = "pooled"        # static table: 'pooled' ("[CLS] t [SEP]" sentence embedding) or 'middle'
    weighting: str = "idf"     # 'idf' | 'sif' | 'none'
    hidden: int = 128          # 0 = linear head (table of C columns)
    bow: bool = False          # learn a per-token correction B1
    alpha: float = 0.5         # distillation weight of the teacher's probabilities
    l2: float = 1e-4
    l2_bow: float = 1e-3
    lr: float = 1e-3
    batch: int = 256
    patience: int = 15
    seeds: list = field(default_factory=lambda: [0])


SMALL_CFG = {
    "news": SmallCfg(hidden=0, alpha=0.0, lr=3e-3),
    "sentiment": SmallCfg(weighting="none", hidden=120, alpha=0.5, l2=1e-2, seeds=[0, 1, 2]),
}


def labels_of(task, rows):
    """Class indices; -1 for rows without a label (the unlabelled transfer set)."""
    return np.array([LABELS[task].index(r["label"]) if "label" in r else -1 for r in rows], np.int64)


def token_weights(seqs, kind: str, a: float = 1e-3) -> np.ndarray:
    C = bag_counts(seqs)
    if kind == "idf":
        df = np.asarray((C > 0).sum(0)).ravel()
        return (np.log((1 + len(seqs)) / (1 + df)) + 1).astype(np.float32)
    if kind == "sif":
        tf = np.asarray(C.sum(0)).ravel()
        p = (tf + 1) / (tf.sum() + V)
        return (a / (a + p)).astype(np.float32)
    return np.ones(V, np.float32)


def bag_counts(seqs):
    r = np.repeat(np.arange(len(seqs)), [len(s) for s in seqs])
    c = np.concatenate([np.asarray(s, np.int64) for s in seqs]) if seqs else np.zeros(0, np.int64)
    return sp.csr_matrix((np.ones(len(c)), (r, c)), shape=(len(seqs), V))


def bag(seqs, w):
    """Weighted bag of tokens, rows sum to 1: exactly the graph's pooling weights."""
    Cm = bag_counts(seqs).multiply(w.astype(np.float64)[None, :]).tocsr()
    s = np.asarray(Cm.sum(1)).ravel()
    return (sp.diags(1.0 / np.maximum(s, 1e-6)) @ Cm).tocsr()


# ---------------------------------------------------------------- large heads

def large_head(task: str, emb: dict, y: dict):
    cfg = LARGE_CFG[task]
    C = len(LABELS[task])
    hd, info = nn.train_head(emb["train"], nn.soft_targets(y["train"], C, None, 0), emb["val"], y["val"],
                             hidden=cfg["hidden"], l2=cfg["l2"], lr=cfg["lr"], dropout=cfg["dropout"],
                             patience=20, seed=SEED % 1000)
    T = nn.fit_temperature(hd.logits(emb["val"]), y["val"])
    return hd, T


def export_large_head(task, hd, T):
    name = f"{task}-large-head"
    save_onnx(graphs.head_graph(hd, T, 384), name, LABELS[task],
              [io_spec("embedding", "float32", [1, 384])],
              [io_spec("probs", "float32", [1, len(LABELS[task])])],
              extra={"encoder": "minilm-int8", "encoder_max_tokens": LARGE_MAX_TOKENS,
                     "temperature": round(float(T), 6),
                     "head": (f"MLP 384-{hd.hidden}-{len(LABELS[task])}" if hd.hidden
                              else f"logistic regression 384-{len(LABELS[task])}")})
    return name


# ---------------------------------------------------------------- small models

class SmallData:
    """Token ids, bags and standardised pooled static embeddings of a task's splits."""

    def __init__(self, task: str, cfg: SmallCfg, splits=("train", "val", "test"), extra_rows=None):
        self.task, self.cfg = task, cfg
        self.rows = {s: load_split(task, s) for s in splits}
        if extra_rows is not None:
            self.rows["extra"] = extra_rows
        self.ids = {s: [small_ids(i, task) for i in encode([r["text"] for r in rows])]
                    for s, rows in self.rows.items()}
        self.y = {s: labels_of(task, rows) for s, rows in self.rows.items()}
        self.E = teacher.token_table()[cfg.src]
        fit_ids = self.ids["train"] + self.ids.get("extra", [])
        self.w = token_weights(fit_ids, cfg.weighting)
        self.bags = {s: bag(ids, self.w) for s, ids in self.ids.items()}
        raw = {s: np.asarray(b @ self.E) for s, b in self.bags.items()}
        fit = np.concatenate([raw["train"]] + ([raw["extra"]] if "extra" in raw else []))
        self.mu, self.sd = fit.mean(0), fit.std(0) + 1e-6
        self.xe = {s: (x - self.mu) / self.sd for s, x in raw.items()}


def train_small(data: SmallData, teacher_train: np.ndarray | None, extra_targets=None):
    cfg, task = data.cfg, data.task
    C = len(LABELS[task])
    t = nn.soft_targets(data.y["train"], C, teacher_train, cfg.alpha)
    xe, xb = data.xe["train"], data.bags["train"]
    if "extra" in data.xe:
        # extra examples: escalations labelled by the large model (their label is the target),
        # or the unlabelled transfer set (the teacher's probabilities are the target)
        if extra_targets is None:
            extra_targets = np.eye(C)[data.y["extra"]]
        t = np.concatenate([t, extra_targets])
        xe = np.concatenate([xe, data.xe["extra"]])
        xb = sp.vstack([xb, data.bags["extra"]]).tocsr()
    best = None
    for seed in cfg.seeds:
        m, info = nn.train_bow_mlp(xe, xb, t, data.xe["val"], data.bags["val"], data.y["val"],
                                   hidden=cfg.hidden, l2=cfg.l2, l2_bow=cfg.l2_bow, lr=cfg.lr,
                                   batch=cfg.batch, patience=cfg.patience, use_bow=cfg.bow,
                                   seed=SEED % 1000 + seed)
        if best is None or info["val_loss"] < best[1]["val_loss"]:
            best = (m, info)
    return fold(best[0], data)


def fold(m, data: SmallData) -> dict:
    """Fold standardisation, W1 and B1 into one table; quantise it int8 per column; fit T on val
    with the quantised model (what ships)."""
    p = m["params"]
    table = (data.E / data.sd[None, :]) @ p["W1"]
    if m["B1"] is not None:
        table = table + m["B1"]
    b1 = p["b1"] - (data.mu / data.sd) @ p["W1"]
    q, scale = graphs.quantize_columns(table.astype(np.float32))
    out = {"q": q, "scale": scale, "weights": data.w, "b1": b1.astype(np.float32),
           "W2": p.get("W2"), "b2": p.get("b2"), "T": 1.0, "hidden": m["hidden"]}
    out["T"] = nn.fit_temperature(small_logits(out, data.bags["val"]), data.y["val"])
    return out


def small_logits(model, bags) -> np.ndarray:
    """Numpy twin of the small graph (dequantised int8 table), before the temperature."""
    table = graphs.dequant_table(model["q"], model["scale"]).astype(np.float64)
    a = np.asarray(bags @ table) + model["b1"]
    if model["W2"] is None:
        return a
    return np.maximum(a, 0) @ model["W2"] + model["b2"]


def small_probs(model, bags):
    return nn.softmax(small_logits(model, bags) / model["T"])


def export_small(task, model, name=None, out_dir=None, version=None):
    name = name or f"{task}-small"
    g = graphs.small_text_graph(model["q"], model["scale"], model["weights"], None, model["b1"],
                                model["W2"], model["b2"], model["T"])
    extra = {"temperature": round(float(model["T"]), 6),
             "table": {"rows": int(model["q"].shape[0]), "columns": int(model["q"].shape[1]),
                       "dtype": "int8"},
             "special_tokens": "none: WordPiece ids of the text without [CLS]/[SEP]; "
                               "an empty text is fed as [UNK] (100)"}
    if version is not None:
        extra["version"] = version
    return save_onnx(g, name, LABELS[task], [io_spec("input_ids", "int64", [1, "N"])],
                     [io_spec("probs", "float32", [1, len(LABELS[task])])],
                     max_tokens=SMALL_MAX_TOKENS[task], extra=extra, out_dir=out_dir)


def teacher_train_probs(task, hd, T):
    return hd.probs(teacher.embeddings(task, "train"), T)


def summary(p, y):
    return {"accuracy": accuracy(p, y), "ece": ece(p, y)}


def cache_key(*parts) -> str:
    return hashlib.sha256("|".join(map(str, parts)).encode()).hexdigest()[:16]


def save_teacher_cache(task, probs_train):
    CACHE.mkdir(parents=True, exist_ok=True)
    np.save(CACHE / f"teacher-train-probs-{task}.npy", probs_train.astype(np.float32))

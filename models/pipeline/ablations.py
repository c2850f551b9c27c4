"""Re-measures the design choices of the small text models and writes models/ABLATIONS.md.

    python3 models/pipeline/ablations.py        # ~3 min with the caches of build.py present

Not part of build.py. Every row retrains a small model with one setting changed from the shipped
configuration (text_models.SMALL_CFG) and reports validation/test accuracy, validation NLL, test
ECE with and without temperature scaling, and the cascade shares on the test split.
"""
from __future__ import annotations

import os

for _v in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_v, "1")

import dataclasses  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

import nn  # noqa: E402
import teacher  # noqa: E402
import text_models as tm  # noqa: E402
from common import (MODELS, accuracy, best_local_share, ece, load_split, nice_self,  # noqa: E402
                    nll)

ROWS = {
    "sentiment": [
        ("shipped: pooled table, uniform weights, MLP 120, alpha 0.5, L2 1e-2, 3 seeds", {}),
        ("prototype-like: IDF weights, linear head, gold labels only",
         {"weighting": "idf", "hidden": 0, "alpha": 0.0, "lr": 3e-3, "l2": 1e-4, "seeds": [0]}),
        ("IDF weights (else shipped)", {"weighting": "idf"}),
        ("SIF weights (else shipped)", {"weighting": "sif"}),
        ("linear head, table 30522 x 3 (else shipped)", {"hidden": 0, "lr": 3e-3}),
        ("MLP 64 (else shipped)", {"hidden": 64}),
        ("'middle' table: the token's hidden state (else shipped)", {"src": "middle"}),
        ("gold labels only, alpha 0 (else shipped)", {"alpha": 0.0}),
        ("alpha 0.8 (else shipped)", {"alpha": 0.8}),
        ("L2 1e-4 (else shipped)", {"l2": 1e-4}),
        ("learned per-token table correction (else shipped)", {"bow": True}),
        ("one seed (else shipped)", {"seeds": [0]}),
    ],
    "news": [
        ("shipped: pooled table, IDF weights, linear head, gold labels only", {}),
        ("uniform weights (else shipped)", {"weighting": "none"}),
        ("MLP 120 (else shipped)", {"hidden": 120, "lr": 1e-3}),
        ("distillation alpha 0.5 (else shipped)", {"alpha": 0.5}),
        ("'middle' table (else shipped)", {"src": "middle"}),
    ],
}


def run_task(task, out):
    splits = ["train", "val", "test"]
    y = {s: tm.labels_of(task, load_split(task, s)) for s in splits}
    emb = {s: teacher.embeddings(task, s) for s in splits}
    hd, T = tm.large_head(task, emb, y)
    P = {s: hd.probs(emb[s], T) for s in splits}
    la, lv = accuracy(P["test"], y["test"]), accuracy(P["val"], y["val"])
    out.append(f"## {task}\n")
    out.append(f"Large model (minilm-int8 + {task}-large-head): test accuracy {la:.3f}, "
               f"validation {lv:.3f}.\n")
    out.append("| setting | val acc | val NLL | test acc | test ECE | test ECE, T=1 | "
               "share@99% test | share@100% test | share@99% val |")
    out.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    cache = {}
    for label, change in ROWS[task]:
        t0 = time.time()
        cfg = dataclasses.replace(tm.SMALL_CFG[task], **change)
        key = (cfg.src, cfg.weighting)
        if key not in cache:
            cache[key] = tm.SmallData(task, cfg)
        data = cache[key]
        data.cfg = cfg
        m = tm.train_small(data, P["train"].astype(np.float32))
        pv, pt = tm.small_probs(m, data.bags["val"]), tm.small_probs(m, data.bags["test"])
        pt1 = nn.softmax(tm.small_logits(m, data.bags["test"]))
        out.append(
            f"| {label} | {accuracy(pv, y['val']):.3f} | {nll(pv, y['val']):.3f} | "
            f"{accuracy(pt, y['test']):.3f} | {ece(pt, y['test']):.3f} | {ece(pt1, y['test']):.3f} | "
            f"{best_local_share(pt, P['test'], y['test'], 0.99 * la):.1%} | "
            f"{best_local_share(pt, P['test'], y['test'], la):.1%} | "
            f"{best_local_share(pv, P['val'], y['val'], 0.99 * lv):.1%} |")
        print(out[-1], f"({time.time() - t0:.0f}s)", flush=True)
    out.append("")


def main():
    nice_self()
    out = ["# Ablations of the small text models\n",
           "Written by `python3 models/pipeline/ablations.py`. Each row changes one setting of the "
           "shipped configuration and retrains. share@X% = largest share of requests served "
           "locally (least confident escalated) with cascade accuracy >= X% of the large model's. "
           "'test ECE, T=1' is before temperature scaling. Test splits: news 318, sentiment 3,055 "
           "texts; validation: news 212, sentiment 2,036.\n"]
    for task in ("sentiment", "news"):
        run_task(task, out)
    (MODELS / "ABLATIONS.md").write_text("\n".join(out))


if __name__ == "__main__":
    main()

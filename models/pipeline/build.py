"""Builds every artifact under models/ from pip packages only, deterministically.

    python3 models/pipeline/build.py            # everything (first run ~15 min on 2 cores)
    python3 models/pipeline/build.py news       # only some stages: data tokenize minilm news
                                                # sentiment digits cards

Installs nothing: run models/setup.sh first. Intermediate caches (MiniLM fp32 graph, static token
table, int8 sentence embeddings) go to models/.cache/ and are reused when their inputs are unchanged.
"""
from __future__ import annotations

import os

# one BLAS thread: deterministic sums, and no spinning BLAS threads on a shared 2-core machine
for _v in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_v, "1")

import json  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

from common import CACHE, MODELS, accuracy, cascade_curve, ece, load_split, nice_self  # noqa: E402

STAGES = ["data", "tokenize", "minilm", "news", "sentiment", "digits", "cards"]
METRICS = MODELS / "metrics.json"


def load_metrics() -> dict:
    return json.loads(METRICS.read_text()) if METRICS.exists() else {}


def save_metrics(m: dict) -> None:
    METRICS.write_text(json.dumps(m, indent=2, sort_keys=True) + "\n")


def text_task(task: str, metrics: dict) -> None:
    import golden
    import teacher
    import text_models as tm
    from common import ONNX_DIR

    splits = ["train", "val", "test"]
    y = {s: tm.labels_of(task, load_split(task, s)) for s in splits}
    emb = {s: teacher.embeddings(task, s) for s in splits}
    hd, T = tm.large_head(task, emb, y)
    large_name = tm.export_large_head(task, hd, T)
    P = {s: hd.probs(emb[s], T) for s in splits}
    tm.save_teacher_cache(task, P["train"])
    golden.head(large_name, emb["test"])

    cfg = tm.SMALL_CFG[task]
    data = tm.SmallData(task, cfg)
    # float32, exactly as cached for retrain.py, so that a retrain without extras reproduces it
    model = tm.train_small(data, P["train"].astype(np.float32))
    tm.export_small(task, model)
    golden.small_text(f"{task}-small", task)
    ps = {s: tm.small_probs(model, data.bags[s]) for s in splits}
    # check the exported graph against the numpy twin on the golden rows
    gold = [json.loads(l) for l in open(MODELS / "golden" / f"{task}-small.jsonl")]
    diff = float(np.abs(np.array([g["probs"] for g in gold]) - ps["test"][:len(gold)]).max())
    assert diff < 1e-4, f"{task}-small ONNX differs from its numpy twin: {diff}"

    # the untouched traffic split: a second, independent measurement (never used for any choice)
    traffic = load_split(task, "traffic")
    y["traffic"] = tm.labels_of(task, traffic)
    P["traffic"] = hd.probs(teacher.embeddings(task, "traffic"), T)
    tdata = tm.SmallData(task, cfg, splits=("train", "traffic"))
    ps["traffic"] = tm.small_probs(model, tdata.bags["traffic"])

    la = accuracy(P["test"], y["test"])
    curve = cascade_curve(ps["test"], P["test"], y["test"])
    lt = accuracy(P["traffic"], y["traffic"])
    from common import best_local_share
    metrics[f"{task}-large-head"] = {
        "test": {"accuracy": la, "ece": ece(P["test"], y["test"]), "n": len(y["test"])},
        "val": {"accuracy": accuracy(P["val"], y["val"]), "ece": ece(P["val"], y["val"])},
        "temperature": T, "bytes": (ONNX_DIR / f"{large_name}.onnx").stat().st_size}
    metrics[f"{task}-small"] = {
        "test": {"accuracy": accuracy(ps["test"], y["test"]), "ece": ece(ps["test"], y["test"]),
                 "n": len(y["test"])},
        "val": {"accuracy": accuracy(ps["val"], y["val"]), "ece": ece(ps["val"], y["val"])},
        "temperature": model["T"], "bytes": (ONNX_DIR / f"{task}-small.onnx").stat().st_size,
        "config": cfg.__dict__,
        "cascade_test": [{"local_share": s, "accuracy": a} for _, s, a in curve],
        "local_share_at_100pct_of_large": best_local_share(ps["test"], P["test"], y["test"], la),
        "local_share_at_99pct_of_large": best_local_share(ps["test"], P["test"], y["test"], 0.99 * la),
        "local_share_at_97pct_of_large": best_local_share(ps["test"], P["test"], y["test"], 0.97 * la),
        "traffic": {"accuracy": accuracy(ps["traffic"], y["traffic"]), "ece": ece(ps["traffic"], y["traffic"]),
                    "n": len(y["traffic"]), "large_accuracy": lt,
                    "cascade": [{"local_share": s, "accuracy": a}
                                for _, s, a in cascade_curve(ps["traffic"], P["traffic"], y["traffic"])],
                    "local_share_at_99pct_of_large": best_local_share(ps["traffic"], P["traffic"],
                                                                      y["traffic"], 0.99 * lt),
                    "local_share_at_100pct_of_large": best_local_share(ps["traffic"], P["traffic"],
                                                                       y["traffic"], lt)},
    }
    print(f"[{task}] large-head test acc {la:.4f} ece {metrics[f'{task}-large-head']['test']['ece']:.4f}; "
          f"small test acc {metrics[f'{task}-small']['test']['accuracy']:.4f} "
          f"ece {metrics[f'{task}-small']['test']['ece']:.4f}; cascade "
          + ", ".join(f"{s:.0%}:{a:.4f}" for _, s, a in curve))


def main(argv: list[str]) -> None:
    nice_self()
    stages = argv or STAGES
    for s in stages:
        if s not in STAGES:
            raise SystemExit(f"unknown stage {s!r}; stages: {' '.join(STAGES)}")
    CACHE.mkdir(parents=True, exist_ok=True)
    metrics = load_metrics()
    t_all = time.time()
    for stage in STAGES:
        if stage not in stages:
            continue
        t0 = time.time()
        if stage == "data":
            import data
            metrics["data"] = data.run()
        elif stage == "tokenize":
            import golden_tokenize
            golden_tokenize.run()
        elif stage == "minilm":
            import golden
            import teacher
            teacher.export_minilm()
            golden.minilm()
            teacher.token_table()
        elif stage in ("news", "sentiment"):
            text_task(stage, metrics)
        elif stage == "digits":
            import digits
            digits.run(metrics)
        elif stage == "cards":
            import cards
            cards.run(metrics)
        save_metrics(metrics)
        print(f"[build] stage {stage} done in {time.time() - t0:.0f}s", flush=True)
    print(f"[build] all requested stages done in {time.time() - t_all:.0f}s")


if __name__ == "__main__":
    main(sys.argv[1:])

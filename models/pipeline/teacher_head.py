"""The honest teacher of the cold-start loop: the large head's recipe (tm.large_head: same config,
same seed) trained on half A of the train split only (loop_data.halves), early-stopped and
temperature-fitted on the val split; on the cached int8 MiniLM embeddings.

    python3 models/pipeline/teacher_head.py [--task sentiment|news|all]

Writes models/onnx/<task>-teacher-head.onnx + .json (same interface as <task>-large-head) and
prints its accuracy. `probs(task, split)` gives the teacher's probabilities on a split, computed
with onnxruntime from the exported head on the cached embeddings (cached in models/.cache/).
"""
from __future__ import annotations

import argparse
import hashlib
import os
import sys
from pathlib import Path

for _v in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_v, "1")

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (CACHE, save_cached, LABELS, LARGE_MAX_TOKENS, ONNX_DIR, accuracy, ece, io_spec,  # noqa: E402
                    load_split, ort_session, save_onnx)

TASKS = ("sentiment", "news")


def name(task: str) -> str:
    return f"{task}-teacher-head"


def train(task: str):
    import graphs
    import loop_data
    import teacher
    import text_models as tm

    A, _ = loop_data.halves(task)
    emb = {s: teacher.embeddings(task, s) for s in ("train", "val", "test")}
    y = {s: tm.labels_of(task, load_split(task, s)) for s in ("train", "val", "test")}
    emb["train"], y["train"] = emb["train"][A], y["train"][A]
    hd, T = tm.large_head(task, emb, y)
    cfg = tm.LARGE_CFG[task]
    C = len(LABELS[task])
    save_onnx(graphs.head_graph(hd, T, 384), name(task), LABELS[task],
              [io_spec("embedding", "float32", [1, 384])], [io_spec("probs", "float32", [1, C])],
              extra={"encoder": "minilm-int8", "encoder_max_tokens": LARGE_MAX_TOKENS,
                     "temperature": round(float(T), 6),
                     "head": (f"MLP 384-{hd.hidden}-{C}" if hd.hidden else f"logistic regression 384-{C}"),
                     "trained_on": {"train_half_a": len(A)},
                     "note": "cold-start loop teacher: same recipe as the large head, trained on half A "
                             "of the train split only (models/data/README.md, 'Loop splits')",
                     "config": cfg})
    out = {}
    for s in ("val", "test"):
        p = probs(task, s)
        out[s] = {"accuracy": round(accuracy(p, y[s]), 4), "ece": round(ece(p, y[s]), 4)}
    pA = probs(task, "train")[A]
    out["train_half_a"] = {"accuracy": round(accuracy(pA, y["train"]), 4)}
    print(f"[teacher_head] {task}: T={T:.3f} {out}", flush=True)
    return out


def probs(task: str, split: str) -> np.ndarray:
    """Teacher probabilities [n, C] (float32) on a split: onnxruntime, exported head, cached embeddings."""
    import teacher

    head = ONNX_DIR / f"{name(task)}.onnx"
    emb = teacher.embeddings(task, split)
    key = hashlib.sha256(head.read_bytes() + emb.tobytes()).hexdigest()[:16]
    path = CACHE / f"teacher-probs-{task}-{split}-{key}.npy"
    if path.exists():
        return np.load(path)
    sess = ort_session(head)
    p = np.concatenate([sess.run(None, {"embedding": e[None]})[0] for e in emb]).astype(np.float32)
    save_cached(path, p)
    return p


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--task", default="all", choices=TASKS + ("all",))
    a = ap.parse_args(argv)
    for task in TASKS if a.task == "all" else (a.task,):
        train(task)


if __name__ == "__main__":
    main()

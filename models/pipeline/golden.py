"""Golden files: onnxruntime's outputs of every model on the first 100 rows of its task's test split."""
from __future__ import annotations

import numpy as np

from common import (GOLDEN, ONNX_DIR, encode, f32list, large_ids, load_split, ort_session,
                    small_ids, write_jsonl)

N_ROWS = 100


def small_text(name: str, task: str) -> None:
    rows = load_split(task, "test")[:N_ROWS]
    sess = ort_session(ONNX_DIR / f"{name}.onnx")
    out = []
    for ids in encode([r["text"] for r in rows]):
        ids = small_ids(ids, task)
        p = sess.run(None, {"input_ids": np.asarray([ids], np.int64)})[0][0]
        out.append({"input_ids": ids, "probs": f32list(p)})
    write_jsonl(GOLDEN / f"{name}.jsonl", out)


def minilm(name: str = "minilm-int8") -> None:
    # the first 50 test rows of news and of sentiment: long and short inputs
    rows = load_split("news", "test")[:N_ROWS // 2] + load_split("sentiment", "test")[:N_ROWS // 2]
    sess = ort_session(ONNX_DIR / f"{name}.onnx")
    out = []
    for ids in encode([r["text"] for r in rows]):
        ids = large_ids(ids)
        a = np.asarray([ids], np.int64)
        e = sess.run(None, {"input_ids": a, "attention_mask": np.ones_like(a),
                            "token_type_ids": np.zeros_like(a)})[0][0]
        out.append({"input_ids": ids, "embedding": f32list(e)})
    write_jsonl(GOLDEN / f"{name}.jsonl", out)


def head(name: str, emb: np.ndarray) -> None:
    """emb: the int8 MiniLM embeddings of the task's test split (first rows used)."""
    sess = ort_session(ONNX_DIR / f"{name}.onnx")
    out = []
    for e in emb[:N_ROWS]:
        e = np.asarray(e, np.float32)
        p = sess.run(None, {"embedding": e[None]})[0][0]
        out.append({"embedding": f32list(e), "probs": f32list(p)})
    write_jsonl(GOLDEN / f"{name}.jsonl", out)


def digits(name: str) -> None:
    rows = load_split("digits", "test")[:N_ROWS]
    sess = ort_session(ONNX_DIR / f"{name}.onnx")
    out = []
    for r in rows:
        p = sess.run(None, {"pixels": np.asarray([r["pixels"]], np.float32)})[0][0]
        out.append({"pixels": r["pixels"], "probs": f32list(p)})
    write_jsonl(GOLDEN / f"{name}.jsonl", out)

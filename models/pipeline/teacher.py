"""The large model as a teacher: minilm-int8.onnx export, cached sentence embeddings of every split
(computed with the shipped int8 model, exactly what the large plugins will see), and the static
token table (MiniLM fp32 run on "[CLS] token [SEP]" for every vocab token).

Everything here is cached in models/.cache/, keyed by the sha256 of its inputs.
"""
from __future__ import annotations

import hashlib
import time

import numpy as np

import minilm
from common import (CACHE, save_cached, DATA, LARGE_MAX_TOKENS, ONNX_DIR, encode, io_spec, large_ids,
                    load_split, ort_session, save_onnx)

MINILM_NAME = "minilm-int8"


def _sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


def export_minilm() -> None:
    """Build the fp32 graph, check it against the numpy reference, quantize, save with sidecar."""
    import onnx

    CACHE.mkdir(parents=True, exist_ok=True)
    w = minilm.load_weights()
    fp32 = CACHE / "minilm-fp32.onnx"
    model = minilm.build_onnx(w)
    from common import strip_shapes

    fp32.write_bytes(strip_shapes(model).SerializeToString(deterministic=True))
    # verify the fp32 graph against the numpy reference, and measure the int8 loss
    texts = [r["text"] for r in load_split("news", "val")[:8] + load_split("sentiment", "val")[:24]]
    seqs = [large_ids(i) for i in encode(texts)]
    ref = minilm.embed_numpy(w, seqs)
    s32 = ort_session(fp32)
    diff = max(float(np.abs(_run(s32, sq) - r).max()) for sq, r in zip(seqs, ref))
    assert diff < 1e-4, f"fp32 ONNX graph differs from the numpy reference: {diff}"
    tmp = CACHE / "minilm-int8.tmp.onnx"
    minilm.quantize(fp32, tmp)
    q = onnx.load(str(tmp))
    s8 = ort_session(tmp)
    cos = [float(_run(s8, sq) @ r) for sq, r in zip(seqs, ref)]
    print(f"[minilm] fp32 graph vs numpy max |diff| {diff:.2e}; int8 cosine to fp32: "
          f"mean {np.mean(cos):.4f} min {np.min(cos):.4f}")
    ids_spec = [io_spec(n, "int64", [1, "N"]) for n in ("input_ids", "attention_mask", "token_type_ids")]
    save_onnx(q, MINILM_NAME, [], ids_spec, [io_spec("embedding", "float32", [1, 384])],
              max_tokens=LARGE_MAX_TOKENS,
              extra={"special_tokens": {"cls": 101, "sep": 102, "unk": 100, "pad": 0},
                     "pooling": "attention-masked mean, then L2 normalisation",
                     "int8_cosine_to_fp32": {"mean": round(float(np.mean(cos)), 4),
                                              "min": round(float(np.min(cos)), 4)}})
    tmp.unlink()


def _run(sess, seq):
    a = np.asarray([seq], np.int64)
    return sess.run(None, {"input_ids": a, "attention_mask": np.ones_like(a),
                           "token_type_ids": np.zeros_like(a)})[0][0]


def embeddings(task: str, split: str, rows: list[dict] | None = None, tag: str | None = None,
               threads: int = 2) -> np.ndarray:
    """int8 MiniLM embeddings [n, 384] of a split (or of `rows`), cached."""
    model = ONNX_DIR / f"{MINILM_NAME}.onnx"
    if rows is None:
        src = DATA / task / f"{split}.jsonl"
        key = hashlib.sha256(src.read_bytes()).hexdigest()[:16]
        rows = load_split(task, split)
    else:
        key = hashlib.sha256("\n".join(r["text"] for r in rows).encode()).hexdigest()[:16]
    path = CACHE / f"emb-{tag or task + '-' + split}-{key}-{_sha(model)}.npy"
    if path.exists():
        return np.load(path)
    t0 = time.time()
    sess = ort_session(model, threads=threads)
    seqs = [large_ids(i) for i in encode([r["text"] for r in rows])]
    out = np.stack([_run(sess, s) for s in seqs]).astype(np.float32)
    save_cached(path, out)
    print(f"[teacher] embedded {task}/{split} ({len(rows)} texts) in {time.time() - t0:.0f}s")
    return out


def token_table() -> dict[str, np.ndarray]:
    """Static token table: MiniLM (fp32 reference) on "[CLS] t [SEP]" for every vocab id t.
    Returns 'pooled' (the sentence embedding, L2-normalised) and 'middle' (the hidden state of t)."""
    path = CACHE / "token-table.npz"
    if path.exists():
        z = np.load(path)
        return {k: z[k] for k in z.files}
    t0 = time.time()
    w = minilm.load_weights()
    V = w["embeddings.word_embeddings.weight"].shape[0]
    pooled = np.zeros((V, 384), np.float32)
    middle = np.zeros((V, 384), np.float32)
    for start in range(0, V, 2048):
        ids = np.arange(start, min(V, start + 2048))
        batch = np.stack([np.full_like(ids, 101), ids, np.full_like(ids, 102)], 1)
        mask = np.ones_like(batch)
        h = minilm.forward_hidden(w, batch, mask)
        pooled[ids] = minilm.pool_normalize(h, mask)
        middle[ids] = h[:, 1]
    save_cached(path, pooled=pooled, middle=middle)
    print(f"[teacher] token table {V} x 384 in {time.time() - t0:.0f}s")
    return {"pooled": pooled, "middle": middle}

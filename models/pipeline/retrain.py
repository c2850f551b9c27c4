"""Retrain a small text model on its train split plus extra examples (the distillation loop).

    python3 models/pipeline/retrain.py --task sentiment --extra escalations.jsonl --out DIR [--version X]

--extra   JSONL; every line needs "text" and "label" (the label the large model gave, one of the
          task's labels); any other field is ignored. Blank lines are skipped.
--out     directory that receives <task>-small.onnx and <task>-small.json (same interface and
          sidecar format as models/onnx/, plus "version" and "trained_on").
--version free-form version string written to the sidecar (default: "retrained").

Prints the validation accuracy of the new model (and of the shipped one, for comparison).
Deterministic: same inputs, same files. Reuses models/.cache/ (static token table, the large
model's probabilities on the train split); if a cache is missing it is rebuilt (a few minutes).
"""
from __future__ import annotations

import argparse
import os
import sys
import time

for _v in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_v, "1")

import json  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import CACHE, LABELS, ONNX_DIR, accuracy, ece, ort_session  # noqa: E402

TEXT_TASKS = ("news", "sentiment")


def read_extra(path: Path, task: str) -> list[dict]:
    rows = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise SystemExit(f"{path}:{n}: not JSON: {e}")
            if not isinstance(obj, dict) or not isinstance(obj.get("text"), str) or "label" not in obj:
                raise SystemExit(f'{path}:{n}: needs a string "text" and a "label"')
            if obj["label"] not in LABELS[task]:
                raise SystemExit(f"{path}:{n}: label {obj['label']!r} is not one of {LABELS[task]}")
            rows.append({"text": obj["text"], "label": obj["label"]})
    return rows


def teacher_train_probs(task: str) -> np.ndarray:
    """The large model's probabilities on the train split: cached by build.py, else recomputed
    with the shipped minilm-int8.onnx and <task>-large-head.onnx."""
    path = CACHE / f"teacher-train-probs-{task}.npy"
    if path.exists():
        return np.load(path)
    import teacher

    print(f"[retrain] no cached teacher probabilities: embedding the {task} train split", flush=True)
    emb = teacher.embeddings(task, "train")
    sess = ort_session(ONNX_DIR / f"{task}-large-head.onnx")
    probs = np.concatenate([sess.run(None, {"embedding": e[None]})[0] for e in emb]).astype(np.float32)
    CACHE.mkdir(parents=True, exist_ok=True)
    np.save(path, probs)
    return probs


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--task", required=True, choices=TEXT_TASKS)
    ap.add_argument("--extra", required=True, type=Path)
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--version", default="retrained")
    a = ap.parse_args(argv)

    import text_models as tm

    t0 = time.time()
    extra = read_extra(a.extra, a.task)
    cfg = tm.SMALL_CFG[a.task]
    data = tm.SmallData(a.task, cfg, splits=("train", "val"), extra_rows=extra or None)
    model = tm.train_small(data, teacher_train_probs(a.task))
    path = tm.export_small(a.task, model, out_dir=a.out, version=a.version)
    # add provenance to the sidecar (same format as models/onnx/<task>-small.json otherwise)
    side_path = path.with_suffix(".json")
    side = json.loads(side_path.read_text())
    side["trained_on"] = {"train": len(data.rows["train"]), "extra": len(extra)}
    from common import write_sidecar

    keep = {k: v for k, v in side.items() if k not in ("labels", "max_tokens", "inputs", "outputs",
                                                       "sha256", "bytes")}
    write_sidecar(path, side["labels"], side["inputs"], side["outputs"], side.get("max_tokens"), keep)

    # validation accuracy of the exported model (onnxruntime), and of the shipped one
    from common import encode, load_split, small_ids

    val = load_split(a.task, "val")
    y = tm.labels_of(a.task, val)
    ids = [small_ids(i, a.task) for i in encode([r["text"] for r in val])]

    def run(p):
        sess = ort_session(p)
        return np.concatenate([sess.run(None, {"input_ids": np.asarray([i], np.int64)})[0] for i in ids])

    p_new = run(path)
    msg = (f"[retrain] {a.task}: {len(data.rows['train'])} train + {len(extra)} extra examples -> {path} "
           f"({path.stat().st_size} bytes) in {time.time() - t0:.0f}s\n"
           f"validation accuracy: {accuracy(p_new, y):.4f} (ece {ece(p_new, y):.4f}, n={len(y)})")
    shipped = ONNX_DIR / f"{a.task}-small.onnx"
    if shipped.exists() and shipped.resolve() != path.resolve():
        p_old = run(shipped)
        msg += f"\nshipped model validation accuracy: {accuracy(p_old, y):.4f} (ece {ece(p_old, y):.4f})"
    print(msg)


if __name__ == "__main__":
    main()

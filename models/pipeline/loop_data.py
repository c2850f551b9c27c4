"""Loop splits for the cold-start distillation loop (deterministic, fixed seeds).

    python3 models/pipeline/loop_data.py [--task sentiment|news|all] [--seed-size N] [--check-size M]
                                          [--out DIR]

The train split is cut into two stratified halves:
    half A: trains the teacher (models/onnx/<task>-teacher-head.onnx, see teacher_head.py);
            the gold seed is drawn from it;
    half B: the teacher never saw it. The check split is drawn from it (the teacher memorises its
            own training rows, so its accuracy on half A would overstate it and mis-set the
            calibration target); the rest of half B plus the traffic split is the stream.
Writes to models/data/<task>/loop/ (or --out):
    seed.jsonl    gold examples the small model trains on (half A, stratified)
    check.jsonl   gold examples for the promotion gate and threshold calibration (half B, stratified)
    stream.jsonl  (half B - check) + traffic, shuffled: the served requests. Their gold labels are
                  for reporting only; the loop never trains on them.
sentiment only, the drift scenario (topic: #DeflateGate / the Patriots / NFL, see TOPIC_RE):
    drift-seed.jsonl, drift-check.jsonl   as above, drawn from the off-topic rows only
    drift-stream.jsonl   the same requests as a stream (minus drift-check), ordered so that the
                         first half has no on-topic text; the second half holds all on-topic texts
                         mixed with the remaining off-topic ones
    drift-test-topic.jsonl   the on-topic rows of test.jsonl, with "index" = line index in it
The test split is never read for any choice here (only matched against TOPIC_RE for reporting).
"""
from __future__ import annotations

import argparse
import re
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import DATA, SEED, load_split, write_jsonl  # noqa: E402

TASKS = ("sentiment", "news")
# chosen with loop_sim.py on the validation split (see models/LOOP.md)
SIZES = {"sentiment": (300, 200), "news": (300, 200)}
TOPIC_RE = re.compile(r"deflate|patriots|brady|goodell|belichick|#nfl|super ?bowl|football", re.I)


def on_topic(text: str) -> bool:
    return TOPIC_RE.search(text) is not None


def _rng(task: str, salt: int) -> np.random.Generator:
    return np.random.default_rng(SEED + 1000 * (TASKS.index(task) + 1) + salt)


def halves(task: str) -> tuple[list[int], list[int]]:
    """Indices into train.jsonl of half A and half B: per label, a fixed permutation cut in two."""
    rows = load_split(task, "train")
    rng = _rng(task, 1)
    by = defaultdict(list)
    for i, r in enumerate(rows):
        by[r["label"]].append(i)
    a, b = [], []
    for lab in sorted(by):
        idx = np.array(by[lab])[rng.permutation(len(by[lab]))]
        k = (len(idx) + 1) // 2
        a += idx[:k].tolist()
        b += idx[k:].tolist()
    return sorted(a), sorted(b)


def stratified(rows: list[dict], idx: list[int], n: int, rng) -> list[int]:
    """n of idx, stratified by label (largest-remainder quotas), in a fixed shuffled order."""
    by = defaultdict(list)
    for i in idx:
        by[rows[i]["label"]].append(i)
    labs = sorted(by)
    exact = np.array([n * len(by[l]) / len(idx) for l in labs])
    q = np.floor(exact).astype(int)
    for j in np.argsort(-(exact - q), kind="stable")[: n - q.sum()]:
        q[j] += 1
    out = []
    for l, k in zip(labs, q):
        pool = np.array(by[l])
        out += pool[rng.permutation(len(pool))[:k]].tolist()
    return [out[j] for j in rng.permutation(len(out))]


def make(task: str, n_seed: int, n_check: int, out: Path, replica: int = 0) -> dict:
    train, traffic = load_split(task, "train"), load_split(task, "traffic")
    A, B = halves(task)
    rng = _rng(task, 2 + 100 * replica)
    seed = stratified(train, A, n_seed, rng)
    check = stratified(train, B, n_check, rng)
    cs = set(check)
    stream = [train[i] for i in B if i not in cs] + traffic
    stream = [stream[j] for j in rng.permutation(len(stream))]
    strip = lambda r: {"text": r["text"], "label": r["label"]}  # noqa: E731
    write_jsonl(out / "seed.jsonl", [strip(train[i]) for i in seed])
    write_jsonl(out / "check.jsonl", [strip(train[i]) for i in check])
    write_jsonl(out / "stream.jsonl", [strip(r) for r in stream])
    info = {"half_a": len(A), "half_b": len(B), "seed": len(seed), "check": len(check),
            "stream": len(stream)}
    if task == "sentiment":
        rng = _rng(task, 3 + 100 * replica)
        A_off = [i for i in A if not on_topic(train[i]["text"])]
        B_off = [i for i in B if not on_topic(train[i]["text"])]
        dseed = stratified(train, A_off, n_seed, rng)
        dcheck = stratified(train, B_off, n_check, rng)
        ds = set(dcheck)
        pool = [train[i] for i in B if i not in ds] + traffic
        off = [r for r in pool if not on_topic(r["text"])]
        top = [r for r in pool if on_topic(r["text"])]
        off = [off[j] for j in rng.permutation(len(off))]
        half = len(pool) // 2
        first, rest = off[:half], off[half:] + top
        rest = [rest[j] for j in rng.permutation(len(rest))]
        dstream = first + rest
        test = load_split(task, "test")
        ttop = [{"index": i, **strip(r)} for i, r in enumerate(test) if on_topic(r["text"])]
        write_jsonl(out / "drift-seed.jsonl", [strip(train[i]) for i in dseed])
        write_jsonl(out / "drift-check.jsonl", [strip(train[i]) for i in dcheck])
        write_jsonl(out / "drift-stream.jsonl", [strip(r) for r in dstream])
        write_jsonl(out / "drift-test-topic.jsonl", ttop)
        info["drift"] = {"seed": len(dseed), "check": len(dcheck), "stream": len(dstream),
                         "stream_first_half_off_topic": half, "stream_on_topic": len(top),
                         "test_on_topic": len(ttop), "test": len(test),
                         "train_on_topic": sum(on_topic(r["text"]) for r in train)}
    return info


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--task", default="all", choices=TASKS + ("all",))
    ap.add_argument("--seed-size", type=int)
    ap.add_argument("--check-size", type=int)
    ap.add_argument("--out", type=Path, help="output directory (default models/data/<task>/loop)")
    ap.add_argument("--replica", type=int, default=0,
                    help="another draw of seed/check/stream (same halves; for loop_sim.py's variance)")
    a = ap.parse_args(argv)
    for task in TASKS if a.task == "all" else (a.task,):
        ns, nc = SIZES[task]
        ns, nc = a.seed_size or ns, a.check_size or nc
        if ns + nc > 500:
            raise SystemExit(f"seed + check = {ns + nc} > 500 gold examples")
        out = a.out or DATA / task / "loop"
        print(f"[loop_data] {task} -> {out}: {make(task, ns, nc, out, a.replica)}")


if __name__ == "__main__":
    main()

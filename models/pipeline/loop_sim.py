"""Simulation of the cold-start distillation loop, run the way the Rust host runs it.

    python3 models/pipeline/loop_sim.py --task sentiment --rounds 4 [--hard] [--audit 0.1]
                                        [--scenario cold|drift] [--margin 0.0] [--set key=value ...]

Round 0: distill.py on the seed alone; its threshold is calibrated on check.jsonl.
Round r = 1..R: the live model serves slice r of the stream (R equal slices in file order).
A request escalates when its local confidence (top-1 probability, float32) < the live threshold;
the teacher (minilm-int8 + <task>-teacher-head, onnxruntime on the cached embeddings) answers it and
the answer is logged in the host's format (record 2, soft scores). With --audit p a random share p
of the confident-local requests is also sent to the teacher and logged (reason "audit").
distill.py then retrains on seed + every log so far (the same code path as its CLI: files written,
read back, ONNX exported); the candidate's threshold is calibrated on check: the LOWEST t among
{0, 1, every distinct local confidence} with cascade accuracy on check (local when conf >= t,
teacher otherwise) >= (0.99 + margin) x teacher accuracy on check. The gate promotes the candidate
when its check cascade accuracy >= the live model's (tolerance 0).
Reported per round on the test split (and val, for choices; test is never used for one):
small accuracy, cascade accuracy at the live threshold and its ratio to the teacher's, share local at
that threshold, cloud calls per 1,000 served requests, share@99% (oracle), cumulative teacher calls
(escalations + audits + the check split, labelled once).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

for _v in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_v, "1")

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))

import distill  # noqa: E402
from common import DATA, LABELS, SEED, best_local_share, load_split, read_jsonl  # noqa: E402


def calibrate(conf, local_ok, teacher_ok, target, stable=False):
    """Lowest t in {0, 1, distinct conf} with mean(local_ok[conf >= t] | teacher_ok[conf < t]) >= target.
    stable: the lowest t such that the target holds at t AND at every higher candidate (the
    noise-robust variant: a lucky dip at a low threshold is not taken).
    Returns (t, cascade accuracy at t)."""
    conf = np.asarray(conf, np.float32)
    cands = np.unique(np.concatenate([conf, np.float32([0.0, 1.0])]))  # ascending
    n = len(conf)
    accs = []
    for t in cands:
        loc = conf >= t
        accs.append((local_ok[loc].sum() + teacher_ok[~loc].sum()) / n)
    ok = np.array(accs) >= target - 1e-12
    if stable:
        ok = np.logical_and.accumulate(ok[::-1])[::-1]
    if ok.any():
        i = int(np.argmax(ok))
        return float(cands[i]), float(accs[i])
    t = np.float32(np.nextafter(np.float32(1.0), np.float32(2.0)))
    return float(t), float(teacher_ok.mean())


def calibrate_lcb(conf, local_ok, teacher_ok, factor, q=0.1, B=1000, seed=0, stable=False):
    """Lowest t whose paired-bootstrap q-quantile of [cascade accuracy - factor x teacher accuracy]
    on check is >= 0 (i.e. the target holds with probability >= 1 - q over resamples of check).
    stable: fixed-sequence testing; scan from the highest t down and stop at the first t that fails,
    so a low t that passes by luck below a failing one is never taken.
    Returns (t, cascade accuracy at t, local share at t)."""
    conf = np.asarray(conf, np.float32)
    n = len(conf)
    idx = np.random.default_rng(seed).integers(0, n, (B, n))
    cands = np.unique(np.concatenate([conf, np.float32([0.0, 1.0])]))
    best = None
    for t in (cands[::-1] if stable else cands):
        loc = conf >= t
        v = np.where(loc, local_ok, teacher_ok).astype(np.float64)
        d = v - factor * teacher_ok
        if np.quantile(d[idx].mean(1), q) >= -1e-12:
            best = (float(t), float(v.mean()), float(loc.mean()))
            if not stable:
                return best
        elif stable:
            break
    if best:
        return best
    t = np.float32(np.nextafter(np.float32(1.0), np.float32(2.0)))
    return float(t), float(teacher_ok.mean()), 0.0


def cascade(conf, local_ok, teacher_ok, t):
    loc = np.asarray(conf, np.float32) >= np.float32(t)
    return float((local_ok[loc].sum() + teacher_ok[~loc].sum()) / len(conf)), float(loc.mean())


def bootstrap_share(pl, pt, y, n=1000, seed=0, factor=0.99):
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        i = rng.integers(0, len(y), len(y))
        ta = float((pt[i].argmax(1) == y[i]).mean())
        out.append(best_local_share(pl[i], pt[i], y[i], factor * ta))
    return np.percentile(out, [2.5, 50, 97.5]).tolist()


class Teacher:
    """Teacher probabilities by text (the cached embeddings of every split of the task)."""

    def __init__(self, task):
        import teacher_head

        self.by_text = {}
        for s in ("train", "val", "test", "traffic"):
            P = teacher_head.probs(task, s)
            for r, p in zip(load_split(task, s), P):
                self.by_text[r["text"]] = p

    def __call__(self, texts):
        return np.stack([self.by_text[t] for t in texts]).astype(np.float32)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--task", default="sentiment", choices=distill.TASKS)
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--hard", action="store_true")
    ap.add_argument("--audit", type=float, default=0.0)
    ap.add_argument("--scenario", default="cold", choices=("cold", "drift"))
    ap.add_argument("--margin", type=float, default=0.0, help="calibrate to (0.99 + margin) x teacher")
    ap.add_argument("--rule", default="lowest", choices=("lowest", "stable"),
                    help="lowest: the lowest t meeting the target; stable: the lowest t from which on "
                         "every higher t meets it too")
    ap.add_argument("--lcb", type=float, default=0.0,
                    help="calibrate with a paired bootstrap on check: the target must hold at this "
                         "lower quantile (e.g. 0.1); 0 = the plain rule")
    ap.add_argument("--lcb-rule", default="lowest", choices=("lowest", "stable"),
                    help="with --lcb: the lowest passing t, or fixed-sequence from the top (stable)")
    ap.add_argument("--gate", default="accuracy", choices=("accuracy", "cost", "either"),
                    help="accuracy: promote when check cascade accuracy >= live's; cost: promote when the "
                         "candidate met the calibration target and serves >= live's check share locally; "
                         "either: promote when one of the two holds")
    ap.add_argument("--loop-dir", type=Path, help="default models/data/<task>/loop")
    ap.add_argument("--set", action="append", default=[], help="LoopCfg override key=value")
    ap.add_argument("--bootstrap", type=int, default=1000)
    ap.add_argument("--json", type=Path, help="write the results here")
    ap.add_argument("--verify-onnx", action="store_true", help="check the exported r0 ONNX against numpy")
    a = ap.parse_args(argv)
    try:
        os.nice(10)
    except OSError:
        pass
    import text_models as tm

    t_start = time.time()
    task, L = a.task, LABELS[a.task]
    cfg = distill.LOOP_CFG[task]
    for kv in a.set:
        k, v = kv.split("=", 1)
        cur = getattr(cfg, k)
        cfg = replace(cfg, **{k: (v.lower() in ("1", "true", "yes")) if isinstance(cur, bool)
                              else json.loads(v) if isinstance(cur, list) else type(cur)(v)})
    ld = a.loop_dir or DATA / task / "loop"
    pre = "drift-" if a.scenario == "drift" else ""
    seed_path = ld / f"{pre}seed.jsonl"
    check = read_jsonl(ld / f"{pre}check.jsonl")
    stream = read_jsonl(ld / f"{pre}stream.jsonl")
    teach = Teacher(task)
    lab = lambda rows: np.array([L.index(r["label"]) for r in rows])  # noqa: E731
    test, val = load_split(task, "test"), load_split(task, "val")
    y = {"check": lab(check), "test": lab(test), "val": lab(val)}
    texts = {"check": [r["text"] for r in check], "test": [r["text"] for r in test],
             "val": [r["text"] for r in val]}
    PT = {k: teach(v) for k, v in texts.items()}
    t_ok = {k: PT[k].argmax(1) == y[k] for k in PT}
    t_acc = {k: float(t_ok[k].mean()) for k in PT}
    topic_idx = None
    if a.scenario == "drift":
        topic_idx = np.array([r["index"] for r in read_jsonl(ld / "drift-test-topic.jsonl")])
        off_idx = np.setdiff1d(np.arange(len(test)), topic_idx)
    factor = 0.99 + a.margin
    R = a.rounds
    bounds = np.linspace(0, len(stream), R + 1).round().astype(int)
    work = Path(tempfile.mkdtemp(prefix=f"loop-{task}-"))
    rng = np.random.default_rng(SEED + 11)
    say = lambda m: print(m, file=sys.stderr, flush=True)  # noqa: E731
    quiet = lambda m: None  # noqa: E731

    def evaluate(model, feats):
        P = {k: tm.small_probs(model, feats.bags(v)).astype(np.float32) for k, v in texts.items()}
        return P

    def retrain(r, logs):
        res, model, feats, info = distill.run(task, seed_path, logs, work / f"r{r}", f"0.{r}.0",
                                              hard=a.hard, cfg=cfg, log_fn=quiet)
        return res, model, feats, info

    res, model, feats, info = retrain(0, [])
    if a.verify_onnx:
        from common import ort_session, small_ids, encode
        sess = ort_session(res["model"])
        ids = [small_ids(i, task) for i in encode(texts["test"][:200])]
        po = np.concatenate([sess.run(None, {"input_ids": np.asarray([i], np.int64)})[0] for i in ids])
        pn = tm.small_probs(model, feats.bags(texts["test"][:200]))
        say(f"[sim] exported ONNX vs numpy twin, 200 test rows: max |diff| {np.abs(po - pn).max():.2e}")
    live = {"model": model, "feats": feats, "P": evaluate(model, feats), "round": 0}
    lc = live["P"]["check"]
    def calib(P):
        ok = P.argmax(1) == y["check"]
        if a.lcb:
            return calibrate_lcb(P.max(1), ok, t_ok["check"], factor, q=a.lcb, stable=a.lcb_rule == "stable")
        t, acc = calibrate(P.max(1), ok, t_ok["check"], factor * t_acc["check"], a.rule == "stable")
        return t, acc, cascade(P.max(1), ok, t_ok["check"], t)[1]

    live["t"], live["check_acc"], live["check_share"] = calib(lc)
    rows, logs, cum = [], [], len(check)
    retrain_s = [res["seconds"]]

    def row(r, served=None, promoted=None, cand=None):
        P = live["P"]
        out = {"round": r, "live_from": live["round"], "threshold": live["t"], "promoted": promoted,
               "check_cascade": live["check_acc"], "cum_teacher_calls": cum}
        for k in ("test", "val"):
            ok = P[k].argmax(1) == y[k]
            acc, share = cascade(P[k].max(1), ok, t_ok[k], live["t"])
            out[k] = {"small_acc": float(ok.mean()), "cascade_acc": acc, "ratio": acc / t_acc[k],
                      "share_local": share,
                      "share99": best_local_share(P[k], PT[k], y[k], 0.99 * t_acc[k])}
        if topic_idx is not None:
            ok = P["test"].argmax(1) == y["test"]
            conf = P["test"].max(1)
            for name, idx in (("topic", topic_idx), ("off_topic", off_idx)):
                acc, share = cascade(conf[idx], ok[idx], t_ok["test"][idx], live["t"])
                out["test"][name] = {"small_acc": float(ok[idx].mean()), "cascade_acc": acc,
                                     "teacher_acc": float(t_ok["test"][idx].mean()), "share_local": share}
        if served:
            out["served"] = served
        if cand:
            out["candidate"] = cand
        rows.append(out)
        tt = out["test"]
        msg = (f"[sim] r{r}: live=r{live['round']} t={live['t']:.3f} small {tt['small_acc']:.4f} "
               f"cascade {tt['cascade_acc']:.4f} ({tt['ratio']:.1%}) local {tt['share_local']:.1%} "
               f"share@99 {tt['share99']:.1%} | val ratio {out['val']['ratio']:.1%} local "
               f"{out['val']['share_local']:.1%} share@99 {out['val']['share99']:.1%} | cum calls {cum}")
        if served:
            msg += f" | served: cloud/1000 {served['cloud_per_1000']:.0f} acc {served['accuracy']:.4f}"
        if "topic" in tt:
            msg += (f" | topic small {tt['topic']['small_acc']:.3f} cascade {tt['topic']['cascade_acc']:.3f} "
                    f"local {tt['topic']['share_local']:.1%}; off {tt['off_topic']['small_acc']:.3f}")
        say(msg)

    row(0)
    for r in range(1, R + 1):
        sl = stream[bounds[r - 1]:bounds[r]]
        st = [x["text"] for x in sl]
        pl = tm.small_probs(live["model"], live["feats"].bags(st)).astype(np.float32)
        conf = pl.max(1)
        esc = conf < np.float32(live["t"])
        aud = (~esc) & (rng.random(len(sl)) < a.audit)
        pt = teach(st)
        ys = lab(sl)
        answer = np.where(esc, pt.argmax(1), pl.argmax(1))
        path = work / f"escalations-r{r}.jsonl"
        with open(path, "w", encoding="utf-8") as f:
            for i in np.nonzero(esc | aud)[0]:
                rec = {"record": 2, "id": f"{r:02d}{i:08x}", "ts": 1764650000.0 + r * 86400 + i,
                       "plugin": "sentiment" if task == "sentiment" else "news-topic",
                       "version": f"0.{live['round']}.0", "text": st[i], "label": L[int(pt[i].argmax())],
                       "confidence": float(pt[i].max()),
                       "scores": [{"label": L[c], "score": float(pt[i][c])} for c in range(len(L))],
                       "soft": True, "reason": "low_confidence" if esc[i] else "audit",
                       "local_label": L[int(pl[i].argmax())], "local_confidence": float(conf[i])}
                f.write(json.dumps(rec, ensure_ascii=False) + "\n")
        logs.append(path)
        calls = int(esc.sum() + aud.sum())
        cum += calls
        served = {"n": len(sl), "escalated": int(esc.sum()), "audited": int(aud.sum()),
                  "cloud_per_1000": 1000 * calls / len(sl), "accuracy": float((answer == ys).mean()),
                  "teacher_accuracy": float((pt.argmax(1) == ys).mean())}
        if topic_idx is not None:
            from loop_data import on_topic
            m = np.array([on_topic(t) for t in st])
            served["on_topic"] = int(m.sum())
            if m.any():
                served["on_topic_escalated"] = float(esc[m].mean())
        res, model, feats, info = retrain(r, logs)
        retrain_s.append(res["seconds"])
        P = evaluate(model, feats)
        pc = P["check"]
        t_c, acc_c, share_c = calib(pc)
        cheaper = share_c > live["check_share"] and t_c <= 1.0  # t > 1: the calibration found nothing
        if a.gate == "either":
            promoted = acc_c >= live["check_acc"] or cheaper
        elif a.gate == "cost":
            # The calibration already held the accuracy target (a failure escalates everything, share 0).
            promoted = share_c > live["check_share"] or (share_c == live["check_share"]
                                                         and acc_c >= live["check_acc"])
        else:
            promoted = acc_c >= live["check_acc"]
        cand = {"threshold": t_c, "check_cascade": acc_c, "check_share": share_c, "examples": res["examples"],
                "holdout_accuracy": res["holdout_accuracy"], "seconds": res["seconds"],
                "test_small_acc": float((P["test"].argmax(1) == y["test"]).mean())}
        if promoted:
            live = {"model": model, "feats": feats, "P": P, "round": r, "t": t_c, "check_acc": acc_c,
                    "check_share": share_c}
        row(r, served, promoted, cand)

    P = live["P"]
    boot = bootstrap_share(P["test"], PT["test"], y["test"], a.bootstrap) if a.bootstrap else None
    result = {"args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(a).items()},
              "cfg": cfg.__dict__, "teacher": t_acc, "sizes": {"seed": len(distill.read_seed(seed_path, task)),
                                                               "check": len(check), "stream": len(stream)},
              "rounds": rows, "final_share99_test_bootstrap_2.5_50_97.5": boot,
              "retrain_seconds": retrain_s, "seconds": round(time.time() - t_start, 1), "workdir": str(work)}
    say(f"[sim] teacher acc test {t_acc['test']:.4f} val {t_acc['val']:.4f} check {t_acc['check']:.4f}; "
        f"final share@99 test bootstrap {boot}; retrain s {retrain_s}; total {result['seconds']}s")
    if a.json:
        a.json.parent.mkdir(parents=True, exist_ok=True)
        a.json.write_text(json.dumps(result, indent=1))
    print(json.dumps({"final": rows[-1]["test"], "bootstrap": boot}))


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Times the example models with onnxruntime on the same inputs as `cargo bench --bench perf`.

    python3 host/benches/onnxruntime_compare.py [--json ort.json] [--seconds 2]

Each model runs on the row of models/golden/<model>.jsonl that the Rust benchmarks use,
with onnxruntime's CPU provider, once with one thread (intra_op_num_threads=1,
inter_op_num_threads=1, sequential execution) and once with onnxruntime's default threading.
Medians of per-call wall time, measured from Python: each call includes the binding's overhead
(a few µs), which dominates the tiny models. If target/criterion holds results of the perf
benchmark, native tract's and the guest's medians are printed beside onnxruntime's.
"""

import argparse
import json
import pathlib
import statistics
import time

import numpy as np
import onnxruntime as ort

ROOT = pathlib.Path(__file__).resolve().parents[2]
# (benchmark name, model, golden row), as in host/benches/perf/models.rs.
MODELS = [
    ("news-small", "news-small", 0),
    ("sentiment-small", "sentiment-small", 0),
    ("minilm-int8", "minilm-int8", 0),
    ("minilm-int8-tweet", "minilm-int8", 50),
    ("news-large-head", "news-large-head", 0),
    ("digits-small", "digits-small", 0),
    ("digits-large", "digits-large", 0),
]


def golden_row(model, index):
    with open(ROOT / "models" / "golden" / f"{model}.jsonl") as f:
        return json.loads([line for line in f if line.strip()][index])


def feeds(model, row):
    if model == "minilm-int8":
        ids = np.array([row["input_ids"]], dtype=np.int64)
        return {"input_ids": ids, "attention_mask": np.ones_like(ids), "token_type_ids": np.zeros_like(ids)}, "embedding"
    if "input_ids" in row:
        return {"input_ids": np.array([row["input_ids"]], dtype=np.int64)}, "probs"
    if "embedding" in row:
        return {"embedding": np.array([row["embedding"]], dtype=np.float32)}, "probs"
    return {"pixels": np.array([row["pixels"]], dtype=np.float32)}, "probs"


def session(model, threads):
    opts = ort.SessionOptions()
    if threads == 1:
        opts.intra_op_num_threads = 1
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    return ort.InferenceSession(str(ROOT / "models" / "onnx" / f"{model}.onnx"), opts, providers=["CPUExecutionProvider"])


def median_us(sess, inputs, seconds):
    for _ in range(3):
        sess.run(None, inputs)
    warm_end = time.perf_counter() + min(0.5, seconds / 4)
    while time.perf_counter() < warm_end:
        sess.run(None, inputs)
    times = []
    end = time.perf_counter() + seconds
    while time.perf_counter() < end or len(times) < 20:
        t = time.perf_counter_ns()
        sess.run(None, inputs)
        times.append(time.perf_counter_ns() - t)
    return statistics.median(times) / 1e3, len(times)


def criterion_us(bench, side):
    path = ROOT / "target" / "criterion" / f"guest_vs_native_{bench}" / side / "new" / "estimates.json"
    if not path.is_file():
        return None
    return json.loads(path.read_text())["median"]["point_estimate"] / 1e3


def fmt(us):
    if us is None:
        return "–"
    return f"{us / 1e3:,.2f} ms" if us >= 1e3 else f"{us:,.1f} µs"


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=2.0, help="measuring time per model and setting")
    ap.add_argument("--json", help="also write the medians (µs) here")
    args = ap.parse_args()

    print(f"onnxruntime {ort.__version__}, numpy {np.__version__}, providers {ort.get_available_providers()}")
    results = {}
    print("| model | input | ort 1 thread | ort default threads | tract native | in guest | "
          "tract / ort-1 | guest / ort-1 |")
    print("|---|---|---|---|---|---|---|---|")
    for bench, model, index in MODELS:
        row = golden_row(model, index)
        inputs, out = feeds(model, row)
        results[bench] = {}
        for threads in (1, "default"):
            sess = session(model, threads)
            got = sess.run(None, inputs)[0].ravel()
            want = np.array(row[out], dtype=np.float32)
            # The golden rows are onnxruntime's own outputs: the inputs are the same ones.
            assert np.abs(got - want).max() < 1e-3, f"{model}: output differs from the golden row"
            us, n = median_us(sess, inputs, args.seconds)
            results[bench][str(threads)] = us
            results[bench][f"{threads}_runs"] = n
        o1 = results[bench]["1"]
        native, guest = criterion_us(bench, "native"), criterion_us(bench, "guest")
        ratio = lambda a, b: "–" if a is None or b is None else f"{a / b:.2f}x"
        shape = " + ".join(str(list(v.shape)) for v in inputs.values())
        print(f"| {bench} | {shape} | {fmt(o1)} | {fmt(results[bench]['default'])} | {fmt(native)} | {fmt(guest)} | "
              f"{ratio(native, o1)} | {ratio(guest, o1)} |")
    if args.json:
        pathlib.Path(args.json).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()

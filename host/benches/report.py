#!/usr/bin/env python3
"""Prints the BENCHMARKS.md tables from criterion's results (target/criterion).

    cargo bench --workspace --bench perf
    python3 host/benches/report.py [--criterion target/criterion] [--ort ort.json]

Medians come from criterion's `new/estimates.json` of each benchmark; ratios
divide two medians measured in the same run. With --ort (the JSON written by
onnxruntime_compare.py --json) it adds onnxruntime's medians beside tract's.
"""

import argparse
import json
import pathlib

ROOT = pathlib.Path(__file__).resolve().parents[2]


def median_ns(base, bench):
    path = base / bench / "new" / "estimates.json"
    if not path.is_file():
        return None
    return json.loads(path.read_text())["median"]["point_estimate"]


def fmt(ns):
    if ns is None:
        return "–"
    if ns >= 1e6:
        return f"{ns / 1e6:,.2f} ms"
    if ns >= 1e3:
        return f"{ns / 1e3:,.1f} µs"
    return f"{ns:,.0f} ns"


def ratio(a, b):
    return "–" if a is None or b is None or b == 0 else f"{a / b:.2f}x"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--criterion", default=str(ROOT / "target" / "criterion"))
    ap.add_argument("--ort", help="JSON from onnxruntime_compare.py --json")
    args = ap.parse_args()
    base = pathlib.Path(args.criterion)
    ort = json.loads(pathlib.Path(args.ort).read_text()) if args.ort else {}

    models = ["news-small", "sentiment-small", "minilm-int8", "minilm-int8-tweet", "news-large-head", "digits-small",
              "digits-large"]
    print("## In-guest against native tract\n")
    head = ("| model | native tract | SDK's graph, native | in guest (tensor plugin) | guest / native tract "
            "| guest / SDK's graph native | guest, .npy input |")
    line = "|---|---|---|---|---|---|---|"
    if ort:
        head += " onnxruntime 1 thread | onnxruntime default | tract native / ort 1 thread |"
        line += "---|---|---|"
    print(head)
    print(line)
    for m in models:
        n = median_ns(base, f"guest_vs_native_{m}/native")
        sdk = median_ns(base, f"guest_vs_native_{m}/native_sdk")
        g = median_ns(base, f"guest_vs_native_{m}/guest")
        npy = median_ns(base, f"guest_vs_native_{m}/guest_npy")
        npy = f"{fmt(npy)} ({ratio(npy, n)})" if npy is not None else "–"
        row = f"| {m} | {fmt(n)} | {fmt(sdk)} | {fmt(g)} | {ratio(g, n)} | {ratio(g, sdk)} | {npy} |"
        if ort:
            o1 = ort.get(m, {}).get("1")
            od = ort.get(m, {}).get("default")
            o1 = o1 * 1e3 if o1 is not None else None
            od = od * 1e3 if od is not None else None
            row += f" {fmt(o1)} | {fmt(od)} | {ratio(n, o1)} |"
        print(row)
    n = [median_ns(base, f"guest_vs_native_{m}/native") for m in ("minilm-int8", "news-large-head")]
    g = [median_ns(base, f"guest_vs_native_{m}/guest") for m in ("minilm-int8", "news-large-head")]
    if None not in n and None not in g:
        print(f"| minilm-int8 + news head | {fmt(sum(n))} | – | {fmt(sum(g))} | {ratio(sum(g), sum(n))} | – | – |")

    print("\n## The tokenizer, natively and in the guest\n")
    print("The guest's tokenizer time is `text_path/<plugin>` less its model's `guest_vs_native/<model>/guest_npy`")
    print("(the model on binary ids; what stays in the difference is the answer's encoding, against the .npy")
    print("decoding, each about a microsecond).\n")
    print("| text | bytes | native | native MB/s | in guest (derived) | guest MB/s |")
    print("|---|---|---|---|---|---|")
    for task, plugin, model in [("news", "news-topic", "news-small"), ("sentiment", "sentiment", "sentiment-small")]:
        est = base / "tokenizer" / task / "new" / "benchmark.json"
        size = json.loads(est.read_text()).get("throughput", {}).get("Bytes") if est.is_file() else None
        t = median_ns(base, f"tokenizer/{task}")
        whole = median_ns(base, f"text_path/{plugin}")
        model_ns = median_ns(base, f"guest_vs_native_{model}/guest_npy")
        guest = whole - model_ns if None not in (whole, model_ns) else None
        mbs = lambda ns: "–" if ns is None or size is None or ns <= 0 else f"{size / ns * 1e3:,.0f}"
        print(f"| {task} | {size or '–'} | {fmt(t)} | {mbs(t)} | {fmt(guest)} | {mbs(guest)} |")

    print("\n## Example plugins on text (tokenizer + model + answer, in the guest)\n")
    print("| plugin | median |")
    print("|---|---|")
    for p in ["news-topic", "sentiment", "news-topic-large", "sentiment-large"]:
        print(f"| {p} | {fmt(median_ns(base, f'text_path/{p}'))} |")

    print("\n## A ready instance (no snapshot)\n")
    print("| plugin | fresh instance (instantiate + init + model load) | runtime.load(dir), warm module cache |")
    print("|---|---|---|")
    for p in ["hostile", "digits", "news-topic", "sentiment", "digits-large", "news-topic-large"]:
        print(f"| {p} | {fmt(median_ns(base, f'instance_{p}/fresh'))} | {fmt(median_ns(base, f'instance_{p}/runtime_load'))} |")

    print("\n## Host overhead per request\n")
    print("| call | median |")
    print("|---|---|")
    h = {k: median_ns(base, f"host_overhead/{k}") for k in
         ["hostile_ok_infer", "hostile_ok_route", "news_topic_infer", "news_topic_route"]}
    for k, v in h.items():
        print(f"| {k} | {fmt(v)} |")
    if h["hostile_ok_route"] and h["hostile_ok_infer"]:
        print(f"| route − infer (router alone), hostile | {fmt(h['hostile_ok_route'] - h['hostile_ok_infer'])} |")
    if h["news_topic_route"] and h["news_topic_infer"]:
        print(f"| route − infer (router alone), news-topic | {fmt(h['news_topic_route'] - h['news_topic_infer'])} |")

    print("\n## Throughput, news-topic LocalOnly (2 instances)\n")
    print("| benchmark | time per request | requests/s | against 1 client |")
    print("|---|---|---|---|")
    for path, names in [("inprocess", ["1", "2", "2_spawned"]), ("http", ["1", "2", "4"])]:
        one = median_ns(base, f"throughput/{path}_1")
        for n in names:
            t = median_ns(base, f"throughput/{path}_{n}")
            rps = "–" if t is None else f"{1e9 / t:,.0f}"
            print(f"| {path}_{n} | {fmt(t)} | {rps} | {ratio(one, t)} |")

    print("\n## news-topic on text: `dist` profile against `release`\n")
    r = median_ns(base, "dist_profile_news-topic/release")
    d = median_ns(base, "dist_profile_news-topic/dist")
    print("| release | dist | dist / release |")
    print("|---|---|---|")
    print(f"| {fmt(r)} | {fmt(d)} | {ratio(d, r)} |")


if __name__ == "__main__":
    main()

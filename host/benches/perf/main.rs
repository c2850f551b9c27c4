//! The performance figures of BENCHMARKS.md, each ratio measured in one run.
//!
//! ```sh
//! cargo bench --workspace --bench perf                    # everything (about 10 minutes)
//! cargo bench --workspace --bench perf -- guest_vs_native # one group (criterion's filter)
//! python3 host/benches/report.py                             # the table, from target/criterion
//! ```
//!
//! Groups:
//! - `guest_vs_native/<model>`: native tract (`native`), the guest SDK's graph natively
//!   (`native_sdk`: the SDK's rewrites included) and the `tensor` plugin (`guest`) on the same
//!   golden input.
//! - `tokenizer/<task>`: WordPiece natively on the first test text, in bytes per second.
//! - `text_path/<plugin>`: the example plugins end to end on text (tokenizer + model + answer).
//! - `instance/<plugin>`: a cold instance (instantiate + `_initialize` + model load),
//!   `runtime.load(dir)` with a warm module cache, and a ready instance from a pre-initialized
//!   snapshot (`snapshot`, and `snapshot_pooled` with the pooling allocator). The snapshots are
//!   precompiled first (about 40 s per plugin), unless a filter excludes `instance`.
//! - `startup/news-topic`: a precompiled, pre-initialized package to a ready instance, mapping
//!   the host's verified copy of the machine code against reading and hashing the artifact.
//! - `shared_runtime/news-topic`: news-topic against news-topic-nn (the same source and model,
//!   with inference in the shared wasi-nn runtime): an answer and a fresh instance each, after a
//!   printed report of wasm sizes, Cranelift time per plugin and linear memory per instance.
//! - `host_overhead`: `Plugin::infer` and `Router::route(LocalOnly)` on a guest that does nothing.
//! - `throughput`: requests/s in process and over HTTP on loopback, with 1, 2 (and 4) clients.
//! - `dist_profile/news-topic`: the plugin built with the `dist` profile against `release`
//!   (only if `target/guest/wasm32-wasip1/dist/news_topic.wasm` exists); sizes are printed first.
//!
//! Plugins come from `$EDGECASCADE_PLUGINS` (default `target/plugins`, built by `cargo xtask
//! plugins`) and compiled modules from `$EDGECASCADE_CACHE_DIR` (default `target/module-cache`).

mod common;
mod dist;
mod instance;
mod models;
mod overhead;
mod shared;
mod throughput;

use criterion::Criterion;

/// What `criterion_group!` and `criterion_main!` would expand to, with documentation.
fn main() {
    let mut criterion = Criterion::default().configure_from_args();
    dist::print_sizes();
    models::bench(&mut criterion);
    instance::bench(&mut criterion);
    // Criterion filters after set-up; skip the slow precompile when the filter cannot match.
    let filters: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with('-')).collect();
    let wanted =
        |f: &String| "instance/snapshot".contains(f.as_str()) || f.contains("instance") || f.contains("startup");
    if filters.is_empty() || filters.iter().any(wanted) {
        instance::bench_snapshots(&mut criterion);
    }
    shared::bench(&mut criterion);
    overhead::bench(&mut criterion);
    throughput::bench(&mut criterion);
    dist::bench(&mut criterion);
    criterion.final_summary();
}

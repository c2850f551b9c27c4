//! The shared runtime (wasi-nn) beside a plugin that carries tract: news-topic-nn is
//! news-topic's own source and model, so every difference is the design's.
//!
//! - `shared_runtime/news-topic/{tract,wasi_nn}_infer`: one answer on a BBC article; the
//!   difference is the cross-instance cost (copies between the two memories, four host calls).
//! - `shared_runtime/news-topic/{tract,wasi_nn}_fresh`: a ready instance without a snapshot
//!   (a wasi-nn plugin cannot be snapshotted: its model lives in the runtime's instance).
//!
//! Printed once first, from the same run: wasm sizes, the Cranelift compile of each plugin
//! (with the runtime already compiled, that is what a second wasi-nn plugin costs a device),
//! and each warm instance's linear memory.

use crate::common::{TextVariants, load, plugin_dir, test_text};
use crate::instance::bench_fresh;
use criterion::{Criterion, SamplingMode};
use edgecascade::{Local, PrecompileOptions};
use std::hint::black_box;
use std::time::Duration;

const PAIR: [(&str, &str); 2] = [("tract", "news-topic"), ("wasi_nn", "news-topic-nn")];

fn report() {
    for (label, name) in PAIR {
        let dir = plugin_dir(name);
        let plugin = load(&dir);
        let wasm = std::fs::metadata(dir.join(&plugin.manifest().wasm.file)).map_or(0, |m| m.len());
        let tmp = tempfile::tempdir().expect("tempdir");
        let copy = crate::common::package_copy(tmp.path(), name, 2, None);
        let compiled = crate::common::runtime().precompile(&copy, &PrecompileOptions::default()).expect("compile");
        let memory = plugin.instance_memory()[0];
        let runtime_memory = plugin.runtime_memory()[0];
        eprintln!(
            "shared_runtime {label}: {name} wasm {:.2} MB, Cranelift {:.2} s, artifact {:.1} MB, \
             warm instance linear memory {:.2} MB (of which the runtime instance {:.2} MB)",
            wasm as f64 / 1e6,
            compiled.compile_time.as_secs_f64(),
            compiled.artifact_bytes as f64 / 1e6,
            memory as f64 / 1e6,
            runtime_memory as f64 / 1e6,
        );
    }
}

pub fn bench(c: &mut Criterion) {
    report();
    let texts = TextVariants::new(&test_text("news"));
    let input = texts.first();
    let mut group = c.benchmark_group("shared_runtime/news-topic");
    group.sampling_mode(SamplingMode::Flat).sample_size(20);
    group.warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(3));
    let answers: Vec<_> = PAIR.iter().map(|(_, name)| load(&plugin_dir(name)).infer(input).expect("answer")).collect();
    assert_eq!(answers[0], answers[1], "the two builds must answer alike");
    assert!(matches!(answers[0], Local::Answered(_)));
    for (label, name) in PAIR {
        let plugin = load(&plugin_dir(name));
        group.bench_function(format!("{label}_infer"), |b| b.iter(|| plugin.infer(black_box(texts.next_input()))));
        bench_fresh(&mut group, &format!("{label}_fresh"), &plugin);
    }
    group.finish();
}

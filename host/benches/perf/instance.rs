//! What a ready instance costs: instantiate + `_initialize` + model load, against
//! instantiating a pre-initialized snapshot (with and without the pooling allocator).

use crate::common::{load, package_copy, plugin_dir, runtime};
use criterion::{Criterion, SamplingMode};
use edgecascade::{Plugin, PrecompileOptions, Runtime, RuntimeConfig};
use std::cell::OnceCell;
use std::time::{Duration, Instant};

/// Times creating fresh instances of `plugin`; each is dropped outside the timed part.
pub fn bench_fresh(
    group: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    id: &str,
    plugin: &Plugin,
) {
    group.bench_function(id, |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let started = Instant::now();
                let instance = plugin.fresh_instance_for_bench().expect("fresh instance");
                total += started.elapsed();
                drop(instance);
            }
            total
        })
    });
}

/// `instance/<plugin>/snapshot` and `instance/<plugin>/snapshot_pooled`: a ready instance from a
/// pre-initialized artifact (`edgecascade compile`), whose models are already loaded.
pub fn bench_snapshots(c: &mut Criterion) {
    // The artifacts made below are unsigned: these hosts opt in to their native code.
    let on_demand = Runtime::new(RuntimeConfig { cache_dir: None, trust_native_code: true, ..Default::default() })
        .expect("runtime");
    let pooled = Runtime::new(RuntimeConfig {
        cache_dir: None,
        pooling: Some(32),
        trust_native_code: true,
        ..Default::default()
    })
    .expect("runtime");
    for name in ["digits", "news-topic", "sentiment", "news-topic-large"] {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = package_copy(tmp.path(), name, 4, None);
        let options = PrecompileOptions { preinitialize: true, ..Default::default() };
        let report = runtime().precompile(&dir, &options).expect("precompile");
        eprintln!(
            "precompiled {name}: snapshot in {:.1} s, compiled in {:.1} s, artifact {:.1} MB",
            report.snapshot_time.as_secs_f64(),
            report.compile_time.as_secs_f64(),
            report.artifact_bytes as f64 / 1e6
        );
        let mut group = c.benchmark_group(format!("instance/{name}"));
        group.sampling_mode(SamplingMode::Flat).sample_size(20);
        group.warm_up_time(Duration::from_millis(500)).measurement_time(Duration::from_secs(3));
        for (id, rt) in [("snapshot", &on_demand), ("snapshot_pooled", &pooled)] {
            let plugin = rt.load(&dir).expect("load the precompiled package");
            assert!(plugin.load_report().preinitialized);
            bench_fresh(&mut group, id, &plugin);
        }
        group.finish();
        if name == "news-topic" {
            bench_startup(c, &dir);
        }
    }
}

/// `startup/news-topic`: what a process pays from a precompiled, pre-initialized package to a
/// ready instance. `verified_copy` maps the machine code that the host verified once and keeps in
/// its private cache; `read_and_hash` (no cache) reads and hashes the 60 MB artifact every time.
fn bench_startup(c: &mut Criterion, dir: &std::path::Path) {
    let cache = tempfile::tempdir().expect("tempdir");
    let config = |cache_dir| RuntimeConfig { cache_dir, trust_native_code: true, ..Default::default() };
    let mapped = Runtime::new(config(Some(cache.path().to_path_buf()))).expect("runtime");
    let read = Runtime::new(config(None)).expect("runtime");
    let mut group = c.benchmark_group("startup/news-topic");
    group.sampling_mode(SamplingMode::Flat).sample_size(10);
    group.warm_up_time(Duration::from_millis(500)).measurement_time(Duration::from_secs(3));
    for (id, rt) in [("verified_copy", &mapped), ("read_and_hash", &read)] {
        group.bench_function(id, |b| {
            b.iter_with_large_drop(|| {
                let plugin = rt.load(dir).expect("load the precompiled package");
                assert!(plugin.load_report().preinitialized);
                plugin
            })
        });
    }
    group.finish();
}

/// `instance/<plugin>/fresh` and `instance/<plugin>/runtime_load`.
pub fn bench(c: &mut Criterion) {
    // hostile loads no model: its fresh instance is the floor (instantiate + `_initialize` + ABI check).
    for name in ["hostile", "digits", "news-topic", "sentiment", "digits-large", "news-topic-large"] {
        let dir = plugin_dir(name);
        let plugin: OnceCell<Plugin> = OnceCell::new();
        let heavy = name.ends_with("-large");
        let mut group = c.benchmark_group(format!("instance/{name}"));
        group.sampling_mode(SamplingMode::Flat).sample_size(10);
        if heavy {
            group.warm_up_time(Duration::from_millis(500)).measurement_time(Duration::from_secs(10));
        } else {
            group.warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(3));
        }
        // Creation only; each instance is dropped (its memory unmapped) outside the timed part.
        bench_fresh(&mut group, "fresh", plugin.get_or_init(|| load(&dir)));
        // What a process pays to get its first ready instance with a warm module cache: read and
        // hash the package, deserialize the compiled module, and load a first instance.
        if !heavy {
            group.bench_function("runtime_load", |b| {
                plugin.get_or_init(|| load(&dir)); // a warm module cache
                b.iter_custom(|iters| {
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        let started = Instant::now();
                        let loaded = runtime().load(&dir).expect("load");
                        total += started.elapsed();
                        assert_eq!(loaded.load_report().cache, edgecascade::CacheOutcome::Hit);
                        drop(loaded);
                    }
                    total
                })
            });
        }
        group.finish();
    }
}

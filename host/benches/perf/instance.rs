//! What a ready instance costs today: instantiate + `_initialize` + model load (no snapshot yet).

use crate::common::{load, plugin_dir, runtime};
use criterion::{Criterion, SamplingMode};
use edgecascade::Plugin;
use std::cell::OnceCell;
use std::time::{Duration, Instant};

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
        group.bench_function("fresh", |b| {
            let plugin = plugin.get_or_init(|| load(&dir));
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

//! Sizes of the guest modules and their compiled artifacts, and the `dist` profile (fat LTO,
//! codegen-units=1, strip) against the default `release` one, when a dist build exists:
//!
//! ```sh
//! cd guest && CARGO_TARGET_DIR=../target/guest cargo build --profile dist --target wasm32-wasip1 -p news-topic
//! ```

use crate::common::{TextVariants, cache_dir, load, package_copy, plugin_dir, repo_root, runtime, test_text};
use criterion::Criterion;
use edgecascade::{Local, Plugin};
use std::cell::OnceCell;
use std::hint::black_box;
use std::path::Path;
use std::time::Duration;

fn mb(bytes: u64) -> String {
    format!("{:.2} MB", bytes as f64 / 1e6)
}

/// The wasm module's size and its compiled artifact's size in the module cache (if cached),
/// for the package in `dir`.
fn sizes(dir: &Path) -> (u64, Option<u64>) {
    let package = edgecascade::Package::open(dir).expect("open package");
    let wasm = &package.manifest().wasm;
    let wasm_bytes = std::fs::metadata(dir.join(&wasm.file)).map(|m| m.len()).unwrap_or(0);
    let cwasm = wasm.sha256.as_deref().and_then(|sha| {
        let path = runtime().cached_module_path(sha)?;
        std::fs::metadata(path).ok().map(|m| m.len())
    });
    (wasm_bytes, cwasm)
}

/// Prints each packed plugin's module size and its compiled artifact's size (no timing).
pub fn print_sizes() {
    eprintln!("module cache: {}", cache_dir().display());
    for name in ["hostile", "tensor", "digits", "news-topic", "sentiment"] {
        let (wasm, cwasm) = sizes(&plugin_dir(name));
        eprintln!("size {name}: wasm {}, compiled {}", mb(wasm), cwasm.map_or("not cached".into(), mb));
    }
}

/// `dist_profile/news-topic/{release,dist}`: the plugin on text, built with each profile.
pub fn bench(c: &mut Criterion) {
    let dist_wasm = repo_root().join("target/guest/wasm32-wasip1/dist/news_topic.wasm");
    let tmp = tempfile::tempdir().expect("tempdir");
    let release: OnceCell<Plugin> = OnceCell::new();
    let dist: OnceCell<Plugin> = OnceCell::new();
    let texts = TextVariants::new(&test_text("news"));
    let infer = |p: &Plugin| match p.infer(black_box(texts.next_input())) {
        Ok(Local::Answered(a)) => a,
        other => panic!("news-topic: {other:?}"),
    };

    let mut group = c.benchmark_group("dist_profile/news-topic");
    group.sample_size(30).warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(3));
    group.bench_function("release", |b| {
        let p = release.get_or_init(|| load(&plugin_dir("news-topic")));
        b.iter(|| infer(p))
    });
    if dist_wasm.is_file() {
        group.bench_function("dist", |b| {
            let p = dist.get_or_init(|| {
                // The first load compiles it with Cranelift (tens of seconds), then it is cached.
                let dir = package_copy(tmp.path(), "news-topic", 2, Some(&dist_wasm));
                let p = load(&dir);
                let (wasm, cwasm) = sizes(&dir);
                eprintln!("size news-topic (dist): wasm {}, compiled {}", mb(wasm), cwasm.map_or("?".into(), mb));
                let release = infer(release.get_or_init(|| load(&plugin_dir("news-topic"))));
                assert_eq!(infer(&p), release, "the dist build answers differently");
                p
            });
            b.iter(|| infer(p))
        });
    } else {
        eprintln!("no {}: skipping dist_profile/news-topic/dist", dist_wasm.display());
    }
    group.finish();
}

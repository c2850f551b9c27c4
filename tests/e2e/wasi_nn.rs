//! The shared runtime: plugins that import wasi-nn, linked to one tract
//! runtime module (guest/runtime) instead of carrying tract each.
//! news-topic-nn is news-topic's own source built with the SDK's `wasi-nn`
//! feature, packed with the same model and vocabulary.

use crate::support::*;
use edgecascade::{Error, Local, Runtime, RuntimeConfig};
use std::path::Path;

fn test_texts(task: &str, n: usize) -> Vec<String> {
    let split = std::fs::read_to_string(repo_root().join(format!("models/data/{task}/test.jsonl"))).unwrap();
    let mut texts: Vec<String> = split
        .lines()
        .take(n)
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["text"].as_str().unwrap().to_string())
        .collect();
    // Beyond the plugin, and the shortest inputs the tokenizer sees.
    texts.extend(["", "ok", "Der Zentralbankrat hat die Zinsen erhöht", "Shares fell."].map(String::from));
    texts
}

/// A runtime of its own, on the shared module cache.
fn runtime_with(config: RuntimeConfig) -> Runtime {
    Runtime::new(RuntimeConfig { cache_dir: Some(cache_dir()), ..config }).unwrap()
}

#[test]
fn wasi_nn_plugins_answer_bit_for_bit_like_their_twins_that_carry_tract() {
    for (task, nn, tract) in [("news", "news-topic-nn", "news-topic"), ("sentiment", "sentiment-nn", "sentiment")] {
        let (nn, tract) = (loaded(nn), loaded(tract));
        for text in test_texts(task, 40) {
            let input = edgecascade::Input::text(text.clone());
            let (a, b) = (nn.infer(&input).unwrap(), tract.infer(&input).unwrap());
            // `Answer` compares every score and the confidence exactly (f32 ==).
            assert_eq!(a, b, "{}: {text:.60}", nn.name());
            assert_eq!(nn.prompt(&input).unwrap(), tract.prompt(&input).unwrap());
        }
    }
    // The point of it: the plugin is small; the other carries a copy of tract.
    let size = |name: &str, file: &str| std::fs::metadata(plugin(name).join(file)).unwrap().len();
    let (small, large) = (size("news-topic-nn", "news_topic_nn.wasm"), size("news-topic", "news_topic.wasm"));
    assert!(small < 1 << 20, "news-topic-nn's wasm is {small} bytes");
    assert!(large > 10 * small, "news-topic's wasm is {large} bytes");
}

#[test]
fn a_wasi_nn_plugin_gets_its_models_through_the_runtime_not_its_load_frame() {
    // Loaded here, not shared: other tests would check instances out of a shared pool.
    let nn = runtime().load(plugin("news-topic-nn")).unwrap();
    let Local::Answered(_) = nn.infer(&text("Shares in the bank fell sharply after profits slumped")).unwrap() else {
        panic!("an answer")
    };
    // The plugin's own memory holds the vocabulary and the tokenizer, not the model:
    // that is parsed and kept in the runtime instance's memory.
    let runtime_memory = nn.runtime_memory()[0];
    let plugin_memory = nn.instance_memory()[0] - runtime_memory;
    let model = std::fs::metadata(plugin("news-topic-nn").join("news-small.onnx")).unwrap().len() as usize;
    assert!(runtime_memory > model, "{runtime_memory} bytes");
    assert!(plugin_memory > 0);
    let tract = runtime().load(plugin("news-topic")).unwrap();
    assert_eq!(tract.runtime_memory(), [0]);
}

#[test]
fn without_the_shared_runtime_a_wasi_nn_plugin_fails_with_where_it_looked() {
    let tmp = tempfile::tempdir().unwrap();
    let alone = tmp.path().join("news-topic-nn");
    copy_dir(&plugin("news-topic-nn"), &alone);
    let e = runtime().load(&alone).err().expect("refused");
    let Error::NnRuntime { plugin: name, path, message } = &e else { panic!("{e:?}") };
    assert_eq!((name.as_str(), path.as_path()), ("news-topic-nn", tmp.path().join("nn-runtime").as_path()));
    assert!(message.contains("no package there"), "{e}");

    // Named explicitly, the runtime is found wherever it is.
    let named = runtime_with(RuntimeConfig { nn_runtime: Some(plugin("nn-runtime")), ..Default::default() });
    let p = named.load(&alone).unwrap();
    assert_eq!(p.infer(&text("The striker scored twice in the cup final")).unwrap(), {
        loaded("news-topic").infer(&text("The striker scored twice in the cup final")).unwrap()
    });

    // A package that is not a runtime (a plugin) is refused for what it lacks.
    let wrong = runtime_with(RuntimeConfig { nn_runtime: Some(plugin("news-topic")), ..Default::default() });
    let e = wrong.load(&alone).err().expect("refused");
    assert!(
        matches!(&e, Error::NnRuntime { message, .. } if message.contains("not a runtime") && message.contains("ecnn_")),
        "{e}"
    );
}

/// news-topic-nn's package with `model` replaced, re-packed.
fn with_model(tmp: &Path, model: &[u8]) -> std::path::PathBuf {
    let src = plugin("news-topic-nn");
    let manifest = std::fs::read_to_string(src.join("plugin.toml")).unwrap();
    let manifest: String = manifest.lines().filter(|l| !l.starts_with("sha256")).collect::<Vec<_>>().join("\n");
    let files: Vec<(&str, Vec<u8>)> = vec![
        ("news_topic_nn.wasm", std::fs::read(src.join("news_topic_nn.wasm")).unwrap()),
        ("vocab.txt", std::fs::read(src.join("vocab.txt")).unwrap()),
        ("news-small.onnx", model.to_vec()),
    ];
    let files: Vec<(&str, &[u8])> = files.iter().map(|(n, b)| (*n, b.as_slice())).collect();
    let dir = make_package(tmp, &manifest, &files);
    // The runtime next to it, as a device would have it.
    copy_dir(&plugin("nn-runtime"), &tmp.join("nn-runtime"));
    dir
}

#[test]
fn a_corrupt_model_is_refused_inside_the_runtime_and_the_reason_reaches_the_host() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = with_model(tmp.path(), b"\x08\x07this is not a protobuf");
    let e = runtime().load(&dir).err().expect("refused");
    let Error::ModelRejected { plugin: name, message } = &e else { panic!("{e:?}") };
    assert_eq!(name, "news-topic-nn");
    // wasi-nn's call and code, then the runtime's own words.
    assert!(message.starts_with("wasi-nn load_by_name: runtime_error: "), "{message}");
    assert!(message.len() > "wasi-nn load_by_name: runtime_error: ".len() + 5, "{message}");
}

#[test]
fn bad_pointers_and_handles_from_a_plugin_are_wasi_nn_errors_not_host_faults() {
    // Each call must return the code written next to it, or the guest traps.
    let checks = [
        // load_by_name: a name outside memory (invalid_argument), an unknown name (not_found).
        "(call $load_by_name (i32.const 0xfffffff0) (i32.const 64) (i32.const 512)) (i32.const 1)",
        "(call $load_by_name (i32.const 100) (i32.const 4) (i32.const 512)) (i32.const 8)",
        // set_input: a tensor record outside memory; compute and get_output on a context that does not exist.
        "(call $set_input (i32.const 0) (i32.const 0) (i32.const 0xfffffff0)) (i32.const 1)",
        "(call $compute (i32.const 99)) (i32.const 1)",
        "(call $get_output (i32.const 99) (i32.const 0) (i32.const 600) (i32.const 16) (i32.const 512)) (i32.const 1)",
        // load: bytes in an encoding this runtime does not run (tensorflow).
        "(call $load (i32.const 520) (i32.const 1) (i32.const 2) (i32.const 0) (i32.const 512)) (i32.const 2)",
        // load: an ONNX graph whose one builder points outside memory.
        "(call $load (i32.const 528) (i32.const 1) (i32.const 1) (i32.const 0) (i32.const 512)) (i32.const 1)",
        // A model, by name: success (0), and a context for it.
        "(call $load_by_name (i32.const 104) (i32.const 5) (i32.const 512)) (i32.const 0)",
        "(call $init_execution_context (i32.load (i32.const 512)) (i32.const 516)) (i32.const 0)",
        // compute before any input is set: the runtime says which input is missing.
        "(call $compute (i32.load (i32.const 516))) (i32.const 1)",
    ];
    let body: String = checks.iter().map(|c| format!("(if (i32.ne {c}) (then unreachable))\n")).collect();
    let tmp = tempfile::tempdir().unwrap();
    let p = runtime().load(wat_nn_plugin(tmp.path(), 1, &body, "")).unwrap();
    let Local::Answered(a) = p.infer(&text("x")).unwrap() else { panic!("an answer") };
    assert_eq!(a.confidence, 0.5);
}

/// A plugin in WAT that imports wasi-nn, with `pages` of memory, whose infer
/// runs `body` and then answers `{"confidence":0.5}`; packed with news-topic's
/// model as `model`, next to the shared runtime.
fn wat_nn_plugin(tmp: &Path, pages: u32, body: &str, limits: &str) -> std::path::PathBuf {
    let answer = (16i64 << 32) | 19;
    let wat = format!(
        r#"(module
          (import "wasi_ephemeral_nn" "load" (func $load (param i32 i32 i32 i32 i32) (result i32)))
          (import "wasi_ephemeral_nn" "load_by_name" (func $load_by_name (param i32 i32 i32) (result i32)))
          (import "wasi_ephemeral_nn" "init_execution_context" (func $init_execution_context (param i32 i32) (result i32)))
          (import "wasi_ephemeral_nn" "set_input" (func $set_input (param i32 i32 i32) (result i32)))
          (import "wasi_ephemeral_nn" "compute" (func $compute (param i32) (result i32)))
          (import "wasi_ephemeral_nn" "get_output" (func $get_output (param i32 i32 i32 i32 i32) (result i32)))
          (memory (export "memory") {pages})
          (data (i32.const 0) "\00{{}}")
          (data (i32.const 16) "\00{{\"confidence\":0.5}}")
          (data (i32.const 100) "nopemodel")
          (data (i32.const 520) "\00\00\00\00\04\00\00\00")
          (data (i32.const 528) "\f0\ff\ff\ff\40\00\00\00")
          (func (export "_initialize"))
          (func (export "edgecascade_abi_version") (result i32) (i32.const 1))
          (func (export "edgecascade_alloc") (param i32) (result i32) (i32.const 4096))
          (func (export "edgecascade_load") (param i32 i32) (result i64) (i64.const 3))
          (func (export "edgecascade_infer") (param i32 i32) (result i64) {body} (i64.const {answer}))
          (func (export "edgecascade_prompt") (param i32 i32) (result i64) (i64.const {answer}))
          (func (export "edgecascade_parse_reply") (param i32 i32) (result i64) (i64.const {answer})))"#
    );
    let model = std::fs::read(plugin("news-topic").join("news-small.onnx")).unwrap();
    let manifest = format!("{}\n[[models]]\nname = \"model\"\nfile = \"m.onnx\"\n{limits}", wat_manifest());
    let dir = make_package(tmp, &manifest, &[("m.wasm", &wat::parse_str(wat).unwrap()), ("m.onnx", &model)]);
    copy_dir(&plugin("nn-runtime"), &tmp.join("nn-runtime"));
    dir
}

#[test]
fn the_runtime_instance_counts_against_the_plugins_memory_cap() {
    // The plugin holds 6.5 MB (100 pages) under a 7 MiB cap, and hands the
    // runtime a 6 MB tensor: the runtime's copy of it is what goes over.
    let body = "(drop (call $load_by_name (i32.const 104) (i32.const 5) (i32.const 512)))
        (drop (call $init_execution_context (i32.load (i32.const 512)) (i32.const 516)))
        (i32.store (i32.const 600) (i32.const 700)) (i32.store (i32.const 604) (i32.const 2))
        (i32.store8 (i32.const 608) (i32.const 5))
        (i32.store (i32.const 612) (i32.const 0)) (i32.store (i32.const 616) (i32.const 6000000))
        (i32.store (i32.const 700) (i32.const 1)) (i32.store (i32.const 704) (i32.const 750000))
        (drop (call $set_input (i32.load (i32.const 516)) (i32.const 0) (i32.const 600)))";
    let tmp = tempfile::tempdir().unwrap();
    let p = runtime().load(wat_nn_plugin(tmp.path(), 100, body, "\n[limits]\nmemory = \"7 MiB\"\n")).unwrap();
    let e = p.infer(&text("x")).unwrap_err();
    assert!(matches!(e, Error::MemoryCap { cap, .. } if cap == 7 << 20), "{e:?}");
    // The instance was dropped with its runtime; the next call gets fresh ones, and fails alike.
    assert!(matches!(p.infer(&text("x")).unwrap_err(), Error::MemoryCap { .. }));
    assert_eq!(p.pool_stats().discarded, 2);
}

#[test]
fn precompiled_plugin_and_runtime_load_as_native_code_and_answer_the_same() {
    use edgecascade::engine::PrecompileOptions;
    let tmp = tempfile::tempdir().unwrap();
    for name in ["news-topic-nn", "nn-runtime"] {
        copy_dir(&plugin(name), &tmp.path().join(name));
    }
    let dir = tmp.path().join("news-topic-nn");
    // No snapshot: the plugin's models live in the runtime's instance.
    let e = runtime().precompile(&dir, &PrecompileOptions { preinitialize: true, ..Default::default() }).unwrap_err();
    assert!(matches!(&e, Error::Snapshot { message, .. } if message.contains("imports wasi-nn")), "{e}");
    for name in ["news-topic-nn", "nn-runtime"] {
        let report = runtime().precompile(tmp.path().join(name), &PrecompileOptions::default()).unwrap();
        assert!(!report.preinitialized);
    }
    let native = runtime_with(RuntimeConfig { trust_native_code: true, ..Default::default() });
    let p = native.load(&dir).unwrap();
    assert_eq!(p.load_report().cache, edgecascade::CacheOutcome::Precompiled);
    let input = text("Parliament voted on the new immigration bill late on Tuesday");
    assert_eq!(p.infer(&input).unwrap(), loaded("news-topic").infer(&input).unwrap());
}

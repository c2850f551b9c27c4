//! The real `edgecascade` binary.

use crate::support::*;
use edgecascade::TensorData;
use serde_json::Value;
use std::io::Write;
use std::process::{Command, Stdio};

fn edgecascade(args: &[&str]) -> std::process::Output {
    Command::new(bin()).args(args).env("EDGECASCADE_CACHE_DIR", cache_dir()).output().expect("runs")
}

fn json_lines(out: &[u8]) -> Vec<Value> {
    String::from_utf8_lossy(out)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}")))
        .collect()
}

/// `edgecascade run --mode local --model tests/fixtures/<model>` through the tensor plugin, with `args`.
fn run_fixture_model<S: AsRef<std::ffi::OsStr>>(model: &str, args: &[S]) -> std::process::Output {
    Command::new(bin())
        .args(["run", "--mode", "local", "--model"])
        .arg(repo_root().join("tests/fixtures").join(model))
        .args(args)
        .arg("--tensor-plugin")
        .arg(plugin("tensor"))
        .env("EDGECASCADE_CACHE_DIR", cache_dir())
        .output()
        .unwrap()
}

#[test]
fn run_prints_a_json_answer() {
    let news = plugin("news-topic");
    let out = edgecascade(&[
        "run",
        "--plugin",
        news.to_str().unwrap(),
        "--text",
        "The central bank raised interest rates again",
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let lines = json_lines(&out.stdout);
    assert_eq!(lines.len(), 1);
    assert_eq!(lines[0]["label"], "business");
    assert_eq!(lines[0]["source"], "local");
    let confidence = lines[0]["confidence"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&confidence));
}

#[test]
fn run_reads_stdin_and_jsonl_batches_without_losing_lines() {
    let news = plugin("news-topic");
    let mut child = Command::new(bin())
        .args(["run", "--plugin", news.to_str().unwrap()])
        .env("EDGECASCADE_CACHE_DIR", cache_dir())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(b"The striker scored twice in the cup final").unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(json_lines(&out.stdout)[0]["label"], "sport");

    let tmp = tempfile::tempdir().unwrap();
    let batch = tmp.path().join("batch.jsonl");
    std::fs::write(
        &batch,
        "{\"text\": \"Parliament passed the budget bill\"}\nnot json\n\n{\"text\": \"The film won an award\"}\n",
    )
    .unwrap();
    let out = edgecascade(&["run", "--plugin", news.to_str().unwrap(), "--jsonl", batch.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "a bad line makes the exit code 1");
    let lines = json_lines(&out.stdout);
    assert_eq!(lines.len(), 3, "every non-empty line gets an output line");
    assert_eq!(lines[0]["label"], "politics");
    assert_eq!(lines[1]["error"]["kind"], "bad_input");
    assert_eq!(lines[1]["line"], 2);
    assert_eq!(lines[2]["label"], "entertainment");
}

#[test]
fn run_tries_a_bare_model_in_the_sandbox() {
    let fixtures = repo_root().join("tests/fixtures");
    let out = Command::new(bin())
        .args(["run", "--model"])
        .arg(fixtures.join("affine.onnx"))
        .arg("--tensor")
        .arg(fixtures.join("affine-input.npy"))
        .arg("--tensor-plugin")
        .arg(plugin("tensor"))
        .env("EDGECASCADE_CACHE_DIR", cache_dir())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let line = &json_lines(&out.stdout)[0];
    assert_eq!(line["tensors"][0]["data"], serde_json::json!([4.5, 4.5]));
}

#[test]
fn run_returns_every_dtype_nan_and_infinity_bit_exact_under_the_models_names() {
    let fixtures = repo_root().join("tests/fixtures");
    let read = |name: String| edgecascade::Tensor::from_npy(&std::fs::read(fixtures.join(name)).unwrap()).unwrap();
    // Inputs are given by name, small-types' out of the model's order.
    for (model, inputs, outputs) in [
        ("nonfinite", &["x"][..], &["y"][..]),
        ("small-types", &["keep", "a"], &["picked", "dropped"]),
        ("wide-types", &["d"], &["half", "squared"]),
    ] {
        let saved = tempfile::tempdir().unwrap();
        let mut args = Vec::new();
        for input in inputs {
            args.push("--tensor".to_string());
            args.push(format!("{input}={}", fixtures.join(format!("{model}.{input}.npy")).display()));
        }
        args.extend(["--save-tensors".to_string(), saved.path().display().to_string()]);
        let out = run_fixture_model(&format!("{model}.onnx"), &args);
        assert!(out.status.success(), "{model}: {}", String::from_utf8_lossy(&out.stderr));
        let line = &json_lines(&out.stdout)[0];
        let printed: Vec<edgecascade::Tensor> = serde_json::from_value(line["tensors"].clone()).unwrap();
        let names: Vec<&str> = printed.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names, outputs, "{model}: the model's own output names");
        for (output, printed) in outputs.iter().zip(&printed) {
            // onnxruntime's output, recorded by tests/fixtures/make_fixtures.py.
            let expected = read(format!("{model}.expected.{output}.npy"));
            let saved =
                edgecascade::Tensor::from_npy(&std::fs::read(saved.path().join(format!("{output}.npy"))).unwrap())
                    .unwrap();
            for (how, got) in [("printed", printed), ("saved", &saved)] {
                assert_eq!(
                    (got.data.dtype(), &got.shape, got.data.to_le_bytes()),
                    (expected.data.dtype(), &expected.shape, expected.data.to_le_bytes()),
                    "{model}.{output} as {how}"
                );
            }
        }
    }
}

/// The conformance suite: every case of tests/fixtures/conformance/cases.json (written by
/// models/pipeline/conformance.py: MLP and CNN, float and every format onnxruntime's quantizer
/// writes) runs in the sandbox and matches ONNX's reference evaluator within the case's
/// tolerance (the script's docstring says how each is set).
#[test]
fn conformance_every_model_format_matches_the_onnx_reference() {
    let dir = repo_root().join("tests/fixtures/conformance");
    let cases: Vec<Value> = serde_json::from_slice(&std::fs::read(dir.join("cases.json")).unwrap()).unwrap();
    assert!(cases.len() >= 20, "the suite lost cases: {}", cases.len());
    let mut failures = Vec::new();
    for case in &cases {
        let name = case["name"].as_str().unwrap();
        let tolerance = case["tolerance"].as_f64().unwrap() as f32;
        let out = run_fixture_model(
            &format!("conformance/{}", case["model"].as_str().unwrap()),
            &[std::ffi::OsString::from("--jsonl"), dir.join(case["batch"].as_str().unwrap()).into()],
        );
        if !out.status.success() {
            failures.push(format!("{name}: {}", String::from_utf8_lossy(&out.stdout)));
            continue;
        }
        let expected =
            edgecascade::Tensor::from_npy(&std::fs::read(dir.join(case["expected"].as_str().unwrap())).unwrap())
                .unwrap();
        let TensorData::F32(expected) = expected.data else { panic!("{name}: expected outputs are f32") };
        let mut got = Vec::new();
        for line in json_lines(&out.stdout) {
            let tensors: Vec<edgecascade::Tensor> = serde_json::from_value(line["tensors"].clone()).unwrap();
            let TensorData::F32(values) = &tensors[0].data else { panic!("{name}: {line}") };
            got.extend_from_slice(values);
        }
        let worst = got.iter().zip(&expected).map(|(g, e)| (g - e).abs()).fold(0.0f32, f32::max);
        let step = case["step"].as_f64().map(|s| format!(", {:.1} output steps", worst as f64 / s)).unwrap_or_default();
        eprintln!("{name:32} worst difference {worst:.3e}{step} (tolerance {tolerance:.3e})");
        if got.len() != expected.len() || worst > tolerance * 1.001 {
            failures.push(format!(
                "{name}: {} of {} values, worst difference {worst} > {tolerance}",
                got.len(),
                expected.len()
            ));
        }
    }
    assert!(failures.is_empty(), "{} of {} cases failed:\n{}", failures.len(), cases.len(), failures.join("\n"));
}

#[test]
fn run_names_the_input_that_has_the_wrong_shape() {
    let fixtures = repo_root().join("tests/fixtures");
    let out = run_fixture_model(
        "affine.onnx",
        &[std::ffi::OsString::from("--tensor"), fixtures.join("nonfinite.x.npy").into()],
    );
    assert_eq!(out.status.code(), Some(1), "{}", String::from_utf8_lossy(&out.stderr));
    let message = json_lines(&out.stdout)[0]["error"]["message"].to_string();
    assert!(message.contains(r#"input \"x\" expects F32 of shape [1, 3], got F32 of shape [5]"#), "{message}");
}

#[test]
fn inspect_reports_models_and_unsupported_ops() {
    let out = edgecascade(&["inspect", plugin("news-topic").to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("tract runs it") && text.contains("input_ids"), "{text}");
    assert!(text.contains("OnceInInitialize"), "{text}");
    // The graph's own names, types and shapes, its ops, and its format against the support table.
    let out = edgecascade(&["inspect", "--json", plugin("news-topic").to_str().unwrap()]);
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    let model = &report["models"][0];
    let inputs = model["inputs"].to_string();
    assert!(inputs.contains("input_ids: int64 ["), "{inputs}");
    assert!(!model["outputs"][0].as_str().unwrap().ends_with('?'), "{}", model["outputs"]);
    assert_eq!(model["formats"], serde_json::json!(["static"]), "{model}");
    let ops = model["ops"].as_array().unwrap();
    assert!(ops.iter().any(|o| o["op"] == "DequantizeLinear" && o["count"].as_u64() >= Some(1)), "{ops:?}");

    let tmp = tempfile::tempdir().unwrap();
    let wasm = std::fs::read(plugin("tensor").join("tensor.wasm")).unwrap();
    let model = std::fs::read(repo_root().join("tests/fixtures/unsupported-op.onnx")).unwrap();
    let manifest = "[plugin]\nname = \"bad\"\nversion = \"1\"\nabi_version = 1\n\n[wasm]\nfile = \"t.wasm\"\n\n[[models]]\nname = \"model\"\nfile = \"m.onnx\"\n";
    let pkg = make_package(tmp.path(), manifest, &[("t.wasm", &wasm), ("m.onnx", &model)]);
    let out = edgecascade(&["inspect", "--json", pkg.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    let ops = report["models"][0]["unsupported_ops"].to_string();
    assert!(ops.contains("QLinearReduceMean"), "{ops}");
    // Outside the conformance suite, and said so.
    assert_eq!(report["models"][0]["conformance"], false);
    let op =
        report["models"][0]["ops"].as_array().unwrap().iter().find(|o| o["op"] == "com.microsoft::QLinearReduceMean");
    assert_eq!(op.map(|o| &o["conformance"]), Some(&Value::Bool(false)), "{}", report["models"][0]["ops"]);
}

#[test]
fn setup_errors_are_clear_and_exit_2() {
    let out = edgecascade(&["run", "--plugin", "/nonexistent/plugin", "--text", "x"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("/nonexistent/plugin/plugin.toml"), "{err}");
    // The io error is said once, though it is both in the message and its source.
    assert_eq!(err.matches("No such file or directory").count(), 1, "{err}");
}

#[test]
fn a_first_run_says_that_it_compiles_even_when_stderr_is_not_a_terminal() {
    let tmp = tempfile::tempdir().unwrap();
    let package = make_package(tmp.path(), wat_manifest(), &[("m.wasm", &wat_module(1, ""))]);
    let cache = tmp.path().join("cache");
    let run = || {
        Command::new(bin())
            .args(["run", "--mode", "local", "--text", "hello", "--plugin"])
            .arg(&package)
            .env("EDGECASCADE_CACHE_DIR", &cache)
            .output()
            .unwrap()
    };
    let first = run();
    let stderr = String::from_utf8_lossy(&first.stderr);
    assert!(first.status.success(), "{stderr}");
    assert!(stderr.contains("compiling wat (") && stderr.contains("compiling wat: done in"), "{stderr}");
    // Cached now: nothing to say.
    let second = run();
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert!(second.status.success() && !stderr.contains("compiling"), "{stderr}");
}

#[test]
fn eval_without_a_cloud_reports_the_local_model_alone() {
    let news = plugin("news-topic");
    let data = repo_root().join("models/data/news/test.jsonl");
    let args = ["eval", "--plugin", news.to_str().unwrap(), "--data", data.to_str().unwrap(), "--limit", "40"];
    let out = edgecascade(&[&args[..], &["--json"]].concat());
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    let local = &report["local"];
    assert_eq!(local["rows"], 40);
    // news-topic is right on well over half of BBC articles: the report reads real answers.
    let accuracy = local["accuracy"].as_f64().unwrap();
    let ece = local["ece"].as_f64().unwrap();
    assert!(accuracy > 0.5 && (0.0..=1.0).contains(&ece), "{local}");
    let sweep = local["sweep"].as_array().unwrap();
    assert_eq!(sweep.len(), 21);
    // A higher threshold never keeps more.
    let shares: Vec<f64> = sweep.iter().map(|k| k["share"].as_f64().unwrap()).collect();
    assert!(shares.windows(2).all(|w| w[1] <= w[0]), "{shares:?}");
    // The table names what it measured.
    let table = edgecascade(&args);
    let text = String::from_utf8_lossy(&table.stdout);
    assert!(table.status.success() && text.contains("local only (no --cloud)") && text.contains("ECE"), "{text}");
    // A plot of the cascade needs the cloud, and says so.
    let svg = edgecascade(&[&args[..], &["--sweep", "--svg", "/tmp/x.svg"]].concat());
    assert!(!svg.status.success() && String::from_utf8_lossy(&svg.stderr).contains("needs --cloud"));
}

/// A target directory for crates that tests build with cargo: under CI's own, so reruns are
/// incremental, but apart from it, so the two builds never wait on each other's lock.
fn side_target(name: &str) -> std::path::PathBuf {
    let base = std::env::var_os("CARGO_TARGET_DIR").map(std::path::PathBuf::from).unwrap_or_else(std::env::temp_dir);
    base.join("side").join(name)
}

#[test]
fn a_new_plugin_builds_packs_and_answers_from_an_empty_directory_outside_the_repo() {
    let tmp = tempfile::tempdir().unwrap();
    assert!(!tmp.path().starts_with(repo_root()), "the test needs a directory outside the repository");
    let dir = tmp.path().join("kaomoji");
    let cli = |args: &[&std::ffi::OsStr]| {
        Command::new(bin())
            .args(args)
            .current_dir(tmp.path())
            .env("EDGECASCADE_CACHE_DIR", cache_dir())
            .env("CARGO_TARGET_DIR", side_target("new-plugin"))
            .output()
            .unwrap()
    };
    let ok = |out: &std::process::Output| {
        assert!(
            out.status.success(),
            "{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    };
    ok(&cli(&["new".as_ref(), "plugin".as_ref(), "kaomoji".as_ref(), "--dir".as_ref(), dir.as_os_str()]));
    // Only what the generator wrote: no workspace of ours around it.
    assert!(dir.join("Cargo.toml").is_file() && dir.join(".cargo/config.toml").is_file());
    ok(&cli(&["build".as_ref(), dir.as_os_str()]));
    let package = dir.join("dist/kaomoji");
    let run = cli(&[
        "run".as_ref(),
        "--mode".as_ref(),
        "local".as_ref(),
        "--plugin".as_ref(),
        package.as_os_str(),
        "--text".as_ref(),
        "I love it, great".as_ref(),
    ]);
    ok(&run);
    assert_eq!(json_lines(&run.stdout)[0]["label"], "positive");
    // Its own test cases, through the real host; and a failing bar fails.
    let cases = dir.join("tests/cases.jsonl");
    let eval = |min: &str| {
        cli(&[
            "eval".as_ref(),
            "--plugin".as_ref(),
            package.as_os_str(),
            "--data".as_ref(),
            cases.as_os_str(),
            "--min-accuracy".as_ref(),
            min.as_ref(),
        ])
    };
    ok(&eval("1"));
    // A second `new` into the same directory refuses rather than overwrite the author's work.
    let again = cli(&["new".as_ref(), "plugin".as_ref(), "kaomoji".as_ref(), "--dir".as_ref(), dir.as_os_str()]);
    assert!(!again.status.success() && String::from_utf8_lossy(&again.stderr).contains("not empty"));
    // The wasm is small: no tract in it.
    let wasm = std::fs::metadata(package.join("kaomoji.wasm")).unwrap().len();
    assert!(wasm < 1 << 20, "{wasm} bytes");
}

#[test]
fn eval_min_accuracy_fails_below_the_bar() {
    let news = plugin("news-topic");
    let data = repo_root().join("models/data/news/test.jsonl");
    // Nothing is 101% accurate.
    let out = edgecascade(&[
        "eval",
        "--plugin",
        news.to_str().unwrap(),
        "--data",
        data.to_str().unwrap(),
        "--limit",
        "5",
        "--min-accuracy",
        "1.01",
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("below --min-accuracy"));
}

//! Paths, the shared runtime, golden inputs and throwaway packages.

use edgecascade::{Input, Plugin, Runtime, RuntimeConfig, Tensor, TensorData};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// The repository root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("host/ has a parent").to_path_buf()
}

/// The packed plugin `name`.
pub fn plugin_dir(name: &str) -> PathBuf {
    let dir = std::env::var_os("EDGECASCADE_PLUGINS")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("target/plugins"));
    let path = dir.join(name);
    assert!(
        path.join("plugin.toml").is_file(),
        "no packed plugin {name} in {}: run `cargo xtask plugins` first",
        dir.display()
    );
    path
}

/// The module cache the tests use, so no plugin is compiled with Cranelift per run.
pub fn cache_dir() -> PathBuf {
    std::env::var_os("EDGECASCADE_CACHE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("target/module-cache"))
}

/// One runtime for the whole benchmark binary.
pub fn runtime() -> &'static Runtime {
    static RUNTIME: OnceLock<Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        Runtime::new(RuntimeConfig { cache_dir: Some(cache_dir()), ..Default::default() }).expect("runtime")
    })
}

/// Loads a package, saying on stderr whether its module came from the cache.
pub fn load(dir: &Path) -> Plugin {
    let plugin = runtime().load(dir).unwrap_or_else(|e| panic!("loading {}: {e}", dir.display()));
    let report = plugin.load_report();
    eprintln!(
        "loaded {} ({}): module {:?} in {:.1} ms, first instance in {:.1} ms",
        plugin.name(),
        dir.display(),
        report.cache,
        report.module_time.as_secs_f64() * 1e3,
        report.instantiate_time.as_secs_f64() * 1e3
    );
    plugin
}

/// Row `index` (from 0) of `models/golden/<model>.jsonl`.
pub fn golden_row(model: &str, index: usize) -> Value {
    let path = repo_root().join(format!("models/golden/{model}.jsonl"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let line = text.lines().filter(|l| !l.trim().is_empty()).nth(index).expect("a golden row");
    serde_json::from_str(line).expect("golden JSON")
}

/// The `text` of the first row of `models/data/<task>/test.jsonl` (the golden rows' source).
pub fn test_text(task: &str) -> String {
    let path = repo_root().join(format!("models/data/{task}/test.jsonl"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let row: Value = serde_json::from_str(text.lines().next().expect("a test row")).expect("test JSON");
    row["text"].as_str().expect("a text field").to_string()
}

/// Variants of one text that a text plugin answers alike: the text with 0 to 63 trailing spaces.
///
/// Text plugins keep the last text's tokens (their `beyond` and `classify` share one pass), so a
/// benchmark that sent the same text again and again would time no tokenizer at all. Each call of
/// [`next`](Self::next) takes the next variant, so every request does the whole path; 64 of them
/// keep that true, but for a rare collision, when several threads share a pool of instances.
pub struct TextVariants {
    texts: Vec<String>,
    inputs: Vec<Input>,
    turn: std::sync::atomic::AtomicUsize,
}

impl TextVariants {
    pub fn new(text: &str) -> TextVariants {
        let texts: Vec<String> = (0..64).map(|spaces| format!("{text}{}", " ".repeat(spaces))).collect();
        let inputs = texts.iter().map(|t| Input::text(t.clone())).collect();
        TextVariants { texts, inputs, turn: Default::default() }
    }

    fn turn(&self) -> usize {
        self.turn.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % self.texts.len()
    }

    /// The next variant, in turn.
    pub fn next_text(&self) -> &str {
        &self.texts[self.turn()]
    }

    /// The next variant as an input, in turn.
    pub fn next_input(&self) -> &Input {
        &self.inputs[self.turn()]
    }

    /// The text itself, without trailing spaces.
    pub fn first(&self) -> &Input {
        &self.inputs[0]
    }
}

fn floats(v: &Value) -> Vec<f32> {
    v.as_array().expect("an array").iter().map(|x| x.as_f64().expect("a number") as f32).collect()
}

fn ints(v: &Value) -> Vec<i64> {
    v.as_array().expect("an array").iter().map(|x| x.as_i64().expect("an integer")).collect()
}

/// The model's input tensors for a golden row (as in tests/e2e/models.rs).
pub fn golden_inputs(model: &str, row: &Value) -> Vec<Tensor> {
    let t = |name: &str, shape: Vec<usize>, data: TensorData| Tensor { name: name.into(), shape, data };
    if model == "minilm-int8" {
        let ids = ints(&row["input_ids"]);
        let n = ids.len();
        return vec![
            t("input_ids", vec![1, n], TensorData::I64(ids)),
            t("attention_mask", vec![1, n], TensorData::I64(vec![1; n])),
            t("token_type_ids", vec![1, n], TensorData::I64(vec![0; n])),
        ];
    }
    if let Some(ids) = row.get("input_ids") {
        let ids = ints(ids);
        vec![t("input_ids", vec![1, ids.len()], TensorData::I64(ids))]
    } else if let Some(e) = row.get("embedding") {
        let e = floats(e);
        vec![t("embedding", vec![1, e.len()], TensorData::F32(e))]
    } else {
        let p = floats(&row["pixels"]);
        vec![t("pixels", vec![1, p.len()], TensorData::F32(p))]
    }
}

/// A package of the `tensor` plugin around `models/onnx/<model>.onnx`, packed into `tmp`.
pub fn tensor_package(tmp: &Path, model: &str) -> PathBuf {
    let src = tmp.join("src");
    std::fs::create_dir_all(&src).expect("mkdir");
    std::fs::copy(plugin_dir("tensor").join("tensor.wasm"), src.join("tensor.wasm")).expect("copy tensor.wasm");
    std::fs::copy(repo_root().join(format!("models/onnx/{model}.onnx")), src.join("model.onnx")).expect("copy model");
    let manifest = "[plugin]\nname = \"tensor-bench\"\nversion = \"1\"\nabi_version = 1\n\n\
                    [wasm]\nfile = \"tensor.wasm\"\n\n[[models]]\nname = \"model\"\nfile = \"model.onnx\"\n\n\
                    [limits]\nmemory = \"1 GiB\"\ndeadline = \"20s\"\nload_deadline = \"120s\"\noutput = \"4 MiB\"\n";
    std::fs::write(src.join("plugin.toml"), manifest).expect("write manifest");
    let out = tmp.join("pkg");
    edgecascade::plugin::pack(&src.join("plugin.toml"), &[], &out).expect("pack");
    out
}

/// A copy of the packed plugin `name` with `limits.instances` set to `instances`.
pub fn with_instances(tmp: &Path, name: &str, instances: usize) -> PathBuf {
    package_copy(tmp, name, instances, None)
}

/// A copy of the packed plugin `name` with `limits.instances` set to `instances` and, if given,
/// its wasm module replaced by the file `wasm` (same file name in the package).
pub fn package_copy(tmp: &Path, name: &str, instances: usize, wasm: Option<&Path>) -> PathBuf {
    let from = plugin_dir(name);
    let src = tmp.join("src");
    std::fs::create_dir_all(&src).expect("mkdir");
    for entry in std::fs::read_dir(&from).expect("read plugin dir") {
        let entry = entry.expect("dir entry");
        // Precompiled artifacts belong to the original package, not to this copy.
        if entry.file_type().expect("file type").is_file() {
            std::fs::copy(entry.path(), src.join(entry.file_name())).expect("copy");
        }
    }
    if let Some(wasm) = wasm {
        std::fs::copy(wasm, src.join(wasm.file_name().expect("a file name"))).expect("copy wasm");
    }
    let manifest = std::fs::read_to_string(src.join("plugin.toml")).expect("read manifest");
    let mut in_limits = false;
    let mut replaced = false;
    let mut lines: Vec<String> = Vec::new();
    for line in manifest.lines() {
        if line.starts_with('[') {
            if in_limits && !replaced {
                lines.push(format!("instances = {instances}"));
                replaced = true;
            }
            in_limits = line.trim() == "[limits]";
        }
        if in_limits && line.trim_start().starts_with("instances") {
            lines.push(format!("instances = {instances}"));
            replaced = true;
            continue;
        }
        lines.push(line.to_string());
    }
    if !replaced {
        lines.push(if in_limits { String::new() } else { "[limits]".into() });
        lines.push(format!("instances = {instances}"));
    }
    std::fs::write(src.join("plugin.toml"), lines.join("\n") + "\n").expect("write manifest");
    let out = tmp.join("pkg");
    edgecascade::plugin::pack(&src.join("plugin.toml"), &[], &out).expect("pack");
    out
}

//! `edgecascade run`: answer inputs with a plugin and print JSON, one line per input.

use super::Global;
use super::cascade::CascadeArgs;
use anyhow::{Context, bail};
use edgecascade::{Input, Mode, Router, Tensor};
use serde_json::{Value, json};
use std::io::{BufRead, Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// Answer one input, a file, stdin or a JSONL batch with a plugin; print JSON answers.
#[derive(clap::Args)]
#[command(after_help = "Examples:\n  \
    edgecascade run --plugin target/plugins/news-topic --text \"The central bank raised rates\"\n  \
    echo \"Stocks fell sharply\" | edgecascade run --plugin target/plugins/news-topic\n  \
    edgecascade run --plugin target/plugins/news-topic --jsonl models/data/news/test.jsonl\n  \
    edgecascade run --plugin target/plugins/digits --json '{\"pixels\": [0, 0, 5, ...]}'\n  \
    edgecascade run --model model.onnx --tensor input.npy\n  \
    edgecascade run --model model.onnx --tensor ids=ids.npy --tensor mask=mask.npy --save-tensors out/\n\n\
    Input is read from the first of --text, --json, --file, --jsonl, --tensor that is given, else stdin.\n\
    Each output line is a JSON object with the answer, or \"beyond\", or \"error\"; nothing is skipped.\n\
    The exit code is 0 when every input was answered, 1 when any failed, 2 on a setup error.")]
pub struct Args {
    /// The plugin package directory (holding plugin.toml).
    #[arg(long, value_name = "DIR", required_unless_present = "model")]
    plugin: Option<PathBuf>,

    /// The input text; `-` reads stdin.
    #[arg(long, value_name = "TEXT")]
    text: Option<String>,

    /// An inline JSON input (for plugins that take JSON, such as digits).
    #[arg(long, value_name = "JSON")]
    json: Option<String>,

    /// A file whose whole content is one input; the type follows the extension
    /// (.json, .npy, else text) unless --content-type is given.
    #[arg(long, value_name = "PATH")]
    file: Option<PathBuf>,

    /// A JSONL batch, `-` for stdin: each line is {"text": ...}, or any other
    /// JSON object, which is passed to the plugin as JSON.
    #[arg(long, value_name = "PATH")]
    jsonl: Option<PathBuf>,

    /// Run a bare ONNX model with the generic tensor plugin (no package needed);
    /// its inputs come from --tensor, or from --jsonl lines {"inputs": [...]}.
    #[arg(long, value_name = "MODEL.onnx")]
    model: Option<PathBuf>,

    /// A model input: a .npy file (any dtype, NaN and infinities kept), or a .json
    /// file {"inputs": [{"name", "shape", "dtype", "data"}]}. Repeat as NAME=FILE.npy
    /// for a model with several inputs; named inputs are matched by name.
    #[arg(long, value_name = "[NAME=]PATH")]
    tensor: Vec<String>,

    /// Write every output tensor of the (last) answer to DIR/<output name>.npy,
    /// bit-exact, as well as printing it.
    #[arg(long, value_name = "DIR")]
    save_tensors: Option<PathBuf>,

    /// The tensor plugin package used by --model [default: $EDGECASCADE_TENSOR_PLUGIN,
    /// else plugins/tensor next to the binary or one directory up].
    #[arg(long, value_name = "DIR")]
    tensor_plugin: Option<PathBuf>,

    /// Override the content type of --file or --text input.
    #[arg(long, value_name = "TYPE")]
    content_type: Option<String>,

    /// Who may answer: the cascade, the local model only, or the cloud only.
    #[arg(long, value_enum, default_value = "auto")]
    mode: ModeArg,

    #[command(flatten)]
    cascade: CascadeArgs,
}

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum ModeArg {
    Auto,
    Local,
    Cloud,
}

impl From<ModeArg> for Mode {
    fn from(m: ModeArg) -> Mode {
        match m {
            ModeArg::Auto => Mode::Auto,
            ModeArg::Local => Mode::LocalOnly,
            ModeArg::Cloud => Mode::CloudOnly,
        }
    }
}

pub fn run(global: &Global, args: &Args) -> anyhow::Result<ExitCode> {
    let runtime = global.runtime()?;
    let _adhoc_dir;
    let package_dir = match (&args.plugin, &args.model) {
        (Some(dir), _) => dir.clone(),
        (None, Some(model)) => {
            if args.tensor.is_empty() && args.jsonl.is_none() {
                bail!("--model needs its inputs: --tensor FILE.npy (repeat as NAME=FILE.npy), or --jsonl");
            }
            let dir = tempfile::tempdir()?;
            adhoc_tensor_package(args, model, dir.path())?;
            let path = dir.path().to_path_buf();
            _adhoc_dir = dir;
            path
        }
        (None, None) => bail!("give --plugin DIR, or --model M.onnx with --tensor"),
    };
    let package = runtime.verify(&package_dir)?;
    let plugin = super::load_with_progress(&runtime, package)?;
    let router = args.cascade.router(plugin, args.cascade.client()?, edgecascade::Metrics::default())?;
    let mode = Mode::from(args.mode);
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let mut failures = 0usize;
    // Returns whether the input failed; every input gets exactly one output line.
    let answer = |input: Input, out: &mut dyn Write| -> anyhow::Result<bool> {
        let (line, reply, failed) = answer_one(&router, &input, mode);
        writeln!(out, "{line}")?;
        if let (Some(dir), Some(answer)) = (&args.save_tensors, &reply.answer) {
            save_tensors(dir, &answer.tensors)?;
        }
        Ok(failed)
    };
    if let Some(path) = &args.jsonl {
        let reader: Box<dyn BufRead> = if path == Path::new("-") {
            Box::new(std::io::stdin().lock())
        } else {
            Box::new(std::io::BufReader::new(std::fs::File::open(path).with_context(|| format!("{}", path.display()))?))
        };
        for (n, line) in reader.lines().enumerate() {
            let line = line?;
            if line.trim().is_empty() {
                continue;
            }
            match jsonl_input(&line) {
                Ok(input) => failures += answer(input, &mut out)? as usize,
                Err(e) => {
                    failures += 1;
                    writeln!(
                        out,
                        "{}",
                        json!({"line": n + 1, "error": {"kind": "bad_input", "message": e.to_string()}})
                    )?;
                }
            }
        }
    } else {
        failures += answer(single_input(args)?, &mut out)? as usize;
    }
    Ok(if failures == 0 { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

/// One output line: the reply, plus an `error` when nothing could answer.
#[derive(serde::Serialize)]
struct Line<'a> {
    #[serde(flatten)]
    reply: &'a edgecascade::Reply,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<Value>,
}

/// Routes one input; returns its JSON line, the reply, and whether it failed.
fn answer_one(router: &Router, input: &Input, mode: Mode) -> (String, edgecascade::Reply, bool) {
    let reply = router.route(input, mode);
    let failed = reply.answer.is_none() && reply.beyond.is_none();
    let error = failed.then(|| {
        let message = reply.local_error.clone().or(reply.cloud_error.as_ref().map(|c| c.message.clone()));
        json!({"kind": "no_answer", "message": message})
    });
    // Serialized directly (not through `Value`) so f32 scores print as written.
    (serde_json::to_string(&Line { reply: &reply, error }).unwrap_or_default(), reply, failed)
}

/// Each tensor to `dir/<name>.npy` (`output-<i>.npy` when unnamed).
fn save_tensors(dir: &Path, tensors: &[Tensor]) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    for (i, t) in tensors.iter().enumerate() {
        // A model's output name may hold any character: keep only what is safe in a file name.
        let stem: String =
            t.name.chars().map(|c| if c.is_ascii_alphanumeric() || "-_.".contains(c) { c } else { '_' }).collect();
        let stem = if stem.is_empty() || stem.starts_with('.') { format!("output-{i}") } else { stem };
        let path = dir.join(format!("{stem}.npy"));
        std::fs::write(&path, t.to_npy()).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

fn jsonl_input(line: &str) -> anyhow::Result<Input> {
    let value: Value = serde_json::from_str(line).context("not JSON")?;
    Ok(match value.get("text").and_then(Value::as_str) {
        Some(text) => Input::text(text),
        None => Input::json(&value),
    })
}

fn single_input(args: &Args) -> anyhow::Result<Input> {
    let with_type = |default: &str, data: Vec<u8>| {
        Input::new(args.content_type.clone().unwrap_or_else(|| default.to_string()), data)
    };
    if let Some(text) = &args.text {
        let data = if text == "-" { read_stdin()? } else { text.clone().into_bytes() };
        return Ok(with_type("text/plain", data));
    }
    if let Some(j) = &args.json {
        let value: Value = serde_json::from_str(j).context("--json is not valid JSON")?;
        return Ok(Input::json(&value));
    }
    if let Some(input) = tensor_inputs(&args.tensor)? {
        return Ok(input);
    }
    let single_tensor = args.tensor.first().map(PathBuf::from);
    if let Some(path) = args.file.as_ref().or(single_tensor.as_ref()) {
        let data = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        let default = match path.extension().and_then(|e| e.to_str()) {
            Some("json") => "application/json",
            Some("npy") => "application/x-npy",
            _ => "text/plain",
        };
        return Ok(with_type(default, data));
    }
    Ok(with_type("text/plain", read_stdin()?))
}

/// Several `--tensor` files, or named ones, become one JSON input
/// `{"inputs": [...]}`; a single unnamed file is passed as it is (`None`).
fn tensor_inputs(specs: &[String]) -> anyhow::Result<Option<Input>> {
    // `NAME=PATH`; an `=` inside a directory name is part of the path.
    fn named(spec: &str) -> Option<(&str, &str)> {
        spec.split_once('=').filter(|(name, _)| !name.contains(['/', '\\']))
    }
    if specs.len() < 2 && !specs.iter().any(|s| named(s).is_some()) {
        return Ok(None);
    }
    let mut inputs = Vec::with_capacity(specs.len());
    for spec in specs {
        let (name, path) = named(spec).unwrap_or(("", spec));
        let bytes = std::fs::read(path).with_context(|| format!("reading --tensor {spec}"))?;
        let mut tensor = Tensor::from_npy(&bytes).with_context(|| format!("--tensor {spec}"))?;
        tensor.name = name.to_string();
        inputs.push(tensor);
    }
    Ok(Some(Input::json(&json!({ "inputs": inputs }))))
}

fn read_stdin() -> anyhow::Result<Vec<u8>> {
    let mut data = Vec::new();
    std::io::stdin().read_to_end(&mut data)?;
    Ok(data)
}

/// Builds a one-off package: the tensor plugin's module with the user's model.
fn adhoc_tensor_package(args: &Args, model: &Path, dir: &Path) -> anyhow::Result<()> {
    let tensor = find_tensor_plugin(args.tensor_plugin.as_deref())?;
    let base = edgecascade::Package::open(&tensor)?.verify()?;
    let wasm_name = &base.manifest().wasm.file;
    std::fs::copy(tensor.join(wasm_name), dir.join(wasm_name))?;
    std::fs::copy(model, dir.join("model.onnx")).with_context(|| format!("reading {}", model.display()))?;
    let template = format!(
        "[plugin]\nname = \"tensor\"\nversion = \"{}\"\nabi_version = 1\n\n[wasm]\nfile = \"{wasm_name}\"\n\n\
         [[models]]\nname = \"model\"\nfile = \"model.onnx\"\n\n[limits]\nmemory = \"1 GiB\"\ndeadline = \"10s\"\n",
        base.manifest().plugin.version
    );
    let template_path = dir.join("template.toml");
    std::fs::write(&template_path, template)?;
    edgecascade::plugin::pack(&template_path, &[], dir)?;
    Ok(())
}

fn find_tensor_plugin(given: Option<&Path>) -> anyhow::Result<PathBuf> {
    if let Some(p) = given {
        return Ok(p.to_path_buf());
    }
    if let Some(p) = std::env::var_os("EDGECASCADE_TENSOR_PLUGIN") {
        return Ok(p.into());
    }
    let exe = std::env::current_exe()?;
    let candidates: Vec<PathBuf> = exe.ancestors().skip(1).take(3).map(|d| d.join("plugins").join("tensor")).collect();
    candidates.iter().find(|p| p.join("plugin.toml").is_file()).cloned().with_context(|| {
        format!("no tensor plugin found in {candidates:?}; pass --tensor-plugin or run `cargo xtask plugins`")
    })
}

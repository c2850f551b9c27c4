//! `edgecascade new plugin` and `edgecascade build`: an author's path from an
//! empty directory to a package, outside this repository.

use anyhow::{Context, bail};
use edgecascade::plugin::manifest::{MANIFEST_FILE, Manifest};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

/// Start something new.
#[derive(clap::Args)]
pub struct NewArgs {
    #[command(subcommand)]
    what: What,
}

#[derive(clap::Subcommand)]
enum What {
    /// A plugin crate that builds and runs as it stands.
    #[command(after_help = "Example:\n  \
        edgecascade new plugin kaomoji && cd kaomoji\n  \
        edgecascade build\n  \
        edgecascade run --plugin dist/kaomoji --text \"I love it\"\n  \
        edgecascade eval --plugin dist/kaomoji --data tests/cases.jsonl --min-accuracy 1\n\n\
        The crate has its own workspace, release profile and wasm32-wasip1 target settings,\n\
        so it builds wherever it is put. It starts as a keyword classifier that needs no\n\
        model (it builds in seconds); its src/lib.rs says how to run an ONNX model instead.")]
    Plugin(PluginArgs),
}

#[derive(clap::Args)]
struct PluginArgs {
    /// The plugin's name: 1-64 of [a-z0-9_-].
    name: String,

    /// Where to write the crate [default: ./NAME]. It must not exist, or be empty.
    #[arg(long, value_name = "DIR")]
    dir: Option<PathBuf>,

    /// The plugin SDK (`guest/sdk` of an edgecascade checkout) [default: the checkout this
    /// binary was built from, if it is still there].
    #[arg(long, value_name = "DIR")]
    sdk: Option<PathBuf>,
}

/// Build a plugin crate for wasm32-wasip1 and pack it.
#[derive(clap::Args)]
#[command(after_help = "Example:\n  edgecascade build my-plugin            # -> my-plugin/dist/<name>\n\n\
    Runs `cargo build --release` in DIR (its .cargo/config.toml picks the wasm32-wasip1 target),\n\
    then packs DIR/plugin.toml with the module cargo built, as `edgecascade pack` does.")]
pub struct BuildArgs {
    /// The plugin crate.
    #[arg(default_value = ".")]
    dir: PathBuf,

    /// Where to write the package [default: DIR/dist/NAME].
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
}

pub fn run_new(args: &NewArgs) -> anyhow::Result<ExitCode> {
    let What::Plugin(args) = &args.what;
    let dir = args.dir.clone().unwrap_or_else(|| PathBuf::from(&args.name));
    let sdk = match &args.sdk {
        Some(sdk) => sdk.clone(),
        None => default_sdk().context(
            "the SDK of the checkout this binary was built from is gone: pass --sdk PATH/TO/edgecascade/guest/sdk",
        )?,
    };
    let sdk = sdk.canonicalize().with_context(|| format!("the SDK at {}", sdk.display()))?;
    if !sdk.join("Cargo.toml").is_file() {
        bail!("{} is not the plugin SDK (no Cargo.toml): pass --sdk PATH/TO/edgecascade/guest/sdk", sdk.display());
    }
    if dir.read_dir().is_ok_and(|mut entries| entries.next().is_some()) {
        bail!("{} exists and is not empty; pick another --dir", dir.display());
    }
    let files = plugin_files(&args.name, &sdk)?;
    for (path, text) in &files {
        let path = dir.join(path);
        std::fs::create_dir_all(path.parent().expect("a file in the crate"))
            .with_context(|| format!("creating {}", dir.display()))?;
        std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
    }
    println!("wrote plugin {} in {}:", args.name, dir.display());
    for (path, _) in &files {
        println!("  {path}");
    }
    println!(
        "next:\n  cd {}\n  edgecascade build\n  edgecascade run --plugin dist/{} --text \"I love it\"",
        dir.display(),
        args.name
    );
    Ok(ExitCode::SUCCESS)
}

pub fn run_build(args: &BuildArgs) -> anyhow::Result<ExitCode> {
    let template = args.dir.join(MANIFEST_FILE);
    let text = std::fs::read_to_string(&template).with_context(|| format!("reading {}", template.display()))?;
    let manifest = Manifest::parse(&text, &template)?;
    let wasm = cargo_build(&args.dir)?;
    let out = args.out.clone().unwrap_or_else(|| args.dir.join("dist").join(&manifest.plugin.name));
    let search = [wasm.parent().expect("a built file has a directory").to_path_buf()];
    // The manifest names the module; cargo named the file it built.
    let expected = &manifest.wasm.file;
    if wasm.file_name().is_none_or(|f| f != expected.as_str()) {
        bail!("cargo built {}, but {} names {expected}", wasm.display(), template.display());
    }
    let packed = edgecascade::plugin::pack(&template, &search, &out)?;
    let size = std::fs::metadata(&wasm).map(|m| m.len()).unwrap_or(0);
    eprintln!(
        "built {} {} ({:.1} KB of wasm) into {}",
        packed.plugin.name,
        packed.plugin.version,
        size as f64 / 1e3,
        out.display()
    );
    Ok(ExitCode::SUCCESS)
}

/// Runs `cargo build --release` in `dir` and returns the `.wasm` it made,
/// wherever the target directory is (`CARGO_TARGET_DIR` included).
fn cargo_build(dir: &Path) -> anyhow::Result<PathBuf> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let output = Command::new(cargo)
        .current_dir(dir)
        .args(["build", "--release", "--message-format=json-render-diagnostics"])
        .stderr(std::process::Stdio::inherit())
        .output()
        .with_context(|| format!("running cargo in {}", dir.display()))?;
    if !output.status.success() {
        bail!("cargo build failed in {} (its errors are above)", dir.display());
    }
    let wasm = String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|m| m["reason"] == "compiler-artifact")
        .filter(|m| m["target"]["kind"].as_array().is_some_and(|k| k.iter().any(|k| k == "cdylib")))
        .flat_map(|m| m["filenames"].as_array().cloned().unwrap_or_default())
        .filter_map(|f| f.as_str().map(PathBuf::from))
        .find(|f| f.extension().is_some_and(|e| e == "wasm"));
    wasm.with_context(|| {
        format!(
            "cargo built no .wasm in {}: is it a `cdylib` with the wasm32-wasip1 target \
             (see `edgecascade new plugin`)?",
            dir.display()
        )
    })
}

/// `guest/sdk` of the checkout this binary was built from.
fn default_sdk() -> Option<PathBuf> {
    let sdk = Path::new(env!("CARGO_MANIFEST_DIR")).join("../guest/sdk");
    sdk.join("Cargo.toml").is_file().then_some(sdk)
}

/// The files of a new plugin crate, by path inside it.
fn plugin_files(name: &str, sdk: &Path) -> anyhow::Result<Vec<(&'static str, String)>> {
    let valid = !name.is_empty()
        && name.len() <= 64
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
    if !valid {
        bail!("plugin name {name:?}: use 1-64 of [a-z0-9_-], starting with a letter");
    }
    let module = format!("{}.wasm", name.replace('-', "_"));
    let sdk = sdk.display().to_string().replace('\\', "/");
    let fill = |template: &str| template.replace("{name}", name).replace("{module}", &module).replace("{sdk}", &sdk);
    Ok(vec![
        ("Cargo.toml", fill(CARGO_TOML)),
        (".cargo/config.toml", CARGO_CONFIG.to_string()),
        ("plugin.toml", fill(PLUGIN_TOML)),
        ("src/lib.rs", fill(LIB_RS)),
        ("tests/cases.jsonl", CASES.to_string()),
        (".gitignore", "/target\n/dist\n".to_string()),
    ])
}

const CARGO_TOML: &str = r#"[package]
name = "{name}"
version = "0.1.0"
edition = "2024"
publish = false

[lib]
# A plugin is a wasm module: `edgecascade build` packs target/wasm32-wasip1/release/{module}.
crate-type = ["cdylib"]

[dependencies]
# The plugin SDK. Features: `wasi-nn` runs ONNX models in the host's shared runtime
# (no tract in the plugin: it stays under 1 MB and builds in seconds), `onnx` runs them
# with tract inside the plugin (18 MB of wasm, a 10-minute first build), `text` adds
# BERT WordPiece tokenization. This plugin needs none of them.
edgecascade-guest = { path = "{sdk}", default-features = false }
serde_json = "1"

# Its own workspace: the crate builds wherever it is put.
[workspace]

[profile.release]
# A panic is reported to the host as a typed error; unwinding would only add size.
panic = "abort"
strip = "debuginfo"
"#;

const CARGO_CONFIG: &str = r#"# Plugins are wasm32-wasip1 modules (`rustup target add wasm32-wasip1`).
[build]
target = "wasm32-wasip1"

# tract's wasm kernels need SIMD128, and the host enables it.
[target.wasm32-wasip1]
rustflags = ["-C", "target-feature=+simd128"]
"#;

const PLUGIN_TOML: &str = r#"# {name}: made by `edgecascade new plugin`. Every field, its default and its limits:
# host/src/plugin/manifest.rs in the edgecascade repository. `edgecascade build` fills in the hashes.
[plugin]
name = "{name}"
version = "0.1.0"
abi_version = 1
labels = ["negative", "positive"]

[wasm]
file = "{module}"

# A model would go here:
# [[models]]
# name = "model"
# file = "model.onnx"

[limits]
memory = "32 MiB"
deadline = "100ms"

[policy]
# Answers less confident than this go to the large model (`--cloud`).
threshold = 0.7

# Read by src/lib.rs: the words that vote for each label.
[config]
negative = ["bad", "awful", "broken", "slow", "refund", "hate"]
positive = ["good", "great", "love", "fast", "perfect", "thanks"]
"#;

const LIB_RS: &str = r#"//! {name}: an edgecascade plugin.
//!
//! It labels text by counting the keywords that the manifest's `[config]`
//! lists for each label, so that it builds and runs in seconds. To run an
//! ONNX model instead: turn on the SDK's `wasi-nn` feature in Cargo.toml,
//! list the model under `[[models]]` in plugin.toml, call
//! `edgecascade_guest::model::Model::load(ctx, "model")?` in `load` and
//! `model.run_f32(..)` in `infer`. The host runs it in its shared runtime
//! (the `nn-runtime` package next to this one on the device).

use edgecascade_guest::{Answer, Error, Input, LoadContext, Plugin, Prompt, classify, export_plugin};

struct Keywords {
    labels: Vec<String>,
    /// For each label, the words that vote for it.
    words: Vec<Vec<String>>,
}

impl Keywords {
    /// How many words of `text` vote for each label.
    fn votes(&self, text: &str) -> Vec<usize> {
        let words: Vec<String> =
            text.split(|c: char| !c.is_alphanumeric()).filter(|w| !w.is_empty()).map(str::to_lowercase).collect();
        self.words.iter().map(|list| words.iter().filter(|w| list.contains(w)).count()).collect()
    }
}

impl Plugin for Keywords {
    /// Once per instance: the manifest's labels and `[config]` arrive here.
    fn load(ctx: &LoadContext<'_>) -> Result<Self, Error> {
        let labels = ctx.labels().to_vec();
        let words = labels
            .iter()
            .map(|label| {
                let list = ctx.config().get(label).and_then(|v| v.as_array()).ok_or_else(|| {
                    Error::bad_input(format!("[config] needs a list of words for the label {label:?}"))
                })?;
                Ok(list.iter().filter_map(|w| w.as_str()).map(str::to_lowercase).collect())
            })
            .collect::<Result<_, Error>>()?;
        Ok(Keywords { labels, words })
    }

    /// Not a single keyword: nothing to judge by, so the large model answers.
    fn beyond(&self, input: &Input<'_>) -> Option<String> {
        let votes = self.votes(input.text().ok()?);
        (votes.iter().sum::<usize>() == 0).then(|| "no keyword of any label".to_string())
    }

    /// A label, a score per label, and a confidence in [0, 1].
    fn infer(&mut self, input: &Input<'_>) -> Result<Answer, Error> {
        let votes = self.votes(input.text()?);
        let total = votes.iter().sum::<usize>().max(1) as f32;
        let probs: Vec<f32> = votes.iter().map(|&v| v as f32 / total).collect();
        classify::answer(&self.labels, &probs)
    }

    /// How to ask a large model, when this plugin is not confident.
    fn prompt(&self, input: &Input<'_>) -> Result<Prompt, Error> {
        Ok(classify::prompt("Classify the sentiment of this text.", &self.labels, input.text()?))
    }

    /// The large model's reply, in the same shape as `infer`'s answer.
    fn parse_reply(&self, reply: &str) -> Result<Answer, Error> {
        classify::parse_reply(&self.labels, reply)
    }
}

export_plugin!(Keywords);
"#;

const CASES: &str = r#"{"text": "I love it, great and fast", "label": "positive"}
{"text": "Perfect, thanks a lot", "label": "positive"}
{"text": "Awful and slow, I want a refund", "label": "negative"}
{"text": "It arrived broken. Bad.", "label": "negative"}
"#;

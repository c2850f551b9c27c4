//! Parse, then resolve: clap turns arguments into one `Cli`, and each
//! subcommand reads only that.

mod cascade;
#[cfg(feature = "compiler")]
mod compile;
mod distill;
mod eval;
mod fleet;
#[cfg(feature = "inspect")]
mod inspect;
mod new;
mod pack;
mod promote;
mod run;
mod serve;
mod sign;

use clap::{Parser, Subcommand};
use edgecascade::{Runtime, RuntimeConfig};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "edgecascade",
    version,
    about = "Run sandboxed wasm ML plugins at the edge; escalate to a large model when unsure.",
    after_help = "Examples:\n  edgecascade run --plugin target/plugins/news-topic --text \"Rates rose again\"\n  \
                  edgecascade inspect target/plugins/news-topic\n  \
                  edgecascade run --model model.onnx --tensor input.npy"
)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,

    #[command(flatten)]
    global: Global,
}

#[derive(clap::Args)]
pub struct Global {
    /// Where compiled modules are cached [default: $EDGECASCADE_CACHE_DIR, else ~/.cache/edgecascade].
    #[arg(long, global = true, value_name = "DIR")]
    cache_dir: Option<PathBuf>,

    /// Compile plugins every time instead of using the cache.
    #[arg(long, global = true)]
    no_cache: bool,

    /// Only load plugins signed by this ed25519 public key: a hex key or a `.pub` file
    /// from `edgecascade keygen` (repeatable; also $EDGECASCADE_TRUST, comma-separated).
    #[arg(long, global = true, value_name = "KEY")]
    trust: Vec<String>,

    /// Trust the native code in these packages: load precompiled artifacts that no --trust key
    /// signed. They are machine code that runs outside the sandbox; without this flag an
    /// unsigned artifact is passed over for the package's wasm (or refused by a host built
    /// without a compiler).
    #[arg(long, global = true)]
    trust_native_code: bool,

    /// Log more to stderr: -v for load and cache events, -vv for debug.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,
}

#[derive(Subcommand)]
enum Command {
    Run(run::Args),
    Serve(serve::Args),
    Eval(eval::EvalArgs),
    Calibrate(eval::CalibrateArgs),
    Promote(promote::Args),
    Distill(distill::Args),
    Fleet(fleet::Args),
    #[cfg(feature = "inspect")]
    Inspect(inspect::Args),
    Pack(pack::Args),
    New(new::NewArgs),
    Build(new::BuildArgs),
    #[cfg(feature = "compiler")]
    Compile(compile::Args),
    Keygen(sign::KeygenArgs),
    Sign(sign::SignArgs),
    Verify(sign::VerifyArgs),
}

impl Global {
    fn runtime(&self) -> anyhow::Result<Runtime> {
        let defaults = RuntimeConfig::default();
        let cache_dir = if self.no_cache { None } else { self.cache_dir.clone().or(defaults.cache_dir) };
        Ok(Runtime::new(RuntimeConfig {
            cache_dir,
            trust: self.trust_policy()?,
            trust_native_code: self.trust_native_code,
            ..defaults
        })?)
    }

    /// The keys from --trust and $EDGECASCADE_TRUST: hex, or files holding hex.
    fn trust_policy(&self) -> anyhow::Result<edgecascade::plugin::TrustPolicy> {
        let from_env = std::env::var("EDGECASCADE_TRUST").unwrap_or_default();
        let mut keys = Vec::new();
        for item in self.trust.iter().map(String::as_str).chain(from_env.split(',')).map(str::trim) {
            if item.is_empty() {
                continue;
            }
            let path = std::path::Path::new(item);
            keys.push(if path.is_file() {
                std::fs::read_to_string(path)?.trim().to_string()
            } else {
                item.to_string()
            });
        }
        Ok(edgecascade::plugin::TrustPolicy::from_hex(keys)?)
    }
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let level = match cli.global.verbose {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("EDGECASCADE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(format!("edgecascade={level}")))
        // At trace level the HTTP client dumps the raw request bytes, credentials included: never
        // below info, whatever EDGECASCADE_LOG asks for.
        .add_directive("ureq=info".parse().expect("a valid directive"))
        .add_directive("ureq_proto=info".parse().expect("a valid directive"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(ansi)
        .init();
    let result = match &cli.command {
        Command::Run(args) => run::run(&cli.global, args),
        Command::Serve(args) => serve::run(&cli.global, args),
        Command::Eval(args) => eval::run_eval(&cli.global, args),
        Command::Calibrate(args) => eval::run_calibrate(&cli.global, args),
        Command::Promote(args) => promote::run(&cli.global, args),
        Command::Distill(args) => distill::run(&cli.global, args),
        Command::Fleet(args) => fleet::run(&cli.global, args),
        #[cfg(feature = "inspect")]
        Command::Inspect(args) => inspect::run(&cli.global, args),
        Command::Pack(args) => pack::run(args),
        #[cfg(feature = "compiler")]
        Command::Compile(args) => compile::run(&cli.global, args),
        Command::New(args) => new::run_new(args),
        Command::Build(args) => new::run_build(args),
        Command::Keygen(args) => sign::keygen(args),
        Command::Sign(args) => sign::sign(args),
        Command::Verify(args) => sign::verify(&cli.global, args),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {}", causes(&e));
            ExitCode::from(2)
        }
    }
}

/// The error and its causes, joined by `: `, each said once: a cause whose
/// text is already in what came before (`Error::Io` shows its `io::Error`,
/// and also returns it as its source) is not repeated, as anyhow's `{:#}` would.
fn causes(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if out.contains(&text) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&text);
    }
    out
}

/// Loads a verified package. When it must be compiled first (tens of seconds
/// for a plugin that carries tract), says so: a spinner on a terminal, else
/// one line before and one after, so that a log or a CI job does not sit silent.
pub fn load_with_progress(
    runtime: &Runtime,
    package: edgecascade::VerifiedPackage,
) -> anyhow::Result<edgecascade::Plugin> {
    let name = package.manifest().plugin.name.clone();
    // The shared runtime is compiled once per host, before the first plugin that needs it.
    if let Some((dir, bytes)) = runtime.nn_runtime_to_compile(&package) {
        eprintln!(
            "{name} imports wasi-nn: compiling the shared runtime {} first ({:.1} MB of wasm; once per host, then cached) ...",
            dir.display(),
            bytes as f64 / 1e6
        );
    }
    let compiling = !runtime.is_cached(&package);
    // The size from the file: the module is read (and hashed) only when it is compiled.
    let wasm_bytes = std::fs::metadata(package.dir().join(&package.manifest().wasm.file)).map_or(0, |m| m.len());
    let message = format!(
        "compiling {name} ({:.1} MB of wasm; once, then cached; `edgecascade compile` does it ahead of time)",
        wasm_bytes as f64 / 1e6
    );
    let terminal = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let spinner = (compiling && terminal).then(|| {
        let bar = indicatif::ProgressBar::new_spinner();
        bar.set_style(indicatif::ProgressStyle::with_template("{spinner} {msg} [{elapsed}]").expect("valid template"));
        bar.set_message(message.clone());
        bar.enable_steady_tick(std::time::Duration::from_millis(120));
        bar
    });
    if compiling && !terminal {
        eprintln!("{message} ...");
    }
    let started = std::time::Instant::now();
    let plugin = runtime.load_verified(package);
    if let Some(bar) = spinner {
        bar.finish_and_clear();
    }
    if compiling && !terminal {
        let outcome = if plugin.is_ok() { "done" } else { "failed" };
        eprintln!("compiling {name}: {outcome} in {:.1} s", started.elapsed().as_secs_f64());
    }
    let plugin = plugin?;
    let r = plugin.load_report();
    let how = match r.cache {
        edgecascade::CacheOutcome::Hit => "module from cache",
        edgecascade::CacheOutcome::Compiled => "compiled and cached",
        edgecascade::CacheOutcome::Rebuilt => "cache entry corrupt; recompiled",
        edgecascade::CacheOutcome::Uncached => "compiled (not cached)",
        edgecascade::CacheOutcome::Precompiled if r.preinitialized => "precompiled, pre-initialized snapshot",
        edgecascade::CacheOutcome::Precompiled => "precompiled artifact",
    };
    tracing::info!(
        "loaded {} {}: {how} in {} ms, first instance in {} ms",
        plugin.name(),
        plugin.version(),
        r.module_time.as_millis(),
        r.instantiate_time.as_millis()
    );
    Ok(plugin)
}

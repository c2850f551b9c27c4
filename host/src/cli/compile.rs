//! `edgecascade compile`: precompile plugins on a build machine for a device.

use super::Global;
use edgecascade::PrecompileOptions;
use std::path::PathBuf;
use std::process::ExitCode;

/// Compile plugins ahead of time for a device's target, so the device never runs Cranelift.
///
/// Writes `<package>/precompiled/<target>.ecaot`, bound to the target, this
/// wasmtime version, the engine settings and the package's exact contents. By
/// default the plugin is first run here until its models are loaded, and the
/// artifact is a snapshot of that instance: the device starts instances
/// without parsing any model.
#[derive(clap::Args)]
#[command(after_help = "Examples:\n  edgecascade compile target/plugins/news-topic\n  \
                        edgecascade compile --target aarch64-unknown-linux-gnu target/plugins/*\n  \
                        edgecascade compile --key release.key --target aarch64-unknown-linux-gnu target/plugins/sentiment")]
pub struct Args {
    /// Plugin package directories.
    #[arg(required = true, value_name = "PACKAGE")]
    packages: Vec<PathBuf>,

    /// The device's target triple [default: this machine's].
    #[arg(long, value_name = "TRIPLE")]
    target: Option<String>,

    /// Compile the plain module, without the pre-initialized snapshot
    /// (instances then load their models when they start).
    #[arg(long)]
    no_snapshot: bool,

    /// Sign the artifact with this ed25519 secret key (from `edgecascade keygen`),
    /// for devices that only load signed plugins.
    #[arg(long, value_name = "FILE")]
    key: Option<PathBuf>,

    /// Compile even when an artifact for exactly this package and target exists.
    #[arg(long)]
    force: bool,
}

pub fn run(global: &Global, args: &Args) -> anyhow::Result<ExitCode> {
    let runtime = global.runtime()?;
    let key = args.key.as_deref().map(edgecascade::plugin::signing_key).transpose()?;
    let target = args.target.as_deref().unwrap_or(edgecascade::engine::aot::host_target());
    for package in &args.packages {
        let mut options =
            PrecompileOptions { target: args.target.clone(), preinitialize: !args.no_snapshot, key: key.clone() };
        if options.preinitialize
            && let Some(reason) = runtime.verify(package)?.snapshot_blocker()?
        {
            eprintln!("{}: compiling without a snapshot: {reason}", package.display());
            options.preinitialize = false;
        }
        let artifact = edgecascade::engine::aot::artifact_path(package, target);
        // An identical artifact is kept: built for this package, target and host, and signed
        // by the same key when one is given.
        if !args.force {
            let verified = runtime.verify(package)?;
            let signer = options.key.as_ref().map(|k| hex::encode(k.verifying_key().to_bytes()));
            let same_signer =
                edgecascade::engine::aot::read_header(&artifact).is_ok_and(|h| h.signature.map(|s| s.key) == signer);
            if same_signer && edgecascade::engine::aot::is_current(&artifact, &verified, target, options.preinitialize)
            {
                eprintln!("{}: {} is up to date", package.display(), artifact.display());
                continue;
            }
        }
        let report = runtime.precompile(package, &options)?;
        let snapshot = if report.preinitialized {
            format!("pre-initialized in {:.1} s, ", report.snapshot_time.as_secs_f64())
        } else {
            String::new()
        };
        eprintln!(
            "{}: {} for {} ({snapshot}compiled in {:.1} s; {:.1} MB of wasm, {:.1} MB artifact{})",
            package.display(),
            report.path.display(),
            report.target,
            report.compile_time.as_secs_f64(),
            report.wasm_bytes as f64 / 1e6,
            report.artifact_bytes as f64 / 1e6,
            if report.signed { ", signed" } else { "" },
        );
    }
    Ok(ExitCode::SUCCESS)
}

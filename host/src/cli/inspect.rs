//! `edgecascade inspect`: what a package holds, without running it.

use super::Global;
use std::path::PathBuf;
use std::process::ExitCode;

/// Show a plugin's manifest, exports and imports, and for each model its inputs, outputs, ops,
/// quantization format and whether tract can run it.
#[derive(clap::Args)]
#[command(after_help = "Example:\n  edgecascade inspect target/plugins/news-topic")]
pub struct Args {
    /// The package directory (holding plugin.toml).
    plugin: PathBuf,

    /// Print the report as JSON instead of text.
    #[arg(long)]
    json: bool,
}

pub fn run(_global: &Global, args: &Args) -> anyhow::Result<ExitCode> {
    let package = edgecascade::Package::open(&args.plugin)?.verify()?;
    let report = edgecascade::inspect::inspect(&package)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!("{} {} (guest ABI v{})", report.name, report.version, report.abi_version);
        println!("labels: {}", report.labels.join(", "));
        println!("wasm: {} bytes; constructors: {:?}", report.wasm_bytes, report.constructors);
        println!("exports:\n  {}", report.exports.join("\n  "));
        println!("imports:\n  {}", report.imports.join("\n  "));
        for m in &report.models {
            println!(
                "model {:?} ({} bytes): {}",
                m.name,
                m.bytes,
                if m.runnable { "tract runs it" } else { "NOT runnable" }
            );
            println!("  inputs:  {}", m.inputs.join("; "));
            println!("  outputs: {}", m.outputs.join("; "));
            let ops: Vec<String> = m
                .ops
                .iter()
                .map(|o| format!("{}{} x{}", o.op, if o.conformance { "" } else { " (not in the suite)" }, o.count))
                .collect();
            println!("  ops:     {}", ops.join(", "));
            println!(
                "  format:  {}; {}",
                m.formats.join(", "),
                if m.conformance {
                    "every op and format is in the conformance suite (docs/onnx-support.md)"
                } else {
                    "some of it is outside the conformance suite (docs/onnx-support.md): compare its outputs with \
                     onnxruntime's"
                }
            );
            if !m.unsupported_ops.is_empty() {
                println!("  unsupported ops: {}", m.unsupported_ops.join(", "));
            }
            if let Some(e) = &m.error {
                println!("  error: {e}");
            }
        }
    }
    let ok = report.models.iter().all(|m| m.runnable);
    Ok(if ok { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

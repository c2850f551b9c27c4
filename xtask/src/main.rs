//! Project tasks: `cargo xtask plugins | demo | test | lint | load | footprint | distill | fleet | fuzz`.
//!
//! Each task does its own set-up (the wasm32-wasip1 target, the guests, the
//! packages), so both README commands work on a fresh machine. One file per
//! task; `cargo xtask help` lists them, and `cargo xtask TASK --help` its flags.

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use std::path::{Path, PathBuf};
use std::process::Command;

mod demo;
mod distill;
mod fleet;
mod footprint;
mod fuzz;
mod lint;
mod load;
mod plugins;
mod test;
mod tier;

use tier::Tier;

/// The project's tasks.
#[derive(Parser)]
#[command(name = "cargo xtask", about = "The project's tasks: build, demo, test, measure.")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Build the guest plugins and pack them into <target>/plugins.
    Plugins,
    /// Build everything and run the demo (the main job).
    Demo(demo::Args),
    /// Build everything and run every test (what CI runs); extra arguments go to `cargo test`.
    Test(test::Args),
    /// cargo fmt --check and clippy -D warnings on both workspaces.
    Lint,
    /// Serve news-topic on loopback and drive it with many keep-alive connections.
    Load(load::Args),
    /// Measure binary sizes, resident memory and time to first answer, with and without
    /// precompiled plugins (the README's footprint table).
    Footprint,
    /// The distillation loop (`edgecascade distill`) against a teacher tier that never saw the
    /// texts it labels.
    Distill(distill::Args),
    /// A fleet on 127.0.0.1: nats-server (JetStream), a teacher tier, devices each serving a shard
    /// of the stream, and the trainer; one device is cut off for a round and must catch up.
    Fleet(fleet::Args),
    /// Every property target in tests/e2e/robustness.rs, one after another (see FUZZING.md).
    Fuzz(fuzz::Args),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    match Project::new().and_then(|project| project.run(cli.task)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// The checkout and its target directory.
struct Project {
    root: PathBuf,
    target: PathBuf,
}

impl Project {
    fn new() -> Result<Project> {
        let root =
            Path::new(env!("CARGO_MANIFEST_DIR")).parent().context("xtask lives in the workspace")?.to_path_buf();
        let target = std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| root.join("target"));
        let target = if target.is_absolute() { target } else { root.join(target) };
        Ok(Project { root, target })
    }

    fn run(&self, task: Task) -> Result<()> {
        match task {
            Task::Plugins => self.plugins(HostBuild::Binary),
            Task::Demo(args) => {
                self.plugins(HostBuild::Binary)?;
                self.demo(&args)
            }
            Task::Test(args) => {
                // Build the host as the tests will, so the two builds share one feature set.
                self.plugins(HostBuild::WithTests)?;
                self.test(&args)
            }
            Task::Lint => self.lint(),
            Task::Footprint => {
                self.plugins(HostBuild::WithTests)?;
                self.footprint()
            }
            Task::Distill(args) => {
                self.plugins(HostBuild::Binary)?;
                self.distill(&args)
            }
            Task::Load(args) => {
                self.plugins(HostBuild::Binary)?;
                self.load(&args)
            }
            Task::Fleet(args) => {
                self.plugins(HostBuild::Binary)?;
                fleet::run(self, &args.options()?)
            }
            Task::Fuzz(args) => {
                self.plugins(HostBuild::WithTests)?;
                self.fuzz(&args)
            }
        }
    }

    fn plugins_dir(&self) -> PathBuf {
        self.target.join("plugins")
    }

    fn binary(&self) -> PathBuf {
        self.target.join("release").join("edgecascade")
    }
}

/// How `plugins` builds the host whose `pack` it uses.
#[derive(Clone, Copy)]
enum HostBuild {
    /// The binary (built as `cargo test` builds it, see `plugins`).
    Binary,
    /// Everything `cargo test` needs: the binary, the test binaries and the C library.
    WithTests,
}

/// The board target the edge test cross-builds for.
const ARM: &str = "aarch64-unknown-linux-gnu";

/// `cargo` arguments for the runtime-only host: the CLI without Cranelift or native tract.
const RUNTIME_ONLY: &[&str] =
    &["build", "--release", "-p", "edgecascade", "--no-default-features", "--features", "cli"];

/// Copies the files of package `from` into `to`, replacing what is there.
fn copy_dir(from: &Path, to: &Path) -> Result<()> {
    let _ = std::fs::remove_dir_all(to);
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        // Subfolders hold precompiled artifacts, which a copy does not need.
        if entry.file_type()?.is_dir() {
            continue;
        }
        std::fs::copy(entry.path(), to.join(entry.file_name()))
            .with_context(|| format!("copying {}", entry.path().display()))?;
    }
    Ok(())
}

fn step(what: &str) {
    eprintln!("\n==> {what}");
}

fn run(cmd: &mut Command) -> Result<()> {
    let status = cmd.status().with_context(|| format!("starting {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed with {status}");
    }
    Ok(())
}

/// Installs Debian `packages` with apt-get (refreshing the package lists once
/// if the first try fails); `why` says what needs them.
fn apt_install(packages: &[&str], why: &str) -> Result<()> {
    step(&format!("installing {why} (apt-get install {})", packages.join(" ")));
    let install = |args: &[&str]| run(Command::new("apt-get").args(args).env("DEBIAN_FRONTEND", "noninteractive"));
    let args = [&["install", "-y", "--no-install-recommends"][..], packages].concat();
    if install(&args).is_err() {
        install(&["update"])?;
        install(&args).with_context(|| format!("{why} needs the Debian packages {}", packages.join(", ")))?;
    }
    Ok(())
}

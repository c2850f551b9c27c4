//! Project tasks: `cargo xtask plugins | demo | test`.
//!
//! Each task does its own set-up (the wasm32-wasip1 target, the guests, the
//! packages), so both README commands work on a fresh machine.

use anyhow::{Context, Result, bail};
use std::path::{Path, PathBuf};
use std::process::Command;

const USAGE: &str = "usage: cargo xtask <task>

tasks:
  plugins   build the guest plugins and pack them into <target>/plugins
  demo      build everything and run the demo (the main job)
  test      build everything and run every test (what CI runs)
  lint      cargo fmt --check and clippy -D warnings on both workspaces";

fn main() -> Result<()> {
    let task = std::env::args().nth(1).unwrap_or_default();
    let rest: Vec<String> = std::env::args().skip(2).collect();
    let project = Project::new()?;
    match task.as_str() {
        "plugins" => project.plugins(),
        "demo" => {
            project.plugins()?;
            project.demo(&rest)
        }
        "test" => {
            project.plugins()?;
            project.test(&rest)
        }
        "lint" => project.lint(),
        _ => {
            eprintln!("{USAGE}");
            bail!("unknown task {task:?}")
        }
    }
}

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

    fn plugins_dir(&self) -> PathBuf {
        self.target.join("plugins")
    }

    fn binary(&self) -> PathBuf {
        self.target.join("release").join("edgecascade")
    }

    fn ensure_wasm_target(&self) -> Result<()> {
        let installed = Command::new("rustup").args(["target", "list", "--installed"]).output();
        let has = matches!(&installed, Ok(o) if String::from_utf8_lossy(&o.stdout).lines().any(|l| l.trim() == "wasm32-wasip1"));
        if !has {
            step("installing the wasm32-wasip1 target (rustup target add wasm32-wasip1)");
            run(Command::new("rustup").args(["target", "add", "wasm32-wasip1"]))
                .context("the guests need the wasm32-wasip1 target: run `rustup target add wasm32-wasip1`")?;
        }
        Ok(())
    }

    /// Builds the guests and the host binary, then packs every template under guest/packages.
    fn plugins(&self) -> Result<()> {
        self.ensure_wasm_target()?;
        step("building guest plugins (wasm32-wasip1, +simd128)");
        run(Command::new("cargo")
            .current_dir(self.root.join("guest"))
            .env("CARGO_TARGET_DIR", self.target.join("guest"))
            .env_remove("RUSTFLAGS")
            .args(["build", "--release", "--target", "wasm32-wasip1"]))?;
        step("building the host (release)");
        run(Command::new("cargo").current_dir(&self.root).args(["build", "--release", "-p", "edgecascade"]))?;
        step("packing plugins");
        let wasm_dir = self.target.join("guest/wasm32-wasip1/release");
        let mut templates: Vec<PathBuf> = std::fs::read_dir(self.root.join("guest/packages"))?
            .filter_map(|e| e.ok().map(|e| e.path().join("plugin.toml")))
            .filter(|p| p.is_file())
            .collect();
        templates.sort();
        for template in templates {
            let name = template.parent().and_then(|p| p.file_name()).context("template dir")?;
            let out = self.plugins_dir().join(name);
            run(Command::new(self.binary())
                .arg("pack")
                .arg(&template)
                .arg("--search")
                .arg(&wasm_dir)
                .arg("--search")
                .arg(self.root.join("models/onnx"))
                .arg("--search")
                .arg(self.root.join("models"))
                .arg("--out")
                .arg(&out))?;
        }
        Ok(())
    }

    fn demo(&self, _rest: &[String]) -> Result<()> {
        step("demo: news-topic on the edge");
        let texts = [
            "The central bank raised interest rates again",
            "The striker scored twice as the champions won the cup final",
            "The new smartphone chip doubles battery life",
        ];
        for text in texts {
            run(Command::new(self.binary())
                .args(["run", "--plugin"])
                .arg(self.plugins_dir().join("news-topic"))
                .args(["--text", text]))?;
        }
        Ok(())
    }

    fn test(&self, rest: &[String]) -> Result<()> {
        step("guest SDK and ABI unit tests (native)");
        run(Command::new("cargo")
            .current_dir(self.root.join("guest"))
            .env("CARGO_TARGET_DIR", self.target.join("guest-native"))
            .args([
                "test",
                "-p",
                "edgecascade-abi",
                "-p",
                "edgecascade-guest",
                "--no-default-features",
                "--features",
                "text",
            ]))?;
        step("host unit, end-to-end and doc tests");
        run(Command::new("cargo")
            .current_dir(&self.root)
            .env("EDGECASCADE_PLUGINS", self.plugins_dir())
            .env("EDGECASCADE_CACHE_DIR", self.target.join("module-cache"))
            .args(["test", "--release", "--workspace"])
            .args(rest))?;
        Ok(())
    }

    fn lint(&self) -> Result<()> {
        for dir in [self.root.clone(), self.root.join("guest")] {
            run(Command::new("cargo").current_dir(&dir).args(["fmt", "--all", "--", "--check"]))?;
        }
        run(Command::new("cargo").current_dir(&self.root).args([
            "clippy",
            "--release",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ]))?;
        run(Command::new("cargo")
            .current_dir(self.root.join("guest"))
            .env("CARGO_TARGET_DIR", self.target.join("guest"))
            .args(["clippy", "--release", "--target", "wasm32-wasip1", "--", "-D", "warnings"]))?;
        Ok(())
    }
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

//! `cargo xtask plugins`: the guests for wasm32-wasip1, the host, and every package under guest/packages.

use super::{HostBuild, Project, apt_install, run, step};
use anyhow::{Context, Result};
use std::path::{Path, PathBuf};
use std::process::Command;

/// Guest plugins outside the guest workspace's default members (see guest/Cargo.toml).
const SHARED_RUNTIME_PLUGINS: &[&str] = &["news-topic-nn", "sentiment-nn"];

impl Project {
    pub(crate) fn ensure_wasm_target(&self) -> Result<()> {
        let installed = Command::new("rustup").args(["target", "list", "--installed"]).output();
        let has = matches!(&installed, Ok(o) if String::from_utf8_lossy(&o.stdout).lines().any(|l| l.trim() == "wasm32-wasip1"));
        if !has {
            step("installing the wasm32-wasip1 target (rustup target add wasm32-wasip1)");
            run(Command::new("rustup").args(["target", "add", "wasm32-wasip1"]))
                .context("the guests need the wasm32-wasip1 target: run `rustup target add wasm32-wasip1`")?;
        }
        Ok(())
    }

    /// The guests in C (guest/c/NAME/*.c, one module each, with guest/c/include) with clang and wasi-libc,
    /// into `target/guest/c/NAME.wasm`.
    fn c_plugins(&self) -> Result<PathBuf> {
        let out = self.target.join("guest/c");
        std::fs::create_dir_all(&out)?;
        let clang = "clang-14";
        // clang links wasi-libc and its own wasm32 builtins.
        let ready = Command::new(clang).arg("--version").output().is_ok_and(|o| o.status.success())
            && Path::new("/usr/lib/wasm32-wasi/libc.a").is_file()
            && Path::new("/usr/lib/llvm-14/lib/clang/14.0.6/lib/wasi/libclang_rt.builtins-wasm32.a").is_file();
        if !ready {
            apt_install(
                &["clang-14", "lld-14", "wasi-libc", "libclang-rt-14-dev-wasm32"],
                "clang and wasi-libc, for the plugin in C",
            )?;
        }
        step("building guest plugins in C (clang, wasi-libc)");
        for dir in std::fs::read_dir(self.root.join("guest/c"))?.filter_map(|e| e.ok().map(|e| e.path())) {
            let name = dir.file_name().and_then(|n| n.to_str()).context("a C plugin's directory")?.to_string();
            let mut sources: Vec<PathBuf> = std::fs::read_dir(&dir)?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "c"))
                .collect();
            sources.sort();
            // guest/c/include holds the frame helpers every plugin shares, and no plugin.
            if sources.is_empty() {
                continue;
            }
            run(Command::new(clang)
                .args(["--target=wasm32-wasi", "-O2", "-Wall", "-Wextra", "-Werror", "-mexec-model=reactor"])
                .arg("-I")
                .arg(self.root.join("guest/c/include"))
                .arg("-Wl,--strip-debug")
                .arg("-o")
                .arg(out.join(format!("{name}.wasm")))
                .args(&sources))?;
        }
        Ok(out)
    }

    /// Builds the guests and the host binary, then packs every template under guest/packages.
    pub(crate) fn plugins(&self, host: HostBuild) -> Result<()> {
        self.ensure_wasm_target()?;
        step("building guest plugins (wasm32-wasip1, +simd128)");
        run(Command::new("cargo")
            .current_dir(self.root.join("guest"))
            .env("CARGO_TARGET_DIR", self.target.join("guest"))
            .env_remove("RUSTFLAGS")
            .args(["build", "--release", "--target", "wasm32-wasip1"]))?;
        // Plugins for the shared runtime, in a build of their own: Cargo unifies the SDK's
        // features over the packages of one build, and the others would link tract into them.
        run(Command::new("cargo")
            .current_dir(self.root.join("guest"))
            .env("CARGO_TARGET_DIR", self.target.join("guest"))
            .env_remove("RUSTFLAGS")
            .args(["build", "--release", "--target", "wasm32-wasip1"])
            .args(SHARED_RUNTIME_PLUGINS.iter().flat_map(|p| ["-p", p])))?;
        let c_wasm_dir = self.c_plugins()?;
        step("building the host (release)");
        // Always with the tests' feature set: `cargo build -p edgecascade` unifies features
        // differently, so `demo` after `test` (or the other way round) recompiled wasmtime,
        // Cranelift and tract, about 30 minutes on 2 cores. Building the test binaries as well
        // costs a few minutes once.
        run(Command::new("cargo").current_dir(&self.root).args(["test", "--release", "--workspace", "--no-run"]))?;
        if let HostBuild::WithTests = host {
            // `cargo test` builds a cdylib only as a test harness; the C API test links the real one.
            // The same targets as `cargo test`, so that features unify alike: `-p edgecascade-capi`
            // alone rebuilt wasmtime, Cranelift and tokio (13 min on 2 cores; this takes 17 s).
            run(Command::new("cargo").current_dir(&self.root).args([
                "build",
                "--release",
                "--workspace",
                "--lib",
                "--bins",
                "--tests",
                "--examples",
            ]))?;
        }
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
                .arg(&c_wasm_dir)
                .arg("--search")
                .arg(self.root.join("models/onnx"))
                .arg("--search")
                .arg(self.root.join("models"))
                .arg("--out")
                .arg(&out))?;
        }
        Ok(())
    }
}

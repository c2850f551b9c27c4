//! `cargo xtask lint`: formatting and clippy on both workspaces, as CI would want them.

use super::{Project, run};
use anyhow::Result;
use std::process::Command;

impl Project {
    pub(crate) fn lint(&self) -> Result<()> {
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

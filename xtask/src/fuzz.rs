//! `cargo xtask fuzz`: each property target of tests/e2e/robustness.rs alone, for a while.

use super::{Project, run, step};
use anyhow::Result;
use std::process::Command;

/// `cargo xtask fuzz` flags.
#[derive(clap::Args)]
pub struct Args {
    /// Minutes per target.
    #[arg(long, value_name = "N", default_value_t = 10)]
    minutes: u64,
}

impl Project {
    /// Runs each robustness target alone for `--minutes N`, so the two cores go to one target at a time.
    pub(crate) fn fuzz(&self, args: &Args) -> Result<()> {
        let minutes = args.minutes;
        let list = Command::new("cargo")
            .current_dir(&self.root)
            .args(["test", "--release", "--test", "e2e", "--", "robustness::", "--list"])
            .output()?;
        let listing = String::from_utf8_lossy(&list.stdout);
        let targets: Vec<&str> = listing.lines().filter_map(|l| l.strip_suffix(": test")).collect();
        anyhow::ensure!(!targets.is_empty(), "no robustness targets found:\n{listing}");
        for target in targets {
            step(&format!("fuzzing {target} for {minutes} min"));
            run(Command::new("cargo")
                .current_dir(&self.root)
                .env("EDGECASCADE_FUZZ_SECS", (minutes * 60).to_string())
                .env("EDGECASCADE_PLUGINS", self.plugins_dir())
                .env("EDGECASCADE_CACHE_DIR", self.target.join("module-cache"))
                .args(["test", "--release", "--test", "e2e", "--", "--exact", target, "--nocapture"]))?;
        }
        Ok(())
    }
}

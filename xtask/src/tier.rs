//! A running `edgecascade serve` on loopback: the cloud tier of the demo, the loop and the fleet.

use super::{Project, run};
use anyhow::{Context, Result};
use std::process::Command;

/// A running `edgecascade serve`, stopped with SIGTERM.
pub(crate) struct Tier {
    pub child: std::process::Child,
    pub url: String,
}

impl Tier {
    /// `serve` for these packages of the plugins directory.
    pub(crate) fn start(project: &Project, plugins: &[&str]) -> Result<Tier> {
        let args = plugins.iter().flat_map(|p| ["--plugin".into(), project.plugins_dir().join(p).into_os_string()]);
        Tier::serve(project, args)
    }

    /// `serve --listen 127.0.0.1:0` with these arguments.
    pub(crate) fn serve(project: &Project, args: impl IntoIterator<Item = std::ffi::OsString>) -> Result<Tier> {
        let mut cmd = Command::new(project.binary());
        cmd.args(["serve", "--listen", "127.0.0.1:0"]).args(args);
        let mut child = cmd.stdout(std::process::Stdio::piped()).spawn()?;
        let mut line = String::new();
        std::io::BufRead::read_line(&mut std::io::BufReader::new(child.stdout.take().context("stdout")?), &mut line)?;
        let base =
            line.trim().strip_prefix("listening on ").with_context(|| format!("unexpected first line {line:?}"))?;
        Ok(Tier { child, url: format!("{base}/v1") })
    }

    pub(crate) fn stop(mut self) -> Result<()> {
        run(Command::new("kill").args(["-TERM", &self.child.id().to_string()]))?;
        let status = self.child.wait()?;
        anyhow::ensure!(status.success(), "the tier exited with {status}");
        eprintln!("server on {} stopped cleanly", self.url);
        Ok(())
    }
}

impl Drop for Tier {
    fn drop(&mut self) {
        let _ = self.child.kill();
    }
}

//! The escalation log: every escalated input with the cloud's answer, as JSONL.
//!
//! Crash-safe: each record is one `write` of a whole line to a file opened in
//! append mode, and opening the log first cuts off a torn last line left by a
//! crash, so a line is either whole or absent.
//!
//! The record is a versioned contract, specified in `docs/escalation-log.md`:
//! [`RECORD_VERSION`] changes only when a field changes meaning or goes away;
//! new optional fields are added without a bump, and readers ignore fields
//! they do not know. The retrainer (`models/pipeline/distill.py`) learns from
//! `scores` when `soft` is true, else from `label`.

use crate::error::{Error, Result};
use crate::spool::Spool;
use edgecascade_abi::Score;
use serde::Serialize;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// The version of [`Record`] this host writes (the `record` field). Version 1
/// had no `record`, `id`, `scores`, `soft` or `teacher` fields.
pub const RECORD_VERSION: u32 = 2;

/// One escalation (or audit), as written.
#[derive(Debug, Clone, Serialize)]
pub struct Record<'a> {
    /// The record format, [`RECORD_VERSION`].
    pub record: u32,
    /// A random 128-bit id in hex, unique per record: lets a consumer that
    /// receives a record twice (a retried upload) keep it once.
    pub id: String,
    /// Seconds since the Unix epoch.
    pub ts: f64,
    /// The plugin.
    pub plugin: &'a str,
    /// Its version.
    pub version: &'a str,
    /// The input text, after redaction.
    pub text: &'a str,
    /// The large model's label.
    pub label: Option<&'a str>,
    /// The large model's confidence.
    pub confidence: f32,
    /// The large model's distribution over the labels, highest first, when
    /// it gave one; else the one label it named, with score 1.
    pub scores: &'a [Score],
    /// True when `scores` is a distribution (two or more labels scored), false
    /// for a hard label. Learn from `scores` only when true.
    pub soft: bool,
    /// The model name the cloud was asked for.
    pub teacher: &'a str,
    /// Why the request reached the cloud: a router [`Reason`](super::Reason)
    /// (`low_confidence`, `beyond`, `local_error`, `forced_cloud`), or
    /// `audit` for a confident local answer sampled for checking.
    pub reason: &'a str,
    /// The local label, if there was one.
    pub local_label: Option<&'a str>,
    /// The local confidence, if there was one.
    pub local_confidence: Option<f32>,
}

/// Where escalation records go: an append-only JSONL file, or a [`Spool`]
/// that a fleet shipper drains to the central stream.
pub struct EscalationLog {
    path: PathBuf,
    target: Target,
}

enum Target {
    File(Mutex<File>),
    Spool(Arc<Spool>),
}

/// A fresh record id: 128 random bits in hex.
pub fn record_id() -> String {
    let mut bytes = [0u8; 16];
    if getrandom::fill(&mut bytes).is_err() {
        // No OS randomness: fastrand's generator (seeded per thread) still makes collisions unlikely.
        bytes.copy_from_slice(&fastrand::u128(..).to_le_bytes());
    }
    hex::encode(bytes)
}

impl EscalationLog {
    /// Opens (or creates) the log, dropping a torn last line if a crash left one.
    pub fn open(path: impl AsRef<Path>) -> Result<EscalationLog> {
        let path = path.as_ref().to_path_buf();
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        }
        let mut file =
            OpenOptions::new().read(true).create(true).append(true).open(&path).map_err(|e| Error::io(&path, e))?;
        crate::spool::cut_torn_tail(&mut file).map_err(|e| Error::io(&path, e))?;
        Ok(EscalationLog { path, target: Target::File(Mutex::new(file)) })
    }

    /// A log that appends to `spool` (one record per line, synced), for a
    /// shipper to send on ([`crate::fleet`]).
    pub fn spooled(spool: Arc<Spool>) -> EscalationLog {
        EscalationLog { path: spool.dir().to_path_buf(), target: Target::Spool(spool) }
    }

    /// The log's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends one record as one line. A full disk is an error here, and the
    /// router counts it; the answer itself is never lost.
    pub fn append(&self, record: &Record<'_>) -> Result<()> {
        let mut line = serde_json::to_vec(record).map_err(|e| Error::io(&self.path, e.into()))?;
        match &self.target {
            Target::Spool(spool) => spool.append(&line),
            Target::File(file) => {
                line.push(b'\n');
                let mut file = file.lock().unwrap_or_else(|p| p.into_inner());
                file.write_all(&line).map_err(|e| Error::io(&self.path, e))?;
                file.sync_data().map_err(|e| Error::io(&self.path, e))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record<'a>(text: &'a str) -> Record<'a> {
        Record {
            record: RECORD_VERSION,
            id: record_id(),
            ts: 1.0,
            plugin: "p",
            version: "1",
            text,
            label: Some("x"),
            confidence: 1.0,
            scores: &[],
            soft: false,
            teacher: "t",
            reason: "low_confidence",
            local_label: None,
            local_confidence: None,
        }
    }

    #[test]
    fn a_torn_last_line_is_cut_off_on_open() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log.jsonl");
        {
            let log = EscalationLog::open(&path).unwrap();
            log.append(&record("whole")).unwrap();
        }
        // A crash in the middle of the second write.
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(b"{\"ts\":2,\"plugin\":\"p\",\"te").unwrap();
        drop(f);
        let log = EscalationLog::open(&path).unwrap();
        log.append(&record("after")).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<serde_json::Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        assert_eq!(lines.len(), 2);
        assert_eq!((lines[0]["text"].as_str(), lines[1]["text"].as_str()), (Some("whole"), Some("after")));
    }
}

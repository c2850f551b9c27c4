//! Collecting: the trainer's side of the escalation stream.
//!
//! A [`Collector`] is a durable pull consumer of one plugin's records from
//! every device. [`Collector::drain`] fetches everything the stream holds
//! for it, appends each record it has not seen (by record `id`) to a JSONL
//! file, syncs the file, and only then acknowledges the messages: a trainer
//! that crashes mid-drain gets the unacknowledged ones again and keeps each
//! record once.

use super::{ESCALATIONS_STREAM, ESCALATIONS_SUBJECT, Fleet, check_token, fleet_error};
use crate::error::{Error, Result};
use async_nats::jetstream::consumer::{AckPolicy, pull};
use futures_util::StreamExt;
use serde::Serialize;
use std::collections::{BTreeMap, HashSet};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Messages fetched per request.
const FETCH: usize = 500;

/// What one [`Collector::drain`] did.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct Collected {
    /// Messages received from the stream.
    pub received: u64,
    /// Of those, records already kept (a device resent them after a lost acknowledgement).
    pub duplicates: u64,
    /// Of those, messages that were not escalation records (dropped, and acknowledged).
    pub malformed: u64,
    /// New records kept, by device.
    pub by_device: BTreeMap<String, u64>,
    /// Records in the file after the drain.
    pub total: u64,
}

/// A durable consumer of one plugin's records, and the file it keeps them in.
pub struct Collector {
    consumer: async_nats::jetstream::consumer::Consumer<pull::Config>,
    path: PathBuf,
    file: File,
    seen: HashSet<String>,
}

impl Collector {
    /// Opens the durable consumer `durable` of `plugin`'s records (created if
    /// missing: it starts at the stream's first record) and the record file
    /// at `path` (created if missing; the ids already in it are not kept again).
    pub async fn open(fleet: &Fleet, plugin: &str, durable: &str, path: &Path) -> Result<Collector> {
        check_token("plugin name", plugin)?;
        check_token("consumer name", durable)?;
        let mut file =
            OpenOptions::new().read(true).create(true).append(true).open(path).map_err(|e| Error::io(path, e))?;
        crate::spool::cut_torn_tail(&mut file).map_err(|e| Error::io(path, e))?;
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        let seen = text.lines().filter_map(record_id).collect();
        let stream = fleet
            .jetstream()
            .get_stream(ESCALATIONS_STREAM)
            .await
            .map_err(|e| fleet_error("opening the stream", ESCALATIONS_STREAM, e))?;
        let consumer = stream
            .get_or_create_consumer(
                durable,
                pull::Config {
                    durable_name: Some(durable.to_string()),
                    filter_subject: format!("{ESCALATIONS_SUBJECT}.*.{plugin}"),
                    ack_policy: AckPolicy::Explicit,
                    ack_wait: Duration::from_secs(60),
                    ..Default::default()
                },
            )
            .await
            .map_err(|e| fleet_error("opening the consumer", durable, e))?;
        Ok(Collector { consumer, path: path.to_path_buf(), file, seen })
    }

    /// The record file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Fetches until the stream has nothing more for this consumer, keeping
    /// new records and acknowledging every message once it is on disk.
    pub async fn drain(&mut self) -> Result<Collected> {
        let mut collected = Collected::default();
        loop {
            let mut batch = self
                .consumer
                .fetch()
                .max_messages(FETCH)
                .expires(Duration::from_secs(1))
                .messages()
                .await
                .map_err(|e| fleet_error("fetching from", ESCALATIONS_STREAM, e))?;
            let mut messages = Vec::new();
            let mut lines = Vec::new();
            while let Some(message) = batch.next().await {
                let message = message.map_err(|e| fleet_error("fetching from", ESCALATIONS_STREAM, e))?;
                collected.received += 1;
                match record(&message.payload) {
                    None => collected.malformed += 1,
                    Some((id, _, _)) if self.seen.contains(&id) => collected.duplicates += 1,
                    Some((id, device, line)) => {
                        self.seen.insert(id);
                        *collected.by_device.entry(device).or_default() += 1;
                        lines.extend_from_slice(&line);
                        lines.push(b'\n');
                    }
                }
                messages.push(message);
            }
            if messages.is_empty() {
                break;
            }
            self.file.write_all(&lines).map_err(|e| Error::io(&self.path, e))?;
            self.file.sync_data().map_err(|e| Error::io(&self.path, e))?;
            for message in &messages {
                message.ack().await.map_err(|e| fleet_error("acknowledging on", ESCALATIONS_STREAM, e))?;
            }
        }
        collected.total = self.seen.len() as u64;
        Ok(collected)
    }
}

/// The id of a record line.
fn record_id(line: &str) -> Option<String> {
    let value: serde_json::Value = serde_json::from_str(line).ok()?;
    value.get("id")?.as_str().map(str::to_string)
}

/// The id and device of a record message, and the record as one line (re-encoded: a payload
/// may carry newlines as JSON whitespace).
fn record(payload: &[u8]) -> Option<(String, String, Vec<u8>)> {
    let value: serde_json::Value = serde_json::from_slice(payload).ok()?;
    let id = value.get("id")?.as_str()?.to_string();
    let device = value.get("device").and_then(|d| d.as_str()).unwrap_or("").to_string();
    value.get("plugin")?.as_str()?;
    Some((id, device, serde_json::to_vec(&value).ok()?))
}

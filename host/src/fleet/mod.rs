//! A fleet of devices over NATS JetStream: escalation records flow from
//! every device to one stream, and signed package versions flow back on a
//! channel that every device follows.
//!
//! ```text
//!  device (edgecascade serve --nats …)              NATS JetStream                   trainer
//!  router ─► EscalationLog ─► Spool ─► ship ──► stream EDGECASCADE_ESCALATIONS ──► collect ─► retrain
//!                                (disk, capped)     edgecascade.escalations.<device>.<plugin>      │
//!  AppState ◄─ promote ◄─ shadow ◄─ verify ◄─ follow ◄─ KV edgecascade-channel ◄─ publish ◄─ gate
//!                                                  + objects edgecascade-packages
//! ```
//!
//! - [`ship`]: a device's records go from its [`Spool`](crate::spool::Spool)
//!   to the stream, each with its record id as `Nats-Msg-Id`, so the server
//!   drops a resend within its duplicate window and the trainer's
//!   [`collect`] drops any later one. The spool position moves on only after
//!   the server's acknowledgement: at-least-once, and nothing acknowledged is
//!   lost in a crash.
//! - [`channel`]: a package version is published as objects (its files) and
//!   an [`Announcement`](channel::Announcement) under the plugin's key; a
//!   device watches the key, fetches, verifies under its own trust policy,
//!   runs the candidate in shadow on its recent inputs, and promotes it by
//!   hot reload, or refuses it and keeps serving what it serves.
//! - [`collect`]: the trainer's durable consumer of the stream.
//!
//! Why NATS: `nats-server` is one static binary (a Debian package), JetStream
//! gives a persistent stream with publish de-duplication, a key-value store
//! and an object store in the same server, and leaf nodes are its own answer
//! for edge sites. The subjects, buckets and record formats are specified in
//! `docs/fleet.md`.

pub mod channel;
pub mod collect;
pub mod ship;

use crate::error::{Error, Result};
use crate::metrics::Metrics;
use async_nats::jetstream;
use std::time::Duration;

/// The stream that holds every device's escalation records.
pub const ESCALATIONS_STREAM: &str = "EDGECASCADE_ESCALATIONS";
/// The subject prefix of escalation records: `edgecascade.escalations.<device>.<plugin>`.
pub const ESCALATIONS_SUBJECT: &str = "edgecascade.escalations";
/// The key-value bucket of the package channel: one key per plugin, its latest announcement.
pub const CHANNEL_BUCKET: &str = "edgecascade-channel";
/// The object store that holds the files of every published package version.
pub const PACKAGES_BUCKET: &str = "edgecascade-packages";
/// How long the server remembers a record id to drop a resend (JetStream's
/// duplicate window). A device offline for longer resends into the trainer's
/// own de-duplication instead.
pub const DUPLICATE_WINDOW: Duration = Duration::from_secs(10 * 60);
/// How long records stay in the stream: a trainer that was down for less catches up.
pub const RECORD_RETENTION: Duration = Duration::from_secs(30 * 24 * 3600);

/// A connection to the fleet's NATS server, with its JetStream context.
/// Cheap to clone; reconnects by itself.
#[derive(Clone)]
pub struct Fleet {
    client: async_nats::Client,
    js: jetstream::Context,
}

impl Fleet {
    /// Connects to `url` (`nats://host:port`, comma-separated for a cluster)
    /// as `name`. Returns at once even when the server is unreachable: the
    /// client keeps trying, for ever, and `metrics`' `fleet_link_up` says
    /// whether it is connected. Fails only on a URL it cannot parse.
    pub async fn connect(url: &str, name: &str, metrics: Metrics) -> Result<Fleet> {
        let events = metrics.clone();
        let client = async_nats::ConnectOptions::new()
            .name(name)
            .retry_on_initial_connect()
            .max_reconnects(None)
            .connection_timeout(Duration::from_secs(5))
            .reconnect_delay_callback(|attempts| Duration::from_millis((100 * attempts as u64).min(2_000)))
            .event_callback(move |event| {
                let events = events.clone();
                async move {
                    match event {
                        async_nats::Event::Connected => events.link(true),
                        async_nats::Event::Disconnected => events.link(false),
                        other => tracing::debug!("nats: {other}"),
                    }
                }
            })
            .connect(url)
            .await
            .map_err(|e| fleet_error("connecting", url, e))?;
        let mut js = jetstream::new(client.clone());
        js.set_timeout(Duration::from_secs(5));
        Ok(Fleet { client, js })
    }

    /// Whether the client is connected now.
    pub fn is_connected(&self) -> bool {
        self.client.connection_state() == async_nats::connection::State::Connected
    }

    /// Waits until every message published so far reached the server.
    pub async fn flush(&self) -> Result<()> {
        self.client.flush().await.map_err(|e| fleet_error("flushing", "the connection", e))
    }

    /// Creates the stream and buckets if they are missing (idempotent; every
    /// side calls it, so the first one up makes them). Fails while the server
    /// is unreachable, or when the account may not create them.
    pub async fn setup(&self) -> Result<()> {
        self.js
            .get_or_create_stream(jetstream::stream::Config {
                name: ESCALATIONS_STREAM.into(),
                subjects: vec![format!("{ESCALATIONS_SUBJECT}.>")],
                storage: jetstream::stream::StorageType::File,
                duplicate_window: DUPLICATE_WINDOW,
                max_age: RECORD_RETENTION,
                ..Default::default()
            })
            .await
            .map_err(|e| fleet_error("creating the stream", ESCALATIONS_STREAM, e))?;
        if self.js.get_key_value(CHANNEL_BUCKET).await.is_err() {
            self.js
                .create_key_value(jetstream::kv::Config {
                    bucket: CHANNEL_BUCKET.into(),
                    description: "edgecascade: the latest package version of each plugin".into(),
                    history: 16,
                    storage: jetstream::stream::StorageType::File,
                    ..Default::default()
                })
                .await
                .map_err(|e| fleet_error("creating the bucket", CHANNEL_BUCKET, e))?;
        }
        if self.js.get_object_store(PACKAGES_BUCKET).await.is_err() {
            self.js
                .create_object_store(jetstream::object_store::Config {
                    bucket: PACKAGES_BUCKET.into(),
                    description: Some("edgecascade: the files of published package versions".into()),
                    storage: jetstream::stream::StorageType::File,
                    ..Default::default()
                })
                .await
                .map_err(|e| fleet_error("creating the object store", PACKAGES_BUCKET, e))?;
        }
        Ok(())
    }

    /// [`setup`](Fleet::setup), retried until it succeeds (a device that boots offline).
    pub async fn setup_when_reachable(&self) {
        let mut delay = Duration::from_millis(200);
        loop {
            match self.setup().await {
                Ok(()) => return,
                Err(e) => {
                    tracing::debug!("{e}; retrying in {delay:?}");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(5));
                }
            }
        }
    }

    pub(crate) fn jetstream(&self) -> &jetstream::Context {
        &self.js
    }
}

/// The subject of `plugin`'s records from `device`.
pub fn escalation_subject(device: &str, plugin: &str) -> String {
    format!("{ESCALATIONS_SUBJECT}.{device}.{plugin}")
}

/// Checks that `value` can be one token of a subject or key: ASCII letters,
/// digits, `-` and `_`, 1 to 64 of them. Device ids and plugin names must be.
pub fn check_token(what: &str, value: &str) -> Result<()> {
    let ok =
        (1..=64).contains(&value.len()) && value.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(Error::Fleet {
            operation: format!("checking the {what}"),
            message: format!("{value:?} must be 1-64 ASCII letters, digits, '-' or '_'"),
        })
    }
}

pub(crate) fn fleet_error(operation: &str, what: &str, e: impl std::fmt::Display) -> Error {
    Error::Fleet { operation: format!("{operation} {what}"), message: e.to_string() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_checked() {
        for good in ["dev-01", "news-topic", "a_b", "X9"] {
            check_token("device id", good).unwrap();
        }
        for bad in ["", "a.b", "a b", "*", ">", "dev/1", &"x".repeat(65)] {
            let err = check_token("device id", bad).unwrap_err().to_string();
            assert!(err.contains("device id"), "{err}");
        }
    }
}

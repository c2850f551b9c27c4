//! Shipping: a device's spooled escalation records to the fleet stream.
//!
//! Each record is published to `edgecascade.escalations.<device>.<plugin>`
//! with a `device` field added and its record `id` as the `Nats-Msg-Id`
//! header. A batch is published pipelined, then its acknowledgements are
//! awaited in order; the spool position moves past the last record
//! acknowledged, so a link that drops mid-batch resends only what was not
//! acknowledged, and the server drops what it already stored.

use super::{Fleet, escalation_subject};
use crate::metrics::Metrics;
use crate::spool::{Spool, SpoolStats, Spooled};
use std::sync::Arc;
use std::time::Duration;

/// Records published before their acknowledgements are awaited.
pub const BATCH: usize = 256;

/// Ships `spool` to the stream as `device`, for ever: waits for records while
/// the spool is empty, backs off (0.2 s doubling to 5 s) while the link is
/// down. Keeps `metrics`' `ship_*` counters.
pub async fn ship(fleet: Fleet, spool: Arc<Spool>, device: String, metrics: Metrics) {
    let mut last = spool.stats();
    metrics.shipping(last.queued, last.appended, 0, 0, 0, 0);
    // Until the server is first reached, the gauges still follow the spool (and its drops).
    let setup = fleet.setup_when_reachable();
    tokio::pin!(setup);
    loop {
        tokio::select! {
            () = &mut setup => break,
            _ = tokio::time::timeout(Duration::from_secs(1), spool.appended()) => {
                last = report(&metrics, &spool, last, 0, 0);
            }
        }
    }
    let mut backoff = Duration::from_millis(200);
    loop {
        let batch = match peek(&spool).await {
            Ok(batch) => batch,
            Err(e) => {
                tracing::error!("spool {}: {e}", spool.dir().display());
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        if batch.is_empty() {
            // Woken by an append; the timeout only refreshes the gauges.
            let _ = tokio::time::timeout(Duration::from_secs(1), spool.appended()).await;
            last = report(&metrics, &spool, last, 0, 0);
            continue;
        }
        let outcome = send(&fleet, &batch, &device).await;
        if let Some(upto) = outcome.acked_upto
            && let Err(e) = spool.ack(upto, outcome.acked + outcome.skipped)
        {
            tracing::error!("spool {}: saving the acknowledged position: {e}", spool.dir().display());
        }
        last = report(&metrics, &spool, last, outcome.sent, outcome.duplicates);
        match outcome.error {
            None => backoff = Duration::from_millis(200),
            Some(e) => {
                tracing::warn!(queued = last.queued, "shipping escalation records: {e}; retrying in {backoff:?}");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    }
}

async fn peek(spool: &Arc<Spool>) -> crate::error::Result<Vec<Spooled>> {
    let spool = spool.clone();
    tokio::task::spawn_blocking(move || spool.peek(BATCH))
        .await
        .unwrap_or_else(|e| Err(super::fleet_error("reading", "the spool", e)))
}

fn report(metrics: &Metrics, spool: &Spool, last: SpoolStats, sent: u64, duplicates: u64) -> SpoolStats {
    let now = spool.stats();
    metrics.shipping(
        now.queued,
        now.appended.saturating_sub(last.appended),
        sent,
        now.acked.saturating_sub(last.acked),
        duplicates,
        now.dropped.saturating_sub(last.dropped),
    );
    now
}

struct Outcome {
    sent: u64,
    acked: u64,
    skipped: u64,
    duplicates: u64,
    acked_upto: Option<crate::spool::Position>,
    error: Option<String>,
}

async fn send(fleet: &Fleet, batch: &[Spooled], device: &str) -> Outcome {
    let mut outcome = Outcome { sent: 0, acked: 0, skipped: 0, duplicates: 0, acked_upto: None, error: None };
    let mut pending = Vec::with_capacity(batch.len());
    for record in batch {
        let Some((subject, id, payload)) = envelope(&record.line, device) else {
            // Not a record (the spool only holds what the router wrote; a disk fault could do this):
            // passed over like an acknowledged one, so it cannot block the queue.
            tracing::error!("spool: a line that is not an escalation record was skipped");
            pending.push((None, record));
            continue;
        };
        let mut headers = async_nats::HeaderMap::new();
        headers.insert("Nats-Msg-Id", id.as_str());
        match fleet.jetstream().publish_with_headers(subject, headers, payload.into()).await {
            Ok(ack) => {
                outcome.sent += 1;
                pending.push((Some(ack), record));
            }
            Err(e) => {
                outcome.error = Some(e.to_string());
                break;
            }
        }
    }
    for (ack, record) in pending {
        match ack {
            None => {
                outcome.skipped += 1;
                outcome.acked_upto = Some(record.next);
            }
            Some(ack) => match ack.await {
                Ok(ack) => {
                    outcome.acked += 1;
                    outcome.duplicates += u64::from(ack.duplicate);
                    outcome.acked_upto = Some(record.next);
                }
                Err(e) => {
                    outcome.error.get_or_insert(e.to_string());
                    break;
                }
            },
        }
    }
    outcome
}

/// The subject, record id and payload (the record with `device` added) of a spooled line.
fn envelope(line: &[u8], device: &str) -> Option<(String, String, Vec<u8>)> {
    let mut record: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(line).ok()?;
    let id = record.get("id")?.as_str()?.to_string();
    let plugin = record.get("plugin")?.as_str()?.to_string();
    record.insert("device".into(), device.into());
    Some((escalation_subject(device, &plugin), id, serde_json::to_vec(&record).ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_envelope_adds_the_device_and_keeps_the_record() {
        let line = br#"{"record":2,"id":"ab12","plugin":"sentiment","text":"hi","scores":[]}"#;
        let (subject, id, payload) = envelope(line, "dev-1").unwrap();
        assert_eq!(subject, "edgecascade.escalations.dev-1.sentiment");
        assert_eq!(id, "ab12");
        let value: serde_json::Value = serde_json::from_slice(&payload).unwrap();
        assert_eq!(value["device"], "dev-1");
        assert_eq!(value["text"], "hi");
        assert!(envelope(b"not json", "d").is_none());
        assert!(envelope(br#"{"plugin":"p"}"#, "d").is_none(), "no id");
    }
}

//! The guest's stderr: captured with a cap, then written to the host's log.
//!
//! Rust's `eprintln!` panics on a failed write, and a chatty guest must not
//! die of its own logging: the capture keeps up to its cap, drops the rest,
//! and always tells the guest that everything was written.

/// A capped buffer for one instance's stderr.
pub(crate) struct StderrCapture {
    bytes: Vec<u8>,
    dropped: usize,
    cap: usize,
}

impl StderrCapture {
    pub(crate) fn new(cap: usize) -> Self {
        StderrCapture { bytes: Vec::new(), dropped: 0, cap }
    }

    /// Keeps what fits under the cap and counts the rest.
    pub(crate) fn push(&mut self, data: &[u8]) {
        let room = self.cap.saturating_sub(self.bytes.len());
        let kept = room.min(data.len());
        self.bytes.extend_from_slice(&data[..kept]);
        self.dropped += data.len() - kept;
    }

    /// Logs what the guest wrote since the last drain, one event per line.
    pub(crate) fn drain_to_log(&mut self, plugin: &str) {
        if self.bytes.is_empty() && self.dropped == 0 {
            return;
        }
        for line in String::from_utf8_lossy(&self.bytes).lines() {
            tracing::info!(target: "edgecascade::guest", plugin, "{line}");
        }
        if self.dropped > 0 {
            tracing::warn!(target: "edgecascade::guest", plugin, dropped = self.dropped, "guest stderr over its cap; dropped the rest");
        }
        self.bytes.clear();
        self.dropped = 0;
    }
}

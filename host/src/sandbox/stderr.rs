//! The guest's stderr: captured with a cap, then written to the host's log.
//!
//! wasmtime-wasi's `MemoryOutputPipe` traps the guest once it is full, and
//! Rust's `eprintln!` panics on a failed write; a chatty guest must not die
//! of its own logging, so this stream keeps up to the cap and drops the rest.

use bytes::Bytes;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};

/// A capped, shared buffer for one instance's stderr.
#[derive(Clone)]
pub(crate) struct StderrCapture {
    inner: Arc<Mutex<Captured>>,
    cap: usize,
}

#[derive(Default)]
struct Captured {
    bytes: Vec<u8>,
    dropped: usize,
}

impl StderrCapture {
    pub(crate) fn new(cap: usize) -> Self {
        StderrCapture { inner: Arc::default(), cap }
    }

    fn push(&self, data: &[u8]) {
        let mut c = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let room = self.cap.saturating_sub(c.bytes.len());
        let kept = room.min(data.len());
        c.bytes.extend_from_slice(&data[..kept]);
        c.dropped += data.len() - kept;
    }

    /// Logs what the guest wrote since the last drain, one event per line.
    pub(crate) fn drain_to_log(&self, plugin: &str) {
        let mut c = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if c.bytes.is_empty() && c.dropped == 0 {
            return;
        }
        for line in String::from_utf8_lossy(&c.bytes).lines() {
            tracing::info!(target: "edgecascade::guest", plugin, "{line}");
        }
        if c.dropped > 0 {
            tracing::warn!(target: "edgecascade::guest", plugin, dropped = c.dropped, "guest stderr over its cap; dropped the rest");
        }
        c.bytes.clear();
        c.dropped = 0;
    }
}

impl IsTerminal for StderrCapture {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for StderrCapture {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }

    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for StderrCapture {
    async fn ready(&mut self) {}
}

impl OutputStream for StderrCapture {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        self.push(&bytes);
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        // Always writable: what does not fit is dropped, never refused.
        Ok(64 * 1024)
    }
}

impl tokio::io::AsyncWrite for StderrCapture {
    fn poll_write(self: Pin<&mut Self>, _cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        self.push(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

//! Remembering a large model's replies for the length of a job.

use super::{ChatReply, ChatRequest, CloudClient, CloudError};
use std::collections::HashMap;
use std::fs::File;
use std::io::Write;
use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

/// A client that asks `inner` once per distinct request and answers repeats
/// from memory, counting both. The distillation loop labels its check and
/// test splits through one, so that every round compares versions on the
/// same teacher answers and pays for each row once.
///
/// Requests are keyed by model and messages (what a plugin's `prompt` makes
/// of an input, which does not depend on the plugin's version). Failures are
/// not remembered. Unbounded: meant for a job over a known set, not for
/// serving (the router has a bounded, expiring answer cache for that).
///
/// [`Memo::remembered_in`] keeps the replies in a file as well, so that a job
/// run again (the fleet trainer's `--once` rounds, a restart) does not pay
/// for the same rows twice.
pub struct Memo<C> {
    inner: C,
    replies: Mutex<HashMap<String, ChatReply>>,
    store: Option<Mutex<File>>,
    calls: AtomicU64,
    hits: AtomicU64,
}

/// One line of a memo's file.
#[derive(serde::Serialize, serde::Deserialize)]
struct Remembered {
    request: String,
    reply: ChatReply,
}

impl<C: CloudClient> Memo<C> {
    /// Remembers `inner`'s replies.
    pub fn new(inner: C) -> Memo<C> {
        Memo { inner, replies: Mutex::default(), store: None, calls: AtomicU64::new(0), hits: AtomicU64::new(0) }
    }

    /// Remembers `inner`'s replies in memory and in `path` (JSON lines, created if missing),
    /// starting from the replies already there. A line that does not parse (a torn last line
    /// after a crash) is skipped; a reply that cannot be appended is still answered and only
    /// costs a repeat call in the next job. The file is keyed like memory: by model and
    /// messages, so a different teacher behind the same model name needs a new file.
    ///
    /// Fails when `path` cannot be read or opened for appending.
    pub fn remembered_in(inner: C, path: &Path) -> std::io::Result<Memo<C>> {
        let mut replies = HashMap::new();
        let text = match std::fs::read(path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(e),
        };
        for line in text.split(|b| *b == b'\n') {
            if let Ok(r) = serde_json::from_slice::<Remembered>(line) {
                replies.insert(r.request, r.reply);
            }
        }
        let mut file = File::options().create(true).append(true).open(path)?;
        // Start on a line of our own if a crash left a torn one.
        if text.last().is_some_and(|b| *b != b'\n') {
            file.write_all(b"\n")?;
        }
        let store = Some(Mutex::new(file));
        Ok(Memo { inner, replies: Mutex::new(replies), store, calls: AtomicU64::new(0), hits: AtomicU64::new(0) })
    }

    /// Replies remembered so far, from this job and (with a file) earlier ones.
    pub fn remembered(&self) -> usize {
        self.replies.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// Calls that reached `inner` (successful or not).
    pub fn calls(&self) -> u64 {
        self.calls.load(Ordering::Relaxed)
    }

    /// Requests answered from memory.
    pub fn hits(&self) -> u64 {
        self.hits.load(Ordering::Relaxed)
    }
}

impl<C: CloudClient> CloudClient for Memo<C> {
    fn complete(&self, request: &ChatRequest, deadline: Instant) -> Result<ChatReply, CloudError> {
        let key = serde_json::to_string(request).unwrap_or_default();
        if let Some(reply) = self.replies.lock().unwrap_or_else(|p| p.into_inner()).get(&key) {
            self.hits.fetch_add(1, Ordering::Relaxed);
            return Ok(reply.clone());
        }
        self.calls.fetch_add(1, Ordering::Relaxed);
        let reply = self.inner.complete(request, deadline)?;
        if let Some(store) = &self.store {
            let line = serde_json::to_string(&Remembered { request: key.clone(), reply: reply.clone() })
                .map(|l| l + "\n")
                .unwrap_or_default();
            // One write per line, so that lines of concurrent calls do not interleave.
            if let Err(e) = store.lock().unwrap_or_else(|p| p.into_inner()).write_all(line.as_bytes()) {
                tracing::warn!("could not remember a reply on disk ({e}); the next job asks again");
            }
        }
        self.replies.lock().unwrap_or_else(|p| p.into_inner()).insert(key, reply.clone());
        Ok(reply)
    }

    fn describe(&self) -> String {
        format!("{} (remembered)", self.inner.describe())
    }
}

impl<C: CloudClient + ?Sized> CloudClient for std::sync::Arc<C> {
    fn complete(&self, request: &ChatRequest, deadline: Instant) -> Result<ChatReply, CloudError> {
        (**self).complete(request, deadline)
    }

    fn describe(&self) -> String {
        (**self).describe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ChatMessage, Role};

    struct Counter(AtomicU64);
    impl CloudClient for Counter {
        fn complete(&self, r: &ChatRequest, _: Instant) -> Result<ChatReply, CloudError> {
            let n = self.0.fetch_add(1, Ordering::Relaxed);
            if r.model == "down" {
                return Err(CloudError::Connect("down".into()));
            }
            Ok(ChatReply { content: format!("reply {n}"), ..Default::default() })
        }
        fn describe(&self) -> String {
            "counter".into()
        }
    }

    fn request(model: &str, text: &str) -> ChatRequest {
        let messages = vec![ChatMessage { role: Role::User, content: text.into() }];
        ChatRequest { model: model.into(), messages, max_tokens: 4, ..Default::default() }
    }

    #[test]
    fn repeats_are_answered_once_and_failures_are_not_kept() {
        let memo = Memo::new(Counter(AtomicU64::new(0)));
        let soon = Instant::now() + std::time::Duration::from_secs(1);
        let first = memo.complete(&request("m", "a"), soon).unwrap();
        assert_eq!(memo.complete(&request("m", "a"), soon).unwrap(), first);
        assert_ne!(memo.complete(&request("m", "b"), soon).unwrap(), first);
        assert!(memo.complete(&request("down", "a"), soon).is_err());
        assert!(memo.complete(&request("down", "a"), soon).is_err());
        assert_eq!((memo.calls(), memo.hits()), (4, 1));
    }

    #[test]
    fn a_remembered_reply_is_not_paid_for_again_in_the_next_job() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("replies.jsonl");
        let soon = Instant::now() + std::time::Duration::from_secs(1);
        let first = Memo::remembered_in(Counter(AtomicU64::new(0)), &path).unwrap();
        let a = first.complete(&request("m", "a"), soon).unwrap();
        assert!(first.complete(&request("down", "a"), soon).is_err());
        drop(first);
        // A crash mid-line: the torn line is skipped and the file stays usable.
        std::fs::OpenOptions::new().append(true).open(&path).unwrap().write_all(b"{\"request\":\"tor").unwrap();
        let second = Memo::remembered_in(Counter(AtomicU64::new(100)), &path).unwrap();
        assert_eq!(second.complete(&request("m", "a"), soon).unwrap(), a);
        let b = second.complete(&request("m", "b"), soon).unwrap();
        assert_eq!((second.calls(), second.hits(), second.remembered()), (1, 1, 2));
        let third = Memo::remembered_in(Counter(AtomicU64::new(200)), &path).unwrap();
        assert_eq!(third.complete(&request("m", "b"), soon).unwrap(), b);
        assert_eq!(third.calls(), 0);
    }
}

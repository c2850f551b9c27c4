//! Remembering a large model's replies for the length of a job.

use super::{ChatReply, ChatRequest, CloudClient, CloudError};
use std::collections::HashMap;
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
pub struct Memo<C> {
    inner: C,
    replies: Mutex<HashMap<String, ChatReply>>,
    calls: AtomicU64,
    hits: AtomicU64,
}

impl<C: CloudClient> Memo<C> {
    /// Remembers `inner`'s replies.
    pub fn new(inner: C) -> Memo<C> {
        Memo { inner, replies: Mutex::default(), calls: AtomicU64::new(0), hits: AtomicU64::new(0) }
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
}

//! Retries, backoff with jitter, `Retry-After`, and a circuit breaker, around any client.

use super::{ChatReply, ChatRequest, CloudClient, CloudError};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How to retry a failed call.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    /// Attempts per request, the first included. Default 3.
    pub attempts: u32,
    /// Backoff before the second attempt; doubles each time. Default 100 ms.
    pub base_delay: Duration,
    /// Longest backoff, and longest `Retry-After` waited for: a server that asks for longer is
    /// not retried. Default 2 s.
    pub max_delay: Duration,
    /// Consecutive failed requests that open the circuit. Default 5.
    pub breaker_threshold: u32,
    /// How long an open circuit stays open before one probe is let through. Default 10 s.
    pub breaker_cool_down: Duration,
}

/// [`RetryPolicy::attempts`]'s default: the first attempt and two retries.
pub const DEFAULT_ATTEMPTS: u32 = 3;

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            attempts: DEFAULT_ATTEMPTS,
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(2),
            breaker_threshold: 5,
            breaker_cool_down: Duration::from_secs(10),
        }
    }
}

/// The circuit breaker's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BreakerState {
    /// Calls go through.
    Closed,
    /// Calls fail fast with [`CloudError::CircuitOpen`].
    Open,
    /// One probe is in flight; its outcome closes or reopens the circuit.
    HalfOpen,
}

struct Breaker {
    state: BreakerState,
    consecutive_failures: u32,
    opened_at: Instant,
}

/// A client with retries and a circuit breaker. Every wait respects the
/// request's deadline: a retry that cannot finish in time is not started.
pub struct Resilient<C> {
    inner: C,
    policy: RetryPolicy,
    breaker: Mutex<Breaker>,
}

impl<C: CloudClient> Resilient<C> {
    /// Wraps `inner`.
    pub fn new(inner: C, policy: RetryPolicy) -> Self {
        let breaker = Breaker { state: BreakerState::Closed, consecutive_failures: 0, opened_at: Instant::now() };
        Resilient { inner, policy, breaker: Mutex::new(breaker) }
    }

    /// The breaker's state now.
    pub fn breaker_state(&self) -> BreakerState {
        self.lock().state
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Breaker> {
        self.breaker.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Lets a call through, or says how long the circuit stays open.
    fn admit(&self) -> Result<(), CloudError> {
        let mut b = self.lock();
        match b.state {
            BreakerState::Closed => Ok(()),
            BreakerState::Open => {
                let open_for = b.opened_at.elapsed();
                if open_for >= self.policy.breaker_cool_down {
                    b.state = BreakerState::HalfOpen;
                    tracing::info!("circuit half-open: probing the cloud");
                    Ok(())
                } else {
                    Err(CloudError::CircuitOpen(self.policy.breaker_cool_down - open_for))
                }
            }
            BreakerState::HalfOpen => Err(CloudError::CircuitOpen(Duration::ZERO)),
        }
    }

    fn record(&self, outcome: &Result<ChatReply, CloudError>) {
        let mut b = self.lock();
        match outcome {
            Ok(_) => {
                if b.state != BreakerState::Closed {
                    tracing::info!("circuit closed: the cloud answers again");
                }
                b.state = BreakerState::Closed;
                b.consecutive_failures = 0;
            }
            Err(e) if e.counts_against_health() => {
                b.consecutive_failures += 1;
                let reopen = b.state == BreakerState::HalfOpen;
                if reopen || b.consecutive_failures >= self.policy.breaker_threshold {
                    if b.state != BreakerState::Open {
                        tracing::warn!(failures = b.consecutive_failures, "circuit open: {e}");
                    }
                    b.state = BreakerState::Open;
                    b.opened_at = Instant::now();
                }
            }
            Err(_) => {}
        }
    }

    /// How long to wait before the next attempt; `None` when the server asked
    /// for a longer wait (`Retry-After`) than the policy allows: retrying sooner
    /// than asked only earns another refusal.
    fn backoff(&self, attempt: u32, error: &CloudError) -> Option<Duration> {
        if let CloudError::Status { retry_after: Some(wait), .. } = error {
            return (*wait <= self.policy.max_delay).then_some(*wait);
        }
        // Full jitter: uniform in [0, min(max, base * 2^attempt)].
        let ceiling = self.policy.base_delay.saturating_mul(1 << attempt.min(16)).min(self.policy.max_delay);
        Some(ceiling.mul_f64(fastrand::f64()))
    }
}

impl<C: CloudClient> CloudClient for Resilient<C> {
    fn complete(&self, request: &ChatRequest, deadline: Instant) -> Result<ChatReply, CloudError> {
        self.admit()?;
        let mut attempt = 0;
        let outcome = loop {
            let result = self.inner.complete(request, deadline);
            let error = match result {
                Ok(reply) => break Ok(reply),
                Err(e) => e,
            };
            attempt += 1;
            if !error.retryable() || attempt >= self.policy.attempts {
                break Err(error);
            }
            let Some(wait) = self.backoff(attempt - 1, &error) else { break Err(error) };
            if Instant::now() + wait >= deadline {
                break Err(error);
            }
            tracing::debug!(attempt, ?wait, "retrying the cloud after: {error}");
            std::thread::sleep(wait);
        };
        self.record(&outcome);
        outcome
    }

    fn describe(&self) -> String {
        self.inner.describe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    /// A client that fails `fail_first` times with `error`, then answers.
    struct Flaky {
        calls: AtomicU32,
        fail_first: u32,
        error: CloudError,
    }

    impl CloudClient for Flaky {
        fn complete(&self, _: &ChatRequest, _: Instant) -> Result<ChatReply, CloudError> {
            let n = self.calls.fetch_add(1, Ordering::SeqCst);
            if n < self.fail_first {
                Err(self.error.clone())
            } else {
                Ok(ChatReply { content: "ok".into(), ..Default::default() })
            }
        }
        fn describe(&self) -> String {
            "flaky".into()
        }
    }

    fn request() -> ChatRequest {
        ChatRequest { model: "m".into(), max_tokens: 1, ..Default::default() }
    }

    fn fast() -> RetryPolicy {
        RetryPolicy {
            base_delay: Duration::from_millis(1),
            max_delay: Duration::from_millis(5),
            breaker_cool_down: Duration::from_millis(50),
            ..Default::default()
        }
    }

    fn soon() -> Instant {
        Instant::now() + Duration::from_secs(5)
    }

    #[test]
    fn retries_transient_errors() {
        let c = Resilient::new(
            Flaky { calls: AtomicU32::new(0), fail_first: 2, error: CloudError::Connect("refused".into()) },
            fast(),
        );
        assert!(c.complete(&request(), soon()).is_ok());
        assert_eq!(c.inner.calls.load(Ordering::SeqCst), 3);
    }

    #[test]
    fn does_not_retry_bad_replies() {
        let c = Resilient::new(
            Flaky { calls: AtomicU32::new(0), fail_first: 9, error: CloudError::BadReply("x".into()) },
            fast(),
        );
        assert!(c.complete(&request(), soon()).is_err());
        assert_eq!(c.inner.calls.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn never_sleeps_past_the_deadline() {
        let error = CloudError::Status { status: 429, retry_after: Some(Duration::from_secs(60)), body: String::new() };
        let policy = RetryPolicy { max_delay: Duration::from_secs(60), ..fast() };
        let c = Resilient::new(Flaky { calls: AtomicU32::new(0), fail_first: 9, error }, policy);
        let started = Instant::now();
        assert!(c.complete(&request(), Instant::now() + Duration::from_millis(200)).is_err());
        assert!(started.elapsed() < Duration::from_millis(150));
    }

    #[test]
    fn the_breaker_opens_fails_fast_and_closes_after_a_good_probe() {
        let c = Resilient::new(
            Flaky { calls: AtomicU32::new(0), fail_first: 5 * 3, error: CloudError::Timeout(Duration::ZERO) },
            fast(),
        );
        for _ in 0..5 {
            assert!(c.complete(&request(), soon()).is_err());
        }
        assert_eq!(c.breaker_state(), BreakerState::Open);
        assert!(matches!(c.complete(&request(), soon()), Err(CloudError::CircuitOpen(_))));
        std::thread::sleep(Duration::from_millis(60));
        assert!(c.complete(&request(), soon()).is_ok());
        assert_eq!(c.breaker_state(), BreakerState::Closed);
    }

    #[test]
    fn refusals_of_single_inputs_do_not_open_the_breaker() {
        // A tier that finds an input beyond its model answers 422; that says nothing about the tier.
        let refusal = CloudError::Status { status: 422, retry_after: None, body: "beyond".into() };
        let c = Resilient::new(Flaky { calls: AtomicU32::new(0), fail_first: 20, error: refusal }, fast());
        for _ in 0..20 {
            assert!(matches!(c.complete(&request(), soon()), Err(CloudError::Status { status: 422, .. })));
        }
        assert_eq!(c.breaker_state(), BreakerState::Closed);
        assert!(c.complete(&request(), soon()).is_ok());
    }
}

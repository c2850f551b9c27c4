//! The cascade: answer locally when the small model is sure, escalate to a
//! large model when it is not, and say where every answer came from and why.
//!
//! Data flows one way: input → sandboxed local model → decision → (redaction →
//! cache → budget → cloud) → answer. The router never returns an error for a
//! request: when the cloud cannot answer in time, the local answer comes back
//! marked `degraded`, and when nothing could answer the [`Reply`] says why.

mod budget;
mod log;
pub mod policy;
mod redact;
pub mod soft;

pub use budget::{Budget, BudgetLimits, Remaining};
pub use log::{EscalationLog, RECORD_VERSION, Record, record_id};
pub use policy::{LocalOutcome, decide};
pub use redact::Redactor;

use crate::cloud::{ChatRequest, CloudClient, CloudError, Usage};
use crate::metrics::Metrics;
use crate::plugin::{Input, Local, Plugin};
use edgecascade_abi::Answer;
use serde::Serialize;
use sha2::{Digest, Sha256};
use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Who may answer a request.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// The cascade: local first, the cloud when the policy says so.
    #[default]
    Auto,
    /// Never call the cloud.
    LocalOnly,
    /// Skip the local model.
    CloudOnly,
}

/// Where an answer came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// The local model.
    Local,
    /// The large model.
    Cloud,
    /// The local model, after the cloud failed: the reply is `degraded`.
    LocalFallback,
}

impl Source {
    /// The metrics label.
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Local => "local",
            Source::Cloud => "cloud",
            Source::LocalFallback => "local_fallback",
        }
    }
}

/// Why the router chose that source.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    /// The local confidence met the threshold.
    Confident,
    /// The local confidence was below the threshold.
    LowConfidence,
    /// The plugin said the input is beyond it.
    Beyond,
    /// The local run failed (a trap, the deadline, bad input).
    LocalError,
    /// The caller asked for local only.
    ForcedLocal,
    /// The caller asked for the cloud only.
    ForcedCloud,
    /// The policy would escalate, but no cloud is configured.
    NoCloud,
}

impl Reason {
    /// The metrics label.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Confident => "confident",
            Reason::LowConfidence => "low_confidence",
            Reason::Beyond => "beyond",
            Reason::LocalError => "local_error",
            Reason::ForcedLocal => "forced_local",
            Reason::ForcedCloud => "forced_cloud",
            Reason::NoCloud => "no_cloud",
        }
    }
}

/// One routed answer, with its provenance.
#[derive(Debug, Clone, Serialize)]
pub struct Reply {
    /// The plugin that handled the request.
    pub plugin: String,
    /// Its version.
    pub version: String,
    /// The answer; `None` only when neither tier could answer.
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    pub answer: Option<Answer>,
    /// Where the answer came from.
    pub source: Source,
    /// Why.
    pub reason: Reason,
    /// True when the cloud was wanted but failed, and the local answer stands in.
    pub degraded: bool,
    /// True when the cloud answer came from the answer cache.
    pub cached: bool,
    /// True when this confident local answer was also sent to the cloud as an
    /// audit sample ([`CascadeConfig::audit_rate`]); the answer is still the local one.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub audited: bool,
    /// The plugin's reason, when it declined the input.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub beyond: Option<String>,
    /// The local answer, when the reply came from elsewhere.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub local_answer: Option<Answer>,
    /// What went wrong locally, if anything.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub local_error: Option<String>,
    /// What went wrong in the cloud, if anything.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cloud_error: Option<CloudFailure>,
    /// Local and cloud latency.
    pub latency_ms: Latency,
    /// Tokens the cloud call used.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tokens: Option<Usage>,
}

/// A cloud failure in a reply.
#[derive(Debug, Clone, Serialize)]
pub struct CloudFailure {
    /// The metrics label of [`CloudError::kind`].
    pub kind: &'static str,
    /// The message.
    pub message: String,
}

/// Latencies in milliseconds.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Latency {
    /// Time in the local model.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub local: Option<f64>,
    /// Time in the cloud (including retries).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cloud: Option<f64>,
    /// The whole request.
    pub total: f64,
}

/// [`CascadeConfig::deadline`]'s default: 3 s for the whole request.
pub const DEFAULT_DEADLINE: Duration = Duration::from_secs(3);
/// [`CascadeConfig::max_tokens`]'s default.
pub const DEFAULT_MAX_TOKENS: u32 = 64;
/// [`CascadeConfig::cache_entries`]'s default.
pub const DEFAULT_CACHE_ENTRIES: usize = 4096;
/// [`CascadeConfig::cache_ttl`]'s default: 1 hour.
pub const DEFAULT_CACHE_TTL: Duration = Duration::from_secs(3600);

/// How a router escalates.
#[derive(Debug, Clone)]
pub struct CascadeConfig {
    /// Escalate below this local confidence. Default: the manifest's `policy.threshold`.
    pub threshold: f32,
    /// The whole request's budget; the cloud gets what the local run left. Default 3 s.
    pub deadline: Duration,
    /// The model name sent to the cloud. Default: the manifest's
    /// `policy.cloud_model`, else the plugin's name.
    pub cloud_model: String,
    /// `max_tokens` when the plugin does not say. Default 64.
    pub max_tokens: u32,
    /// Cloud calls allowed per minute and per day. Default unlimited.
    pub budget: BudgetLimits,
    /// Cloud answers kept for identical inputs; 0 disables the cache. Default 4096.
    pub cache_entries: usize,
    /// How long a cached answer stays valid. Default 1 hour.
    pub cache_ttl: Duration,
    /// Patterns replaced before anything leaves the device or is logged. Default: emails, phones, cards, IPs.
    pub redactor: Redactor,
    /// The share of confident local answers that are also sent to the cloud,
    /// in `[0, 1]`: an audit sample. Its agreement with the local answers is
    /// an online estimate of local accuracy (`/metrics`:
    /// `edgecascade_audits_total`, `edgecascade_audit_agreements_total`), and
    /// the audited answers are logged with reason `audit`, so the retrainer
    /// also learns from easy cases and not only from the hard ones it
    /// escalated. It costs `audit_rate` x (confident share) extra cloud calls
    /// per request, taken from the same budget; the caller still gets the
    /// local answer, after the audit call (bounded by the deadline).
    /// Default: the manifest's `policy.audit_rate` (0, off).
    pub audit_rate: f64,
}

impl CascadeConfig {
    /// Defaults taken from a plugin's manifest.
    pub fn for_plugin(plugin: &Plugin) -> CascadeConfig {
        let policy = &plugin.manifest().policy;
        CascadeConfig {
            threshold: policy.threshold,
            deadline: DEFAULT_DEADLINE,
            cloud_model: policy.cloud_model.clone().unwrap_or_else(|| plugin.name().to_string()),
            max_tokens: DEFAULT_MAX_TOKENS,
            budget: BudgetLimits::default(),
            cache_entries: DEFAULT_CACHE_ENTRIES,
            cache_ttl: DEFAULT_CACHE_TTL,
            redactor: Redactor::default(),
            audit_rate: policy.audit_rate,
        }
    }
}

/// The escalation-log reason of an audit sample.
pub const AUDIT_REASON: &str = "audit";

/// Cloud answers by input hash, with the time they were stored.
type AnswerCache = lru::LruCache<[u8; 32], (Answer, Instant)>;

/// Routes requests for one plugin.
pub struct Router {
    plugin: Plugin,
    cloud: Option<Arc<dyn CloudClient>>,
    config: CascadeConfig,
    budget: Budget,
    cache: Option<Mutex<AnswerCache>>,
    log: Option<EscalationLog>,
    shadow: Option<Plugin>,
    metrics: Metrics,
}

/// Builds a [`Router`] ([`Router::builder`]).
pub struct RouterBuilder {
    plugin: Plugin,
    cloud: Option<Arc<dyn CloudClient>>,
    config: CascadeConfig,
    metrics: Metrics,
    log: Option<EscalationLog>,
}

impl RouterBuilder {
    /// Escalate to this large model. Default: none, so nothing leaves the device.
    pub fn cloud(mut self, cloud: Arc<dyn CloudClient>) -> RouterBuilder {
        self.cloud = Some(cloud);
        self
    }

    /// Adjusts the cascade's settings, which start as the manifest's policy
    /// and the defaults that [`CascadeConfig`] states.
    pub fn configure(mut self, adjust: impl FnOnce(&mut CascadeConfig)) -> RouterBuilder {
        adjust(&mut self.config);
        self
    }

    /// Counts into these metrics (shared with other routers and a server). Default: its own.
    pub fn metrics(mut self, metrics: Metrics) -> RouterBuilder {
        self.metrics = metrics;
        self
    }

    /// Appends every escalation to `log`. Default: no log.
    pub fn log(mut self, log: EscalationLog) -> RouterBuilder {
        self.log = Some(log);
        self
    }

    /// The router.
    pub fn build(self) -> Router {
        let router = Router::new(self.plugin, self.cloud, self.config, self.metrics);
        match self.log {
            Some(log) => router.with_log(log),
            None => router,
        }
    }
}

/// What the cloud step produced.
struct CloudOutcome {
    answer: Result<Answer, CloudFailure>,
    cached: bool,
    tokens: Option<Usage>,
    latency: f64,
}

impl Router {
    /// A router for `plugin` with the manifest's policy ([`CascadeConfig::for_plugin`]),
    /// no cloud (every request is answered locally) and fresh metrics, until the
    /// builder says otherwise.
    ///
    /// ```no_run
    /// use edgecascade::cloud::{OpenAi, Resilient, RetryPolicy};
    /// use edgecascade::{Input, Mode, Router, Runtime};
    /// use std::sync::Arc;
    /// use std::time::Duration;
    ///
    /// let plugin = Runtime::new(Default::default())?.load("target/plugins/news-topic")?;
    /// let router = Router::builder(plugin)
    ///     .cloud(Arc::new(Resilient::new(OpenAi::with_url("http://gateway:8080/v1"), RetryPolicy::default())))
    ///     .configure(|c| c.deadline = Duration::from_millis(800))
    ///     .build();
    /// let reply = router.route(&Input::text("Shares rose after the merger"), Mode::Auto);
    /// # Ok::<(), edgecascade::Error>(())
    /// ```
    pub fn builder(plugin: Plugin) -> RouterBuilder {
        let config = CascadeConfig::for_plugin(&plugin);
        RouterBuilder { plugin, cloud: None, config, metrics: Metrics::default(), log: None }
    }

    /// A router for `plugin`, escalating to `cloud` (none: local only).
    pub fn new(plugin: Plugin, cloud: Option<Arc<dyn CloudClient>>, config: CascadeConfig, metrics: Metrics) -> Router {
        let cache = NonZeroUsize::new(config.cache_entries).map(|n| Mutex::new(lru::LruCache::new(n)));
        let budget = Budget::new(config.budget);
        let router = Router { plugin, cloud, config, budget, cache, log: None, shadow: None, metrics };
        router.publish_budget();
        router
    }

    /// Whether this router has a cloud to escalate to.
    pub fn has_cloud(&self) -> bool {
        self.cloud.is_some()
    }

    /// Appends every escalation to `log` (opt-in).
    pub fn with_log(mut self, log: EscalationLog) -> Router {
        self.log = Some(log);
        self
    }

    /// Runs `candidate` beside the plugin on every local request, for shadow
    /// evaluation: answers still come from the plugin; the requests compared
    /// and those where the two labels differ are counted in metrics
    /// (`shadow_compared`, `shadow_disagreements`, labelled with the
    /// candidate's version). The candidate runs in the request's path, so
    /// local latency roughly doubles while a shadow is attached.
    pub fn with_shadow(mut self, candidate: Plugin) -> Router {
        self.shadow = Some(candidate);
        self
    }

    /// The plugin.
    pub fn plugin(&self) -> &Plugin {
        &self.plugin
    }

    /// The configuration.
    pub fn config(&self) -> &CascadeConfig {
        &self.config
    }

    /// The cloud budget left.
    pub fn budget_remaining(&self) -> Remaining {
        self.budget.remaining()
    }

    /// Routes one request. Never fails: see [`Reply`].
    pub fn route(&self, input: &Input, mode: Mode) -> Reply {
        let started = Instant::now();
        let deadline = started + self.config.deadline;
        let name = self.plugin.name();
        let mut reply = Reply {
            plugin: name.to_string(),
            version: self.plugin.version().to_string(),
            answer: None,
            source: Source::Local,
            reason: Reason::ForcedCloud,
            degraded: false,
            cached: false,
            audited: false,
            beyond: None,
            local_answer: None,
            local_error: None,
            cloud_error: None,
            latency_ms: Latency::default(),
            tokens: None,
        };

        // 1. The local model, unless the caller skips it.
        let mut local: Option<Answer> = None;
        let mut outcome = LocalOutcome::Skipped;
        if mode != Mode::CloudOnly {
            let t = Instant::now();
            let result = self.plugin.infer_by(input, deadline);
            reply.latency_ms.local = Some(ms(t.elapsed()));
            outcome = match result {
                Ok(Local::Answered(answer)) => {
                    self.metrics.confidence(name, answer.confidence);
                    self.compare_shadow(input, &answer);
                    let confidence = answer.confidence;
                    local = Some(answer);
                    LocalOutcome::Answered { confidence }
                }
                Ok(Local::Beyond { reason }) => {
                    reply.beyond = Some(reason);
                    LocalOutcome::Beyond
                }
                Err(e) => {
                    reply.local_error = Some(e.to_string());
                    LocalOutcome::Failed
                }
            };
        }
        reply.reason = policy::decide(outcome, mode, self.config.threshold);
        let escalate = reply.reason.escalates();
        if !escalate || self.cloud.is_none() {
            if escalate {
                reply.reason = Reason::NoCloud;
                reply.degraded = local.is_some();
            }
            if let (Reason::Confident, Some(answer)) = (reply.reason, &local) {
                reply.audited = self.audit(input, answer, deadline);
            }
            reply.answer = local;
            return self.finish(reply, started);
        }

        // 2. The cloud, for whatever time is left.
        self.metrics.escalation(name, reply.reason.as_str());
        let outcome = self.ask_cloud(input, reply.reason.as_str(), deadline);
        reply.latency_ms.cloud = Some(outcome.latency);
        reply.tokens = outcome.tokens;
        reply.cached = outcome.cached;
        match outcome.answer {
            Ok(answer) => {
                self.write_log(input, &answer, reply.reason.as_str(), local.as_ref());
                reply.source = Source::Cloud;
                reply.answer = Some(answer);
                reply.local_answer = local;
            }
            Err(failure) => {
                self.metrics.cloud_error(name, failure.kind);
                reply.cloud_error = Some(failure);
                reply.source = Source::LocalFallback;
                reply.degraded = true;
                reply.answer = local;
            }
        }
        self.finish(reply, started)
    }

    fn finish(&self, mut reply: Reply, started: Instant) -> Reply {
        reply.latency_ms.total = ms(started.elapsed());
        let source = if reply.answer.is_none() { "none" } else { reply.source.as_str() };
        self.metrics.request(self.plugin.name(), source, started.elapsed().as_secs_f64());
        if reply.degraded {
            self.metrics.degraded(self.plugin.name());
        }
        reply
    }

    /// Redact, look in the cache, phrase the prompt, take from the budget, ask, parse.
    /// The budget is taken last, just before the call: a prompt that fails spends nothing.
    fn ask_cloud(&self, input: &Input, reason: &str, deadline: Instant) -> CloudOutcome {
        let started = Instant::now();
        let done = |answer, cached, tokens| CloudOutcome { answer, cached, tokens, latency: ms(started.elapsed()) };
        let fail = |e: CloudError| CloudFailure { kind: e.kind(), message: e.to_string() };
        let redacted = self.redact(input);
        let key = self.cache_key(&redacted);
        if let Some(answer) = self.cached(&key) {
            self.metrics.cache_hit(self.plugin.name());
            return done(Ok(answer), true, None);
        }
        let prompt = match self.plugin.prompt_by(&redacted, deadline) {
            Ok(p) => p,
            Err(e) => return done(Err(CloudFailure { kind: "prompt", message: e.to_string() }), false, None),
        };
        if let Err(window) = self.budget.try_take() {
            return done(Err(fail(CloudError::BudgetExhausted(window))), false, None);
        }
        self.publish_budget();
        let request = ChatRequest {
            model: self.config.cloud_model.clone(),
            messages: prompt.messages,
            max_tokens: prompt.max_tokens.unwrap_or(self.config.max_tokens),
            metadata: vec![
                ("plugin".into(), self.plugin.name().to_string()),
                ("plugin_version".into(), self.plugin.version().to_string()),
                ("reason".into(), reason.to_string()),
            ],
        };
        let cloud = self.cloud.as_ref().expect("checked by the caller");
        let reply = match cloud.complete(&request, deadline) {
            Ok(r) => r,
            Err(e) => return done(Err(fail(e)), false, None),
        };
        match self.plugin.parse_reply_by(&reply.content, deadline) {
            Ok(answer) => {
                let answer =
                    soft::with_logprobs(answer, &self.plugin.manifest().plugin.labels, &reply.first_token_logprobs);
                self.remember(key, &answer);
                done(Ok(answer), false, Some(reply.usage))
            }
            Err(e) => {
                // Out of time reading a good reply is the deadline's fault, not the reply's.
                let kind = if matches!(e, crate::error::Error::Busy { .. } | crate::error::Error::Deadline { .. }) {
                    "deadline"
                } else {
                    "bad_reply"
                };
                done(Err(CloudFailure { kind, message: e.to_string() }), false, Some(reply.usage))
            }
        }
    }

    /// The input with personal data replaced; only text-like payloads are touched.
    fn redact(&self, input: &Input) -> Input {
        let textual = input.content_type().starts_with("text/") || input.content_type() == "application/json";
        match (textual, input.as_text()) {
            (true, Some(text)) => Input::new(input.content_type(), self.config.redactor.apply(text)),
            _ => input.clone(),
        }
    }

    fn cache_key(&self, input: &Input) -> [u8; 32] {
        let mut h = Sha256::new();
        for part in [self.plugin.name().as_bytes(), self.plugin.version().as_bytes(), input.content_type().as_bytes()] {
            h.update((part.len() as u64).to_le_bytes());
            h.update(part);
        }
        h.update(input.data());
        h.finalize().into()
    }

    fn cached(&self, key: &[u8; 32]) -> Option<Answer> {
        let mut cache = self.cache.as_ref()?.lock().unwrap_or_else(|p| p.into_inner());
        match cache.get(key) {
            Some((answer, at)) if at.elapsed() < self.config.cache_ttl => Some(answer.clone()),
            Some(_) => {
                cache.pop(key);
                None
            }
            None => None,
        }
    }

    fn remember(&self, key: [u8; 32], answer: &Answer) {
        if let Some(cache) = &self.cache {
            cache.lock().unwrap_or_else(|p| p.into_inner()).put(key, (answer.clone(), Instant::now()));
        }
    }

    /// Sends a confident local answer to the cloud with probability
    /// `audit_rate`, counts whether the two agree, and logs the cloud's
    /// answer. Returns whether the audit was made.
    fn audit(&self, input: &Input, local: &Answer, deadline: Instant) -> bool {
        let rate = self.config.audit_rate;
        if self.cloud.is_none() || rate <= 0.0 || fastrand::f64() >= rate {
            return false;
        }
        let name = self.plugin.name();
        match self.ask_cloud(input, AUDIT_REASON, deadline).answer {
            Ok(answer) => {
                self.metrics.audit(name, answer.label == local.label);
                self.write_log(input, &answer, AUDIT_REASON, Some(local));
                true
            }
            Err(failure) => {
                self.metrics.cloud_error(name, failure.kind);
                false
            }
        }
    }

    fn write_log(&self, input: &Input, answer: &Answer, reason: &str, local: Option<&Answer>) {
        let Some(log) = &self.log else { return };
        let redacted = self.redact(input);
        let text = redacted.as_text().unwrap_or("");
        let record = Record {
            record: RECORD_VERSION,
            id: record_id(),
            ts: SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0),
            plugin: self.plugin.name(),
            version: self.plugin.version(),
            text,
            label: answer.label.as_deref(),
            confidence: answer.confidence,
            scores: &answer.scores,
            soft: soft::is_soft(answer),
            teacher: &self.config.cloud_model,
            reason,
            local_label: local.and_then(|a| a.label.as_deref()),
            local_confidence: local.map(|a| a.confidence),
        };
        if let Err(e) = log.append(&record) {
            tracing::warn!(plugin = %self.plugin.name(), "escalation log: {e}");
            self.metrics.log_error(self.plugin.name());
        }
    }

    fn compare_shadow(&self, input: &Input, answer: &Answer) {
        let Some(shadow) = &self.shadow else { return };
        let agreed = match shadow.infer(input) {
            Ok(Local::Answered(other)) => other.label == answer.label,
            Ok(Local::Beyond { .. }) | Err(_) => false,
        };
        self.metrics.shadow(self.plugin.name(), shadow.version(), agreed);
    }

    fn publish_budget(&self) {
        let left = self.budget.remaining();
        for (window, value) in [("minute", left.minute), ("day", left.day)] {
            if let Some(v) = value {
                self.metrics.budget(self.plugin.name(), window, v);
            }
        }
    }
}

fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e6).round() / 1e3
}

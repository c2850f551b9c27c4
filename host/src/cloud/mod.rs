//! Cloud clients: large models behind one trait.
//!
//! A [`CloudClient`] takes chat messages (phrased by the plugin) and returns
//! the reply's text and token usage. [`OpenAi`] speaks the OpenAI-compatible
//! chat-completions API (and so talks to another edgecascade tier, see
//! `edgecascade serve`); [`Anthropic`] speaks the Messages API; [`Bedrock`]
//! speaks Amazon Bedrock's Converse API, signed with SigV4 or a Bedrock API key
//! (feature `bedrock`, on by default).
//! [`Resilient`] wraps any client with retries, backoff with jitter that
//! honours `Retry-After`, and a circuit breaker.

mod anthropic;
#[cfg(feature = "bedrock")]
mod bedrock;
mod http;
mod memo;
mod openai;
mod resilient;

pub use anthropic::Anthropic;
#[cfg(feature = "bedrock")]
pub use bedrock::{Bedrock, BedrockAuth, BedrockConfigError};
pub use memo::Memo;
pub use openai::{OpenAi, OpenAiBuilder};
pub use resilient::{BreakerState, DEFAULT_ATTEMPTS, Resilient, RetryPolicy};

use edgecascade_abi::ChatMessage;
use serde::{Deserialize, Serialize};
use std::time::{Duration, Instant};

/// One request to a large model.
#[derive(Debug, Clone, PartialEq, Default, Serialize)]
pub struct ChatRequest {
    /// The model to ask.
    pub model: String,
    /// The conversation, as the plugin phrased it.
    pub messages: Vec<ChatMessage>,
    /// An upper bound on the reply's length.
    pub max_tokens: u32,
    /// Facts about the request for the provider's own logs: the router sets
    /// `plugin`, `plugin_version` and `reason`. Bedrock sends them as
    /// `requestMetadata` (at most 16 pairs); the other APIs have no such field
    /// and leave them out. Not part of the request's identity (see [`Memo`]).
    #[serde(skip)]
    pub metadata: Vec<(String, String)>,
}

/// Token counts of one call.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    /// Tokens in the request.
    pub prompt_tokens: u32,
    /// Tokens in the reply.
    pub completion_tokens: u32,
    /// Their sum.
    pub total_tokens: u32,
}

/// A large model's reply.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct ChatReply {
    /// The reply's text.
    pub content: String,
    /// Tokens used.
    pub usage: Usage,
    /// The most likely first tokens of the reply with their log-probabilities,
    /// when the API returned them (OpenAI-compatible `logprobs`/`top_logprobs`,
    /// asked for with [`OpenAi::with_logprobs`]). Empty otherwise: Anthropic's
    /// Messages API returns none. The router turns them into a distribution
    /// over the plugin's labels (soft labels for the distillation loop).
    #[serde(default)]
    pub first_token_logprobs: Vec<TokenLogprob>,
}

/// One candidate token and its natural-log probability.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TokenLogprob {
    /// The token's text, as the API returned it (it may carry a leading space).
    pub token: String,
    /// `ln p`, at most 0.
    pub logprob: f32,
}

/// Why a cloud call failed. Every variant maps to a metrics label via [`CloudError::kind`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CloudError {
    /// No answer before the deadline (connect, headers or body).
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    /// The connection could not be made (refused, unreachable, DNS, TLS).
    #[error("connection failed: {0}")]
    Connect(String),
    /// The server answered with an error status.
    #[error("HTTP {status}{}: {body}", retry_after.map(|d| format!(" (retry after {d:?})")).unwrap_or_default())]
    Status {
        /// The HTTP status code.
        status: u16,
        /// The `Retry-After` the server asked for, if any.
        retry_after: Option<Duration>,
        /// The start of the body, for logs.
        body: String,
    },
    /// The reply is not what the API promises: not JSON, the wrong content
    /// type, invalid UTF-8, no message, or too large.
    #[error("bad reply: {0}")]
    BadReply(String),
    /// The circuit breaker is open: the cloud failed repeatedly and is being left alone.
    #[error("circuit open: skipping the cloud for {0:?}")]
    CircuitOpen(Duration),
    /// The plugin's cloud budget is used up.
    #[error("cloud budget exhausted ({0})")]
    BudgetExhausted(&'static str),
    /// Redirects are not followed: an API endpoint that redirects is misconfigured.
    #[error("redirect refused: {0}")]
    Redirect(String),
    /// The credentials were refused (HTTP 401 or 403) or could not be used to sign.
    #[error("authentication failed: {0}")]
    Auth(String),
    /// The model declined this request: a guardrail or content filter intervened.
    #[error("refused by the model: {0}")]
    Refused(String),
}

impl CloudError {
    /// A short label for metrics and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            CloudError::Timeout(_) => "timeout",
            CloudError::Connect(_) => "connect",
            CloudError::Status { status: 429, .. } => "rate_limited",
            CloudError::Auth(_) => "auth",
            CloudError::Refused(_) => "refused",
            CloudError::Status { status, .. } if *status >= 500 => "server_error",
            CloudError::Status { .. } => "client_error",
            CloudError::BadReply(_) => "bad_reply",
            CloudError::CircuitOpen(_) => "circuit_open",
            CloudError::BudgetExhausted(_) => "budget",
            CloudError::Redirect(_) => "redirect",
        }
    }

    /// Whether trying again may help.
    pub fn retryable(&self) -> bool {
        match self {
            CloudError::Timeout(_) | CloudError::Connect(_) => true,
            CloudError::Status { status, .. } => *status == 429 || *status >= 500,
            _ => false,
        }
    }

    /// Whether the failure says something about the cloud's health (for the
    /// breaker). A refusal of this one request (400, 413, 415 or 422: a tier
    /// that finds the input beyond its model, say) does not: the next request
    /// may well succeed, and opening the circuit for it would cut off every
    /// escalation after a few odd inputs.
    pub fn counts_against_health(&self) -> bool {
        !matches!(
            self,
            CloudError::BudgetExhausted(_)
                | CloudError::CircuitOpen(_)
                | CloudError::Refused(_)
                | CloudError::Status { status: 400 | 413 | 415 | 422, .. }
        )
    }
}

/// A large model behind some API.
pub trait CloudClient: Send + Sync {
    /// Sends one request; must give up by `deadline`.
    fn complete(&self, request: &ChatRequest, deadline: Instant) -> Result<ChatReply, CloudError>;

    /// A name for logs: the provider and endpoint.
    fn describe(&self) -> String;
}

/// [`HttpConfig::read_timeout`]'s default: 10 s for one attempt, headers and body.
pub const DEFAULT_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Settings shared by the HTTP clients.
#[derive(Debug, Clone)]
pub struct HttpConfig {
    /// Base URL, such as `https://api.openai.com/v1` or `http://127.0.0.1:8080/v1`.
    pub base_url: String,
    /// The API key. Sent as a header, never logged. Default: from the environment.
    pub api_key: Option<String>,
    /// Connect timeout. Default 2 s.
    pub connect_timeout: Duration,
    /// Timeout for the whole response, headers and body. Default 10 s (a
    /// request's own deadline cuts it shorter).
    pub read_timeout: Duration,
    /// Largest response body read, in bytes. Default 1 MiB.
    pub max_body: u64,
    /// PEM certificates to trust for HTTPS *instead of* the built-in Mozilla roots: for a tier
    /// behind a private or self-signed CA. Default none (the Mozilla roots). PEM without any
    /// certificate in it trusts nothing, so a wrong file fails closed.
    pub ca_pem: Option<String>,
}

impl HttpConfig {
    /// Defaults for `base_url`, with the key from `key_env` if set.
    pub fn new(base_url: impl Into<String>, key_env: &str) -> HttpConfig {
        HttpConfig {
            base_url: base_url.into().trim_end_matches('/').to_string(),
            api_key: std::env::var(key_env).ok().filter(|k| !k.is_empty()),
            connect_timeout: Duration::from_secs(2),
            read_timeout: DEFAULT_READ_TIMEOUT,
            max_body: 1 << 20,
            ca_pem: None,
        }
    }
}

/// The first bytes of a body, for error messages (never the whole of a huge one).
pub(crate) fn clip(s: &str) -> String {
    let mut out: String = s.chars().take(200).collect();
    if out.len() < s.len() {
        out.push('…');
    }
    out
}

//! The OpenAI-compatible chat-completions API (`POST {base}/chat/completions`).

use super::{ChatReply, ChatRequest, CloudClient, CloudError, HttpConfig, TokenLogprob, Usage, http};
use serde_json::{Value, json};
use std::time::{Duration, Instant};

/// The most `top_logprobs` the OpenAI API accepts.
pub const MAX_TOP_LOGPROBS: u8 = 20;

/// A client for OpenAI-compatible endpoints: OpenAI itself, the many servers
/// that copy its API, and another edgecascade tier (`edgecascade serve`).
///
/// Requests send `model`, `messages`, `max_tokens` and `temperature: 0`. The
/// key (default: `$OPENAI_API_KEY`, else `$EDGECASCADE_API_KEY`) goes in a
/// bearer header and is never logged.
pub struct OpenAi {
    config: HttpConfig,
    agent: ureq::Agent,
    top_logprobs: u8,
}

impl OpenAi {
    /// A client for `config.base_url`.
    pub fn new(config: HttpConfig) -> OpenAi {
        OpenAi { agent: http::agent(&config), config, top_logprobs: 0 }
    }

    /// A client with defaults for `base_url`, the key from the environment
    /// (`OpenAi::builder(base_url).build()`).
    pub fn with_url(base_url: &str) -> OpenAi {
        OpenAi::builder(base_url).build()
    }

    /// Starts a client for `base_url` with every default of [`HttpConfig`],
    /// the key from `$OPENAI_API_KEY`, else `$EDGECASCADE_API_KEY`, and no
    /// logprobs; each setter changes one of them.
    ///
    /// ```
    /// use edgecascade::cloud::OpenAi;
    /// use std::time::Duration;
    ///
    /// let client = OpenAi::builder("http://127.0.0.1:8080/v1")
    ///     .api_key("sk-test")
    ///     .read_timeout(Duration::from_secs(30))
    ///     .logprobs(5)
    ///     .build();
    /// assert_eq!(client.config().read_timeout, Duration::from_secs(30));
    /// ```
    pub fn builder(base_url: &str) -> OpenAiBuilder {
        let mut config = HttpConfig::new(base_url, "OPENAI_API_KEY");
        if config.api_key.is_none() {
            config.api_key = std::env::var("EDGECASCADE_API_KEY").ok().filter(|k| !k.is_empty());
        }
        OpenAiBuilder { config, top_logprobs: 0 }
    }

    /// Also asks for `logprobs: true` and the `n` most likely tokens at each
    /// position (`top_logprobs`, clamped to 1..=20), so that a classifier's
    /// answer comes back as a distribution over its labels: the soft labels
    /// the distillation loop learns best from. Default off (0), because some
    /// models and servers refuse the parameter with a 400; turn it on for
    /// those that accept it. A reply without logprobs is still a good reply.
    pub fn with_logprobs(mut self, n: u8) -> OpenAi {
        self.top_logprobs = n.min(MAX_TOP_LOGPROBS);
        self
    }

    /// The HTTP settings.
    pub fn config(&self) -> &HttpConfig {
        &self.config
    }
}

/// Settings for an [`OpenAi`] client, from [`OpenAi::builder`].
#[derive(Debug, Clone)]
#[must_use = "call build() to make the client"]
pub struct OpenAiBuilder {
    config: HttpConfig,
    top_logprobs: u8,
}

impl OpenAiBuilder {
    /// The API key, sent as a bearer header. Default: from the environment (see [`OpenAi::builder`]).
    pub fn api_key(mut self, key: impl Into<String>) -> Self {
        self.config.api_key = Some(key.into());
        self
    }

    /// How long to wait for a connection. Default 2 s.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.config.connect_timeout = timeout;
        self
    }

    /// How long one attempt may take, headers and body. Default
    /// [`DEFAULT_READ_TIMEOUT`](super::DEFAULT_READ_TIMEOUT); a request's own deadline cuts it shorter.
    pub fn read_timeout(mut self, timeout: Duration) -> Self {
        self.config.read_timeout = timeout;
        self
    }

    /// The largest response body read, in bytes; a larger reply fails the attempt. Default 1 MiB.
    pub fn max_body(mut self, bytes: u64) -> Self {
        self.config.max_body = bytes;
        self
    }

    /// PEM certificates to trust instead of the Mozilla roots (see [`HttpConfig::ca_pem`]). Default none.
    pub fn ca_pem(mut self, pem: impl Into<String>) -> Self {
        self.config.ca_pem = Some(pem.into());
        self
    }

    /// Asks for the `n` most likely tokens at each position; see [`OpenAi::with_logprobs`]. Default 0 (off).
    pub fn logprobs(mut self, n: u8) -> Self {
        self.top_logprobs = n.min(MAX_TOP_LOGPROBS);
        self
    }

    /// The client.
    pub fn build(self) -> OpenAi {
        OpenAi::new(self.config).with_logprobs(self.top_logprobs)
    }
}

impl CloudClient for OpenAi {
    fn complete(&self, request: &ChatRequest, deadline: Instant) -> Result<ChatReply, CloudError> {
        let mut body = json!({
            "model": request.model,
            "messages": request.messages,
            "max_tokens": request.max_tokens,
            "temperature": 0,
        });
        if self.top_logprobs > 0 {
            body["logprobs"] = json!(true);
            body["top_logprobs"] = json!(self.top_logprobs);
        }
        let mut headers = Vec::new();
        if let Some(key) = &self.config.api_key {
            headers.push(("authorization", format!("Bearer {key}")));
        }
        let url = format!("{}/chat/completions", self.config.base_url);
        let reply = http::post_json(&self.agent, &self.config, &url, &headers, &body.to_string(), deadline)?;
        parse(&reply)
    }

    fn describe(&self) -> String {
        format!("openai-compatible at {}", self.config.base_url)
    }
}

/// Reads `choices[0].message.content`, `usage` and, when present, the first
/// token's `top_logprobs` from a chat-completions reply.
pub(crate) fn parse(reply: &Value) -> Result<ChatReply, CloudError> {
    let content = reply
        .pointer("/choices/0/message/content")
        .and_then(Value::as_str)
        .ok_or_else(|| CloudError::BadReply("no choices[0].message.content in the reply".into()))?;
    let count = |field: &str| reply.pointer(&format!("/usage/{field}")).and_then(Value::as_u64).unwrap_or(0) as u32;
    let usage = Usage {
        prompt_tokens: count("prompt_tokens"),
        completion_tokens: count("completion_tokens"),
        total_tokens: count("total_tokens"),
    };
    // Logprobs are a bonus: malformed ones are ignored, never a failed call.
    let first_token_logprobs = reply
        .pointer("/choices/0/logprobs/content/0/top_logprobs")
        .and_then(Value::as_array)
        .map(|tops| {
            tops.iter()
                .filter_map(|t| {
                    let token = t.get("token")?.as_str()?.to_string();
                    let logprob = t.get("logprob")?.as_f64()? as f32;
                    (logprob.is_finite() && logprob <= 0.0).then_some(TokenLogprob { token, logprob })
                })
                .collect()
        })
        .unwrap_or_default();
    Ok(ChatReply { content: content.to_string(), usage, first_token_logprobs })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_content_and_usage() {
        let reply = json!({"choices": [{"message": {"role": "assistant", "content": "sport"}}],
                           "usage": {"prompt_tokens": 30, "completion_tokens": 1, "total_tokens": 31}});
        let r = parse(&reply).unwrap();
        assert_eq!((r.content.as_str(), r.usage.total_tokens), (("sport"), 31));
        assert!(r.first_token_logprobs.is_empty());
    }

    #[test]
    fn reads_the_first_tokens_top_logprobs_and_skips_bad_entries() {
        let reply = json!({"choices": [{"message": {"content": "negative"}, "logprobs": {"content": [
            {"token": "negative", "logprob": -0.1, "top_logprobs": [
                {"token": "negative", "logprob": -0.1}, {"token": " neutral", "logprob": -2.5},
                {"token": "x", "logprob": "bad"}, {"token": "y", "logprob": 3.0}]}]}}]});
        let r = parse(&reply).unwrap();
        let tokens: Vec<&str> = r.first_token_logprobs.iter().map(|t| t.token.as_str()).collect();
        assert_eq!(tokens, ["negative", " neutral"]);
    }

    #[test]
    fn a_reply_without_a_message_is_bad() {
        for reply in [json!({}), json!({"choices": []}), json!({"choices": [{"message": {"content": 3}}]})] {
            assert!(matches!(parse(&reply), Err(CloudError::BadReply(_))), "{reply}");
        }
    }
}

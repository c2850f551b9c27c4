//! The OpenAI-compatible chat-completions API (`POST {base}/chat/completions`).

use super::{ChatReply, ChatRequest, CloudClient, CloudError, HttpConfig, Usage, http};
use serde_json::{Value, json};
use std::time::Instant;

/// A client for OpenAI-compatible endpoints: OpenAI itself, the many servers
/// that copy its API, and another edgecascade tier (`edgecascade serve`).
///
/// Requests send `model`, `messages`, `max_tokens` and `temperature: 0`. The
/// key (default: `$OPENAI_API_KEY`, else `$EDGECASCADE_API_KEY`) goes in a
/// bearer header and is never logged.
pub struct OpenAi {
    config: HttpConfig,
    agent: ureq::Agent,
}

impl OpenAi {
    /// A client for `config.base_url`.
    pub fn new(config: HttpConfig) -> OpenAi {
        OpenAi { agent: http::agent(&config), config }
    }

    /// A client with defaults for `base_url`, the key from the environment.
    pub fn with_url(base_url: &str) -> OpenAi {
        let mut config = HttpConfig::new(base_url, "OPENAI_API_KEY");
        if config.api_key.is_none() {
            config.api_key = std::env::var("EDGECASCADE_API_KEY").ok().filter(|k| !k.is_empty());
        }
        OpenAi::new(config)
    }
}

impl OpenAi {
    /// The HTTP settings.
    pub fn config(&self) -> &HttpConfig {
        &self.config
    }
}

impl CloudClient for OpenAi {
    fn complete(&self, request: &ChatRequest, deadline: Instant) -> Result<ChatReply, CloudError> {
        let body = json!({
            "model": request.model,
            "messages": request.messages,
            "max_tokens": request.max_tokens,
            "temperature": 0,
        });
        let mut headers = Vec::new();
        if let Some(key) = &self.config.api_key {
            headers.push(("authorization", format!("Bearer {key}")));
        }
        let url = format!("{}/chat/completions", self.config.base_url);
        let reply = http::post_json(&self.agent, &self.config, &url, &headers, &body, deadline)?;
        parse(&reply)
    }

    fn describe(&self) -> String {
        format!("openai-compatible at {}", self.config.base_url)
    }
}

/// Reads `choices[0].message.content` and `usage` from a chat-completions reply.
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
    Ok(ChatReply { content: content.to_string(), usage })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_content_and_usage() {
        let reply = json!({"choices": [{"message": {"role": "assistant", "content": "sport"}}],
                           "usage": {"prompt_tokens": 30, "completion_tokens": 1, "total_tokens": 31}});
        let r = parse(&reply).unwrap();
        assert_eq!((r.content.as_str(), r.usage.total_tokens), ("sport", 31));
    }

    #[test]
    fn a_reply_without_a_message_is_bad() {
        for reply in [json!({}), json!({"choices": []}), json!({"choices": [{"message": {"content": 3}}]})] {
            assert!(matches!(parse(&reply), Err(CloudError::BadReply(_))), "{reply}");
        }
    }
}

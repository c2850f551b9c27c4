//! Anthropic's Messages API (`POST {base}/messages`).

use super::{ChatReply, ChatRequest, CloudClient, CloudError, HttpConfig, Usage, http};
use edgecascade_abi::Role;
use serde_json::{Value, json};
use std::time::Instant;

/// The API version header this client speaks.
const API_VERSION: &str = "2023-06-01";

/// A client for Anthropic's Messages API. System messages become the
/// top-level `system` field; the key (default `$ANTHROPIC_API_KEY`) goes in
/// `x-api-key` and is never logged.
pub struct Anthropic {
    config: HttpConfig,
    agent: ureq::Agent,
}

impl Anthropic {
    /// A client for `config.base_url` (for example `https://api.anthropic.com/v1`).
    pub fn new(config: HttpConfig) -> Anthropic {
        Anthropic { agent: http::agent(&config), config }
    }

    /// A client with defaults for `base_url`, the key from `$ANTHROPIC_API_KEY`.
    pub fn with_url(base_url: &str) -> Anthropic {
        Anthropic::new(HttpConfig::new(base_url, "ANTHROPIC_API_KEY"))
    }
}

/// The Messages API body for a chat request.
pub(crate) fn body(request: &ChatRequest) -> Value {
    let system: Vec<&str> =
        request.messages.iter().filter(|m| m.role == Role::System).map(|m| m.content.as_str()).collect();
    let messages: Vec<Value> = request
        .messages
        .iter()
        .filter(|m| m.role != Role::System)
        .map(|m| json!({"role": m.role, "content": m.content}))
        .collect();
    let mut body = json!({
        "model": request.model,
        "max_tokens": request.max_tokens,
        "temperature": 0,
        "messages": messages,
    });
    if !system.is_empty() {
        body["system"] = json!(system.join("\n\n"));
    }
    body
}

/// The text blocks and usage of a Messages API reply.
pub(crate) fn parse(reply: &Value) -> Result<ChatReply, CloudError> {
    let blocks = reply
        .get("content")
        .and_then(Value::as_array)
        .ok_or_else(|| CloudError::BadReply("no content array in the reply".into()))?;
    let text: String = blocks
        .iter()
        .filter(|b| b.get("type").and_then(Value::as_str) == Some("text"))
        .filter_map(|b| b.get("text").and_then(Value::as_str))
        .collect();
    if text.is_empty() {
        return Err(CloudError::BadReply("no text block in the reply".into()));
    }
    let count = |field: &str| reply.pointer(&format!("/usage/{field}")).and_then(Value::as_u64).unwrap_or(0) as u32;
    let (prompt_tokens, completion_tokens) = (count("input_tokens"), count("output_tokens"));
    Ok(ChatReply {
        content: text,
        usage: Usage { prompt_tokens, completion_tokens, total_tokens: prompt_tokens + completion_tokens },
        first_token_logprobs: Vec::new(),
    })
}

impl Anthropic {
    /// The HTTP settings.
    pub fn config(&self) -> &HttpConfig {
        &self.config
    }
}

impl CloudClient for Anthropic {
    fn complete(&self, request: &ChatRequest, deadline: Instant) -> Result<ChatReply, CloudError> {
        let mut headers = vec![("anthropic-version", API_VERSION.to_string())];
        if let Some(key) = &self.config.api_key {
            headers.push(("x-api-key", key.clone()));
        }
        let url = format!("{}/messages", self.config.base_url);
        let reply = http::post_json(&self.agent, &self.config, &url, &headers, &body(request).to_string(), deadline)?;
        parse(&reply)
    }

    fn describe(&self) -> String {
        format!("anthropic messages at {}", self.config.base_url)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use edgecascade_abi::ChatMessage;

    #[test]
    fn system_messages_move_to_the_system_field() {
        let request = ChatRequest {
            model: "claude".into(),
            messages: vec![
                ChatMessage { role: Role::System, content: "Classify.".into() },
                ChatMessage { role: Role::User, content: "Rates rose".into() },
            ],
            max_tokens: 16,
            ..Default::default()
        };
        let b = body(&request);
        assert_eq!(b["system"], "Classify.");
        assert_eq!(b["messages"], json!([{"role": "user", "content": "Rates rose"}]));
        assert_eq!(b["temperature"], 0);
    }

    #[test]
    fn replies_join_text_blocks_and_count_tokens() {
        let reply = json!({"content": [{"type": "text", "text": "busi"}, {"type": "text", "text": "ness"}],
                           "usage": {"input_tokens": 20, "output_tokens": 2}});
        let r = parse(&reply).unwrap();
        assert_eq!((r.content.as_str(), r.usage.total_tokens), ("business", 22));
        assert!(parse(&json!({"content": []})).is_err());
    }
}

//! Amazon Bedrock's Converse API (`POST {endpoint}/model/{modelId}/converse`).
//!
//! Converse is one request shape for every model on Bedrock, Amazon's Nova
//! family (`amazon.nova-micro-v1:0`, `amazon.nova-lite-v1:0`,
//! `amazon.nova-pro-v1:0`, `amazon.nova-premier-v1:0`) and cross-region
//! inference profiles such as `us.amazon.nova-pro-v1:0` among them.
//!
//! Requests are authenticated one of the two ways AWS offers
//! ([`BedrockAuth`]): SigV4 signing with IAM credentials, or a Bedrock API
//! key sent as a bearer token. Converse returns no log-probabilities, so the
//! labels a Bedrock teacher gives the distillation loop are hard labels.

use super::{ChatReply, ChatRequest, CloudClient, CloudError, HttpConfig, Usage, http};
use aws_credential_types::Credentials;
use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};
use aws_sigv4::sign::v4;
use edgecascade_abi::Role;
use serde_json::{Value, json};
use std::time::{Instant, SystemTime};

/// The SigV4 signing name of the Bedrock runtime.
const SIGNING_NAME: &str = "bedrock";

/// The most `requestMetadata` pairs Converse accepts.
const MAX_METADATA_PAIRS: usize = 16;

/// How requests to Bedrock are authenticated.
#[derive(Clone)]
pub enum BedrockAuth {
    /// SigV4 request signing with IAM credentials, for `region`.
    SigV4 {
        /// The access key, secret and optional session token.
        credentials: Credentials,
        /// The AWS region the endpoint is in, such as `us-east-1`; part of the signature.
        region: String,
    },
    /// A Bedrock API key, sent as `Authorization: Bearer …`.
    Bearer(String),
}

impl std::fmt::Debug for BedrockAuth {
    // Secrets never reach a log: only the kind, the key id's first characters and the region.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BedrockAuth::SigV4 { credentials, region } => {
                let id: String = credentials.access_key_id().chars().take(4).collect();
                write!(f, "SigV4 {{ access_key_id: {id}…, region: {region} }}")
            }
            BedrockAuth::Bearer(_) => f.write_str("Bearer(…)"),
        }
    }
}

/// Why [`BedrockAuth::from_env`] found no way to authenticate.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BedrockConfigError {
    /// Neither an API key nor IAM credentials are set.
    #[error(
        "no Bedrock credentials: set AWS_BEARER_TOKEN_BEDROCK (a Bedrock API key), or AWS_ACCESS_KEY_ID and \
         AWS_SECRET_ACCESS_KEY (with AWS_SESSION_TOKEN for temporary credentials)"
    )]
    NoCredentials,
    /// IAM credentials are set but the region is not, and the endpoint does not name one.
    #[error("no AWS region for SigV4: set AWS_REGION (or AWS_DEFAULT_REGION); the endpoint {0:?} does not name one")]
    NoRegion(String),
}

impl BedrockAuth {
    /// SigV4 signing with an access key, its secret and, for temporary
    /// credentials, a session token, for `region`.
    pub fn sigv4(
        access_key_id: impl Into<String>,
        secret_access_key: impl Into<String>,
        session_token: Option<String>,
        region: impl Into<String>,
    ) -> BedrockAuth {
        let credentials = Credentials::new(access_key_id, secret_access_key, session_token, None, "edgecascade");
        BedrockAuth::SigV4 { credentials, region: region.into() }
    }

    /// Credentials from the standard environment variables.
    ///
    /// `AWS_BEARER_TOKEN_BEDROCK` (a Bedrock API key) wins when set. Otherwise
    /// `AWS_ACCESS_KEY_ID` and `AWS_SECRET_ACCESS_KEY`, with `AWS_SESSION_TOKEN`
    /// if set, sign with SigV4 for the region in `AWS_REGION`, else
    /// `AWS_DEFAULT_REGION`, else the one in `endpoint`'s host name
    /// (`bedrock-runtime.{region}.amazonaws.com`, and VPC endpoints like it).
    pub fn from_env(endpoint: &str) -> Result<BedrockAuth, BedrockConfigError> {
        Self::from_lookup(endpoint, |name| std::env::var(name).ok().filter(|v| !v.is_empty()))
    }

    fn from_lookup(endpoint: &str, var: impl Fn(&str) -> Option<String>) -> Result<BedrockAuth, BedrockConfigError> {
        if let Some(key) = var("AWS_BEARER_TOKEN_BEDROCK") {
            return Ok(BedrockAuth::Bearer(key));
        }
        let (Some(id), Some(secret)) = (var("AWS_ACCESS_KEY_ID"), var("AWS_SECRET_ACCESS_KEY")) else {
            return Err(BedrockConfigError::NoCredentials);
        };
        let region = var("AWS_REGION")
            .or_else(|| var("AWS_DEFAULT_REGION"))
            .or_else(|| region_of(endpoint))
            .ok_or_else(|| BedrockConfigError::NoRegion(endpoint.to_string()))?;
        let credentials = Credentials::new(id, secret, var("AWS_SESSION_TOKEN"), None, "environment");
        Ok(BedrockAuth::SigV4 { credentials, region })
    }
}

/// The region in a Bedrock runtime host name, such as `us-east-1` in
/// `https://bedrock-runtime.us-east-1.amazonaws.com` or in
/// `https://vpce-0abc.bedrock-runtime.us-east-1.vpce.amazonaws.com`.
fn region_of(endpoint: &str) -> Option<String> {
    let host = endpoint.split("://").nth(1).unwrap_or(endpoint).split(['/', ':']).next()?;
    let labels: Vec<&str> = host.split('.').collect();
    let at = labels.iter().position(|l| *l == "bedrock-runtime" || *l == "bedrock-runtime-fips")?;
    labels.get(at + 1).filter(|r| r.contains('-')).map(|r| r.to_string())
}

/// A client for Bedrock's Converse API.
///
/// `config.base_url` is the runtime endpoint, such as
/// `https://bedrock-runtime.us-east-1.amazonaws.com`, a VPC endpoint, or a
/// gateway in front of one. The model id goes in the path, percent-encoded
/// (`amazon.nova-pro-v1:0` becomes `amazon.nova-pro-v1%3A0`), and the request
/// is signed over the exact bytes sent. `config.api_key` is not used: the
/// credentials are in [`BedrockAuth`].
///
/// The request carries `system`, `messages` and `inferenceConfig` (the
/// request's `maxTokens`, `temperature` 0), and the request's metadata as
/// `requestMetadata`, so that Bedrock's own invocation logs can feed Bedrock
/// Model Distillation too. A `stopReason` of `guardrail_intervened`,
/// `content_filtered` or anything else but `end_turn`, `stop_sequence` and
/// `max_tokens` is a [`CloudError::Refused`]. A reply cut short by
/// `max_tokens` is passed on: the plugin's reply parser decides whether a
/// label is in it, as it does for the other APIs.
///
/// ```
/// use edgecascade::cloud::{Bedrock, BedrockAuth, CloudClient, HttpConfig, Resilient, RetryPolicy};
///
/// let endpoint = "https://bedrock-runtime.us-east-1.amazonaws.com";
/// // In production: BedrockAuth::from_env(endpoint)?, which reads the AWS_* variables.
/// let auth = BedrockAuth::sigv4("AKIDEXAMPLE", "secret", None, "us-east-1");
/// let nova = Resilient::new(Bedrock::new(HttpConfig::new(endpoint, "UNUSED"), auth), RetryPolicy::default());
/// assert_eq!(nova.describe(), "bedrock converse at https://bedrock-runtime.us-east-1.amazonaws.com");
/// ```
pub struct Bedrock {
    config: HttpConfig,
    auth: BedrockAuth,
    agent: ureq::Agent,
}

impl Bedrock {
    /// A client for the endpoint in `config.base_url`.
    pub fn new(config: HttpConfig, auth: BedrockAuth) -> Bedrock {
        Bedrock { agent: http::agent(&config), config, auth }
    }

    /// The HTTP settings.
    pub fn config(&self) -> &HttpConfig {
        &self.config
    }

    /// The authentication in use (its `Debug` form shows no secret).
    pub fn auth(&self) -> &BedrockAuth {
        &self.auth
    }

    /// The headers that authenticate `body` sent to `url`.
    fn auth_headers(&self, url: &str, body: &str) -> Result<Vec<(&'static str, String)>, CloudError> {
        match &self.auth {
            BedrockAuth::Bearer(key) => Ok(vec![("authorization", format!("Bearer {key}"))]),
            BedrockAuth::SigV4 { credentials, region } => {
                let identity = credentials.clone().into();
                let params = v4::SigningParams::builder()
                    .identity(&identity)
                    .region(region)
                    .name(SIGNING_NAME)
                    .time(SystemTime::now())
                    .settings(SigningSettings::default())
                    .build()
                    .map_err(|e| CloudError::Auth(format!("SigV4 parameters: {e}")))?
                    .into();
                let signed = [("content-type", "application/json")];
                let request =
                    SignableRequest::new("POST", url, signed.into_iter(), SignableBody::Bytes(body.as_bytes()))
                        .and_then(|request| sign(request, &params))
                        .map_err(|e| CloudError::Auth(format!("SigV4 signing failed: {e}")))?;
                let (instructions, _signature) = request.into_parts();
                let (headers, _params) = instructions.into_parts();
                Ok(headers.into_iter().map(|h| (h.name(), h.value().to_string())).collect())
            }
        }
    }
}

/// The Converse body for a chat request.
pub(crate) fn body(request: &ChatRequest) -> Value {
    let system: Vec<Value> =
        request.messages.iter().filter(|m| m.role == Role::System).map(|m| json!({"text": m.content})).collect();
    let messages: Vec<Value> = request
        .messages
        .iter()
        .filter(|m| m.role != Role::System)
        .map(|m| json!({"role": m.role, "content": [{"text": m.content}]}))
        .collect();
    let mut body = json!({
        "messages": messages,
        "inferenceConfig": {"maxTokens": request.max_tokens, "temperature": 0},
    });
    if !system.is_empty() {
        body["system"] = json!(system);
    }
    let metadata: serde_json::Map<String, Value> = request
        .metadata
        .iter()
        .take(MAX_METADATA_PAIRS)
        .map(|(k, v)| (metadata_text(k, 1), Value::String(metadata_text(v, 0))))
        .collect();
    if !metadata.is_empty() {
        body["requestMetadata"] = Value::Object(metadata);
    }
    body
}

/// `text` in the characters and length Converse allows in `requestMetadata`
/// (`[a-zA-Z0-9\s:_@$#=/+,.-]`, 256 at most), padded with `_` to `min` characters.
fn metadata_text(text: &str, min: usize) -> String {
    let allowed = |c: char| c.is_ascii_alphanumeric() || c.is_ascii_whitespace() || ":_@$#=/+,.-".contains(c);
    let mut out: String = text.chars().map(|c| if allowed(c) { c } else { '_' }).take(256).collect();
    while out.len() < min {
        out.push('_');
    }
    out
}

/// The text, stop reason and usage of a Converse reply.
pub(crate) fn parse(reply: &Value) -> Result<ChatReply, CloudError> {
    match reply.get("stopReason").and_then(Value::as_str) {
        None | Some("end_turn" | "stop_sequence" | "max_tokens") => {}
        Some(other) => return Err(CloudError::Refused(format!("Bedrock stopped with stopReason {other:?}"))),
    }
    let blocks = reply
        .pointer("/output/message/content")
        .and_then(Value::as_array)
        .ok_or_else(|| CloudError::BadReply("no output.message.content array in the Converse reply".into()))?;
    let text: String = blocks.iter().filter_map(|b| b.get("text").and_then(Value::as_str)).collect();
    if text.is_empty() {
        return Err(CloudError::BadReply("no text block in the Converse reply".into()));
    }
    let count = |field: &str| reply.pointer(&format!("/usage/{field}")).and_then(Value::as_u64).unwrap_or(0) as u32;
    let (prompt_tokens, completion_tokens) = (count("inputTokens"), count("outputTokens"));
    Ok(ChatReply {
        content: text,
        usage: Usage { prompt_tokens, completion_tokens, total_tokens: prompt_tokens + completion_tokens },
        first_token_logprobs: Vec::new(),
    })
}

/// `model` as one path segment: everything but unreserved characters percent-encoded.
fn path_segment(model: &str) -> String {
    let mut out = String::with_capacity(model.len());
    for byte in model.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

impl CloudClient for Bedrock {
    fn complete(&self, request: &ChatRequest, deadline: Instant) -> Result<ChatReply, CloudError> {
        let url = format!("{}/model/{}/converse", self.config.base_url, path_segment(&request.model));
        let body = body(request).to_string();
        let headers = self.auth_headers(&url, &body)?;
        let reply = http::post_json(&self.agent, &self.config, &url, &headers, &body, deadline)?;
        parse(&reply)
    }

    fn describe(&self) -> String {
        format!("bedrock converse at {}", self.config.base_url)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use edgecascade_abi::ChatMessage;

    fn request() -> ChatRequest {
        ChatRequest {
            model: "us.amazon.nova-pro-v1:0".into(),
            messages: vec![
                ChatMessage { role: Role::System, content: "Classify.".into() },
                ChatMessage { role: Role::User, content: "Rates rose".into() },
            ],
            max_tokens: 8,
            metadata: vec![("plugin".into(), "news-topic".into()), ("reason".into(), "low confidence!".into())],
        }
    }

    #[test]
    fn the_body_is_converse_shaped() {
        let b = body(&request());
        assert_eq!(b["system"], json!([{"text": "Classify."}]));
        assert_eq!(b["messages"], json!([{"role": "user", "content": [{"text": "Rates rose"}]}]));
        assert_eq!(b["inferenceConfig"], json!({"maxTokens": 8, "temperature": 0}));
        assert_eq!(b["requestMetadata"], json!({"plugin": "news-topic", "reason": "low confidence_"}));
    }

    #[test]
    fn model_ids_are_one_path_segment() {
        assert_eq!(path_segment("amazon.nova-pro-v1:0"), "amazon.nova-pro-v1%3A0");
        assert_eq!(
            path_segment("arn:aws:bedrock:us-east-1:1:inference-profile/x"),
            "arn%3Aaws%3Abedrock%3Aus-east-1%3A1%3Ainference-profile%2Fx"
        );
    }

    #[test]
    fn replies_give_text_and_usage_and_refusals_are_typed() {
        let reply = json!({"output": {"message": {"role": "assistant", "content": [{"text": "busi"}, {"text": "ness"}]}},
                           "stopReason": "end_turn", "usage": {"inputTokens": 20, "outputTokens": 2, "totalTokens": 22}});
        let r = parse(&reply).unwrap();
        assert_eq!((r.content.as_str(), r.usage.prompt_tokens, r.usage.total_tokens), ("business", 20, 22));
        for stop in ["guardrail_intervened", "content_filtered", "tool_use"] {
            let mut refused = reply.clone();
            refused["stopReason"] = json!(stop);
            let e = parse(&refused).unwrap_err();
            assert!(matches!(&e, CloudError::Refused(m) if m.contains(stop)), "{e:?}");
        }
        assert!(matches!(parse(&json!({"output": {}})), Err(CloudError::BadReply(_))));
    }

    #[test]
    fn credentials_come_from_the_environment_and_the_api_key_wins() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |name: &str| pairs.iter().find(|(k, _)| *k == name).map(|(_, v)| v.to_string())
        };
        let endpoint = "https://bedrock-runtime.eu-west-3.amazonaws.com";
        let keys = env(&[("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE"), ("AWS_SECRET_ACCESS_KEY", "secret")]);
        let BedrockAuth::SigV4 { region, .. } = BedrockAuth::from_lookup(endpoint, keys).unwrap() else { panic!() };
        assert_eq!(region, "eu-west-3", "the region comes from the endpoint when unset");
        let both =
            env(&[("AWS_ACCESS_KEY_ID", "A"), ("AWS_SECRET_ACCESS_KEY", "s"), ("AWS_BEARER_TOKEN_BEDROCK", "k")]);
        assert!(matches!(BedrockAuth::from_lookup(endpoint, both), Ok(BedrockAuth::Bearer(k)) if k == "k"));
        assert_eq!(BedrockAuth::from_lookup(endpoint, env(&[])).unwrap_err(), BedrockConfigError::NoCredentials);
        let local = BedrockAuth::from_lookup(
            "http://127.0.0.1:9000",
            env(&[("AWS_ACCESS_KEY_ID", "A"), ("AWS_SECRET_ACCESS_KEY", "s")]),
        );
        assert!(matches!(local, Err(BedrockConfigError::NoRegion(_))));
        assert_eq!(
            region_of("https://vpce-0a.bedrock-runtime.us-west-2.vpce.amazonaws.com/x").as_deref(),
            Some("us-west-2")
        );
    }

    #[test]
    fn debug_shows_no_secret() {
        let creds = Credentials::new("AKIDEXAMPLE", "wJalrXUtnFEMI", Some("tok3n".into()), None, "test");
        let shown = format!(
            "{:?} {:?}",
            BedrockAuth::SigV4 { credentials: creds, region: "us-east-1".into() },
            BedrockAuth::Bearer("s3cr3t".into())
        );
        for secret in ["wJalrXUtnFEMI", "tok3n", "s3cr3t", "AKIDEXAMPLE"] {
            assert!(!shown.contains(secret), "{shown}");
        }
    }

    /// AWS's published SigV4 test suite (`post-vanilla`, `post-header-key-sort`): the signer
    /// gives the suite's signatures for its credentials, region, service and time.
    #[test]
    fn the_signer_matches_the_aws_sigv4_test_suite() {
        let credentials =
            Credentials::new("AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", None, None, "suite");
        let identity = credentials.into();
        let time = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_440_938_160); // 20150830T123600Z
        let sign_with = |headers: &[(&str, &str)]| {
            let params = v4::SigningParams::builder()
                .identity(&identity)
                .region("us-east-1")
                .name("service")
                .time(time)
                .settings(SigningSettings::default())
                .build()
                .unwrap()
                .into();
            let request = SignableRequest::new(
                "POST",
                "https://example.amazonaws.com/",
                headers.iter().copied(),
                SignableBody::Bytes(b""),
            )
            .unwrap();
            sign(request, &params).unwrap().signature().to_string()
        };
        assert_eq!(sign_with(&[]), "5da7c1a2acd57cee7505fc6676e4e544621c30862966e37dddb68e92efbe5d6b");
        assert_eq!(
            sign_with(&[("my-header1", "value1")]),
            "c5410059b04c1ee005303aed430f6e6645f61f4dc9e1461ec8f8916fdf18852c"
        );
    }
}

//! One fault matrix for every cloud API: OpenAI-compatible, Anthropic and
//! Bedrock, through the router, over real TCP on 127.0.0.1.
//!
//! Every fault must end in the local answer, marked degraded, within the
//! request's deadline, with the failure typed and counted in the metrics.
//! Each test runs its fault against all three APIs.

use crate::servers::*;
use crate::support::*;
use edgecascade::cloud::{Anthropic, Bedrock, BedrockAuth, CloudClient, HttpConfig, OpenAi, Resilient};
use edgecascade::{CascadeConfig, Local, Metrics, Mode, Reply, Router, Source};
use std::sync::Arc;
use std::time::{Duration, Instant};

const APIS: [Shape; 3] = [Shape::OpenAi, Shape::Anthropic, Shape::Bedrock];
/// The whole request's deadline (the router's, not a guess at how long things take).
const DEADLINE: Duration = Duration::from_secs(2);
/// What the router may take past its deadline to hand back the local answer.
const HAND_BACK: Duration = Duration::from_millis(500);

/// The client for `shape` at `url`, with retries and a breaker, as the CLI builds it.
fn client(shape: Shape, url: &str) -> Arc<dyn CloudClient> {
    let mut config = HttpConfig::new(url, "EDGECASCADE_TEST_NO_KEY");
    config.read_timeout = Duration::from_millis(800);
    config.connect_timeout = Duration::from_millis(300);
    match shape {
        Shape::OpenAi => Arc::new(Resilient::new(OpenAi::new(config), fast_policy())),
        Shape::Anthropic => Arc::new(Resilient::new(Anthropic::new(config), fast_policy())),
        Shape::Bedrock => {
            let auth = BedrockAuth::sigv4("AKIDEXAMPLE", "secret", None, "us-east-1");
            Arc::new(Resilient::new(Bedrock::new(config, auth), fast_policy()))
        }
    }
}

/// The edge router for news-topic, escalating everything below certainty to `url`.
fn edge(shape: Shape, url: &str) -> (Router, Metrics) {
    let plugin = loaded("news-topic");
    let mut config = CascadeConfig::for_plugin(&plugin);
    config.threshold = 1.0;
    config.deadline = DEADLINE;
    config.cloud_model = "amazon.nova-lite-v1:0".into();
    config.cache_entries = 0;
    let metrics = Metrics::default();
    (Router::new(plugin, Some(client(shape, url)), config, metrics.clone()), metrics)
}

/// One request through a router whose cloud is `url`; checks what every fault must give.
fn expect_fallback(shape: Shape, url: &str, kind: &str, what: &str) -> Reply {
    let Local::Answered(a) = loaded("news-topic").infer(&text(AMBIGUOUS)).unwrap() else { panic!("beyond?") };
    assert!(a.confidence < 1.0, "the ambiguous text must not be certain locally: {a:?}");
    let (router, metrics) = edge(shape, url);
    let started = Instant::now();
    let reply = router.route(&text(AMBIGUOUS), Mode::Auto);
    let took = started.elapsed();
    let case = format!("{shape:?}, {what}");
    assert_eq!((reply.source, reply.degraded), (Source::LocalFallback, true), "{case}: {reply:?}");
    assert_eq!(reply.answer.as_ref().and_then(|a| a.label.as_deref()), a.label.as_deref(), "{case}: the local answer");
    assert_eq!(reply.cloud_error.as_ref().map(|e| e.kind), Some(kind), "{case}: {reply:?}");
    assert!(took <= DEADLINE + HAND_BACK, "{case}: took {took:?}, past the {DEADLINE:?} deadline");
    let text = metrics.render();
    let line = format!("edgecascade_cloud_errors_total{{plugin=\"news-topic\",kind=\"{kind}\"}} 1");
    assert!(text.contains(&line), "{case}: no {line} in\n{text}");
    assert!(text.contains("edgecascade_degraded_total{plugin=\"news-topic\"} 1"), "{case}: {text}");
    reply
}

/// `behaviour` from a server speaking each API in turn; returns the server's hits per API.
fn fault(behaviour: Behaviour, kind: &str) -> Vec<usize> {
    APIS.iter()
        .map(|&shape| {
            let server = FakeCloud::start_shaped(shape, behaviour.clone());
            expect_fallback(shape, &server.url, kind, &format!("{behaviour:?}"));
            server.hits()
        })
        .collect()
}

#[test]
fn every_api_answers_through_the_same_fake_when_it_behaves() {
    // The control: the fake speaks each API well enough that a good reply is used.
    for shape in APIS {
        let server = FakeCloud::start_shaped(shape, Behaviour::Reply("sport".into()));
        let (router, _) = edge(shape, &server.url);
        let reply = router.route(&text(AMBIGUOUS), Mode::Auto);
        assert_eq!((reply.source, reply.degraded), (Source::Cloud, false), "{shape:?}: {reply:?}");
        assert_eq!(reply.answer.unwrap().label.as_deref(), Some("sport"), "{shape:?}");
        assert_eq!(reply.tokens.unwrap().total_tokens, 13, "{shape:?}: usage is read");
    }
}

#[test]
fn fault_a_timeout() {
    fault(Behaviour::Hang(Duration::from_secs(30)), "timeout");
}

#[test]
fn fault_http_500_502_503_504() {
    for status in [500, 502, 503, 504] {
        let hits = fault(Behaviour::Status(status, None), "server_error");
        assert!(hits.iter().all(|&h| h == 2), "{status}: retried once, per API: {hits:?}");
    }
}

#[test]
fn fault_429_without_retry_after_is_retried_with_backoff() {
    let hits = fault(Behaviour::Status(429, None), "rate_limited");
    assert_eq!(hits, [2, 2, 2]);
}

#[test]
fn fault_429_with_retry_after_waits_that_long_then_retries() {
    for shape in APIS {
        let server = FakeCloud::start_shaped(shape, Behaviour::Status(429, Some(1)));
        let started = Instant::now();
        expect_fallback(shape, &server.url, "rate_limited", "429, Retry-After: 1");
        assert_eq!(server.hits(), 2, "{shape:?}: retried once");
        assert!(started.elapsed() >= Duration::from_millis(950), "{shape:?}: waited {:?}", started.elapsed());
    }
}

#[test]
fn fault_a_retry_after_longer_than_the_deadline_is_not_waited_for() {
    let hits = fault(Behaviour::Status(429, Some(60)), "rate_limited");
    assert_eq!(hits, [1, 1, 1], "no retry sooner than the server asked");
    let hits = fault(Behaviour::Status(503, Some(60)), "server_error");
    assert_eq!(hits, [1, 1, 1]);
}

#[test]
fn fault_garbage_json() {
    fault(Behaviour::Garbage("{\"choices\": [oops".into()), "bad_reply");
}

#[test]
fn fault_a_refused_connection() {
    for shape in APIS {
        expect_fallback(shape, &refused_url(), "connect", "refused");
    }
}

#[test]
fn fault_headers_then_a_hang() {
    fault(Behaviour::HeadersThenHang(Duration::from_secs(30)), "timeout");
}

#[test]
fn fault_a_slow_body() {
    fault(Behaviour::Drip(Duration::from_millis(50)), "timeout");
}

#[test]
fn fault_an_endless_chunked_body_is_cut_at_the_body_cap() {
    fault(Behaviour::EndlessChunked, "bad_reply");
}

#[test]
fn fault_a_reset_in_mid_body() {
    fault(Behaviour::ResetMidBody, "connect");
}

#[test]
fn fault_a_huge_body_is_capped() {
    fault(Behaviour::Huge(4 << 20), "bad_reply");
}

#[test]
fn fault_invalid_utf8() {
    fault(Behaviour::BadUtf8, "bad_reply");
}

#[test]
fn fault_the_wrong_content_type() {
    fault(Behaviour::WrongType, "bad_reply");
}

#[test]
fn fault_an_answer_that_names_no_label() {
    // Valid HTTP and JSON in the API's shape, but the text is no label.
    fault(Behaviour::Reply("I would rather not say".into()), "bad_reply");
}

#[test]
fn fault_each_apis_own_error_shape() {
    let cases: [(Shape, u16, &str, &str); 8] = [
        (Shape::Bedrock, 429, "ThrottlingException", "rate_limited"),
        (Shape::Bedrock, 400, "ValidationException", "client_error"),
        (Shape::Bedrock, 403, "AccessDeniedException", "auth"),
        (Shape::Bedrock, 503, "ServiceUnavailableException", "server_error"),
        (Shape::Anthropic, 529, "overloaded_error", "server_error"),
        (Shape::Anthropic, 401, "authentication_error", "auth"),
        (Shape::OpenAi, 429, "insufficient_quota", "rate_limited"),
        (Shape::OpenAi, 400, "invalid_request_error", "client_error"),
    ];
    for (shape, status, name, kind) in cases {
        let server = FakeCloud::start_shaped(shape, Behaviour::ApiError(status, name));
        let reply = expect_fallback(shape, &server.url, kind, name);
        let message = reply.cloud_error.unwrap().message;
        assert!(message.contains(name) && message.contains(&status.to_string()), "{shape:?}: {message}");
        let retried = matches!(kind, "rate_limited" | "server_error");
        assert_eq!(server.hits(), if retried { 2 } else { 1 }, "{shape:?} {name}");
    }
}

#[test]
fn fault_a_bedrock_guardrail_is_a_typed_refusal() {
    for stop in ["guardrail_intervened", "content_filtered"] {
        let body = serde_json::json!({
            "output": {"message": {"role": "assistant", "content": [{"text": "sport"}]}},
            "stopReason": stop, "usage": {"inputTokens": 12, "outputTokens": 1}
        })
        .to_string();
        let raw = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        );
        let server = FakeCloud::start_shaped(Shape::Bedrock, Behaviour::Raw(raw.into_bytes()));
        let reply = expect_fallback(Shape::Bedrock, &server.url, "refused", stop);
        assert!(reply.cloud_error.unwrap().message.contains(stop));
        assert_eq!(server.hits(), 1, "a refusal is not retried");
    }
}

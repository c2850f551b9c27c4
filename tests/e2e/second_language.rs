//! A plugin in C (guest/c/keywords, built with clang and wasi-libc): the guest
//! ABI in a second language, through the real host, the router and a real
//! HTTP cloud.

use crate::servers::*;
use crate::support::*;
use edgecascade::cloud::{HttpConfig, OpenAi, Resilient};
use edgecascade::{Error, Local, Mode, Reason, Router, Source};
use edgecascade_abi::ErrorKind;
use std::sync::Arc;

#[test]
fn the_c_plugin_answers_declines_and_refuses_like_a_rust_one() {
    let p = loaded("keywords-c");
    let Local::Answered(a) = p.infer(&text("I love it: great, fast, but the box was bad")).unwrap() else {
        panic!("three positive keywords and one negative: an answer")
    };
    assert_eq!(a.label.as_deref(), Some("positive"));
    assert!((a.confidence - 0.75).abs() < 1e-6, "{a:?}");
    assert_eq!(a.scores.iter().map(|s| s.label.as_str()).collect::<Vec<_>>(), ["positive", "negative"]);
    assert!(matches!(p.infer(&text("The weather today")).unwrap(), Local::Beyond { .. }));
    let e = p.infer(&edgecascade::Input::json(&serde_json::json!({"text": "good"}))).unwrap_err();
    assert!(
        matches!(&e, Error::Guest { kind: ErrorKind::BadInput, message, .. } if message.contains("text/plain")),
        "{e:?}"
    );

    // The prompt carries the text as a JSON string, quotes and newlines escaped.
    let prompt = p.prompt(&text("She said \"awful\"\nthen left")).unwrap();
    assert_eq!(prompt.messages.last().unwrap().content, "She said \"awful\"\nthen left");
    // Replies: a bare label, an edgecascade tier's JSON answer, and nonsense.
    assert_eq!(p.parse_reply(" Negative.\n").unwrap().label.as_deref(), Some("negative"));
    let tier = r#"{"label":"positive","scores":[{"label":"positive","score":0.9}],"confidence":0.9}"#;
    assert_eq!(p.parse_reply(tier).unwrap().label.as_deref(), Some("positive"));
    for bad in ["maybe", "positive or negative", ""] {
        let e = p.parse_reply(bad).unwrap_err();
        assert!(matches!(e, Error::Guest { kind: ErrorKind::BadReply, .. }), "{bad:?}: {e:?}");
    }
}

#[test]
fn the_c_plugin_escalates_to_a_real_cloud_and_reads_its_reply() {
    let fake = FakeCloud::start(Behaviour::Reply("negative".into()));
    let cloud = Arc::new(Resilient::new(OpenAi::new(HttpConfig::new(&fake.url, "NO_KEY")), fast_policy()));
    let router = Router::builder(loaded("keywords-c")).cloud(cloud).build();
    let reply = router.route(&text("It came on Tuesday"), Mode::Auto);
    assert_eq!((reply.source, reply.reason), (Source::Cloud, Reason::Beyond), "{reply:?}");
    assert_eq!(reply.answer.unwrap().label.as_deref(), Some("negative"));
    let local = router.route(&text("thanks, perfect"), Mode::Auto);
    assert_eq!((local.source, local.answer.unwrap().label.as_deref()), (Source::Local, Some("positive")));
    assert_eq!(fake.hits(), 1);
}

/// guest/c/digits_nn: a plugin in C whose model runs in the shared runtime,
/// through wasi-nn's witx imports, beside the Rust `digits` with tract inside.
#[test]
fn a_c_plugin_runs_its_model_through_wasi_nn_and_answers_like_the_rust_one() {
    let (c, rust) = (loaded("digits-c"), loaded("digits"));
    let split = std::fs::read_to_string(repo_root().join("models/data/digits/test.jsonl")).unwrap();
    let mut answered = 0;
    for line in split.lines().take(40) {
        let row: serde_json::Value = serde_json::from_str(line).unwrap();
        let input = edgecascade::Input::json(&row["pixels"]);
        let (a, b) = (c.infer(&input).unwrap(), rust.infer(&input).unwrap());
        // The C plugin prints each f32 with 9 significant digits, which reads back exactly.
        assert_eq!(a, b, "{row}");
        answered += matches!(a, Local::Answered(_)) as usize;
    }
    assert!(answered >= 35, "{answered} of 40 answered");
    let blank = edgecascade::Input::json(&serde_json::json!({"pixels": vec![0; 64]}));
    assert!(matches!(c.infer(&blank).unwrap(), Local::Beyond { .. }));
    for bad in [serde_json::json!([1, 2, 3]), serde_json::json!({"pixels": vec![17; 64]})] {
        let e = c.infer(&edgecascade::Input::json(&bad)).unwrap_err();
        assert!(matches!(e, Error::Guest { kind: ErrorKind::BadInput, .. }), "{bad}: {e:?}");
    }
    assert!(matches!(c.infer(&text("seven")).unwrap_err(), Error::Guest { kind: ErrorKind::BadInput, .. }));
    assert_eq!(c.parse_reply("It is a 7.").unwrap().label.as_deref(), Some("7"));
    assert!(matches!(c.parse_reply("7 or 1").unwrap_err(), Error::Guest { kind: ErrorKind::BadReply, .. }));
    let wasm = std::fs::metadata(plugin("digits-c").join("digits_nn.wasm")).unwrap().len();
    assert!(wasm < 100_000, "{wasm} bytes");
}

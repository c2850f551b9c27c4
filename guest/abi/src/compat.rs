//! Compatibility across ABI minors, both ways: the wire types of minor 0 are
//! frozen here as they shipped (strict readers, `deny_unknown_fields`), and
//! each test puts this crate's types on one side and theirs on the other.

use super::*;

/// The types as minor 0 (the first release) shipped them.
mod minor0 {
    use serde::{Deserialize, Serialize};

    #[derive(Debug, Serialize, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct LoadRequest {
        pub abi_version: u32,
        pub name: String,
        pub version: String,
        #[serde(default)]
        pub labels: Vec<String>,
        #[serde(default)]
        pub config: serde_json::Value,
        pub files: Vec<FileEntry>,
    }

    #[derive(Debug, Serialize, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct FileEntry {
        pub name: String,
        pub kind: String,
        pub len: u64,
    }

    #[derive(Debug, Serialize, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Answer {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub label: Option<String>,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        pub scores: Vec<Score>,
        pub confidence: f32,
    }

    #[derive(Debug, Serialize, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Score {
        pub label: String,
        pub score: f32,
    }

    #[derive(Debug, Serialize, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Prompt {
        pub messages: Vec<ChatMessage>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub max_tokens: Option<u32>,
    }

    #[derive(Debug, Serialize, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct ChatMessage {
        pub role: String,
        pub content: String,
    }

    #[derive(Debug, Serialize, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct GuestError {
        pub kind: String,
        pub message: String,
    }
}

fn request() -> LoadRequest {
    LoadRequest {
        abi_version: ABI_VERSION,
        name: "news-topic".into(),
        version: "1.0.0".into(),
        labels: vec!["business".into(), "sport".into()],
        config: serde_json::json!({"max_tokens": 256}),
        files: vec![FileEntry { name: "model".into(), kind: FileKind::Model, len: 3, runtime: false }],
        abi_minor: None,
    }
}

#[test]
fn a_minor_0_guest_reads_what_this_host_sends_it_and_would_refuse_the_rest() {
    let header = encode_load_header(&request().for_guest_minor(0));
    let old: minor0::LoadRequest = serde_json::from_slice(&header[4..]).expect("a minor-0 guest reads it");
    assert_eq!((old.name.as_str(), old.files.len()), ("news-topic", 1));
    // The same request for a tolerant guest carries the host's minor, which a minor-0 guest refuses:
    // that is why the host asks the guest's minor first.
    let header = encode_load_header(&request().for_guest_minor(ABI_MINOR));
    let refused = serde_json::from_slice::<minor0::LoadRequest>(&header[4..]).unwrap_err();
    assert!(refused.to_string().contains("abi_minor"), "{refused}");
}

#[test]
fn this_host_reads_what_a_minor_0_guest_writes() {
    let answer = minor0::Answer {
        label: Some("sport".into()),
        scores: vec![minor0::Score { label: "sport".into(), score: 0.9 }],
        confidence: 0.9,
    };
    let frame = [&[Status::Ok as u8][..], &serde_json::to_vec(&answer).unwrap()].concat();
    let read: Answer = ResultFrame::parse(&frame).unwrap().into_ok().unwrap();
    assert_eq!((read.label.as_deref(), read.confidence), (Some("sport"), 0.9));
    let prompt = minor0::Prompt {
        messages: vec![minor0::ChatMessage { role: "user".into(), content: "hi".into() }],
        max_tokens: Some(8),
    };
    let read: Prompt = serde_json::from_slice(&serde_json::to_vec(&prompt).unwrap()).unwrap();
    assert_eq!(read.max_tokens, Some(8));
    let error = minor0::GuestError { kind: "bad_input".into(), message: "no text".into() };
    let read: GuestError = serde_json::from_slice(&serde_json::to_vec(&error).unwrap()).unwrap();
    assert_eq!(read.kind, ErrorKind::BadInput);
}

#[test]
fn a_minor_0_host_reads_what_this_guest_writes_it() {
    // A guest writes only minor-0 fields to a host that did not say its minor.
    let answer = Answer::from_probs(&["no".into(), "yes".into()], &[0.2, 0.8]);
    let old: minor0::Answer = serde_json::from_slice(&serde_json::to_vec(&answer).unwrap()).unwrap();
    assert_eq!(old.label.as_deref(), Some("yes"));
    let prompt = Prompt { messages: vec![ChatMessage { role: Role::System, content: "x".into() }], max_tokens: None };
    serde_json::from_slice::<minor0::Prompt>(&serde_json::to_vec(&prompt).unwrap()).unwrap();
    let error = GuestError { kind: ErrorKind::Model, message: "op".into() };
    serde_json::from_slice::<minor0::GuestError>(&serde_json::to_vec(&error).unwrap()).unwrap();
    // And it learns that the host is minor 0 from a request without `abi_minor`.
    let from_old_host = serde_json::to_vec(&minor0::LoadRequest {
        abi_version: 1,
        name: "p".into(),
        version: "1".into(),
        labels: vec![],
        config: serde_json::Value::Null,
        files: vec![minor0::FileEntry { name: "m".into(), kind: "model".into(), len: 0 }],
    })
    .unwrap();
    let read: LoadRequest = serde_json::from_slice(&from_old_host).unwrap();
    assert_eq!(read.host_minor(), 0);
}

#[test]
fn a_newer_minor_on_either_side_is_read_and_its_additions_are_ignored() {
    // A newer host's request, with fields this guest has never heard of.
    let mut newer = serde_json::to_value(request().for_guest_minor(ABI_MINOR)).unwrap();
    newer["abi_minor"] = 7.into();
    newer["deadline_ms"] = 250.into();
    newer["files"][0]["sha256"] = "00".into();
    let read: LoadRequest = serde_json::from_value(newer).expect("tolerant");
    assert_eq!((read.host_minor(), read.files[0].len), (7, 3));
    // A newer guest's answer and error.
    let answer = serde_json::json!({"label": "yes", "confidence": 0.7, "explanation": "because", "scores": [
        {"label": "yes", "score": 0.7, "calibrated": 0.65}]});
    let read: Answer = serde_json::from_value(answer).expect("tolerant");
    assert_eq!((read.label.as_deref(), read.scores.len()), (Some("yes"), 1));
    let error: GuestError =
        serde_json::from_value(serde_json::json!({"kind": "rate_limited", "message": "m"})).unwrap();
    assert_eq!(error.kind, ErrorKind::Other);
    assert_eq!(error.message, "m");
}

//! The ABI across minors, through the real host: a guest of minor 0 (which
//! refuses unknown fields, as the first release did) and a guest of a newer
//! minor (which says so, and writes fields and error kinds this host has never
//! heard of) both load and serve. The guests are WAT, so their wire behaviour
//! is exactly what is written here; `guest/abi/src/compat.rs` checks the same
//! rules type by type, including an older host against this guest SDK.

use crate::support::*;
use edgecascade::{Error, Local};
use edgecascade_abi::{ABI_MINOR, ABI_VERSION, ErrorKind, LoadRequest, encode_load_header};

/// A WAT data string for `bytes`.
fn data(bytes: &str) -> String {
    bytes.replace('\\', "\\\\").replace('"', "\\\"")
}

/// A guest whose `load` succeeds only when the load header is exactly
/// `expected_header_len` bytes long (a strict reader's stand-in: any field it
/// was not built for changes the length), that exports `edgecascade_abi_minor`
/// when `minor` is given, answers `infer` with `answer`, and fails `prompt` with `error`.
fn guest(minor: Option<i32>, expected_header_len: usize, answer: &str, error: &str) -> Vec<u8> {
    let frame = |at: i64, status: u8, body: &str| -> (String, i64) {
        let text = format!("(data (i32.const {at}) \"\\0{status}{}\")", data(body));
        (text, (at << 32) | (body.len() as i64 + 1))
    };
    let (answer_data, answer_at) = frame(64, 0, answer);
    let (refusal_data, refusal_at) = frame(512, 2, r#"{"kind":"model","message":"a field this guest does not know"}"#);
    let (error_data, error_at) = frame(768, 2, error);
    let minor_export = minor
        .map(|m| format!(r#"(func (export "edgecascade_abi_minor") (result i32) (i32.const {m}))"#))
        .unwrap_or_default();
    let text = format!(
        r#"(module
          (memory (export "memory") 1)
          (data (i32.const 0) "\00{{}}")
          {answer_data}
          {refusal_data}
          {error_data}
          (func (export "_initialize"))
          (func (export "edgecascade_abi_version") (result i32) (i32.const {ABI_VERSION}))
          {minor_export}
          (func (export "edgecascade_alloc") (param i32) (result i32) (i32.const 4096))
          (func (export "edgecascade_load") (param $ptr i32) (param $len i32) (result i64)
            (if (result i64) (i32.eq (i32.load (local.get $ptr)) (i32.const {expected_header_len}))
              (then (i64.const 3))
              (else (i64.const {refusal_at}))))
          (func (export "edgecascade_infer") (param i32 i32) (result i64) (i64.const {answer_at}))
          (func (export "edgecascade_prompt") (param i32 i32) (result i64) (i64.const {error_at}))
          (func (export "edgecascade_parse_reply") (param i32 i32) (result i64) (i64.const {answer_at})))"#
    );
    wat::parse_str(text).unwrap()
}

/// The load header this host sends the `wat` package to a guest of `minor`.
fn header_len(minor: u32) -> usize {
    let request = LoadRequest {
        abi_version: ABI_VERSION,
        name: "wat".into(),
        version: "1".into(),
        labels: vec![],
        config: serde_json::json!({}),
        files: vec![],
        abi_minor: None,
    };
    encode_load_header(&request.for_guest_minor(minor)).len() - 4
}

#[test]
fn a_minor_0_guest_gets_only_the_fields_of_minor_0_and_serves() {
    let tmp = tempfile::tempdir().unwrap();
    let strict = guest(None, header_len(0), r#"{"confidence":0.75}"#, r#"{"kind":"bad_input","message":"no"}"#);
    let plugin = runtime().load(make_package(tmp.path(), wat_manifest(), &[("m.wasm", &strict)])).expect("loads");
    let Local::Answered(answer) = plugin.infer(&text("x")).unwrap() else { panic!("an answer") };
    assert_eq!(answer.confidence, 0.75);
    // The header a tolerant guest gets is longer: the same strict guest refuses it, so the check can fail.
    assert!(header_len(ABI_MINOR) > header_len(0));
    let tmp = tempfile::tempdir().unwrap();
    let wrong = guest(None, header_len(ABI_MINOR), r#"{"confidence":0.75}"#, "{}");
    let refused = runtime().load(make_package(tmp.path(), wat_manifest(), &[("m.wasm", &wrong)])).err().unwrap();
    assert!(matches!(refused, Error::ModelRejected { .. }), "{refused}");
}

#[test]
fn a_guest_of_a_newer_minor_is_told_this_hosts_minor_and_its_additions_are_read_past() {
    let tmp = tempfile::tempdir().unwrap();
    let newer = guest(
        Some(ABI_MINOR as i32 + 5),
        header_len(ABI_MINOR),
        r#"{"confidence":0.9,"label":"yes","explanation":"a field of minor 6","scores":[{"label":"yes","score":0.9,"calibrated":0.8}]}"#,
        r#"{"kind":"rate_limited","message":"a kind of minor 6","retry_after_ms":10}"#,
    );
    let plugin = runtime().load(make_package(tmp.path(), wat_manifest(), &[("m.wasm", &newer)])).expect("loads");
    let Local::Answered(answer) = plugin.infer(&text("x")).unwrap() else { panic!("an answer") };
    assert_eq!((answer.label.as_deref(), answer.confidence, answer.scores.len()), (Some("yes"), 0.9, 1));
    match plugin.prompt(&text("x")) {
        Err(Error::Guest { kind: ErrorKind::Other, message, .. }) => assert_eq!(message, "a kind of minor 6"),
        other => panic!("expected a guest error of an unknown kind, got {other:?}"),
    }
    // A kind this host does not know is the guest's answer, not a fault: the instance is kept.
    assert_eq!(plugin.pool_stats().discarded, 0);
}

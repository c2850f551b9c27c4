//! Property tests over everything that parses untrusted bytes: whatever comes
//! in, the result is a value or a typed error, never a panic or a hang.
//! (cargo-fuzz needs a nightly toolchain; these run on stable, in every test run.
//! `PROPTEST_CASES=100000 cargo test --release --test e2e robustness` runs longer.)

use edgecascade::plugin::Manifest;
use edgecascade_abi::{Answer, ResultFrame, decode_input, decode_load};
use proptest::prelude::*;
use std::path::Path;

/// A valid manifest to mutate, so cases reach the validator and not only the TOML parser.
const MANIFEST: &str = "[plugin]\nname = \"p\"\nversion = \"1\"\nabi_version = 1\nlabels = [\"a\"]\n\n[wasm]\nfile = \"p.wasm\"\n\n\
                        [limits]\nmemory = \"64 MiB\"\ndeadline = \"250ms\"\n\n[policy]\nthreshold = 0.5\n";

proptest! {
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(2000),
        ..ProptestConfig::default()
    })]

    #[test]
    fn manifests_parse_or_fail_cleanly(text in ".{0,400}") {
        let _ = Manifest::parse(&text, Path::new("plugin.toml"));
    }

    #[test]
    fn mutated_manifests_parse_or_fail_cleanly(at in 0usize..MANIFEST.len(), junk in "[ -~\\n]{0,12}") {
        let mut text = MANIFEST.to_string();
        let at = (0..=at).rev().find(|i| text.is_char_boundary(*i)).unwrap_or(0);
        text.insert_str(at, &junk);
        if let Ok(m) = Manifest::parse(&text, Path::new("plugin.toml")) {
            // Whatever parses also round-trips.
            prop_assert_eq!(Manifest::parse(&m.to_toml(), Path::new("plugin.toml")).unwrap(), m);
        }
    }

    #[test]
    fn result_frames_decode_or_fail_cleanly(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        if let Ok(frame) = ResultFrame::parse(&bytes) {
            let _ = frame.decode::<Answer>();
            let _ = frame.decode::<edgecascade_abi::Prompt>();
        }
    }

    #[test]
    fn answer_shaped_frames_decode_or_fail_cleanly(label in ".{0,20}", confidence in any::<f32>(), extra in ".{0,30}") {
        let body = format!("{{\"label\":{},\"confidence\":{confidence}{extra}}}", serde_json::to_string(&label).unwrap());
        let mut bytes = vec![0u8];
        bytes.extend_from_slice(body.as_bytes());
        let _ = ResultFrame::parse(&bytes).unwrap().decode::<Answer>();
    }

    #[test]
    fn load_and_input_frames_decode_or_fail_cleanly(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        let _ = decode_load(&bytes);
        let (content_type, payload) = decode_input(&bytes);
        prop_assert!(content_type.len() + payload.len() <= bytes.len());
    }

    #[test]
    fn cloud_replies_parse_or_fail_cleanly(text in ".{0,300}") {
        // Through the real parser of the real plugin: a reply that is not a label is a typed error.
        let p = crate::support::loaded("news-topic");
        if let Ok(a) = p.parse_reply(&text) {
            prop_assert!(a.label.is_some() && (0.0..=1.0).contains(&a.confidence));
        }
    }
}

//! The runtime spine through the library API: real plugins, real models.

use crate::support::*;
use edgecascade::{Input, Local, TensorData};

#[test]
fn news_topic_classifies_business_news() {
    let p = loaded("news-topic");
    match p.infer(&text("The central bank raised interest rates again")).unwrap() {
        Local::Answered(a) => {
            assert_eq!(a.label.as_deref(), Some("business"));
            assert!(a.confidence > 0.2 && a.confidence <= 1.0, "{a:?}");
            assert_eq!(a.scores.len(), 5);
        }
        other => panic!("expected an answer, got {other:?}"),
    }
}

#[test]
fn news_topic_says_when_input_is_beyond_it() {
    let p = loaded("news-topic");
    for input in ["", "??? !!!", "zxqv wptk jjjq"] {
        assert!(matches!(p.infer(&text(input)).unwrap(), Local::Beyond { .. }), "{input:?}");
    }
}

#[test]
fn news_topic_phrases_its_task_and_reads_replies() {
    let p = loaded("news-topic");
    let prompt = p.prompt(&text("Shares rose after the merger")).unwrap();
    assert!(prompt.messages.iter().any(|m| m.content.contains("Shares rose after the merger")));
    assert!(prompt.messages[0].content.contains("business, entertainment, politics, sport, tech"));
    let a = p.parse_reply("Business.").unwrap();
    assert_eq!((a.label.as_deref(), a.confidence), (Some("business"), 1.0));
    let e = p.parse_reply("I cannot tell").unwrap_err();
    assert!(matches!(e, edgecascade::Error::Guest { kind: edgecascade_abi::ErrorKind::BadReply, .. }), "{e:?}");
}

#[test]
fn text_plugins_refuse_other_content_types() {
    let p = loaded("news-topic");
    let e = p.infer(&Input::new("image/png", vec![0x89, b'P', b'N', b'G'])).unwrap_err();
    assert!(matches!(e, edgecascade::Error::Guest { kind: edgecascade_abi::ErrorKind::BadInput, .. }), "{e:?}");
}

#[test]
fn digits_reads_an_image() {
    let p = loaded("digits");
    // The first row of the digits test split, with its label.
    let line = std::fs::read_to_string(repo_root().join("models/data/digits/test.jsonl")).unwrap();
    let row: serde_json::Value = serde_json::from_str(line.lines().next().unwrap()).unwrap();
    let a = match p.infer(&Input::json(&serde_json::json!({"pixels": row["pixels"]}))).unwrap() {
        Local::Answered(a) => a,
        other => panic!("{other:?}"),
    };
    assert_eq!(a.label.as_deref(), row["label"].as_str());
    let e = p.infer(&Input::json(&serde_json::json!({"pixels": [1, 2, 3]}))).unwrap_err();
    assert!(e.to_string().contains("expected 64 pixels"), "{e}");
}

#[test]
fn the_tensor_plugin_runs_a_bare_model() {
    let tmp = tempfile::tempdir().unwrap();
    let wasm = std::fs::read(plugin("tensor").join("tensor.wasm")).unwrap();
    let model = std::fs::read(repo_root().join("tests/fixtures/affine.onnx")).unwrap();
    let manifest = "[plugin]\nname = \"affine\"\nversion = \"1\"\nabi_version = 1\n\n[wasm]\nfile = \"tensor.wasm\"\n\n\
                    [[models]]\nname = \"model\"\nfile = \"model.onnx\"\n";
    let pkg = make_package(tmp.path(), manifest, &[("tensor.wasm", &wasm), ("model.onnx", &model)]);
    let p = runtime().load(&pkg).unwrap();
    let input = serde_json::json!({"inputs": [{"shape": [1, 3], "dtype": "f32", "data": [1.0, 2.0, 3.0]}]});
    let Local::Answered(a) = p.infer(&Input::json(&input)).unwrap() else { panic!("beyond?") };
    assert_eq!(a.tensors.len(), 1);
    assert_eq!(a.tensors[0].shape, vec![1, 2]);
    assert_eq!(a.tensors[0].data, TensorData::F32(vec![4.5, 4.5]));
    let npy = std::fs::read(repo_root().join("tests/fixtures/affine-input.npy")).unwrap();
    let Local::Answered(b) = p.infer(&Input::new("application/x-npy", npy)).unwrap() else { panic!() };
    assert_eq!(b.tensors, a.tensors);
    let wrong = serde_json::json!({"inputs": [{"shape": [1, 4], "dtype": "f32", "data": [1.0, 2.0, 3.0, 4.0]}]});
    assert!(p.infer(&Input::json(&wrong)).is_err());
    let Local::Answered(c) = p.infer(&Input::json(&input)).unwrap() else { panic!() };
    assert_eq!(c.tensors, a.tensors, "serves correctly after a bad input");
}

#[test]
fn concurrent_callers_share_a_bounded_pool() {
    let p = loaded("news-topic");
    let texts = ["Stocks fell sharply", "The election campaign began", "The team won the league"];
    std::thread::scope(|s| {
        for t in 0..6 {
            let p = p.clone();
            s.spawn(move || {
                for i in 0..5 {
                    let r = p.infer(&text(texts[(t + i) % texts.len()])).unwrap();
                    assert!(matches!(r, Local::Answered(_)));
                }
            });
        }
    });
    let stats = p.pool_stats();
    assert!(stats.live <= p.manifest().limits.instances, "{stats:?}");
}

#[test]
fn guest_exports_run_constructors_once() {
    for name in ["news-topic", "sentiment", "digits", "tensor", "hostile"] {
        let pkg = edgecascade::Package::open(plugin(name)).unwrap().verify().unwrap();
        let report = edgecascade::inspect::inspect(&pkg).unwrap();
        assert_eq!(report.constructors, edgecascade::inspect::Constructors::OnceInInitialize, "{name}");
        assert!(
            report.imports.iter().all(|i| i.starts_with("wasi_snapshot_preview1::") || i.starts_with("edgecascade::")),
            "{name}: {:?}",
            report.imports
        );
    }
}

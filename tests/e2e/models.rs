//! Every committed model runs in tract natively and inside the guest, and
//! matches onnxruntime's outputs (models/golden) within a stated tolerance.

use crate::support::*;
use edgecascade::{Input, Local, Tensor, TensorData};
use serde_json::Value;
use tract_onnx::prelude::*;

/// The models of the example plugins, and the largest difference from
/// onnxruntime each may show. Dynamic int8 quantizes activations at run time,
/// so tract's and onnxruntime's rounding can differ by a quantization step.
const MODELS: &[(&str, f32)] = &[
    ("news-small", 1e-4),
    ("sentiment-small", 1e-4),
    ("minilm-int8", 2e-2),
    ("news-large-head", 1e-4),
    ("sentiment-large-head", 1e-4),
    ("digits-small", 1e-4),
    ("digits-large", 1e-4),
];

/// Rows checked per model; the golden files hold 100.
const ROWS: usize = 25;

fn golden(model: &str) -> Vec<Value> {
    let path = repo_root().join(format!("models/golden/{model}.jsonl"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    text.lines().filter(|l| !l.trim().is_empty()).take(ROWS).map(|l| serde_json::from_str(l).unwrap()).collect()
}

fn floats(v: &Value) -> Vec<f32> {
    v.as_array().unwrap().iter().map(|x| x.as_f64().unwrap() as f32).collect()
}

fn ints(v: &Value) -> Vec<i64> {
    v.as_array().unwrap().iter().map(|x| x.as_i64().unwrap()).collect()
}

/// The model's inputs for a golden row, and the expected output.
fn case(model: &str, row: &Value) -> (Vec<Tensor>, Vec<f32>) {
    let t = |name: &str, shape: Vec<usize>, data: TensorData| Tensor { name: name.into(), shape, data };
    if model == "minilm-int8" {
        let ids = ints(&row["input_ids"]);
        let n = ids.len();
        let inputs = vec![
            t("input_ids", vec![1, n], TensorData::I64(ids)),
            t("attention_mask", vec![1, n], TensorData::I64(vec![1; n])),
            t("token_type_ids", vec![1, n], TensorData::I64(vec![0; n])),
        ];
        return (inputs, floats(&row["embedding"]));
    }
    let input = if let Some(ids) = row.get("input_ids") {
        let ids = ints(ids);
        t("input_ids", vec![1, ids.len()], TensorData::I64(ids))
    } else if let Some(e) = row.get("embedding") {
        let e = floats(e);
        t("embedding", vec![1, e.len()], TensorData::F32(e))
    } else {
        let p = floats(&row["pixels"]);
        t("pixels", vec![1, p.len()], TensorData::F32(p))
    };
    (vec![input], floats(&row["probs"]))
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "output lengths differ");
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

fn tract_value(t: &Tensor) -> TValue {
    match &t.data {
        TensorData::F32(v) => tract_onnx::prelude::Tensor::from_shape(&t.shape, v).unwrap().into(),
        TensorData::I64(v) => tract_onnx::prelude::Tensor::from_shape(&t.shape, v).unwrap().into(),
        TensorData::I32(v) => tract_onnx::prelude::Tensor::from_shape(&t.shape, v).unwrap().into(),
        other => panic!("the golden models take f32, i64 or i32, not {}", other.dtype()),
    }
}

#[test]
fn every_model_matches_onnxruntime_in_native_tract() {
    for &(model, tolerance) in MODELS {
        let path = repo_root().join(format!("models/onnx/{model}.onnx"));
        let plan = tract_onnx::onnx()
            .model_for_path(&path)
            .and_then(|m| m.into_optimized())
            .and_then(|m| m.into_runnable())
            .unwrap_or_else(|e| panic!("{model}: tract refused it: {e:#}"));
        let mut worst = 0.0f32;
        for row in golden(model) {
            let (inputs, expected) = case(model, &row);
            let outputs = plan.run(inputs.iter().map(tract_value).collect()).unwrap();
            let got: Vec<f32> = outputs[0].to_plain_array_view::<f32>().unwrap().iter().copied().collect();
            worst = worst.max(max_diff(&got, &expected));
        }
        assert!(worst <= tolerance, "{model}: native tract differs from onnxruntime by {worst} (> {tolerance})");
    }
}

#[test]
fn every_model_matches_onnxruntime_inside_the_guest() {
    let wasm = std::fs::read(plugin("tensor").join("tensor.wasm")).unwrap();
    for &(model, tolerance) in MODELS {
        let tmp = tempfile::tempdir().unwrap();
        let bytes = std::fs::read(repo_root().join(format!("models/onnx/{model}.onnx"))).unwrap();
        let manifest = String::from(
            "[plugin]\nname = \"golden\"\nversion = \"1\"\nabi_version = 1\n\n[wasm]\nfile = \"tensor.wasm\"\n\n\
             [[models]]\nname = \"model\"\nfile = \"model.onnx\"\n\n[limits]\nmemory = \"1 GiB\"\ndeadline = \"20s\"\nload_deadline = \"120s\"\noutput = \"4 MiB\"\n",
        );
        let pkg = make_package(tmp.path(), &manifest, &[("tensor.wasm", &wasm), ("model.onnx", &bytes)]);
        let p = runtime().load(&pkg).unwrap_or_else(|e| panic!("{model}: {e}"));
        let mut worst = 0.0f32;
        for row in golden(model) {
            let (inputs, expected) = case(model, &row);
            let body = serde_json::json!({"inputs": inputs});
            let Local::Answered(a) = p.infer(&Input::json(&body)).unwrap_or_else(|e| panic!("{model}: {e}")) else {
                panic!("{model}: beyond?")
            };
            let TensorData::F32(got) = &a.tensors[0].data else { panic!("{model}: not f32") };
            worst = worst.max(max_diff(got, &expected));
        }
        assert!(worst <= tolerance, "{model}: the guest differs from onnxruntime by {worst} (> {tolerance})");
    }
}

#[test]
fn small_models_are_int8_and_at_most_4_mb() {
    for model in ["news-small", "sentiment-small", "digits-small"] {
        let path = repo_root().join(format!("models/onnx/{model}.onnx"));
        let bytes = std::fs::metadata(&path).unwrap().len();
        assert!(bytes <= 4_000_000, "{model} is {bytes} bytes");
        let proto = tract_onnx::onnx().proto_model_for_path(&path).unwrap();
        let graph = proto.graph.unwrap();
        let int8 = graph.initializer.iter().filter(|t| t.data_type == 3).count(); // INT8
        assert!(int8 > 0, "{model} holds no int8 weights");
    }
}

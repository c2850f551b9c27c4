//! In-guest against native tract, model by model, and the example plugins on text.

use crate::common::{TextVariants, golden_inputs, golden_row, load, plugin_dir, repo_root, tensor_package, test_text};
use criterion::{BatchSize, Criterion, Throughput};
use edgecascade::{Input, Local, Plugin, Tensor, TensorData};
use edgecascade_guest::onnx::OnnxModel;
use edgecascade_guest::text::WordPiece;
use std::cell::OnceCell;
use std::hint::black_box;
use std::time::Duration;
use tract_onnx::prelude::*;

/// The models of the example plugins, as (benchmark name, model, golden row). The large text path
/// is minilm-int8 followed by a head; minilm runs on a news article (row 0, 256 tokens) and on a
/// tweet (row 50, 30 tokens: the first sentiment test row).
const MODELS: &[(&str, &str, usize)] = &[
    ("news-small", "news-small", 0),
    ("sentiment-small", "sentiment-small", 0),
    ("minilm-int8", "minilm-int8", 0),
    ("minilm-int8-tweet", "minilm-int8", 50),
    ("news-large-head", "news-large-head", 0),
    ("digits-small", "digits-small", 0),
    ("digits-large", "digits-large", 0),
];

type Plan = std::sync::Arc<TypedSimplePlan>;

fn tract_value(t: &Tensor) -> TValue {
    match &t.data {
        TensorData::F32(v) => tract_onnx::prelude::Tensor::from_shape(&t.shape, v).expect("shape").into(),
        TensorData::I64(v) => tract_onnx::prelude::Tensor::from_shape(&t.shape, v).expect("shape").into(),
        TensorData::I32(v) => tract_onnx::prelude::Tensor::from_shape(&t.shape, v).expect("shape").into(),
        other => panic!("the benchmark models take f32, i64 or i32, not {}", other.dtype()),
    }
}

fn answered(local: edgecascade::Result<Local>, what: &str) -> edgecascade::Answer {
    match local {
        Ok(Local::Answered(a)) => a,
        Ok(Local::Beyond { reason }) => panic!("{what}: beyond the plugin: {reason}"),
        Err(e) => panic!("{what}: {e}"),
    }
}

/// The guest SDK's loader run natively: the graph the guest runs (with the SDK's rewrites), so
/// `guest` against `native_sdk` is the cost of the sandbox alone.
fn native_sdk_model(model: &str) -> OnnxModel {
    let path = repo_root().join(format!("models/onnx/{model}.onnx"));
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    OnnxModel::load(&bytes).unwrap_or_else(|e| panic!("{model}: the SDK refused it: {e}"))
}

fn sdk_value(t: &Tensor) -> edgecascade_guest::onnx::TValue {
    use edgecascade_guest::onnx::TractTensor;
    match &t.data {
        TensorData::F32(v) => TractTensor::from_shape(&t.shape, v).expect("shape").into(),
        TensorData::I64(v) => TractTensor::from_shape(&t.shape, v).expect("shape").into(),
        TensorData::I32(v) => TractTensor::from_shape(&t.shape, v).expect("shape").into(),
        other => panic!("the benchmark models take f32, i64 or i32, not {}", other.dtype()),
    }
}

fn native_plan(model: &str) -> Plan {
    let path = repo_root().join(format!("models/onnx/{model}.onnx"));
    tract_onnx::onnx()
        .model_for_path(&path)
        .and_then(|m| m.into_optimized())
        .and_then(|m| m.into_runnable())
        .unwrap_or_else(|e| panic!("{model}: tract refused it: {e:#}"))
}

/// The guest's plugin, checked against native tract on the same input before anything is timed.
fn guest_plugin(model: &str, tmp: &std::path::Path, plan: &Plan, tensors: &[Tensor], input: &Input) -> Plugin {
    let plugin = load(&tensor_package(tmp, model));
    let native = plan.run(tensors.iter().map(tract_value).collect()).expect("native run");
    let native: Vec<f32> = native[0].to_plain_array_view::<f32>().expect("f32 output").iter().copied().collect();
    let guest = answered(plugin.infer(input), model);
    let TensorData::F32(guest) = &guest.tensors[0].data else { panic!("{model}: output is not f32") };
    assert_eq!(native.len(), guest.len(), "{model}: output lengths differ");
    let diff = native.iter().zip(guest).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
    assert!(diff < 0.05, "{model}: guest and native differ by {diff}");
    plugin
}

/// `guest_vs_native/<bench>/{native,guest}` and `text_path/<plugin>`. Plugins and plans are
/// loaded only for the benchmarks criterion's filter selects.
pub fn bench(c: &mut Criterion) {
    for &(bench, model, index) in MODELS {
        let row = golden_row(model, index);
        let tensors = golden_inputs(model, &row);
        let input = Input::json(&serde_json::json!({ "inputs": tensors }));
        let tmp = tempfile::tempdir().expect("tempdir");
        let plan: OnceCell<Plan> = OnceCell::new();
        let plugin: OnceCell<Plugin> = OnceCell::new();
        let sdk_model: std::cell::RefCell<Option<OnnxModel>> = Default::default();

        let mut group = c.benchmark_group(format!("guest_vs_native/{bench}"));
        if bench == "minilm-int8" {
            group.sample_size(10).warm_up_time(Duration::from_secs(2)).measurement_time(Duration::from_secs(8));
        } else {
            group.sample_size(30).warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(3));
        }
        group.bench_function("native", |b| {
            let plan = plan.get_or_init(|| native_plan(model));
            b.iter_batched(
                || tensors.iter().map(tract_value).collect::<TVec<TValue>>(),
                |inputs| plan.run(inputs).expect("native run"),
                BatchSize::SmallInput,
            )
        });
        group.bench_function("native_sdk", |b| {
            let mut sdk = sdk_model.borrow_mut();
            let sdk = sdk.get_or_insert_with(|| native_sdk_model(model));
            let stock = plan.get_or_init(|| native_plan(model));
            let want = stock.run(tensors.iter().map(tract_value).collect()).expect("native run");
            let want: Vec<f32> = want[0].to_plain_array_view::<f32>().expect("f32 output").iter().copied().collect();
            let got = sdk.run_f32(tensors.iter().map(sdk_value).collect()).expect("SDK run");
            let diff = want.iter().zip(&got).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
            assert!(want.len() == got.len() && diff < 1e-4, "{bench}: the SDK's graph differs from tract's by {diff}");
            b.iter_batched(
                || tensors.iter().map(sdk_value).collect(),
                |inputs| sdk.run(inputs).expect("SDK run"),
                BatchSize::SmallInput,
            )
        });
        // Includes the ABI: the tensor as JSON into the guest, the output tensor as JSON back.
        group.bench_function("guest", |b| {
            let plan = plan.get_or_init(|| native_plan(model));
            let plugin = plugin.get_or_init(|| guest_plugin(model, tmp.path(), plan, &tensors, &input));
            b.iter(|| answered(plugin.infer(black_box(&input)), model))
        });
        // The same with the input as .npy instead of JSON (single-input models): what the JSON
        // encoding costs. The output still comes back as JSON.
        if let [tensor] = tensors.as_slice() {
            let npy_input = Input::new("application/x-npy", tensor.to_npy());
            group.bench_function("guest_npy", |b| {
                let plan = plan.get_or_init(|| native_plan(model));
                let plugin = plugin.get_or_init(|| guest_plugin(model, tmp.path(), plan, &tensors, &input));
                let json = answered(plugin.infer(&input), model);
                assert_eq!(answered(plugin.infer(&npy_input), model).tensors, json.tensors, "{model}: npy != json");
                b.iter(|| answered(plugin.infer(black_box(&npy_input)), model))
            });
        }
        group.finish();
        if plan.get().is_some() {
            let shapes: Vec<_> = tensors.iter().map(|t| t.shape.clone()).collect();
            eprintln!("{bench}: {model} on golden row {index}, input shapes {shapes:?}");
        }
    }

    // The tokenizer alone, natively: the guest's share of `text_path` is its time there less the
    // model's on binary ids (`guest_vs_native/<model>/guest_npy`).
    let vocab = std::fs::read_to_string(repo_root().join("models/vocab.txt")).expect("models/vocab.txt");
    let wordpiece = WordPiece::from_vocab(&vocab).expect("a WordPiece vocabulary");
    let mut group = c.benchmark_group("tokenizer");
    group.sample_size(30).warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(3));
    for task in ["news", "sentiment"] {
        let text = test_text(task);
        group.throughput(Throughput::Bytes(text.len() as u64));
        group.bench_function(task, |b| b.iter(|| wordpiece.analyze(black_box(&text), 512)));
    }
    group.finish();

    // The real path: text in, tokenized and classified in the guest, an Answer out.
    let mut group = c.benchmark_group("text_path");
    for (name, task) in [
        ("news-topic", "news"),
        ("sentiment", "sentiment"),
        ("news-topic-large", "news"),
        ("sentiment-large", "sentiment"),
    ] {
        if name.ends_with("-large") {
            group.sample_size(10).warm_up_time(Duration::from_secs(2)).measurement_time(Duration::from_secs(8));
        } else {
            group.sample_size(30).warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(3));
        }
        let texts = TextVariants::new(&test_text(task));
        let plugin: OnceCell<Plugin> = OnceCell::new();
        group.bench_function(name, |b| {
            let plugin = plugin.get_or_init(|| {
                let plugin = load(&plugin_dir(name));
                let a = answered(plugin.infer(texts.first()), name);
                let bytes = texts.first().data().len();
                eprintln!("{name}: {:?} ({:.3}) on {bytes} bytes of text", a.label, a.confidence);
                plugin
            });
            b.iter(|| answered(plugin.infer(black_box(texts.next_input())), name))
        });
    }
    group.finish();
}

//! What a package contains, without running it: the module's exports and
//! imports, whether it runs constructors once (a true reactor), and for each
//! model its inputs and outputs as the graph declares them, its ops, its
//! quantization format, and any ops tract cannot run.
//!
//! The support table is the conformance suite (`tests/fixtures/conformance/cases.json`,
//! written by `models/pipeline/conformance.py` and described in `docs/onnx-support.md`):
//! every format onnxruntime's quantizer writes, checked against the ONNX
//! reference in the sandbox. An op or format the suite covers is marked
//! `conformance: true`; another may well run (tract implements most of ONNX),
//! but nothing here has checked its numbers.

use crate::plugin::VerifiedPackage;
use serde::Serialize;

/// The report of `edgecascade inspect`.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Plugin name.
    pub name: String,
    /// Plugin version.
    pub version: String,
    /// Guest ABI version from the manifest.
    pub abi_version: u32,
    /// Labels.
    pub labels: Vec<String>,
    /// Size of the module in bytes.
    pub wasm_bytes: usize,
    /// The module's exports as `name: kind`.
    pub exports: Vec<String>,
    /// The module's imports as `module::name`.
    pub imports: Vec<String>,
    /// Whether exports re-run the module's constructors.
    pub constructors: Constructors,
    /// One entry per model.
    pub models: Vec<ModelReport>,
}

/// How the module runs its constructors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Constructors {
    /// Only `_initialize` runs them: correct.
    OnceInInitialize,
    /// Exports other than `_initialize` call them: every call would re-run them.
    RerunPerExport,
    /// No name section to tell (a stripped module).
    Unknown,
}

/// What native tract makes of one model.
#[derive(Debug, Clone, Serialize)]
pub struct ModelReport {
    /// The manifest's name for it.
    pub name: String,
    /// Size in bytes.
    pub bytes: usize,
    /// The graph's inputs (initializers excluded) as `name: type [dims]`,
    /// as the ONNX file declares them; a named or open dimension is shown by its name or `?`.
    pub inputs: Vec<String>,
    /// The graph's outputs, the same way; where the file declares no shape,
    /// the one tract infers (`probs: float [1, 5] (inferred)`).
    pub outputs: Vec<String>,
    /// Every op the graph uses, most used first.
    pub ops: Vec<OpUse>,
    /// The quantization formats found: `float`, `static` (QDQ or QOperator) or `dynamic`,
    /// as the conformance suite names them.
    pub formats: Vec<String>,
    /// Whether the conformance suite covers every op and format found.
    pub conformance: bool,
    /// Ops tract does not implement, with their nodes.
    pub unsupported_ops: Vec<String>,
    /// Whether tract optimizes the model for running (every op supported and typed).
    pub runnable: bool,
    /// The error, when it does not.
    pub error: Option<String>,
}

/// One op of a graph.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct OpUse {
    /// `Op`, or `domain::Op` outside the standard domain (`com.microsoft::QGemm`).
    pub op: String,
    /// How many nodes use it.
    pub count: usize,
    /// Whether the conformance suite checks a model that uses it.
    pub conformance: bool,
}

/// The conformance suite's cases: which ops and formats were checked against the reference.
const CONFORMANCE: &str = include_str!("../../tests/fixtures/conformance/cases.json");

/// The ops and the formats (`kind`s) of the conformance suite.
fn conformance() -> (std::collections::BTreeSet<String>, std::collections::BTreeSet<String>) {
    #[derive(serde::Deserialize)]
    struct Case {
        kind: String,
        ops: Vec<String>,
    }
    let cases: Vec<Case> = serde_json::from_str(CONFORMANCE).expect("the conformance cases are valid JSON");
    let ops = cases.iter().flat_map(|c| c.ops.iter().cloned()).collect();
    let kinds = cases.into_iter().map(|c| c.kind).collect();
    (ops, kinds)
}

/// The formats of a graph that uses `ops`, named as the conformance suite names them.
fn formats(ops: &[OpUse]) -> Vec<String> {
    let has = |f: &dyn Fn(&str) -> bool| ops.iter().any(|o| f(o.op.rsplit("::").next().unwrap_or(&o.op)));
    let dynamic = has(&|op| matches!(op, "DynamicQuantizeLinear" | "MatMulInteger" | "ConvInteger"));
    let static_ = has(&|op| op.starts_with("QLinear") || matches!(op, "QGemm" | "QuantizeLinear" | "DequantizeLinear"));
    let mut out = Vec::new();
    if dynamic {
        out.push("dynamic".to_string());
    }
    // Dynamic quantization also dequantizes its weights; only a graph without it is static.
    if static_ && !dynamic {
        out.push("static".to_string());
    }
    if out.is_empty() {
        out.push("float".to_string());
    }
    out
}

/// Inspects a verified package.
pub fn inspect(package: &VerifiedPackage) -> crate::error::Result<Report> {
    let m = package.manifest();
    let wasm = package.wasm()?;
    let (exports, imports, constructors) = module_facts(wasm).map_err(|message| crate::error::Error::InvalidWasm {
        plugin: m.plugin.name.clone(),
        message,
        source: None,
    })?;
    let models = package
        .files()
        .filter(|(_, kind, _)| *kind == edgecascade_abi::FileKind::Model)
        .map(|(name, _, bytes)| model_report(name, bytes))
        .collect();
    Ok(Report {
        name: m.plugin.name.clone(),
        version: m.plugin.version.clone(),
        abi_version: m.plugin.abi_version,
        labels: m.plugin.labels.clone(),
        wasm_bytes: wasm.len(),
        exports,
        imports,
        constructors,
        models,
    })
}

type ModuleFacts = (Vec<String>, Vec<String>, Constructors);

fn module_facts(wasm: &[u8]) -> Result<ModuleFacts, String> {
    use wasmparser::{ExternalKind, Name, Operator, Parser, Payload, TypeRef};
    let mut exports = Vec::new();
    let mut imports = Vec::new();
    let mut imported_funcs = 0u32;
    let mut exported_funcs: Vec<(String, u32)> = Vec::new();
    let mut ctors: Option<u32> = None;
    let mut bodies: Vec<Vec<u32>> = Vec::new();
    for payload in Parser::new(0).parse_all(wasm) {
        match payload.map_err(|e| e.to_string())? {
            Payload::ImportSection(reader) => {
                for import in reader.into_imports() {
                    let import = import.map_err(|e| e.to_string())?;
                    if matches!(import.ty, TypeRef::Func(_)) {
                        imported_funcs += 1;
                    }
                    imports.push(format!("{}::{}", import.module, import.name));
                }
            }
            Payload::ExportSection(reader) => {
                for export in reader {
                    let export = export.map_err(|e| e.to_string())?;
                    exports.push(format!("{}: {:?}", export.name, export.kind).to_lowercase());
                    if export.kind == ExternalKind::Func {
                        exported_funcs.push((export.name.to_string(), export.index));
                    }
                }
            }
            Payload::CodeSectionEntry(body) => {
                // Direct calls made by each body, to find who calls the constructors.
                let mut calls = Vec::new();
                let mut ops = body.get_operators_reader().map_err(|e| e.to_string())?;
                while !ops.eof() {
                    if let Operator::Call { function_index } = ops.read().map_err(|e| e.to_string())? {
                        calls.push(function_index);
                    }
                }
                bodies.push(calls);
            }
            Payload::CustomSection(section) => {
                if let wasmparser::KnownCustom::Name(reader) = section.as_known() {
                    for name in reader {
                        if let Ok(Name::Function(map)) = name {
                            for naming in map.into_iter().flatten() {
                                if naming.name == "__wasm_call_ctors" {
                                    ctors = Some(naming.index);
                                }
                            }
                        }
                    }
                }
            }
            _ => {}
        }
    }
    let constructors = match ctors {
        None => Constructors::Unknown,
        Some(ctor) => {
            let rerun = exported_funcs.iter().any(|(name, index)| {
                name != edgecascade_abi::exports::INITIALIZE
                    && index
                        .checked_sub(imported_funcs)
                        .and_then(|i| bodies.get(i as usize))
                        .is_some_and(|calls| calls.contains(&ctor))
            });
            if rerun { Constructors::RerunPerExport } else { Constructors::OnceInInitialize }
        }
    };
    Ok((exports, imports, constructors))
}

fn model_report(name: &str, bytes: &[u8]) -> ModelReport {
    use tract_onnx::prelude::*;
    use tract_onnx::tract_core::ops::unimpl::UnimplementedOp;
    let mut report = ModelReport {
        name: name.to_string(),
        bytes: bytes.len(),
        inputs: vec![],
        outputs: vec![],
        ops: vec![],
        formats: vec![],
        conformance: false,
        unsupported_ops: vec![],
        runnable: false,
        error: None,
    };
    let onnx = tract_onnx::onnx();
    let proto = match onnx.proto_model_for_read(&mut &bytes[..]) {
        Ok(p) => p,
        Err(e) => {
            report.error = Some(format!("{e:#}"));
            return report;
        }
    };
    if let Some(graph) = &proto.graph {
        let initializers: std::collections::HashSet<&str> = graph.initializer.iter().map(|t| t.name.as_str()).collect();
        report.inputs = graph.input.iter().filter(|v| !initializers.contains(v.name.as_str())).map(declared).collect();
        report.outputs = graph.output.iter().map(declared).collect();
        let mut counts = std::collections::BTreeMap::<String, usize>::new();
        for node in &graph.node {
            let op = match node.domain.as_str() {
                "" | "ai.onnx" => node.op_type.clone(),
                domain => format!("{domain}::{}", node.op_type),
            };
            *counts.entry(op).or_default() += 1;
        }
        let (checked_ops, checked_kinds) = conformance();
        report.ops =
            counts.into_iter().map(|(op, count)| OpUse { conformance: checked_ops.contains(&op), op, count }).collect();
        report.ops.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.op.cmp(&b.op)));
        report.formats = formats(&report.ops);
        report.conformance =
            report.ops.iter().all(|o| o.conformance) && report.formats.iter().all(|f| checked_kinds.contains(f));
    }
    let model = match onnx.model_for_proto_model(&proto) {
        Ok(m) => m,
        Err(e) => {
            report.error = Some(format!("{e:#}"));
            return report;
        }
    };
    report.unsupported_ops = model
        .nodes()
        .iter()
        .filter(|n| n.op_is::<UnimplementedOp>())
        .map(|n| {
            let op = n.op().name();
            format!("{} (node {:?})", op.trim_start_matches("Unimplemented(").trim_end_matches(')'), n.name)
        })
        .collect();
    match model.into_optimized() {
        Ok(optimized) => {
            report.runnable = true;
            // An output the file declares without a shape: say what tract infers.
            for (i, output) in report.outputs.iter_mut().enumerate() {
                if output.ends_with(" ?")
                    && let Ok(fact) = optimized.output_fact(i)
                {
                    let dims: Vec<String> = fact.shape.iter().map(|d| d.to_string()).collect();
                    *output = format!("{} [{}] (inferred)", output.trim_end_matches(" ?"), dims.join(", "));
                }
            }
        }
        Err(e) => report.error = Some(format!("{e:#}")),
    }
    report
}

/// `name: type [dims]` as a graph declares a value; ` ?` for an undeclared shape.
fn declared(value: &tract_onnx::pb::ValueInfoProto) -> String {
    use tract_onnx::pb::tensor_proto::DataType;
    use tract_onnx::pb::tensor_shape_proto::dimension::Value as Dim;
    use tract_onnx::pb::type_proto::Value;
    let Some(Value::TensorType(tensor)) = value.r#type.as_ref().and_then(|t| t.value.as_ref()) else {
        return format!("{}: ?", value.name);
    };
    let dtype = DataType::try_from(tensor.elem_type).map_or("?".to_string(), |d| d.as_str_name().to_lowercase());
    match &tensor.shape {
        None => format!("{}: {dtype} ?", value.name),
        Some(shape) => {
            let dims: Vec<String> = shape
                .dim
                .iter()
                .map(|d| match &d.value {
                    Some(Dim::DimValue(n)) => n.to_string(),
                    Some(Dim::DimParam(name)) if !name.is_empty() => name.clone(),
                    _ => "?".into(),
                })
                .collect();
            format!("{}: {dtype} [{}]", value.name, dims.join(", "))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_support_page_lists_every_conformance_case() {
        let page = include_str!("../../docs/onnx-support.md");
        let cases: Vec<serde_json::Value> = serde_json::from_str(CONFORMANCE).unwrap();
        assert!(cases.len() >= 20);
        for case in cases {
            let name = case["name"].as_str().unwrap();
            assert!(page.contains(&format!("| `{name}` |")), "docs/onnx-support.md does not list {name}");
        }
    }

    #[test]
    fn formats_are_named_as_the_suite_names_them() {
        let uses = |ops: &[&str]| -> Vec<OpUse> {
            ops.iter().map(|op| OpUse { op: op.to_string(), count: 1, conformance: true }).collect()
        };
        assert_eq!(formats(&uses(&["MatMul", "Relu"])), ["float"]);
        assert_eq!(formats(&uses(&["QuantizeLinear", "DequantizeLinear", "MatMul"])), ["static"]);
        assert_eq!(formats(&uses(&["QLinearMatMul", "com.microsoft::QGemm"])), ["static"]);
        assert_eq!(formats(&uses(&["DynamicQuantizeLinear", "MatMulInteger", "DequantizeLinear"])), ["dynamic"]);
        // Every format the classifier names is one the suite covers.
        let (_, kinds) = conformance();
        assert!(["float", "static", "dynamic"].iter().all(|k| kinds.contains(*k)), "{kinds:?}");
    }
}

//! What a package contains, without running it: the module's exports and
//! imports, whether it runs constructors once (a true reactor), and for each
//! model its inputs, outputs and any ops tract cannot run.

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
    /// Inputs as `name: fact`.
    pub inputs: Vec<String>,
    /// Outputs as `name: fact`.
    pub outputs: Vec<String>,
    /// Ops tract does not implement, with their nodes.
    pub unsupported_ops: Vec<String>,
    /// Whether tract optimizes the model for running (every op supported and typed).
    pub runnable: bool,
    /// The error, when it does not.
    pub error: Option<String>,
}

/// Inspects a verified package.
pub fn inspect(package: &VerifiedPackage) -> crate::error::Result<Report> {
    let m = package.manifest();
    let wasm = package.wasm()?;
    let (exports, imports, constructors) = module_facts(wasm)
        .map_err(|message| crate::error::Error::InvalidWasm { plugin: m.plugin.name.clone(), message })?;
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
        unsupported_ops: vec![],
        runnable: false,
        error: None,
    };
    let model = match tract_onnx::onnx().model_for_read(&mut &bytes[..]) {
        Ok(m) => m,
        Err(e) => {
            report.error = Some(format!("{e:#}"));
            return report;
        }
    };
    let describe = |outlets: &[OutletId]| -> Vec<String> {
        outlets
            .iter()
            .map(|o| {
                let fact = model.outlet_fact(*o).map(|f| format!("{f:?}")).unwrap_or_default();
                format!("{}: {fact}", model.node(o.node).name)
            })
            .collect()
    };
    report.inputs = model.input_outlets().map(describe).unwrap_or_default();
    report.outputs = model.output_outlets().map(describe).unwrap_or_default();
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
        Ok(_) => report.runnable = true,
        Err(e) => report.error = Some(format!("{e:#}")),
    }
    report
}

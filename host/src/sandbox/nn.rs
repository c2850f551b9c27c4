//! wasi-nn for plugins, answered by the shared inference runtime.
//!
//! A plugin that imports `wasi_ephemeral_nn` (the witx form of wasi-nn that
//! wasmtime and WasmEdge implement too) gets, in its own store, an instance of
//! the runtime module (tract, built once per host, `guest/runtime`). The
//! functions here turn the plugin's wasi-nn calls into calls of the runtime's
//! exports (`edgecascade_abi::nn_runtime`), copying bytes between the two
//! memories. Host code only copies: the runtime instance parses the model and
//! runs it, in its own sandbox, under the store's deadline and memory cap.
//!
//! A bad pointer or handle from the plugin is wasi-nn's `invalid_argument`, a
//! model the runtime refuses is `runtime_error`, and the runtime's message is
//! kept for `edgecascade.nn_last_error`. A trap in the runtime (its deadline,
//! its memory cap, a panic) ends the plugin's call like a trap of its own.

use super::HostState;
use crate::error::{Error, Result};
use edgecascade_abi::nn_runtime::{self as contract, Errno};
use std::collections::HashMap;
use std::sync::Arc;
use wasmtime::{Caller, Extern, Instance, InstancePre, Linker, Memory, Module, TypedFunc};

/// The import module a wasi-nn plugin links against.
pub(crate) const MODULE: &str = "wasi_ephemeral_nn";

/// The host function that hands the plugin the runtime's last message.
pub(crate) const LAST_ERROR: &str = "nn_last_error";

/// The models of one package that its instances load into the runtime, by
/// manifest name (their sha256 checked when the package was verified).
pub(crate) type NnModels = Arc<HashMap<String, Arc<[u8]>>>;

/// The shared runtime as a plugin's instances need it: the runtime module
/// ready to instantiate, and the package's models to load into it.
#[derive(Clone)]
pub(crate) struct NnRuntime {
    pub pre: InstancePre<HostState>,
    pub models: NnModels,
}

/// Whether a module imports wasi-nn, and so needs the shared runtime.
pub(crate) fn imports_nn(module: &Module) -> bool {
    module.imports().any(|import| import.module() == MODULE)
}

/// Whether the module in these wasm bytes (or their first part: the imports
/// come before the code) imports wasi-nn.
pub(crate) fn wasm_imports_nn(wasm: &[u8]) -> bool {
    use wasmparser::{Parser, Payload};
    for payload in Parser::new(0).parse_all(wasm) {
        match payload {
            Ok(Payload::ImportSection(reader)) => {
                return reader.into_imports().flatten().any(|import| import.module == MODULE);
            }
            Ok(Payload::CodeSectionStart { .. }) | Err(_) => return false,
            Ok(_) => {}
        }
    }
    false
}

/// Why a module in these wasm bytes cannot be snapshotted with its models
/// loaded: it imports wasi-nn (its models live in the runtime's instance), or
/// it is the shared runtime itself (which loads models only for a plugin).
/// `None` for a plain plugin, and for bytes that are not wasm (compiling them fails later, with the reason).
pub(crate) fn snapshot_blocker(wasm: &[u8]) -> Option<&'static str> {
    use wasmparser::{Parser, Payload};
    if wasm_imports_nn(wasm) {
        return Some("it imports wasi-nn: its models are loaded in the shared runtime's instance");
    }
    let exports_runtime = Parser::new(0).parse_all(wasm).any(|payload| match payload {
        Ok(Payload::ExportSection(reader)) => reader.into_iter().flatten().any(|e| e.name == contract::LOAD),
        _ => false,
    });
    exports_runtime.then_some("it is the shared wasi-nn runtime, which loads models only for a plugin")
}

/// Checks that a module is a runtime this host can link: every export of the
/// contract, with its type.
pub(crate) fn check_runtime_exports(module: &Module) -> std::result::Result<(), String> {
    use wasmtime::{ExternType, ValType};
    let i = || ValType::I32;
    let l = || ValType::I64;
    let required: [(&str, Vec<ValType>, Vec<ValType>); 10] = [
        ("_initialize", vec![], vec![]),
        (contract::VERSION, vec![], vec![i()]),
        (contract::ALLOC, vec![i()], vec![i()]),
        (contract::LOAD, vec![i(), i()], vec![l()]),
        (contract::INIT, vec![i()], vec![l()]),
        (contract::SET_INPUT, vec![i(), i(), i(), i(), i()], vec![l()]),
        (contract::COMPUTE, vec![i()], vec![l()]),
        (contract::OUTPUT, vec![i(), i()], vec![l()]),
        (contract::OUTPUT_PTR, vec![], vec![i()]),
        (contract::LAST_ERROR, vec![], vec![l()]),
    ];
    if !matches!(module.get_export("memory"), Some(ExternType::Memory(_))) {
        return Err("it exports no memory".into());
    }
    for (name, params, results) in required {
        let Some(ExternType::Func(ty)) = module.get_export(name) else {
            return Err(format!("it does not export the function {name}"));
        };
        let same = |a: &mut dyn Iterator<Item = ValType>, b: &[ValType]| {
            let a: Vec<ValType> = a.collect();
            a.len() == b.len() && a.iter().zip(b).all(|(x, y)| ValType::eq(x, y))
        };
        if !same(&mut ty.params(), &params) || !same(&mut ty.results(), &results) {
            return Err(format!("its export {name} has type {ty}"));
        }
    }
    Ok(())
}

/// The runtime instance linked to one plugin instance, kept in the store.
pub(crate) struct NnLink {
    funcs: LinkFuncs,
    models: NnModels,
    /// Graphs already loaded by name in this instance: each model is parsed once.
    by_name: HashMap<String, i32>,
    last_error: String,
}

/// The runtime instance's memory and exports (cheap to clone, so that a call
/// can hold them while it borrows the store).
#[derive(Clone)]
struct LinkFuncs {
    memory: Memory,
    alloc: TypedFunc<i32, i32>,
    load: TypedFunc<(i32, i32), i64>,
    init: TypedFunc<i32, i64>,
    set_input: TypedFunc<(i32, i32, i32, i32, i32), i64>,
    compute: TypedFunc<i32, i64>,
    output: TypedFunc<(i32, i32), i64>,
    output_ptr: TypedFunc<(), i32>,
    last_error: TypedFunc<(), i64>,
}

impl NnLink {
    /// Runs the runtime instance's `_initialize`, checks its contract version
    /// and returns the link. `initialize` runs under the store's deadline.
    pub(crate) fn start(
        store: &mut wasmtime::Store<HostState>,
        instance: Instance,
        models: NnModels,
    ) -> std::result::Result<NnLink, RuntimeFault> {
        let func = |store: &mut wasmtime::Store<HostState>, name: &str| {
            instance.get_func(&mut *store, name).ok_or_else(|| RuntimeFault::Contract(format!("no export {name}")))
        };
        macro_rules! typed {
            ($name:expr) => {
                func(store, $name)?.typed(&*store).map_err(|e| RuntimeFault::Contract(format!("{}: {e}", $name)))?
            };
        }
        let initialize: TypedFunc<(), ()> = typed!("_initialize");
        let version: TypedFunc<(), i32> = typed!(contract::VERSION);
        let funcs = LinkFuncs {
            memory: instance
                .get_memory(&mut *store, "memory")
                .ok_or_else(|| RuntimeFault::Contract("no memory".into()))?,
            alloc: typed!(contract::ALLOC),
            load: typed!(contract::LOAD),
            init: typed!(contract::INIT),
            set_input: typed!(contract::SET_INPUT),
            compute: typed!(contract::COMPUTE),
            output: typed!(contract::OUTPUT),
            output_ptr: typed!(contract::OUTPUT_PTR),
            last_error: typed!(contract::LAST_ERROR),
        };
        let link = NnLink { funcs, models, by_name: HashMap::new(), last_error: String::new() };
        initialize.call(&mut *store, ()).map_err(RuntimeFault::Trap)?;
        let found = version.call(&mut *store, ()).map_err(RuntimeFault::Trap)?;
        if found as u32 != contract::RUNTIME_VERSION {
            return Err(RuntimeFault::Contract(format!(
                "it speaks runtime contract {found}, this host {}",
                contract::RUNTIME_VERSION
            )));
        }
        Ok(link)
    }
}

impl NnLink {
    /// The runtime instance's linear memory, in bytes.
    pub(crate) fn memory_bytes(&self, store: &wasmtime::Store<HostState>) -> usize {
        self.funcs.memory.data_size(store)
    }
}

/// Why a runtime instance could not be started.
pub(crate) enum RuntimeFault {
    /// It does not implement the contract.
    Contract(String),
    /// It trapped in `_initialize` (or ran out of time or memory).
    Trap(wasmtime::Error),
}

/// A failed wasi-nn call: an error code for the plugin, or a trap that ends its call.
enum Failure {
    Errno(Errno, String),
    Trap(wasmtime::Error),
}

fn invalid(message: impl Into<String>) -> Failure {
    Failure::Errno(Errno::InvalidArgument, message.into())
}

type Outcome<T> = std::result::Result<T, Failure>;

/// Adds the wasi-nn functions and `edgecascade.nn_last_error` to the linker.
/// A plugin that calls them without a linked runtime gets `unsupported_operation`.
pub(crate) fn add_to_linker(linker: &mut Linker<HostState>) -> Result<()> {
    let failed = |e: wasmtime::Error| Error::Engine(format!("adding wasi-nn to the linker: {e}"));
    linker
        .func_wrap(
            MODULE,
            "load",
            |mut caller: Caller<'_, HostState>, builders: i32, count: i32, encoding: i32, target: i32, graph: i32| {
                let result = load(&mut caller, builders, count, encoding, target)
                    .and_then(|id| write_u32(&mut caller, graph, id));
                finish(&mut caller, result)
            },
        )
        .map_err(failed)?;
    linker
        .func_wrap(MODULE, "load_by_name", |mut caller: Caller<'_, HostState>, name: i32, len: i32, graph: i32| {
            let result = load_by_name(&mut caller, name, len).and_then(|id| write_u32(&mut caller, graph, id));
            finish(&mut caller, result)
        })
        .map_err(failed)?;
    linker
        .func_wrap(MODULE, "init_execution_context", |mut caller: Caller<'_, HostState>, graph: i32, out: i32| {
            let result = runtime_call(&mut caller, |link, store| link.init.call(store, graph))
                .and_then(|id| write_u32(&mut caller, out, id as u32));
            finish(&mut caller, result)
        })
        .map_err(failed)?;
    linker
        .func_wrap(MODULE, "set_input", |mut caller: Caller<'_, HostState>, context: i32, index: i32, tensor: i32| {
            let result = set_input(&mut caller, context, index, tensor);
            finish(&mut caller, result)
        })
        .map_err(failed)?;
    linker
        .func_wrap(MODULE, "compute", |mut caller: Caller<'_, HostState>, context: i32| {
            let result = runtime_call(&mut caller, |link, store| link.compute.call(store, context)).map(drop);
            finish(&mut caller, result)
        })
        .map_err(failed)?;
    linker
        .func_wrap(
            MODULE,
            "get_output",
            |mut caller: Caller<'_, HostState>, context: i32, index: i32, out: i32, max: i32, written: i32| {
                let result = get_output(&mut caller, context, index, out, max, written);
                finish(&mut caller, result)
            },
        )
        .map_err(failed)?;
    linker
        .func_wrap(
            edgecascade_abi::exports::HOST_MODULE,
            LAST_ERROR,
            |mut caller: Caller<'_, HostState>, out: i32, max: i32| -> wasmtime::Result<i32> {
                let message = caller.data().nn.as_ref().map(|l| l.last_error.clone()).unwrap_or_default();
                let bytes = message.as_bytes();
                let n = bytes.len().min(max.max(0) as usize);
                // A bad buffer gets nothing copied; the length still says what there was.
                let _ = write_plugin(&mut caller, out, &bytes[..n]);
                Ok(bytes.len() as i32)
            },
        )
        .map_err(failed)?;
    Ok(())
}

/// The wasi-nn result of a call: `0`, or an error code with its message kept;
/// a trap goes on up and ends the plugin's call.
fn finish(caller: &mut Caller<'_, HostState>, result: Outcome<()>) -> wasmtime::Result<i32> {
    match result {
        Ok(()) => Ok(Errno::Success as i32),
        Err(Failure::Trap(e)) => Err(e),
        Err(Failure::Errno(errno, message)) => {
            if let Some(link) = caller.data_mut().nn.as_mut() {
                link.last_error = message;
            }
            Ok(errno as i32)
        }
    }
}

/// The plugin's memory.
fn plugin_memory(caller: &mut Caller<'_, HostState>) -> Outcome<Memory> {
    match caller.get_export("memory") {
        Some(Extern::Memory(memory)) => Ok(memory),
        _ => Err(invalid("the plugin exports no memory")),
    }
}

fn read_plugin(caller: &mut Caller<'_, HostState>, ptr: i32, len: u32) -> Outcome<Vec<u8>> {
    let memory = plugin_memory(caller)?;
    let start = ptr as u32 as usize;
    let data = memory.data(&*caller);
    start
        .checked_add(len as usize)
        .and_then(|end| data.get(start..end))
        .map(<[u8]>::to_vec)
        .ok_or_else(|| invalid(format!("{len} bytes at {start:#x} are outside the plugin's memory")))
}

fn write_plugin(caller: &mut Caller<'_, HostState>, ptr: i32, bytes: &[u8]) -> Outcome<()> {
    let memory = plugin_memory(caller)?;
    memory
        .write(&mut *caller, ptr as u32 as usize, bytes)
        .map_err(|_| invalid(format!("{} bytes at {:#x} are outside the plugin's memory", bytes.len(), ptr as u32)))
}

fn write_u32(caller: &mut Caller<'_, HostState>, ptr: i32, value: u32) -> Outcome<()> {
    write_plugin(caller, ptr, &value.to_le_bytes())
}

fn u32_at(bytes: &[u8], offset: usize) -> u32 {
    u32::from_le_bytes([bytes[offset], bytes[offset + 1], bytes[offset + 2], bytes[offset + 3]])
}

/// The funcs of the linked runtime, copied out so that the store can be borrowed for the call.
fn link(caller: &Caller<'_, HostState>) -> Outcome<LinkFuncs> {
    let link = caller.data().nn.as_ref().ok_or_else(|| {
        Failure::Errno(Errno::UnsupportedOperation, "no wasi-nn runtime is linked to this instance".into())
    })?;
    Ok(link.funcs.clone())
}

/// Calls the runtime; a negative result becomes its error code and message.
fn runtime_call(
    caller: &mut Caller<'_, HostState>,
    call: impl FnOnce(&LinkFuncs, &mut Caller<'_, HostState>) -> wasmtime::Result<i64>,
) -> Outcome<i64> {
    let funcs = link(caller)?;
    let result = call(&funcs, caller).map_err(Failure::Trap)?;
    if result >= 0 {
        return Ok(result);
    }
    let packed = funcs.last_error.call(&mut *caller, ()).map_err(Failure::Trap)?;
    let (ptr, len) = edgecascade_abi::unpack(packed);
    let data = funcs.memory.data(&*caller);
    let message = (ptr as usize)
        .checked_add(len.min(4096) as usize)
        .and_then(|end| data.get(ptr as usize..end))
        .map(|b| String::from_utf8_lossy(b).into_owned())
        .unwrap_or_else(|| "the runtime's message is outside its memory".into());
    Err(Failure::Errno(Errno::from_result(result), message))
}

/// Copies `parts` back to back into a buffer the runtime allocates, and returns it.
fn copy_to_runtime(caller: &mut Caller<'_, HostState>, funcs: &LinkFuncs, parts: &[&[u8]]) -> Outcome<(i32, i32)> {
    let total: usize = parts.iter().map(|p| p.len()).sum();
    let len = i32::try_from(total).map_err(|_| Failure::Errno(Errno::TooLarge, format!("{total} bytes")))?;
    let ptr = funcs.alloc.call(&mut *caller, len).map_err(Failure::Trap)?;
    if ptr == 0 && len > 0 {
        return Err(Failure::Errno(Errno::MissingMemory, format!("the runtime could not allocate {total} bytes")));
    }
    let mut offset = ptr as u32 as usize;
    for part in parts {
        funcs.memory.write(&mut *caller, offset, part).map_err(|_| {
            Failure::Trap(wasmtime::format_err!("the runtime's allocation at {ptr:#x} cannot hold {total} bytes"))
        })?;
        offset += part.len();
    }
    Ok((ptr, len))
}

fn load(caller: &mut Caller<'_, HostState>, builders: i32, count: i32, encoding: i32, target: i32) -> Outcome<u32> {
    const ONNX: i32 = 1;
    const CPU: i32 = 0;
    if encoding != ONNX {
        return Err(Failure::Errno(
            Errno::InvalidEncoding,
            format!("graph encoding {encoding}: this host's runtime runs ONNX (encoding 1)"),
        ));
    }
    if target != CPU {
        return Err(Failure::Errno(Errno::UnsupportedOperation, format!("execution target {target}: only cpu (0)")));
    }
    if count != 1 {
        return Err(invalid(format!("{count} graph builders: an ONNX graph is one")));
    }
    let builder = read_plugin(caller, builders, 8)?;
    let bytes = read_plugin(caller, u32_at(&builder, 0) as i32, u32_at(&builder, 4))?;
    let funcs = link(caller)?;
    let (ptr, len) = copy_to_runtime(caller, &funcs, &[&bytes])?;
    drop(bytes);
    let graph = runtime_call(caller, |f, store| f.load.call(store, (ptr, len)))?;
    Ok(graph as u32)
}

fn load_by_name(caller: &mut Caller<'_, HostState>, name: i32, len: i32) -> Outcome<u32> {
    let name = read_plugin(caller, name, len as u32)?;
    let name = String::from_utf8(name).map_err(|_| invalid("a model name that is not UTF-8"))?;
    let (known, model) = {
        let link = caller
            .data()
            .nn
            .as_ref()
            .ok_or_else(|| Failure::Errno(Errno::UnsupportedOperation, "no wasi-nn runtime is linked".into()))?;
        (link.by_name.get(&name).copied(), link.models.get(&name).cloned())
    };
    if let Some(graph) = known {
        return Ok(graph as u32);
    }
    let model =
        model.ok_or_else(|| Failure::Errno(Errno::NotFound, format!("the manifest lists no model {name:?}")))?;
    let funcs = link(caller)?;
    let (ptr, len) = copy_to_runtime(caller, &funcs, &[&model])?;
    let graph = runtime_call(caller, |f, store| f.load.call(store, (ptr, len)))? as i32;
    if let Some(link) = caller.data_mut().nn.as_mut() {
        link.by_name.insert(name, graph);
    }
    Ok(graph as u32)
}

/// The witx `tensor` record: dimensions (pointer, length), the type (a byte
/// at offset 8), data (pointer, length at 12 and 16); 20 bytes in all.
fn set_input(caller: &mut Caller<'_, HostState>, context: i32, index: i32, tensor: i32) -> Outcome<()> {
    let record = read_plugin(caller, tensor, 20)?;
    let rank = u32_at(&record, 4);
    if rank > 16 {
        return Err(invalid(format!("a tensor of rank {rank}")));
    }
    let dims = read_plugin(caller, u32_at(&record, 0) as i32, rank * 4)?;
    let ty = record[8] as i32;
    let data = read_plugin(caller, u32_at(&record, 12) as i32, u32_at(&record, 16))?;
    let funcs = link(caller)?;
    let (ptr, len) = copy_to_runtime(caller, &funcs, &[&rank.to_le_bytes(), &dims, &data])?;
    drop(data);
    runtime_call(caller, |f, store| f.set_input.call(store, (context, index, ty, ptr, len)))?;
    Ok(())
}

fn get_output(
    caller: &mut Caller<'_, HostState>,
    context: i32,
    index: i32,
    out: i32,
    max: i32,
    written: i32,
) -> Outcome<()> {
    let len = runtime_call(caller, |f, store| f.output.call(store, (context, index)))? as u32;
    if len > max as u32 {
        // The size it needs, so that the plugin can grow its buffer and ask again.
        write_u32(caller, written, len)?;
        return Err(Failure::Errno(Errno::TooLarge, format!("output {index} is {len} bytes; the buffer holds {max}")));
    }
    let funcs = link(caller)?;
    let ptr = funcs.output_ptr.call(&mut *caller, ()).map_err(Failure::Trap)? as u32 as usize;
    let bytes = funcs
        .memory
        .data(&*caller)
        .get(ptr..ptr + len as usize)
        .map(<[u8]>::to_vec)
        .ok_or_else(|| Failure::Trap(wasmtime::format_err!("the runtime's output is outside its memory")))?;
    write_plugin(caller, out, &bytes)?;
    write_u32(caller, written, len)
}

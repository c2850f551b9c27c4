//! The shared inference runtime: tract behind the host's wasi-nn.
//!
//! One module, compiled once per host, that every plugin importing wasi-nn is
//! linked to: each plugin instance gets an instance of this module in the same
//! store, and the host turns the plugin's wasi-nn calls into calls of the
//! exports below (the contract is `guest/ABI.md`, "The shared runtime").
//! Model bytes are parsed here, inside this sandbox and under its limits,
//! never by host code.
//!
//! Every call returns an `i64`: a value `>= 0` on success, or minus a wasi-nn
//! error code (`nn_errno`), with the reason from `ecnn_last_error`.

use edgecascade_abi::nn_runtime::{Errno, RUNTIME_VERSION};
use edgecascade_guest::onnx::{DatumType, OnnxModel, TValue, TVec, TractTensor};

struct Runtime {
    graphs: Vec<OnnxModel>,
    contexts: Vec<Context>,
    last_error: String,
    output: Vec<u8>,
}

struct Context {
    model: OnnxModel,
    inputs: Vec<Option<TValue>>,
    outputs: TVec<TValue>,
}

struct Failure(Errno, String);

type Result<T> = std::result::Result<T, Failure>;

fn invalid(message: impl Into<String>) -> Failure {
    Failure(Errno::InvalidArgument, message.into())
}

impl Runtime {
    const fn new() -> Runtime {
        Runtime { graphs: Vec::new(), contexts: Vec::new(), last_error: String::new(), output: Vec::new() }
    }

    fn answer(&mut self, result: Result<i64>) -> i64 {
        match result {
            Ok(value) => value,
            Err(Failure(errno, message)) => {
                self.last_error = message;
                -(errno as i64)
            }
        }
    }

    fn load(&mut self, bytes: &[u8]) -> Result<i64> {
        let model = OnnxModel::load(bytes).map_err(|e| Failure(Errno::RuntimeError, e.message))?;
        self.graphs.push(model);
        Ok(self.graphs.len() as i64 - 1)
    }

    fn init(&mut self, graph: i32) -> Result<i64> {
        let model = self
            .graphs
            .get(graph as u32 as usize)
            .ok_or_else(|| invalid(format!("no graph {graph}")))?
            // A clone is a new run state over the same optimized plan.
            .clone();
        let inputs = vec![None; model.inputs().len()];
        self.contexts.push(Context { model, inputs, outputs: TVec::new() });
        Ok(self.contexts.len() as i64 - 1)
    }

    fn context(&mut self, context: i32) -> Result<&mut Context> {
        self.contexts.get_mut(context as u32 as usize).ok_or_else(|| invalid(format!("no execution context {context}")))
    }

    /// `tensor` is the rank (u32), the dimensions (u32 each) and the values,
    /// all little-endian.
    fn set_input(&mut self, context: i32, index: i32, ty: i32, tensor: &[u8]) -> Result<i64> {
        let dt = match ty {
            0 => DatumType::F16,
            1 => DatumType::F32,
            2 => DatumType::F64,
            3 => DatumType::U8,
            4 => DatumType::I32,
            5 => DatumType::I64,
            other => return Err(invalid(format!("tensor type {other} is not one wasi-nn defines"))),
        };
        let word =
            |i: usize| tensor.get(i * 4..i * 4 + 4).map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize);
        let rank = word(0).ok_or_else(|| invalid("a tensor without its rank"))?;
        let shape = (1..=rank).map(word).collect::<Option<Vec<usize>>>().ok_or_else(|| invalid("a truncated shape"))?;
        let data = &tensor[(rank + 1) * 4..];
        let expected = shape.iter().try_fold(dt.size_of(), |n, &d| n.checked_mul(d));
        if expected != Some(data.len()) {
            return Err(invalid(format!(
                "a {dt:?} tensor of shape {shape:?} needs {} bytes, got {}",
                expected.map_or("too many".to_string(), |n| n.to_string()),
                data.len()
            )));
        }
        // SAFETY: `data` holds exactly the bytes of `shape` values of `dt`, checked above.
        let value = TValue::from(
            unsafe { TractTensor::from_raw_dt(dt, &shape, data) }.map_err(|e| invalid(format!("tensor: {e}")))?,
        );
        let context = self.context(context)?;
        let count = context.inputs.len();
        let slot = context
            .inputs
            .get_mut(index as u32 as usize)
            .ok_or_else(|| invalid(format!("input {index}: the model has {count} inputs")))?;
        *slot = Some(value);
        Ok(0)
    }

    fn compute(&mut self, context: i32) -> Result<i64> {
        let context = self.context(context)?;
        let inputs = context
            .inputs
            .iter()
            .enumerate()
            .map(|(i, v)| v.clone().ok_or_else(|| invalid(format!("input {i} was never set"))))
            .collect::<Result<TVec<TValue>>>()?;
        // A bad input (wrong type or shape) names the input and what the model expects.
        context.outputs = context.model.run(inputs).map_err(|e| {
            let errno = if e.kind == edgecascade_abi::ErrorKind::BadInput {
                Errno::InvalidArgument
            } else {
                Errno::RuntimeError
            };
            Failure(errno, e.message)
        })?;
        Ok(0)
    }

    /// Copies output `index` into the output buffer as little-endian bytes; returns its length.
    fn output(&mut self, context: i32, index: i32) -> Result<i64> {
        // The context field by itself, so that the output buffer can be borrowed beside it.
        let contexts = &self.contexts;
        let context =
            contexts.get(context as u32 as usize).ok_or_else(|| invalid(format!("no execution context {context}")))?;
        let count = context.outputs.len();
        let value = context
            .outputs
            .get(index as u32 as usize)
            .ok_or_else(|| invalid(format!("output {index}: there are {count} outputs (call compute first)")))?;
        // Into the buffer kept across calls: one copy, no allocation per answer.
        let bytes = value.as_bytes();
        self.output.clear();
        self.output.extend_from_slice(bytes);
        Ok(self.output.len() as i64)
    }
}

static mut RUNTIME: Runtime = Runtime::new();

fn runtime() -> &'static mut Runtime {
    // SAFETY: a wasm instance is single-threaded and the host makes one call at a time.
    unsafe { &mut *std::ptr::addr_of_mut!(RUNTIME) }
}

/// Takes ownership of a buffer made by `ecnn_alloc`.
fn take(ptr: i32, len: i32) -> Vec<u8> {
    let len = usize::try_from(len).unwrap_or(0);
    if ptr == 0 || len == 0 {
        return Vec::new();
    }
    // SAFETY: the host passes back exactly what `ecnn_alloc` returned, once.
    unsafe { Box::from_raw(std::ptr::slice_from_raw_parts_mut(ptr as usize as *mut u8, len)) }.into_vec()
}

#[unsafe(no_mangle)]
pub extern "C" fn _initialize() {
    edgecascade_guest::__rt::initialize();
}

#[unsafe(no_mangle)]
pub extern "C" fn ecnn_version() -> i32 {
    RUNTIME_VERSION as i32
}

#[unsafe(no_mangle)]
pub extern "C" fn ecnn_alloc(len: i32) -> i32 {
    edgecascade_guest::__rt::alloc(len)
}

#[unsafe(no_mangle)]
pub extern "C" fn ecnn_load(ptr: i32, len: i32) -> i64 {
    let mut bytes = take(ptr, len);
    let rt = runtime();
    let result = rt.load(&bytes);
    // Parsed; zero the bytes so that no stale copy of the model stays in memory pages.
    bytes.fill(0);
    rt.answer(result)
}

#[unsafe(no_mangle)]
pub extern "C" fn ecnn_init(graph: i32) -> i64 {
    let rt = runtime();
    let result = rt.init(graph);
    rt.answer(result)
}

#[unsafe(no_mangle)]
pub extern "C" fn ecnn_set_input(context: i32, index: i32, ty: i32, ptr: i32, len: i32) -> i64 {
    let tensor = take(ptr, len);
    let rt = runtime();
    let result = rt.set_input(context, index, ty, &tensor);
    rt.answer(result)
}

#[unsafe(no_mangle)]
pub extern "C" fn ecnn_compute(context: i32) -> i64 {
    let rt = runtime();
    let result = rt.compute(context);
    rt.answer(result)
}

#[unsafe(no_mangle)]
pub extern "C" fn ecnn_output(context: i32, index: i32) -> i64 {
    let rt = runtime();
    let result = rt.output(context, index);
    rt.answer(result)
}

/// Where the last `ecnn_output` put its bytes; valid until the next call.
#[unsafe(no_mangle)]
pub extern "C" fn ecnn_output_ptr() -> i32 {
    runtime().output.as_ptr() as usize as i32
}

/// The reason for the last failure, packed as the plugin ABI packs a frame
/// (pointer high, length low); valid until the next call.
#[unsafe(no_mangle)]
pub extern "C" fn ecnn_last_error() -> i64 {
    let message = &runtime().last_error;
    edgecascade_abi::pack(message.as_ptr() as usize as u32, message.len() as u32)
}

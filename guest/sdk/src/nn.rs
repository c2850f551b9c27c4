//! Inference in the host's shared runtime, through the standard wasi-nn interface.
//!
//! A plugin built with the `wasi-nn` feature (and without `onnx`) links no
//! tract: it imports `wasi_ephemeral_nn`, the witx form of
//! [wasi-nn](https://github.com/WebAssembly/wasi-nn) that wasmtime and
//! WasmEdge implement too, and the edgecascade host links it to an instance
//! of its runtime module, which parses and runs the ONNX model in a sandbox of
//! its own. The models the manifest lists are loaded there by the host, under
//! their manifest names:
//!
//! ```no_run
//! use edgecascade_guest::nn::{Graph, TensorType};
//!
//! let graph = Graph::load_by_name("model")?;
//! let mut context = graph.context()?;
//! let ids: [i64; 3] = [2023, 2003, 1037];
//! let bytes: Vec<u8> = ids.iter().flat_map(|id| id.to_le_bytes()).collect();
//! context.set_input(0, TensorType::I64, &[1, 3], &bytes)?;
//! context.compute()?;
//! let probs = context.output_f32(0)?;
//! # Ok::<(), edgecascade_guest::Error>(())
//! ```
//!
//! A failed call is an [`Error`] of kind `model` that names the call, wasi-nn's
//! error code, and what the runtime said (the op or node that failed).

use crate::Error;

/// The element type of a tensor, as wasi-nn numbers it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum TensorType {
    F16 = 0,
    F32 = 1,
    F64 = 2,
    U8 = 3,
    I32 = 4,
    I64 = 5,
}

/// How a graph's bytes are encoded, as wasi-nn numbers it. This host runs `Onnx`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum GraphEncoding {
    Openvino = 0,
    Onnx = 1,
    Tensorflow = 2,
    Pytorch = 3,
    Tensorflowlite = 4,
    Autodetect = 5,
}

use edgecascade_abi::nn_runtime::Errno;

const TOO_LARGE: u32 = Errno::TooLarge as u32;

/// The witx `tensor` record, as it lies in memory: two lists and an enum.
#[repr(C)]
struct RawTensor {
    dims_ptr: *const u32,
    dims_len: u32,
    ty: u8,
    data_ptr: *const u8,
    data_len: u32,
}

/// One `graph_builder` (a list of bytes) of `load`'s array.
#[repr(C)]
struct RawBuilder {
    ptr: *const u8,
    len: u32,
}

#[cfg(target_family = "wasm")]
mod raw {
    use super::{RawBuilder, RawTensor};

    #[link(wasm_import_module = "wasi_ephemeral_nn")]
    unsafe extern "C" {
        pub fn load(builders: *const RawBuilder, count: u32, encoding: u32, target: u32, graph: *mut u32) -> u32;
        pub fn load_by_name(name: *const u8, name_len: u32, graph: *mut u32) -> u32;
        pub fn init_execution_context(graph: u32, context: *mut u32) -> u32;
        pub fn set_input(context: u32, index: u32, tensor: *const RawTensor) -> u32;
        pub fn compute(context: u32) -> u32;
        pub fn get_output(context: u32, index: u32, out: *mut u8, max: u32, written: *mut u32) -> u32;
    }

    #[link(wasm_import_module = "edgecascade")]
    unsafe extern "C" {
        /// Copies the runtime's message about the last failed wasi-nn call
        /// (at most `len` bytes) and returns its whole length.
        pub fn nn_last_error(out: *mut u8, len: u32) -> u32;
    }
}

/// Outside wasm (the SDK's own unit tests) there is no runtime to call.
#[cfg(not(target_family = "wasm"))]
#[allow(clippy::missing_safety_doc)]
mod raw {
    use super::{RawBuilder, RawTensor};
    const UNSUPPORTED: u32 = 6;
    pub unsafe fn load(_: *const RawBuilder, _: u32, _: u32, _: u32, _: *mut u32) -> u32 {
        UNSUPPORTED
    }
    pub unsafe fn load_by_name(_: *const u8, _: u32, _: *mut u32) -> u32 {
        UNSUPPORTED
    }
    pub unsafe fn init_execution_context(_: u32, _: *mut u32) -> u32 {
        UNSUPPORTED
    }
    pub unsafe fn set_input(_: u32, _: u32, _: *const RawTensor) -> u32 {
        UNSUPPORTED
    }
    pub unsafe fn compute(_: u32) -> u32 {
        UNSUPPORTED
    }
    pub unsafe fn get_output(_: u32, _: u32, _: *mut u8, _: u32, _: *mut u32) -> u32 {
        UNSUPPORTED
    }
    pub unsafe fn nn_last_error(_: *mut u8, _: u32) -> u32 {
        0
    }
}

/// Turns a wasi-nn error code into an [`Error`] that names the call and the runtime's reason.
fn check(call: &str, errno: u32) -> Result<(), Error> {
    if errno == 0 {
        return Ok(());
    }
    let code = Errno::from_code(errno).map_or("unknown error", Errno::name);
    let mut detail = vec![0u8; 1024];
    // SAFETY: the host writes at most `detail.len()` bytes into `detail`.
    let len = unsafe { raw::nn_last_error(detail.as_mut_ptr(), detail.len() as u32) } as usize;
    detail.truncate(len.min(1024));
    let detail = String::from_utf8_lossy(&detail);
    Err(Error::model(if detail.is_empty() {
        format!("wasi-nn {call}: {code}")
    } else {
        format!("wasi-nn {call}: {code}: {detail}")
    }))
}

fn len_u32(len: usize, what: &str) -> Result<u32, Error> {
    u32::try_from(len).map_err(|_| Error::bad_input(format!("{what} of {len} is too large for wasi-nn")))
}

/// A model loaded in the host's runtime.
#[derive(Debug)]
pub struct Graph(u32);

impl Graph {
    /// The model the manifest lists under `name`, loaded by the host (its
    /// sha256 already checked). Loading the same name again in one instance
    /// returns the same graph.
    pub fn load_by_name(name: &str) -> Result<Graph, Error> {
        let mut graph = 0;
        // SAFETY: `name` is valid for its length, and `graph` for one u32.
        check("load_by_name", unsafe { raw::load_by_name(name.as_ptr(), len_u32(name.len(), "a name")?, &mut graph) })?;
        Ok(Graph(graph))
    }

    /// A model from bytes the plugin holds (wasi-nn's `load`): the portable
    /// form, for a plugin written for another wasi-nn host. The bytes are
    /// copied into the runtime, so prefer [`load_by_name`](Graph::load_by_name).
    pub fn load(parts: &[&[u8]], encoding: GraphEncoding) -> Result<Graph, Error> {
        let builders = parts
            .iter()
            .map(|p| Ok(RawBuilder { ptr: p.as_ptr(), len: len_u32(p.len(), "a model")? }))
            .collect::<Result<Vec<_>, Error>>()?;
        let mut graph = 0;
        // SAFETY: every builder points at a live slice of its length; `graph` holds one u32.
        let errno = unsafe {
            raw::load(builders.as_ptr(), builders.len() as u32, encoding as u32, 0 /* cpu */, &mut graph)
        };
        check("load", errno)?;
        Ok(Graph(graph))
    }

    /// A new execution context: the model's run state, inputs and outputs.
    pub fn context(&self) -> Result<Context, Error> {
        let mut context = 0;
        // SAFETY: `context` holds one u32.
        check("init_execution_context", unsafe { raw::init_execution_context(self.0, &mut context) })?;
        Ok(Context(context))
    }
}

/// One execution context of a [`Graph`].
#[derive(Debug)]
pub struct Context(u32);

impl Context {
    /// Sets input `index` to a tensor of type `ty` and shape `dims`, with its
    /// values as little-endian bytes in row-major order.
    pub fn set_input(&mut self, index: u32, ty: TensorType, dims: &[u32], data: &[u8]) -> Result<(), Error> {
        let tensor = RawTensor {
            dims_ptr: dims.as_ptr(),
            dims_len: len_u32(dims.len(), "a rank")?,
            ty: ty as u8,
            data_ptr: data.as_ptr(),
            data_len: len_u32(data.len(), "a tensor")?,
        };
        // SAFETY: the record and the slices it points to live across the call.
        check("set_input", unsafe { raw::set_input(self.0, index, &tensor) })
    }

    /// Runs the model on the inputs set.
    pub fn compute(&mut self) -> Result<(), Error> {
        // SAFETY: no pointers.
        check("compute", unsafe { raw::compute(self.0) })
    }

    /// Copies output `index`'s bytes into `out`; returns how many were written.
    /// An output larger than `out` fails with `too_large`.
    pub fn output(&mut self, index: u32, out: &mut [u8]) -> Result<usize, Error> {
        let mut written = 0;
        let max = len_u32(out.len(), "a buffer")?;
        // SAFETY: `out` is valid for `max` bytes, `written` for one u32.
        check("get_output", unsafe { raw::get_output(self.0, index, out.as_mut_ptr(), max, &mut written) })?;
        Ok(written as usize)
    }

    /// Output `index` as `f32` values (the runtime writes little-endian bytes).
    pub fn output_f32(&mut self, index: u32) -> Result<Vec<f32>, Error> {
        let mut buffer = vec![0u8; 4096];
        loop {
            let mut written = 0;
            let max = len_u32(buffer.len(), "a buffer")?;
            // SAFETY: as in `output`.
            let errno = unsafe { raw::get_output(self.0, index, buffer.as_mut_ptr(), max, &mut written) };
            // The runtime says how large the output is when it does not fit.
            if errno == TOO_LARGE && written as usize > buffer.len() {
                buffer.resize(written as usize, 0);
                continue;
            }
            check("get_output", errno)?;
            let bytes = &buffer[..written as usize];
            return Ok(bytes.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect());
        }
    }
}

//! A model a plugin runs, wherever it runs: in the guest with tract (feature
//! `onnx`), or in the host's shared runtime through wasi-nn (feature `wasi-nn`).
//!
//! The same plugin source builds either way; [`Model::load`] takes the path
//! the host offers. A model the host keeps in its runtime (the plugin imports
//! wasi-nn) is reached by name; a model handed over as bytes runs in the guest
//! when the plugin links tract, and is copied into the runtime otherwise.

use crate::{Error, LoadContext};

/// One input tensor: its shape and its values, row-major.
#[derive(Debug, Clone, Copy)]
pub enum Tensor<'a> {
    /// `int64` values (token ids, masks).
    I64 { shape: &'a [usize], values: &'a [i64] },
    /// `float32` values.
    F32 { shape: &'a [usize], values: &'a [f32] },
}

/// A loaded model, ready to run.
pub struct Model {
    backend: Backend,
}

enum Backend {
    #[cfg(feature = "onnx")]
    Guest(crate::onnx::OnnxModel),
    #[cfg(feature = "wasi-nn")]
    Runtime(crate::nn::Context),
}

impl Model {
    /// Loads the model the manifest lists as `name`.
    pub fn load(ctx: &LoadContext<'_>, name: &str) -> Result<Model, Error> {
        #[cfg(feature = "wasi-nn")]
        if ctx.model_in_runtime(name) {
            let context = crate::nn::Graph::load_by_name(name)?.context()?;
            return Ok(Model { backend: Backend::Runtime(context) });
        }
        let bytes = ctx.model(name)?;
        #[cfg(feature = "onnx")]
        return Ok(Model { backend: Backend::Guest(crate::onnx::OnnxModel::load(bytes)?) });
        #[cfg(not(feature = "onnx"))]
        {
            let graph = crate::nn::Graph::load(&[bytes], crate::nn::GraphEncoding::Onnx)?;
            Ok(Model { backend: Backend::Runtime(graph.context()?) })
        }
    }

    /// Runs the model on `inputs`, in the model's input order, and returns
    /// its first output as `f32` values.
    pub fn run_f32(&mut self, inputs: &[Tensor<'_>]) -> Result<Vec<f32>, Error> {
        match &mut self.backend {
            #[cfg(feature = "onnx")]
            Backend::Guest(model) => {
                use crate::onnx::{TValue, TVec, f32_tensor};
                let values = inputs
                    .iter()
                    .map(|t| match t {
                        Tensor::I64 { shape, values } => crate::onnx::TractTensor::from_shape(shape, values)
                            .map(TValue::from)
                            .map_err(|e| Error::bad_input(format!("an int64 tensor of shape {shape:?}: {e}"))),
                        Tensor::F32 { shape, values } => f32_tensor(shape, values),
                    })
                    .collect::<Result<TVec<TValue>, Error>>()?;
                model.run_f32(values)
            }
            #[cfg(feature = "wasi-nn")]
            Backend::Runtime(context) => {
                use crate::nn::TensorType;
                for (index, tensor) in inputs.iter().enumerate() {
                    let (ty, shape, bytes): (_, &[usize], Vec<u8>) = match tensor {
                        Tensor::I64 { shape, values } => {
                            (TensorType::I64, shape, values.iter().flat_map(|v| v.to_le_bytes()).collect())
                        }
                        Tensor::F32 { shape, values } => {
                            (TensorType::F32, shape, values.iter().flat_map(|v| v.to_le_bytes()).collect())
                        }
                    };
                    let dims = shape
                        .iter()
                        .map(|&d| u32::try_from(d).map_err(|_| Error::bad_input(format!("dimension {d} is too large"))))
                        .collect::<Result<Vec<u32>, Error>>()?;
                    context.set_input(index as u32, ty, &dims, &bytes)?;
                }
                context.compute()?;
                context.output_f32(0)
            }
        }
    }
}

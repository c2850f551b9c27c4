//! ONNX models run with tract inside the guest.

use crate::Error;
use std::sync::Arc;
use tract_onnx::prelude::*;
pub use tract_onnx::prelude::{TValue, TVec, Tensor as TractTensor, TractError, tvec};

/// A loaded, optimized ONNX model with a reusable run state.
///
/// Loading parses and optimizes the graph once; [`run`](OnnxModel::run) then
/// reuses the same execution state, so steady-state calls do not re-plan.
pub struct OnnxModel {
    state: TypedSimpleState,
    inputs: Vec<String>,
    outputs: Vec<String>,
}

impl OnnxModel {
    /// Parses and optimizes a model. Errors name the failing node and op,
    /// for example an operator tract does not implement.
    pub fn load(bytes: &[u8]) -> Result<OnnxModel, Error> {
        let model = tract_onnx::onnx().model_for_read(&mut &bytes[..]).map_err(model_error)?;
        let unsupported = unsupported_ops(&model);
        if !unsupported.is_empty() {
            return Err(Error::model(format!("unsupported ONNX ops: {}", unsupported.join(", "))));
        }
        let model = model.into_optimized().map_err(model_error)?;
        let inputs = names(&model, model.input_outlets().map_err(model_error)?);
        let outputs = names(&model, model.output_outlets().map_err(model_error)?);
        let plan: Arc<TypedRunnableModel> = model.into_runnable().map_err(model_error)?;
        let state = plan.spawn().map_err(model_error)?;
        Ok(OnnxModel { state, inputs, outputs })
    }

    /// The model's input names, in order.
    pub fn inputs(&self) -> &[String] {
        &self.inputs
    }

    /// The model's output names, in order.
    pub fn outputs(&self) -> &[String] {
        &self.outputs
    }

    /// Runs the model on `inputs`, in the order of [`inputs`](OnnxModel::inputs).
    pub fn run(&mut self, inputs: TVec<TValue>) -> Result<TVec<TValue>, Error> {
        self.state.run(inputs).map_err(model_error)
    }

    /// Runs the model and returns its first output as `f32` values.
    pub fn run_f32(&mut self, inputs: TVec<TValue>) -> Result<Vec<f32>, Error> {
        let outputs = self.run(inputs)?;
        let first = outputs.first().ok_or_else(|| Error::model("the model has no outputs"))?;
        let view = first.to_plain_array_view::<f32>().map_err(model_error)?;
        Ok(view.iter().copied().collect())
    }
}

/// `"QLinearAdd (node add_1)"` for every node tract has no implementation of.
pub fn unsupported_ops(model: &InferenceModel) -> Vec<String> {
    use tract_onnx::tract_core::ops::unimpl::UnimplementedOp;
    model
        .nodes()
        .iter()
        .filter(|n| n.op_is::<UnimplementedOp>())
        .map(|n| {
            let name = n.op().name();
            let op = name.trim_start_matches("Unimplemented(").trim_end_matches(')');
            format!("{op} (node {:?})", n.name)
        })
        .collect()
}

fn names(model: &TypedModel, outlets: &[OutletId]) -> Vec<String> {
    outlets.iter().map(|o| model.node(o.node).name.clone()).collect()
}

/// tract's error chain names the node and op that failed ("Unimplemented(QLinearAdd)").
fn model_error(e: TractError) -> Error {
    Error::model(format!("{e:#}"))
}

/// A `[1, n]` int64 tensor, the usual shape of token ids.
pub fn ids_tensor(ids: &[i64]) -> Result<TValue, Error> {
    let tensor = TractTensor::from_shape(&[1, ids.len()], ids).map_err(model_error)?;
    Ok(tensor.into_tvalue())
}

/// A tensor of `f32` values with the given shape.
pub fn f32_tensor(shape: &[usize], values: &[f32]) -> Result<TValue, Error> {
    let tensor = TractTensor::from_shape(shape, values).map_err(model_error)?;
    Ok(tensor.into_tvalue())
}

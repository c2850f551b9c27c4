//! ONNX models run with tract inside the guest.

use crate::Error;
use std::sync::Arc;
use tract_onnx::prelude::*;
pub use tract_onnx::prelude::{DatumType, TValue, TVec, Tensor as TractTensor, TractError, f16, tvec};

/// A loaded, optimized ONNX model with a reusable run state.
///
/// Loading parses and optimizes the graph once; [`run`](OnnxModel::run) then
/// reuses the same execution state, so steady-state calls do not re-plan.
#[derive(Clone)]
pub struct OnnxModel {
    state: TypedSimpleState,
    inputs: Vec<String>,
    outputs: Vec<String>,
    /// What each input must be, from the optimized graph: checked on every run.
    input_facts: Vec<TypedFact>,
}

impl OnnxModel {
    /// Parses and optimizes a model. onnxruntime's QOperator contrib ops are
    /// rewritten into standard ONNX first ([`contrib`](crate::contrib)).
    /// Errors name the failing node and op, for example an operator tract
    /// does not implement.
    pub fn load(bytes: &[u8]) -> Result<OnnxModel, Error> {
        let onnx = tract_onnx::onnx();
        let mut proto = onnx.proto_model_for_read(&mut &bytes[..]).map_err(model_error)?;
        crate::contrib::expand(&mut proto).map_err(Error::model)?;
        let model = onnx.model_for_proto_model(&proto).map_err(model_error)?;
        let unsupported = unsupported_ops(&model);
        if !unsupported.is_empty() {
            return Err(Error::model(format!("unsupported ONNX ops: {}", unsupported.join(", "))));
        }
        // The ONNX graph's own names: optimizing renames nodes (`y` becomes `y.low`).
        let inputs = names(&model, model.input_outlets().map_err(model_error)?);
        let outputs = names(&model, model.output_outlets().map_err(model_error)?);
        let model = model.into_optimized().map_err(model_error)?;
        let input_facts = (0..inputs.len())
            .map(|i| model.input_fact(i).cloned())
            .collect::<TractResult<Vec<_>>>()
            .map_err(model_error)?;
        let plan: Arc<TypedRunnableModel> = model.into_runnable().map_err(model_error)?;
        let state = plan.spawn().map_err(model_error)?;
        Ok(OnnxModel { state, inputs, outputs, input_facts })
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
    /// An input of the wrong count, type or shape is a `bad_input` error that
    /// names it, what the model expects and what it got.
    pub fn run(&mut self, inputs: TVec<TValue>) -> Result<TVec<TValue>, Error> {
        self.check(&inputs)?;
        self.state.run(inputs).map_err(model_error)
    }

    fn check(&self, inputs: &[TValue]) -> Result<(), Error> {
        if inputs.len() != self.inputs.len() {
            return Err(Error::bad_input(format!(
                "the model takes {} inputs ({:?}), got {}",
                self.inputs.len(),
                self.inputs,
                inputs.len()
            )));
        }
        for ((name, fact), value) in self.inputs.iter().zip(&self.input_facts).zip(inputs) {
            let dims = fact.shape.dims();
            // A symbolic dimension (a batch or sequence length) takes any size.
            let shape_fits = dims.len() == value.rank()
                && dims.iter().zip(value.shape()).all(|(want, &got)| want.to_i64().map_or(true, |w| w == got as i64));
            let type_fits = fact.datum_type.unquantized() == value.datum_type().unquantized();
            if !(shape_fits && type_fits) {
                let expected = dims.iter().map(|d| d.to_string()).collect::<Vec<_>>().join(", ");
                return Err(Error::bad_input(format!(
                    "input {name:?} expects {:?} of shape [{expected}], got {:?} of shape {:?}",
                    fact.datum_type.unquantized(),
                    value.datum_type(),
                    value.shape()
                )));
            }
        }
        Ok(())
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

/// An outlet's ONNX tensor name (tract keeps it as the label), else its node's name.
fn names(model: &InferenceModel, outlets: &[OutletId]) -> Vec<String> {
    outlets.iter().map(|&o| model.outlet_label(o).unwrap_or(&model.node(o.node).name).to_string()).collect()
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

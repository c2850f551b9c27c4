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
        let mut model = model.into_optimized().map_err(model_error)?;
        sum_leading_axes(&mut model).map_err(model_error)?;
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

/// Rewrites each f32 `Reduce<Sum>` whose reduced axes follow only unit axes
/// (`[1, n, k]` summed over `n`, a pooling over tokens) into the same sum over
/// leading axes, between `AxisOp`s that drop and restore the unit axes.
///
/// Why: tract 0.23.9 sums over leading axes with a column-sum kernel, but over
/// any other axis with ndarray's `sum_axis`, which allocates per row: 59 µs
/// against 3.4 µs for news-small's `[1, 512, 5]` natively. The kernel adds
/// rows in blocks, so long inputs can differ in the last bits (under 1e-6 on
/// the example models; the golden tolerances are 1e-5 and up). Runs after
/// `into_optimized`, so no later pass undoes it.
fn sum_leading_axes(model: &mut TypedModel) -> TractResult<()> {
    use tract_onnx::tract_core::ops::change_axes::AxisOp;
    use tract_onnx::tract_core::ops::nn::{Reduce, Reducer};
    for id in model.eval_order()? {
        let node = model.node(id);
        let Some(reduce) = node.op_as::<Reduce>() else { continue };
        let fact = model.outlet_fact(node.inputs[0])?;
        let mut axes = reduce.axes.clone();
        axes.sort_unstable();
        let Some(&first) = axes.first() else { continue };
        let contiguous = axes.iter().enumerate().all(|(i, &axis)| axis == first + i);
        let units_before = fact.shape.iter().take(first).all(|d| d.is_one());
        if reduce.reducer != Reducer::Sum
            || fact.datum_type != f32::datum_type()
            || first == 0
            || !contiguous
            || !units_before
        {
            continue;
        }
        let mut patch = TypedModelPatch::default();
        let mut wire = patch.tap_model(model, node.inputs[0])?;
        for i in 0..first {
            wire = patch.wire_node(format!("{}.drop-unit-{i}", node.name), AxisOp::Rm(0), &[wire])?[0];
        }
        let leading = Reduce::new(axes.iter().map(|axis| axis - first).collect(), Reducer::Sum);
        wire = patch.wire_node(format!("{}.leading", node.name), leading, &[wire])?[0];
        for i in 0..first {
            wire = patch.wire_node(format!("{}.restore-unit-{i}", node.name), AxisOp::Add(0), &[wire])?[0];
        }
        patch.shunt_outside(model, id.into(), wire)?;
        patch.apply(model)?;
    }
    model.compact()
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

#[cfg(test)]
mod tests {
    use super::*;
    use tract_onnx::tract_core::ops::nn::Reduce;

    fn model_bytes(name: &str) -> Vec<u8> {
        let path = format!("{}/../../models/onnx/{name}.onnx", env!("CARGO_MANIFEST_DIR"));
        std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    /// The reduced axes of every `Reduce` in the plan that the model runs.
    fn reduce_axes(model: &OnnxModel) -> Vec<Vec<usize>> {
        let plan = model.state.plan();
        plan.order_without_consts()
            .iter()
            .filter_map(|&id| plan.model().node(id).op_as::<Reduce>())
            .map(|r| r.axes.to_vec())
            .collect()
    }

    #[test]
    fn sums_over_tokens_become_sums_over_leading_axes_with_the_same_answers() {
        for name in ["news-small", "sentiment-small"] {
            let bytes = model_bytes(name);
            let mut tuned = OnnxModel::load(&bytes).unwrap();
            assert!(!reduce_axes(&tuned).is_empty(), "{name}: pools over tokens");
            assert!(
                reduce_axes(&tuned).iter().all(|axes| axes.first() == Some(&0)),
                "{name}: {:?}",
                reduce_axes(&tuned)
            );
            // tract's own optimized graph, without the rewrite.
            let stock = tract_onnx::onnx().model_for_read(&mut &bytes[..]).unwrap().into_optimized().unwrap();
            let stock = stock.into_runnable().unwrap();
            for n in [1usize, 7, 128, 512] {
                let ids: Vec<i64> = (0..n as i64).map(|i| (i * 7919) % 29_000 + 1000).collect();
                let want = stock.run(tvec![ids_tensor(&ids).unwrap()]).unwrap();
                let want = want[0].to_plain_array_view::<f32>().unwrap().iter().copied().collect::<Vec<_>>();
                let got = tuned.run_f32(tvec![ids_tensor(&ids).unwrap()]).unwrap();
                assert_eq!(got.len(), want.len(), "{name}, {n} ids");
                let worst = got.iter().zip(&want).map(|(g, w)| (g - w).abs()).fold(0.0f32, f32::max);
                assert!(worst < 1e-6, "{name}, {n} ids: {got:?} against stock {want:?}");
            }
        }
    }
}

//! tensor: runs any ONNX model on tensors, so an author can try a model in the
//! sandbox without writing a plugin (`edgecascade run --model m.onnx --tensor x.npy`).
//!
//! Input: `application/json` as `{"inputs": [{"shape": [..], "dtype": "f32", "data": [..]}]}`
//! (dtype f32, i64 or i32), or `application/x-npy` holding one little-endian
//! C-order tensor. Output: every model output as a tensor; confidence 1.

use edgecascade_guest::onnx::{OnnxModel, TValue, TVec, TractTensor};
use edgecascade_guest::{Answer, Error, Input, LoadContext, Plugin, Tensor, TensorData, content_type, export_plugin};

struct TensorPlugin {
    model: OnnxModel,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct JsonInputs {
    inputs: Vec<Tensor>,
}

fn to_tract(t: Tensor) -> Result<TValue, Error> {
    let bad = |e: edgecascade_guest::onnx::TractError| {
        Error::bad_input(format!("tensor {:?} with shape {:?}: {e}", t.name, t.shape))
    };
    let tensor = match &t.data {
        TensorData::F32(v) => TractTensor::from_shape(&t.shape, v),
        TensorData::I64(v) => TractTensor::from_shape(&t.shape, v),
        TensorData::I32(v) => TractTensor::from_shape(&t.shape, v),
    }
    .map_err(bad)?;
    Ok(tensor.into())
}

fn from_tract(name: &str, value: &TValue) -> Result<Tensor, Error> {
    let shape = value.shape().to_vec();
    let unsupported = || Error::model(format!("output {name:?} has unsupported type {:?}", value.datum_type()));
    let data = if let Ok(v) = value.to_plain_array_view::<f32>() {
        TensorData::F32(v.iter().copied().collect())
    } else if let Ok(v) = value.to_plain_array_view::<i64>() {
        TensorData::I64(v.iter().copied().collect())
    } else if let Ok(v) = value.to_plain_array_view::<i32>() {
        TensorData::I32(v.iter().copied().collect())
    } else {
        let cast = value.cast_to::<f32>().map_err(|_| unsupported())?;
        let view = cast.to_plain_array_view::<f32>().map_err(|_| unsupported())?;
        TensorData::F32(view.iter().copied().collect())
    };
    Ok(Tensor { name: name.to_string(), shape, data })
}

impl Plugin for TensorPlugin {
    fn load(ctx: &LoadContext<'_>) -> Result<Self, Error> {
        Ok(TensorPlugin { model: OnnxModel::load(ctx.model("model")?)? })
    }

    fn infer(&mut self, input: &Input<'_>) -> Result<Answer, Error> {
        let tensors = match input.content_type() {
            content_type::NPY => vec![edgecascade_guest::npy::parse(input.bytes())?],
            _ => input.json::<JsonInputs>()?.inputs,
        };
        if tensors.len() != self.model.inputs().len() {
            return Err(Error::bad_input(format!(
                "the model takes {} inputs ({:?}), got {}",
                self.model.inputs().len(),
                self.model.inputs(),
                tensors.len()
            )));
        }
        let inputs: TVec<TValue> = tensors.into_iter().map(to_tract).collect::<Result<_, _>>()?;
        let outputs = self.model.run(inputs)?;
        let names = self.model.outputs().to_vec();
        let tensors =
            outputs.iter().zip(&names).map(|(value, name)| from_tract(name, value)).collect::<Result<Vec<_>, _>>()?;
        Ok(Answer { confidence: 1.0, tensors, ..Answer::default() })
    }
}

export_plugin!(TensorPlugin);

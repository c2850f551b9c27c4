//! tensor: runs any ONNX model on tensors, so an author can try a model in the
//! sandbox without writing a plugin (`edgecascade run --model m.onnx --tensor x.npy`).
//!
//! Input: `application/json` as `{"inputs": [{"name", "shape", "dtype", "data" | "bytes"}]}`
//! (any dtype of the ABI; named inputs are matched to the model's by name,
//! unnamed ones by position), or `application/x-npy` holding one tensor.
//! Output: every model output as a tensor under the model's own output name,
//! its values bit-exact (NaN and infinities included); confidence 1.

use edgecascade_guest::onnx::{DatumType, OnnxModel, TValue, TVec, TractTensor, f16};
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
        TensorData::F64(v) => TractTensor::from_shape(&t.shape, v),
        TensorData::F16(v) => TractTensor::from_shape(&t.shape, v),
        TensorData::I64(v) => TractTensor::from_shape(&t.shape, v),
        TensorData::I32(v) => TractTensor::from_shape(&t.shape, v),
        TensorData::I16(v) => TractTensor::from_shape(&t.shape, v),
        TensorData::I8(v) => TractTensor::from_shape(&t.shape, v),
        TensorData::U64(v) => TractTensor::from_shape(&t.shape, v),
        TensorData::U32(v) => TractTensor::from_shape(&t.shape, v),
        TensorData::U16(v) => TractTensor::from_shape(&t.shape, v),
        TensorData::U8(v) => TractTensor::from_shape(&t.shape, v),
        TensorData::Bool(v) => TractTensor::from_shape(&t.shape, v),
        other => {
            return Err(Error::bad_input(format!("tensor {:?}: dtype {} is not supported", t.name, other.dtype())));
        }
    }
    .map_err(bad)?;
    Ok(tensor.into())
}

fn from_tract(name: &str, value: &TValue) -> Result<Tensor, Error> {
    let shape = value.shape().to_vec();
    let unsupported = || Error::model(format!("output {name:?} has unsupported type {:?}", value.datum_type()));
    macro_rules! values {
        ($variant:ident, $t:ty) => {
            TensorData::$variant(
                value.to_plain_array_view::<$t>().map_err(|_| unsupported())?.iter().copied().collect(),
            )
        };
    }
    // Quantized outputs are returned as their stored integers (scale and zero point are the model's).
    let data = match value.datum_type().unquantized() {
        DatumType::F32 => values!(F32, f32),
        DatumType::F64 => values!(F64, f64),
        DatumType::F16 => values!(F16, f16),
        DatumType::I64 => values!(I64, i64),
        DatumType::I32 => values!(I32, i32),
        DatumType::I16 => values!(I16, i16),
        DatumType::U64 => values!(U64, u64),
        DatumType::U32 => values!(U32, u32),
        DatumType::U16 => values!(U16, u16),
        DatumType::Bool => values!(Bool, bool),
        DatumType::I8 => values!(I8, i8),
        DatumType::U8 => values!(U8, u8),
        _ => return Err(unsupported()),
    };
    Ok(Tensor { name: name.to_string(), shape, data })
}

impl TensorPlugin {
    /// The inputs in the model's order: by name when every one is named, else by position.
    fn ordered(&self, mut tensors: Vec<Tensor>) -> Result<Vec<Tensor>, Error> {
        let wanted = self.model.inputs();
        if tensors.iter().any(|t| t.name.is_empty()) || tensors.len() != wanted.len() {
            return Ok(tensors);
        }
        wanted
            .iter()
            .map(|name| {
                let at = tensors.iter().position(|t| &t.name == name).ok_or_else(|| {
                    let given: Vec<&str> = tensors.iter().map(|t| t.name.as_str()).collect();
                    Error::bad_input(format!(
                        "the model's input {name:?} was not given (inputs given: {given:?}; the model takes {wanted:?})"
                    ))
                })?;
                Ok(tensors.swap_remove(at))
            })
            .collect()
    }
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
        let inputs: TVec<TValue> = self.ordered(tensors)?.into_iter().map(to_tract).collect::<Result<_, _>>()?;
        let outputs = self.model.run(inputs)?;
        let names = self.model.outputs().to_vec();
        let tensors =
            outputs.iter().zip(&names).map(|(value, name)| from_tract(name, value)).collect::<Result<Vec<_>, _>>()?;
        Ok(Answer { confidence: 1.0, tensors, ..Answer::default() })
    }
}

export_plugin!(TensorPlugin);

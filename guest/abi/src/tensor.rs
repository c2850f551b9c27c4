//! Tensors on the wire, in two encodings of one type.
//!
//! In JSON a tensor is `{"name", "shape", "dtype", "data"}` with `data` a
//! row-major array of numbers (or booleans), or `{"name", "shape", "dtype",
//! "bytes"}` with `bytes` the row-major little-endian values in standard
//! base64. `bytes` is bit-exact for every dtype, so a writer uses it whenever
//! `data` cannot say a value: a NaN or an infinity (JSON has no such numbers)
//! and every `f16`. A reader takes either. The same tensor is also a NumPy
//! `.npy` file ([`Tensor::from_npy`], [`Tensor::to_npy`]), the layout of
//! `application/x-npy` inputs.
//!
//! ```
//! use edgecascade_abi::{Tensor, TensorData};
//!
//! let t = Tensor { name: "y".into(), shape: vec![2], data: TensorData::F32(vec![1.5, f32::NAN]) };
//! let json = serde_json::to_string(&t).unwrap();
//! assert_eq!(json, r#"{"name":"y","shape":[2],"dtype":"f32","bytes":"AADAPwAAwH8="}"#);
//! let back: Tensor = serde_json::from_str(&json).unwrap();
//! assert_eq!(back.data.to_le_bytes(), t.data.to_le_bytes()); // the NaN's bits too
//! assert_eq!(Tensor::from_npy(&t.to_npy()).unwrap().data.to_le_bytes(), t.data.to_le_bytes());
//! ```

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use half::f16;
use serde::de::{self, MapAccess, Visitor};
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;

/// A dense tensor in row-major (C) order.
#[derive(Debug, Clone, PartialEq)]
pub struct Tensor {
    /// The model's name for it; empty when the sender gave none.
    pub name: String,
    /// Its dimensions; empty for a scalar.
    pub shape: Vec<usize>,
    /// Its element type and values.
    pub data: TensorData,
}

/// One element type: its Rust type, its `dtype` name, and its `.npy` `descr`.
trait Element: Copy {
    const SIZE: usize;
    fn write_le(self, out: &mut Vec<u8>);
    /// `None` when the bytes are not a value of the type (a bool other than 0 or 1).
    fn read_le(bytes: &[u8]) -> Option<Self>;
}

macro_rules! numeric_elements {
    ($($t:ty),*) => {$(
        impl Element for $t {
            const SIZE: usize = std::mem::size_of::<$t>();
            fn write_le(self, out: &mut Vec<u8>) {
                out.extend_from_slice(&self.to_le_bytes());
            }
            fn read_le(bytes: &[u8]) -> Option<Self> {
                Some(<$t>::from_le_bytes(bytes.try_into().ok()?))
            }
        }
    )*};
}
numeric_elements!(f16, f32, f64, i8, i16, i32, i64, u8, u16, u32, u64);

impl Element for bool {
    const SIZE: usize = 1;
    fn write_le(self, out: &mut Vec<u8>) {
        out.push(u8::from(self));
    }
    fn read_le(bytes: &[u8]) -> Option<Self> {
        match bytes {
            [0] => Some(false),
            [1] => Some(true),
            _ => None,
        }
    }
}

macro_rules! tensor_data {
    ($($variant:ident($t:ty) = $dtype:literal, $descr:literal;)*) => {
        /// The values of a [`Tensor`], tagged by element type: every type
        /// tract runs except strings and complex numbers. New types may be
        /// added without a new ABI version, so match with a `_` arm.
        #[derive(Debug, Clone, PartialEq)]
        #[non_exhaustive]
        pub enum TensorData {
            $(
                #[doc = concat!("`", $dtype, "` (`.npy` `", $descr, "`).")]
                $variant(Vec<$t>),
            )*
        }

        impl TensorData {
            /// Every `dtype` name, in the order of the enum.
            pub const DTYPES: &'static [&'static str] = &[$($dtype),*];

            /// The `dtype` name: `f32`, `u8`, `bool`, ...
            pub fn dtype(&self) -> &'static str {
                match self { $(TensorData::$variant(_) => $dtype,)* }
            }

            /// The `.npy` `descr` of the element type: `<f4`, `|u1`, `|b1`, ...
            pub fn npy_descr(&self) -> &'static str {
                match self { $(TensorData::$variant(_) => $descr,)* }
            }

            /// The number of elements.
            pub fn len(&self) -> usize {
                match self { $(TensorData::$variant(v) => v.len(),)* }
            }

            /// The values, row-major, little-endian: the payload of `bytes` and of `.npy`.
            pub fn to_le_bytes(&self) -> Vec<u8> {
                match self {
                    $(TensorData::$variant(v) => {
                        let mut out = Vec::with_capacity(v.len() * <$t as Element>::SIZE);
                        v.iter().for_each(|x| x.write_le(&mut out));
                        out
                    })*
                }
            }

            /// Reads `bytes` as little-endian values of `dtype`. Fails on an
            /// unknown dtype, a length that is not a whole number of values,
            /// or a bool byte other than 0 or 1.
            pub fn from_le_bytes(dtype: &str, bytes: &[u8]) -> Result<TensorData, String> {
                match dtype {
                    $($dtype => read_all::<$t>(bytes).map(TensorData::$variant),)*
                    other => Err(unknown_dtype(other)),
                }
            }

            /// The bytes of one value of `dtype`, `None` for an unknown dtype.
            fn element_size(dtype: &str) -> Option<usize> {
                match dtype {
                    $($dtype => Some(<$t as Element>::SIZE),)*
                    _ => None,
                }
            }

            fn descr_dtype(descr: &str) -> Option<&'static str> {
                match descr {
                    $($descr => Some($dtype),)*
                    _ => None,
                }
            }
        }
    };
}

tensor_data! {
    F32(f32) = "f32", "<f4";
    F64(f64) = "f64", "<f8";
    F16(f16) = "f16", "<f2";
    I64(i64) = "i64", "<i8";
    I32(i32) = "i32", "<i4";
    I16(i16) = "i16", "<i2";
    I8(i8) = "i8", "|i1";
    U64(u64) = "u64", "<u8";
    U32(u32) = "u32", "<u4";
    U16(u16) = "u16", "<u2";
    U8(u8) = "u8", "|u1";
    Bool(bool) = "bool", "|b1";
}

impl TensorData {
    /// Whether there are no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether JSON numbers can say every value: false for `f16`, and for
    /// floats holding a NaN or an infinity.
    fn fits_json_numbers(&self) -> bool {
        match self {
            TensorData::F16(_) => false,
            TensorData::F32(v) => v.iter().all(|x| x.is_finite()),
            TensorData::F64(v) => v.iter().all(|x| x.is_finite()),
            _ => true,
        }
    }
}

fn unknown_dtype(dtype: &str) -> String {
    format!("unknown dtype {dtype:?} (known: {})", TensorData::DTYPES.join(", "))
}

fn read_all<T: Element>(bytes: &[u8]) -> Result<Vec<T>, String> {
    if !bytes.len().is_multiple_of(T::SIZE) {
        return Err(format!("{} bytes is not a whole number of {}-byte values", bytes.len(), T::SIZE));
    }
    bytes.chunks_exact(T::SIZE).map(|c| T::read_le(c).ok_or_else(|| format!("byte {c:?} is not a bool"))).collect()
}

impl Tensor {
    /// The number of values `shape` calls for; `None` if it overflows.
    pub fn shape_len(&self) -> Option<usize> {
        self.shape.iter().try_fold(1usize, |n, &d| n.checked_mul(d))
    }

    /// Checks that the values fill the shape exactly.
    pub fn check(&self) -> Result<(), String> {
        match self.shape_len() {
            Some(n) if n == self.data.len() => Ok(()),
            Some(n) => Err(format!(
                "tensor {:?}: shape {:?} holds {n} values, but {} were given",
                self.name,
                self.shape,
                self.data.len()
            )),
            None => Err(format!("tensor {:?}: shape {:?} overflows", self.name, self.shape)),
        }
    }
}

impl Serialize for Tensor {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(None)?;
        if !self.name.is_empty() {
            map.serialize_entry("name", &self.name)?;
        }
        map.serialize_entry("shape", &self.shape)?;
        map.serialize_entry("dtype", self.data.dtype())?;
        if !self.data.fits_json_numbers() {
            map.serialize_entry("bytes", &BASE64.encode(self.data.to_le_bytes()))?;
        } else {
            match &self.data {
                TensorData::F32(v) => map.serialize_entry("data", v)?,
                TensorData::F64(v) => map.serialize_entry("data", v)?,
                TensorData::I64(v) => map.serialize_entry("data", v)?,
                TensorData::I32(v) => map.serialize_entry("data", v)?,
                TensorData::I16(v) => map.serialize_entry("data", v)?,
                TensorData::I8(v) => map.serialize_entry("data", v)?,
                TensorData::U64(v) => map.serialize_entry("data", v)?,
                TensorData::U32(v) => map.serialize_entry("data", v)?,
                TensorData::U16(v) => map.serialize_entry("data", v)?,
                TensorData::U8(v) => map.serialize_entry("data", v)?,
                TensorData::Bool(v) => map.serialize_entry("data", v)?,
                TensorData::F16(_) => unreachable!("f16 is always written as bytes"),
            }
        }
        map.end()
    }
}

/// `data` typed as soon as the dtype is known; buffered when it comes first.
enum Values {
    Typed(TensorData),
    Pending(serde_json::Value),
}

fn typed_data<'de, D: Deserializer<'de>>(dtype: &str, d: D) -> Result<TensorData, D::Error> {
    Ok(match dtype {
        "f32" => TensorData::F32(Deserialize::deserialize(d)?),
        "f64" => TensorData::F64(Deserialize::deserialize(d)?),
        "f16" => TensorData::F16(Vec::<f32>::deserialize(d)?.into_iter().map(f16::from_f32).collect()),
        "i64" => TensorData::I64(Deserialize::deserialize(d)?),
        "i32" => TensorData::I32(Deserialize::deserialize(d)?),
        "i16" => TensorData::I16(Deserialize::deserialize(d)?),
        "i8" => TensorData::I8(Deserialize::deserialize(d)?),
        "u64" => TensorData::U64(Deserialize::deserialize(d)?),
        "u32" => TensorData::U32(Deserialize::deserialize(d)?),
        "u16" => TensorData::U16(Deserialize::deserialize(d)?),
        "u8" => TensorData::U8(Deserialize::deserialize(d)?),
        "bool" => TensorData::Bool(Deserialize::deserialize(d)?),
        other => return Err(de::Error::custom(unknown_dtype(other))),
    })
}

/// Deserializes `data` as `dtype` inside [`MapAccess::next_value_seed`].
struct TypedSeed<'a>(&'a str);

impl<'de> de::DeserializeSeed<'de> for TypedSeed<'_> {
    type Value = TensorData;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<TensorData, D::Error> {
        typed_data(self.0, d)
    }
}

const FIELDS: &[&str] = &["name", "shape", "dtype", "data", "bytes"];

impl<'de> Deserialize<'de> for Tensor {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Tensor, D::Error> {
        struct TensorVisitor;
        impl<'de> Visitor<'de> for TensorVisitor {
            type Value = Tensor;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a tensor {\"name\", \"shape\", \"dtype\", and \"data\" or \"bytes\"}")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Tensor, A::Error> {
                let (mut name, mut shape, mut dtype) = (None::<String>, None::<Vec<usize>>, None::<String>);
                let (mut values, mut bytes) = (None::<Values>, None::<String>);
                while let Some(key) = map.next_key::<String>()? {
                    let duplicate = || de::Error::duplicate_field(FIELDS.iter().find(|f| **f == key).unwrap());
                    match key.as_str() {
                        "name" if name.is_some() => return Err(duplicate()),
                        "name" => name = Some(map.next_value()?),
                        "shape" if shape.is_some() => return Err(duplicate()),
                        "shape" => shape = Some(map.next_value()?),
                        "dtype" if dtype.is_some() => return Err(duplicate()),
                        "dtype" => dtype = Some(map.next_value()?),
                        "data" if values.is_some() => return Err(duplicate()),
                        "data" => {
                            values = Some(match &dtype {
                                Some(dtype) => Values::Typed(map.next_value_seed(TypedSeed(dtype))?),
                                None => Values::Pending(map.next_value()?),
                            })
                        }
                        "bytes" if bytes.is_some() => return Err(duplicate()),
                        "bytes" => bytes = Some(map.next_value()?),
                        // A tolerant reader (ABI minor 1): a field of a newer minor is passed over.
                        _ => {
                            map.next_value::<de::IgnoredAny>()?;
                        }
                    }
                }
                let name = name.unwrap_or_default();
                let shape = shape.ok_or_else(|| de::Error::missing_field("shape"))?;
                let dtype = dtype.ok_or_else(|| de::Error::missing_field("dtype"))?;
                let data = match (values, bytes) {
                    (Some(_), Some(_)) => {
                        return Err(de::Error::custom(format!("tensor {name:?} gives both \"data\" and \"bytes\"")));
                    }
                    (None, None) => {
                        return Err(de::Error::custom(format!("tensor {name:?} has no \"data\" or \"bytes\"")));
                    }
                    (Some(Values::Typed(data)), None) => data,
                    (Some(Values::Pending(value)), None) => typed_data(&dtype, value).map_err(de::Error::custom)?,
                    (None, Some(text)) => {
                        let raw = BASE64
                            .decode(text.as_bytes())
                            .map_err(|e| de::Error::custom(format!("tensor {name:?}: \"bytes\" is not base64: {e}")))?;
                        TensorData::from_le_bytes(&dtype, &raw)
                            .map_err(|e| de::Error::custom(format!("tensor {name:?}: {e}")))?
                    }
                };
                let tensor = Tensor { name, shape, data };
                tensor.check().map_err(de::Error::custom)?;
                Ok(tensor)
            }
        }
        deserializer.deserialize_map(TensorVisitor)
    }
}

/// Why bytes are not a `.npy` file this crate reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NpyError(pub String);

impl fmt::Display for NpyError {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "not a supported .npy file: {}", self.0)
    }
}

impl std::error::Error for NpyError {}

const NPY_MAGIC: &[u8] = b"\x93NUMPY";

impl Tensor {
    /// Reads a NumPy `.npy` file (format versions 1-3): a C-order array of
    /// any [`TensorData`] type, little-endian. See numpy's `format.py`.
    /// The tensor has no name; `.npy` files carry none.
    pub fn from_npy(bytes: &[u8]) -> Result<Tensor, NpyError> {
        let bad = |m: &str| NpyError(m.to_string());
        if !bytes.starts_with(NPY_MAGIC) || bytes.len() < 10 {
            return Err(bad("missing the \\x93NUMPY magic"));
        }
        let (header_len, header_start) = match bytes[6] {
            1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10usize),
            2 | 3 if bytes.len() >= 12 => (u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize, 12),
            v => return Err(bad(&format!("format version {v}"))),
        };
        let header = bytes
            .get(header_start..header_start.saturating_add(header_len))
            .and_then(|h| std::str::from_utf8(h).ok())
            .ok_or_else(|| bad("truncated header"))?;
        let descr = header_field(header, "descr").ok_or_else(|| bad("no descr"))?;
        let descr = descr
            .strip_prefix(['\'', '"'])
            .and_then(|d| d.split(['\'', '"']).next())
            .ok_or_else(|| bad("descr is not a string"))?;
        if header_field(header, "fortran_order").is_some_and(|f| f.starts_with("True")) {
            return Err(bad("Fortran order; save with np.ascontiguousarray"));
        }
        let shape_text = header_field(header, "shape").ok_or_else(|| bad("no shape"))?;
        let inner = shape_text.trim_start_matches('(');
        let inner = &inner[..inner.find(')').ok_or_else(|| bad("unterminated shape"))?];
        let shape = inner
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|s| s.parse::<usize>().map_err(|_| bad("shape is not integers")))
            .collect::<Result<Vec<_>, _>>()?;
        // `=` is native order, and `|` marks one-byte types: both mean little-endian here.
        let normalized = descr.replacen('=', "<", 1);
        let dtype = TensorData::descr_dtype(&normalized)
            .or_else(|| TensorData::descr_dtype(&normalized.replacen('<', "|", 1)))
            .ok_or_else(|| {
                bad(&format!("dtype {descr}; a little-endian number or bool is needed (e.g. arr.astype('<f4'))"))
            })?;
        let mut tensor = Tensor { name: String::new(), shape, data: TensorData::F32(Vec::new()) };
        let count = tensor.shape_len().ok_or_else(|| bad("shape overflows"))?;
        let size = TensorData::element_size(dtype).ok_or_else(|| bad("unknown dtype"))?;
        let needed = count.checked_mul(size).ok_or_else(|| bad("shape overflows"))?;
        let body = bytes[header_start + header_len..].get(..needed).ok_or_else(|| bad("short data"))?;
        tensor.data = TensorData::from_le_bytes(dtype, body).map_err(|e| bad(&e))?;
        Ok(tensor)
    }

    /// Writes the tensor as a version-1 `.npy` file, which `numpy.load` reads.
    pub fn to_npy(&self) -> Vec<u8> {
        let shape = match self.shape.as_slice() {
            [one] => format!("({one},)"),
            dims => format!("({})", dims.iter().map(usize::to_string).collect::<Vec<_>>().join(", ")),
        };
        let mut header =
            format!("{{'descr': '{}', 'fortran_order': False, 'shape': {shape}, }}", self.data.npy_descr());
        // numpy pads the header with spaces and a newline to a multiple of 64 bytes.
        while !(NPY_MAGIC.len() + 4 + header.len() + 1).is_multiple_of(64) {
            header.push(' ');
        }
        header.push('\n');
        let mut out = NPY_MAGIC.to_vec();
        out.extend([1, 0]);
        out.extend((header.len() as u16).to_le_bytes());
        out.extend(header.as_bytes());
        out.extend(self.data.to_le_bytes());
        out
    }
}

/// The text after `'key':` in the header dict, up to the end of the header.
fn header_field<'h>(header: &'h str, key: &str) -> Option<&'h str> {
    let at = header.find(&format!("'{key}'"))?;
    let rest = &header[at + key.len() + 2..];
    Some(rest.trim_start().strip_prefix(':')?.trim_start())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(data: TensorData) -> Tensor {
        Tensor { name: "x".into(), shape: vec![data.len()], data }
    }

    #[test]
    fn finite_values_are_json_numbers_and_round_trip() {
        let x = t(TensorData::F32(vec![1.0, 2.5]));
        let json = serde_json::to_string(&x).unwrap();
        assert_eq!(json, r#"{"name":"x","shape":[2],"dtype":"f32","data":[1.0,2.5]}"#);
        assert_eq!(serde_json::from_str::<Tensor>(&json).unwrap(), x);
        let b = t(TensorData::Bool(vec![true, false]));
        assert_eq!(
            serde_json::to_string(&b).unwrap(),
            r#"{"name":"x","shape":[2],"dtype":"bool","data":[true,false]}"#
        );
    }

    #[test]
    fn every_dtype_round_trips_bit_exact_through_json_and_npy() {
        let nan_with_payload = f32::from_bits(0x7fc0_1234);
        let all = [
            TensorData::F32(vec![nan_with_payload, f32::INFINITY, -0.0, 1.0]),
            TensorData::F64(vec![f64::NEG_INFINITY, f64::NAN, 3.25]),
            TensorData::F16(vec![f16::from_f32(0.5), f16::NAN, f16::INFINITY]),
            TensorData::I64(vec![i64::MIN, 7]),
            TensorData::I32(vec![-3]),
            TensorData::I16(vec![i16::MAX]),
            TensorData::I8(vec![-128, 127]),
            TensorData::U64(vec![u64::MAX]),
            TensorData::U32(vec![9]),
            TensorData::U16(vec![65535]),
            TensorData::U8(vec![0, 255]),
            TensorData::Bool(vec![true, false, true]),
        ];
        assert_eq!(all.len(), TensorData::DTYPES.len());
        for data in all {
            let x = t(data);
            let back: Tensor = serde_json::from_str(&serde_json::to_string(&x).unwrap()).unwrap();
            assert_eq!((back.data.dtype(), back.data.to_le_bytes()), (x.data.dtype(), x.data.to_le_bytes()));
            let npy = Tensor::from_npy(&x.to_npy()).unwrap();
            assert_eq!(npy.shape, x.shape);
            assert_eq!((npy.data.dtype(), npy.data.to_le_bytes()), (x.data.dtype(), x.data.to_le_bytes()));
        }
    }

    #[test]
    fn data_may_come_before_dtype() {
        let x: Tensor = serde_json::from_str(r#"{"data":[1,2],"shape":[2],"dtype":"u8"}"#).unwrap();
        assert_eq!(x.data, TensorData::U8(vec![1, 2]));
    }

    #[test]
    fn bad_tensors_say_what_is_wrong() {
        let err = |json: &str| serde_json::from_str::<Tensor>(json).unwrap_err().to_string();
        assert!(err(r#"{"name":"a","shape":[3],"dtype":"f32","data":[1,2]}"#).contains("shape [3] holds 3 values"));
        assert!(err(r#"{"shape":[1],"dtype":"q8","data":[1]}"#).contains("unknown dtype \"q8\""));
        assert!(err(r#"{"shape":[1],"dtype":"u8","data":[256]}"#).contains("256"));
        assert!(err(r#"{"shape":[1],"dtype":"bool","bytes":"Ag=="}"#).contains("not a bool"));
        assert!(err(r#"{"shape":[1],"dtype":"f32","bytes":"AAA="}"#).contains("whole number"));
        assert!(err(r#"{"shape":[1],"dtype":"f32","data":[1],"bytes":"AACAPw=="}"#).contains("both"));
        // A misspelt field is passed over (tolerant readers), and the tensor then lacks its values.
        assert!(err(r#"{"shape":[1],"dtype":"f32","values":[1]}"#).contains("no \"data\" or \"bytes\""));
        let newer: Tensor = serde_json::from_str(r#"{"shape":[1],"dtype":"f32","data":[1],"unit":"m"}"#).unwrap();
        assert_eq!(newer.data, TensorData::F32(vec![1.0]));
        assert!(err(r#"{"shape":[1],"dtype":"f32","data":[null]}"#).contains("null"));
    }

    #[test]
    fn npy_refuses_what_it_cannot_read() {
        let mut x = t(TensorData::F32(vec![1.0, 2.0])).to_npy();
        assert!(Tensor::from_npy(&x[..x.len() - 1]).unwrap_err().0.contains("short data"));
        let descr = x.windows(3).position(|w| w == b"<f4").unwrap();
        x[descr] = b'>';
        let err = Tensor::from_npy(&x).unwrap_err().0;
        assert!(err.contains(">f4"), "{err}");
        assert!(Tensor::from_npy(b"garbage").is_err());
    }
}

//! A reader for NumPy `.npy` files (format versions 1-3): little-endian,
//! C-order `f4`, `i8` and `i4` arrays. See numpy's `format.py` for the layout.

use crate::{Error, Tensor, TensorData};

const MAGIC: &[u8] = b"\x93NUMPY";

/// Parses one `.npy` file into a tensor.
pub fn parse(bytes: &[u8]) -> Result<Tensor, Error> {
    let bad = |m: &str| Error::bad_input(format!("not a supported .npy file: {m}"));
    if !bytes.starts_with(MAGIC) || bytes.len() < 10 {
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
    let descr = field(header, "descr").ok_or_else(|| bad("no descr"))?;
    let descr = descr
        .strip_prefix(['\'', '"'])
        .and_then(|d| d.split(['\'', '"']).next())
        .ok_or_else(|| bad("descr is not a string"))?;
    if field(header, "fortran_order").is_some_and(|f| f.starts_with("True")) {
        return Err(bad("Fortran order; save with np.ascontiguousarray"));
    }
    let shape_text = field(header, "shape").ok_or_else(|| bad("no shape"))?;
    let inner = shape_text.trim_start_matches('(');
    let inner = &inner[..inner.find(')').ok_or_else(|| bad("unterminated shape"))?];
    let shape = inner
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.parse::<usize>().map_err(|_| bad("shape is not integers")))
        .collect::<Result<Vec<_>, _>>()?;
    let count = shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d)).ok_or_else(|| bad("shape overflows"))?;
    let body = &bytes[header_start + header_len..];
    let data = match descr {
        "<f4" => TensorData::F32(read(body, count, f32::from_le_bytes).ok_or_else(|| bad("short data"))?),
        "<i8" => TensorData::I64(read(body, count, i64::from_le_bytes).ok_or_else(|| bad("short data"))?),
        "<i4" => TensorData::I32(read(body, count, i32::from_le_bytes).ok_or_else(|| bad("short data"))?),
        other => return Err(bad(&format!("dtype {other}; use <f4, <i8 or <i4"))),
    };
    Ok(Tensor { name: String::new(), shape, data })
}

/// The text after `'key':` in the header dict, up to the end of the header.
fn field<'h>(header: &'h str, key: &str) -> Option<&'h str> {
    let at = header.find(&format!("'{key}'"))?;
    let rest = &header[at + key.len() + 2..];
    Some(rest.trim_start().strip_prefix(':')?.trim_start())
}

fn read<T, const N: usize>(body: &[u8], count: usize, f: fn([u8; N]) -> T) -> Option<Vec<T>> {
    let needed = count.checked_mul(N)?;
    let body = body.get(..needed)?;
    Some(body.chunks_exact(N).map(|c| f(c.try_into().unwrap())).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn npy(descr: &str, shape: &str, body: &[u8]) -> Vec<u8> {
        let mut header = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape}, }}");
        while (10 + header.len() + 1) % 64 != 0 {
            header.push(' ');
        }
        header.push('\n');
        let mut out = MAGIC.to_vec();
        out.extend([1, 0]);
        out.extend((header.len() as u16).to_le_bytes());
        out.extend(header.as_bytes());
        out.extend(body);
        out
    }

    #[test]
    fn reads_f32_matrix() {
        let body: Vec<u8> = [1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0].iter().flat_map(|f| f.to_le_bytes()).collect();
        let t = parse(&npy("<f4", "(2, 3)", &body)).unwrap();
        assert_eq!(t.shape, vec![2, 3]);
        assert_eq!(t.data, TensorData::F32(vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]));
    }

    #[test]
    fn reads_scalar_and_vector_shapes() {
        assert_eq!(parse(&npy("<i8", "()", &7i64.to_le_bytes())).unwrap().shape, Vec::<usize>::new());
        assert_eq!(parse(&npy("<i4", "(1,)", &7i32.to_le_bytes())).unwrap().shape, vec![1]);
    }

    #[test]
    fn refuses_short_data_and_odd_dtypes() {
        assert!(parse(&npy("<f4", "(4,)", &[0; 8])).is_err());
        assert!(parse(&npy(">f8", "(1,)", &[0; 8])).is_err());
        assert!(parse(b"garbage").is_err());
    }

    /// A fuzz loop over damaged files (the guest workspace takes no test
    /// dependencies, so a xorshift stands in for proptest): whatever the
    /// damage, `parse` returns, and a tensor it returns holds exactly as many
    /// values as its shape says. `EDGECASCADE_FUZZ_CASES` (default 100,000) and
    /// `EDGECASCADE_FUZZ_SEED` (a failure prints it) control the run.
    #[test]
    fn damaged_files_parse_or_fail_cleanly() {
        let env = |name: &str| std::env::var(name).ok().and_then(|v| v.parse::<u64>().ok());
        let cases = env("EDGECASCADE_FUZZ_CASES").unwrap_or(100_000);
        let seed = env("EDGECASCADE_FUZZ_SEED").unwrap_or(0x9e37_79b9_7f4a_7c15);
        let mut state = seed | 1;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let body: Vec<u8> = (0..6u8).flat_map(|i| f32::from(i).to_le_bytes()).collect();
        let bases = [npy("<f4", "(2, 3)", &body), npy("<i8", "(3,)", &[1; 24]), npy("<i4", "()", &[2; 4])];
        for case in 0..cases {
            let mut bytes = bases[(next() % 3) as usize].clone();
            for _ in 0..1 + next() % 4 {
                let at = (next() as usize) % (bytes.len() + 1);
                match next() % 4 {
                    0 if at < bytes.len() => bytes[at] = next() as u8,
                    1 => bytes.insert(at, b"(),:'0123456789 "[(next() % 16) as usize]),
                    2 => bytes.truncate(at),
                    _ if at < bytes.len() => {
                        bytes.remove(at);
                    }
                    _ => {}
                }
            }
            if let Ok(t) = parse(&bytes) {
                let product: usize = t.shape.iter().product();
                assert_eq!(t.data.len(), product, "case {case} of seed {seed}: {bytes:?}");
            }
        }
    }
}

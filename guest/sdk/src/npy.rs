//! NumPy `.npy` inputs (format versions 1-3, every dtype of
//! [`TensorData`](crate::TensorData), little-endian, C order). The layout
//! lives in the ABI crate ([`Tensor::from_npy`]), so host and guest read it
//! one way.

use crate::{Error, Tensor};

/// Parses one `.npy` file into a tensor; a file it cannot read is a `bad_input` error that says why.
pub fn parse(bytes: &[u8]) -> Result<Tensor, Error> {
    Tensor::from_npy(bytes).map_err(|e| Error::bad_input(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::TensorData;

    const MAGIC: &[u8] = b"\x93NUMPY";

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

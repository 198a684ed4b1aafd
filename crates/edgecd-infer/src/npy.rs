//! Reading and writing NumPy `.npy` files (format versions 1–3, C order, little-endian), the
//! raw body of `POST /v1/infer` for large single-input requests.

use tract_onnx::prelude::{DatumType, Tensor};

/// Parses a `.npy` file into a tensor. Errors are messages for a 400 answer.
pub fn read_npy(bytes: &[u8]) -> Result<Tensor, String> {
    if bytes.len() < 10 || &bytes[..6] != b"\x93NUMPY" {
        return Err("not a .npy file (bad magic)".into());
    }
    let major = bytes[6];
    let (header_len, start) = match major {
        1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10usize),
        2 | 3 => {
            if bytes.len() < 12 {
                return Err("truncated .npy header".into());
            }
            (
                u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize,
                12,
            )
        }
        v => return Err(format!("unsupported .npy version {v}")),
    };
    let end = start
        .checked_add(header_len)
        .filter(|e| *e <= bytes.len())
        .ok_or("truncated .npy header")?;
    let header = std::str::from_utf8(&bytes[start..end]).map_err(|_| "non-UTF-8 .npy header")?;
    let descr = dict_value(header, "descr").ok_or("no 'descr' in .npy header")?;
    let descr = descr.trim_matches(|c| c == '\'' || c == '"');
    let fortran = dict_value(header, "fortran_order").ok_or("no 'fortran_order' in .npy header")?;
    if fortran.trim() != "False" {
        return Err("Fortran-order .npy arrays are not supported".into());
    }
    let shape_s = dict_value(header, "shape").ok_or("no 'shape' in .npy header")?;
    let shape: Vec<usize> = shape_s
        .trim()
        .trim_start_matches('(')
        .trim_end_matches(')')
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse::<usize>()
                .map_err(|_| format!("bad .npy shape {shape_s}"))
        })
        .collect::<Result<_, _>>()?;
    let dt = match descr {
        "<f4" => DatumType::F32,
        "<f8" => DatumType::F64,
        "<f2" => DatumType::F16,
        "<i8" => DatumType::I64,
        "<i4" => DatumType::I32,
        "<i2" => DatumType::I16,
        "|i1" => DatumType::I8,
        "|u1" => DatumType::U8,
        "<u2" => DatumType::U16,
        "<u4" => DatumType::U32,
        "<u8" => DatumType::U64,
        "|b1" => DatumType::Bool,
        other => return Err(format!("unsupported .npy dtype {other}")),
    };
    let data = &bytes[end..];
    let n: usize = shape.iter().product();
    let want = n.checked_mul(dt.size_of()).ok_or("array too large")?;
    if data.len() != want {
        return Err(format!(
            "npy data is {} bytes, shape {shape:?} of {descr} needs {want}",
            data.len()
        ));
    }
    if dt == DatumType::Bool && data.iter().any(|b| *b > 1) {
        return Err("bool .npy data holds bytes other than 0 and 1".into());
    }
    let mut t = Tensor::zero_dt(dt, &shape).map_err(|e| format!("bad .npy data: {e}"))?;
    t.as_bytes_mut().copy_from_slice(data);
    Ok(t)
}

/// The value text of `key` in the Python-literal header dict.
fn dict_value<'a>(header: &'a str, key: &str) -> Option<&'a str> {
    let k1 = format!("'{key}':");
    let k2 = format!("\"{key}\":");
    let pos = header
        .find(&k1)
        .map(|p| p + k1.len())
        .or_else(|| header.find(&k2).map(|p| p + k2.len()))?;
    let rest = header[pos..].trim_start();
    if rest.starts_with('(') {
        let close = rest.find(')')?;
        return Some(&rest[..=close]);
    }
    let end = rest.find([',', '}']).unwrap_or(rest.len());
    Some(rest[..end].trim())
}

/// Writes a tensor as a version-1 `.npy` file (little-endian, C order).
pub fn write_npy(t: &Tensor) -> Result<Vec<u8>, String> {
    let descr = match t.datum_type() {
        DatumType::F32 => "<f4",
        DatumType::F64 => "<f8",
        DatumType::F16 => "<f2",
        DatumType::I64 => "<i8",
        DatumType::I32 => "<i4",
        DatumType::I16 => "<i2",
        DatumType::I8 => "|i1",
        DatumType::U8 => "|u1",
        DatumType::U16 => "<u2",
        DatumType::U32 => "<u4",
        DatumType::U64 => "<u8",
        DatumType::Bool => "|b1",
        other => return Err(format!("cannot write {other:?} as .npy")),
    };
    let shape = match t.shape() {
        [] => "()".to_string(),
        [d] => format!("({d},)"),
        dims => format!(
            "({})",
            dims.iter()
                .map(|d| d.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    let mut header = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape}, }}");
    // Magic (6) + version (2) + length (2) + header + '\n' is a multiple of 64.
    let unpadded = 10 + header.len() + 1;
    header.push_str(&" ".repeat(unpadded.next_multiple_of(64) - unpadded));
    header.push('\n');
    let mut out = Vec::with_capacity(10 + header.len() + t.as_bytes().len());
    out.extend_from_slice(b"\x93NUMPY\x01\x00");
    out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(t.as_bytes());
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_f32() {
        let t = Tensor::from_shape(&[2, 3], &[1f32, 2., 3., 4., 5., 6.]).unwrap();
        let bytes = write_npy(&t).unwrap();
        assert_eq!(
            (10 + u16::from_le_bytes([bytes[8], bytes[9]]) as usize) % 64,
            0
        );
        let back = read_npy(&bytes).unwrap();
        assert_eq!(back, t);
    }

    #[test]
    fn reads_numpy_header_and_rejects_garbage() {
        let mut b = b"\x93NUMPY\x01\x00".to_vec();
        let h = "{'descr': '<i8', 'fortran_order': False, 'shape': (3,), }          \n";
        b.extend_from_slice(&(h.len() as u16).to_le_bytes());
        b.extend_from_slice(h.as_bytes());
        for v in [7i64, -1, 2] {
            b.extend_from_slice(&v.to_le_bytes());
        }
        let t = read_npy(&b).unwrap();
        assert_eq!(t.shape(), &[3]);
        assert_eq!(t.datum_type(), DatumType::I64);
        assert!(read_npy(&b[..b.len() - 1]).is_err());
        assert!(read_npy(b"hello world").is_err());
        let fortran = String::from_utf8_lossy(&b).replace("False", "True ");
        assert!(read_npy(fortran.as_bytes()).is_err());
    }
}

//! Raw binary tensors: a `POST /v1/infer` body of `application/octet-stream` is one tensor's
//! bytes (C order, little-endian), its shape in the `X-Tensor-Shape` header (`1,3,224,224`;
//! `1x3x224x224` too) and its element type in `X-Tensor-Dtype` (numpy names: `float32`,
//! `uint8`, …; default the model input's). The answer, with `Accept: application/octet-stream`,
//! is one output's bytes with the same headers (and `X-Tensor-Name`). Errors are messages for
//! a 400 answer.

use crate::model::{dtype_name, parse_dtype};
use tract_onnx::prelude::{DatumType, Tensor};

/// Request/response header with the tensor's shape.
pub const SHAPE_HEADER: &str = "x-tensor-shape";
/// Request/response header with the tensor's element type.
pub const DTYPE_HEADER: &str = "x-tensor-dtype";
/// Response header with the output's name.
pub const NAME_HEADER: &str = "x-tensor-name";
/// The content type of a raw tensor body.
pub const CONTENT_TYPE: &str = "application/octet-stream";

/// Parses an `X-Tensor-Shape` value: dimensions separated by `,` or `x`; empty or `()` is a
/// scalar.
pub fn parse_shape(text: &str) -> Result<Vec<usize>, String> {
    let t = text
        .trim()
        .trim_start_matches(['(', '['])
        .trim_end_matches([')', ']']);
    if t.trim().is_empty() {
        return Ok(Vec::new());
    }
    t.split([',', 'x', 'X'])
        .map(str::trim)
        .map(|d| {
            d.parse::<usize>().map_err(|_| {
                format!(
                    "{SHAPE_HEADER} {text:?} is not a shape: give the dimensions as non-negative \
                     integers separated by commas, e.g. \"1,3,224,224\""
                )
            })
        })
        .collect()
}

/// Decodes a raw tensor body. `shape` is the `X-Tensor-Shape` header (required), `dtype` the
/// `X-Tensor-Dtype` header, `default_dtype` the model input's type used when it is absent.
pub fn read_raw(
    body: &[u8],
    shape: Option<&str>,
    dtype: Option<&str>,
    default_dtype: DatumType,
) -> Result<Tensor, String> {
    let shape_text = shape.ok_or_else(|| {
        format!(
            "an {CONTENT_TYPE} body needs an {SHAPE_HEADER} header with the tensor's shape \
             (e.g. \"{SHAPE_HEADER}: 1,3,224,224\"), and {DTYPE_HEADER} unless it is the \
             model input's type ({})",
            dtype_name(default_dtype)
        )
    })?;
    let shape = parse_shape(shape_text)?;
    let dt = match dtype {
        None => default_dtype,
        Some(d) => {
            let dt = parse_dtype(d.trim()).ok_or_else(|| {
                format!(
                    "{DTYPE_HEADER} {d:?} is not a type: use a numpy name (float32, float16, \
                     float64, int8, int16, int32, int64, uint8, uint16, uint32, uint64, bool)"
                )
            })?;
            if dtype_name(dt) == "unknown" {
                return Err(format!("{DTYPE_HEADER} {d:?} is not supported"));
            }
            dt
        }
    };
    let want = shape
        .iter()
        .try_fold(dt.size_of(), |a, d| a.checked_mul(*d))
        .ok_or_else(|| format!("shape {shape:?} is too large"))?;
    if body.len() != want {
        return Err(format!(
            "the body is {} bytes, but shape {shape:?} of {} needs {want} ({} values × {} bytes); \
             send the tensor's raw little-endian bytes in C order",
            body.len(),
            dtype_name(dt),
            want / dt.size_of().max(1),
            dt.size_of()
        ));
    }
    if dt == DatumType::Bool && body.iter().any(|b| *b > 1) {
        return Err("a bool tensor's bytes must be 0 or 1".into());
    }
    let mut t = Tensor::zero_dt(dt, &shape).map_err(|e| format!("bad tensor: {e}"))?;
    if cfg!(target_endian = "little") || dt.size_of() == 1 {
        t.as_bytes_mut().copy_from_slice(body);
    } else {
        for (dst, src) in t
            .as_bytes_mut()
            .chunks_mut(dt.size_of())
            .zip(body.chunks(dt.size_of()))
        {
            dst.copy_from_slice(src);
            dst.reverse();
        }
    }
    Ok(t)
}

/// A tensor's bytes for an `application/octet-stream` answer (little-endian, C order) and its
/// `X-Tensor-Shape` / `X-Tensor-Dtype` values.
pub fn write_raw(t: &Tensor) -> Result<(Vec<u8>, String, &'static str), String> {
    let dt = t.datum_type();
    let name = dtype_name(dt);
    if name == "unknown" {
        return Err(format!("cannot send a {dt:?} tensor as raw bytes"));
    }
    let mut bytes = t.as_bytes().to_vec();
    if cfg!(target_endian = "big") && dt.size_of() > 1 {
        for c in bytes.chunks_mut(dt.size_of()) {
            c.reverse();
        }
    }
    let shape = t
        .shape()
        .iter()
        .map(|d| d.to_string())
        .collect::<Vec<_>>()
        .join(",");
    Ok((bytes, shape, name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let t = Tensor::from_shape(&[2, 2], &[1f32, -2.5, 3.0, 4.25]).unwrap();
        let (bytes, shape, dtype) = write_raw(&t).unwrap();
        assert_eq!((shape.as_str(), dtype), ("2,2", "float32"));
        let back = read_raw(&bytes, Some(&shape), Some(dtype), DatumType::U8).unwrap();
        assert_eq!(back, t);
        // The model input's type when no dtype header is sent; `x` separators.
        let back = read_raw(&bytes, Some("2x2"), None, DatumType::F32).unwrap();
        assert_eq!(back, t);
        let scalar = read_raw(&[7], Some(""), Some("uint8"), DatumType::F32).unwrap();
        assert_eq!(scalar.shape(), &[] as &[usize]);
    }

    #[test]
    fn mismatches_are_explained() {
        let four_f32 = [0u8; 16];
        let e = read_raw(&four_f32, None, None, DatumType::F32).unwrap_err();
        assert!(e.contains("x-tensor-shape"), "{e}");
        let e = read_raw(&four_f32, Some("1,three"), None, DatumType::F32).unwrap_err();
        assert!(e.contains("is not a shape"), "{e}");
        let e = read_raw(&four_f32, Some("1,4"), Some("complex"), DatumType::F32).unwrap_err();
        assert!(e.contains("is not a type"), "{e}");
        let e = read_raw(&four_f32, Some("1,5"), None, DatumType::F32).unwrap_err();
        assert!(e.contains("16 bytes") && e.contains("needs 20"), "{e}");
        // The same 16 bytes are 16 uint8 values, or 2 float64 ones.
        assert!(read_raw(&four_f32, Some("16"), Some("uint8"), DatumType::F32).is_ok());
        assert!(read_raw(&four_f32, Some("2"), Some("float64"), DatumType::F32).is_ok());
        let e = read_raw(&[0, 2], Some("2"), Some("bool"), DatumType::F32).unwrap_err();
        assert!(e.contains("0 or 1"), "{e}");
        let e = read_raw(&[], Some("99999999999,99999999999"), None, DatumType::F32).unwrap_err();
        assert!(e.contains("too large"), "{e}");
    }
}

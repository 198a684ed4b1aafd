//! Model inspection without inference.
//!
//! Owns: reading an ONNX model's protobuf (opset, producer, inputs/outputs, initializer dtypes,
//! QuantizeLinear/DequantizeLinear/QLinear* scales and zero points) and a TFLite model's
//! flatbuffer (tensors with quantization parameters, operator codes, inputs/outputs).
//! Files are memory-mapped, never read whole into the heap. Unknown formats (e.g. Hailo `.hef`)
//! are reported as opaque. The types here are serialized into the bundle's profile layer,
//! the ModelPack config and the SBOM's model card, so their JSON shape is part of the format.
//!
//! # Detection
//! 1. bytes 4..8 are `TFL3` → TFLite (a `.tflite` file without it is malformed);
//! 2. the extension is `.onnx`, or the content decodes as an ONNX `ModelProto` that has a graph
//!    and starts like one (first field `ir_version`, tag byte `0x08`) → ONNX;
//! 3. anything else → [`ModelFormat::Opaque`].
//!
//! A file detected as ONNX or TFLite that cannot be parsed is [`InspectError::Malformed`].
//!
//! # Precision rule
//! Over the *weight* tensors (ONNX: initializers, sparse initializers and `Constant` tensors,
//! excluding the scale and zero-point tensors of quantization operators, plus the outputs of
//! `ConstantOfShape` nodes whose shape is constant; TFLite: tensors backed by a non-empty
//! buffer), count the weight **bytes** (elements × dtype width) per dtype, only
//! for float32/float16/bfloat16/float64 ("float") and int8/uint8/int4/uint4 ("quantized")
//! dtypes. int32 biases, int64 shapes, bools, strings and 8-bit floats are ignored.
//! - no such bytes → `unknown`;
//! - the smaller of the float and quantized groups holds ≥ 10 % of those bytes → `mixed`;
//! - otherwise the dtype with the most bytes in the larger group (`uint4` reports as `int4`,
//!   a float64 majority as `unknown`).

pub mod onnx;
pub mod tflite;

use std::collections::{BTreeMap, HashSet};
use std::fs::File;
use std::path::Path;

pub use edgecd_api::model::{ModelFormat, ModelInfo, Precision, QuantParam, TensorSignature};

#[derive(Debug, thiserror::Error)]
pub enum InspectError {
    #[error("cannot read model file {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("{path} is not a valid {format} model: {reason}")]
    Malformed {
        path: String,
        format: &'static str,
        reason: String,
    },
}

/// Detects the format (by content, then extension) and inspects the file.
/// Unknown formats return `ModelFormat::Opaque` with empty signature lists.
pub fn inspect_path(path: &Path) -> Result<ModelInfo, InspectError> {
    let shown = path.display().to_string();
    inspect_bytes(&shown, map_file(path)?)
}

/// The tensors of an ONNX model file kept in external data files: `(tensor, location)` for
/// each, `location` as the model writes it (relative to the model's directory). Empty for a
/// file that is not ONNX.
pub fn onnx_external_data(path: &Path) -> Result<Vec<(String, String)>, InspectError> {
    let shown = path.display().to_string();
    let data = map_file(path)?;
    if data.get(4..8) == Some(b"TFL3") {
        return Ok(vec![]);
    }
    let is_onnx = path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("onnx"));
    match onnx::decode_model(data) {
        Ok(model) if model.graph.is_some() => Ok(onnx::external_data(&model)),
        Ok(_) => Ok(vec![]),
        Err(e) if is_onnx => Err(InspectError::Malformed {
            path: shown,
            format: "ONNX",
            reason: format!("protobuf decode failed: {e}"),
        }),
        Err(_) => Ok(vec![]),
    }
}

/// The file's bytes, memory-mapped.
fn map_file(path: &Path) -> Result<bytes::Bytes, InspectError> {
    let shown = path.display().to_string();
    let io = |source| InspectError::Io {
        path: shown.clone(),
        source,
    };
    let file = File::open(path).map_err(io)?;
    let len = file.metadata().map_err(io)?.len();
    let data = if len == 0 {
        bytes::Bytes::new()
    } else {
        // SAFETY: the map is read-only and private to this process. Another process truncating
        // or rewriting the model file while we read it would be undefined behaviour; model files
        // are immutable inputs for the duration of an inspection, which is the documented
        // contract of this function.
        #[allow(unsafe_code)]
        let map = unsafe { memmap2::Mmap::map(&file) }.map_err(io)?;
        bytes::Bytes::from_owner(map)
    };
    Ok(data)
}

/// Inspects model bytes already in memory (see the crate docs for detection). `name` is the
/// file name or path: it appears in errors, and its extension is a hint (`.onnx` content that
/// does not decode, or `.tflite` content without the `TFL3` identifier, is `Malformed` rather
/// than `Opaque`). Pass a `Bytes` that owns or maps the data: ONNX `raw_data` is sliced from it.
pub fn inspect_bytes(name: &str, data: bytes::Bytes) -> Result<ModelInfo, InspectError> {
    let ext = Path::new(name)
        .extension()
        .map(|e| e.to_string_lossy().to_ascii_lowercase());
    if data.get(4..8) == Some(b"TFL3") {
        return tflite::inspect(name, &data);
    }
    if ext.as_deref() == Some("tflite") {
        return Err(InspectError::Malformed {
            path: name.to_string(),
            format: "TFLite",
            reason: "no TFL3 file identifier at bytes 4..8".into(),
        });
    }
    if ext.as_deref() == Some("onnx") {
        let model = onnx::decode_model(data).map_err(|e| InspectError::Malformed {
            path: name.to_string(),
            format: "ONNX",
            reason: format!("protobuf decode failed: {e}"),
        })?;
        return onnx::inspect_model(name, &model);
    }
    if data.first() == Some(&0x08)
        && let Ok(model) = onnx::decode_model(data)
        && model.graph.is_some()
    {
        return onnx::inspect_model(name, &model);
    }
    Ok(opaque())
}

fn opaque() -> ModelInfo {
    ModelInfo {
        format: ModelFormat::Opaque,
        precision: Precision::Unknown,
        producer: None,
        opset: None,
        inputs: vec![],
        outputs: vec![],
        operators: vec![],
        weight_dtypes: BTreeMap::new(),
        quantization: vec![],
    }
}

/// Weight tensors seen so far: counts per dtype and the data needed for the precision rule.
#[derive(Default)]
pub(crate) struct WeightTally {
    pub(crate) counts: BTreeMap<String, u64>,
    /// (tensor name, dtype, size in bits)
    entries: Vec<(String, String, u64)>,
}

impl WeightTally {
    pub(crate) fn add(&mut self, name: &str, dtype: &str, bits: u64) {
        *self.counts.entry(dtype.to_string()).or_default() += 1;
        self.entries
            .push((name.to_string(), dtype.to_string(), bits));
    }

    /// Records a tensor that counts for the precision rule but is not a stored weight.
    pub(crate) fn add_precision_only(&mut self, name: &str, dtype: &str, bits: u64) {
        self.entries
            .push((name.to_string(), dtype.to_string(), bits));
    }

    /// Applies the crate-level precision rule, ignoring the tensors named in `exclude`.
    pub(crate) fn precision(&self, exclude: &HashSet<&str>) -> Precision {
        let mut bits: BTreeMap<&str, u128> = BTreeMap::new();
        for (name, dtype, b) in &self.entries {
            if !exclude.contains(name.as_str()) {
                *bits.entry(dtype.as_str()).or_default() += u128::from(*b);
            }
        }
        precision_from_bits(&bits)
    }
}

/// The precision rule over bits per dtype name (see the crate docs).
pub fn precision_from_bits(bits: &BTreeMap<&str, u128>) -> Precision {
    const FLOAT: [&str; 4] = ["float32", "float16", "bfloat16", "float64"];
    const QUANT: [&str; 4] = ["int8", "uint8", "int4", "uint4"];
    let sum = |group: &[&str]| {
        group
            .iter()
            .map(|d| bits.get(d).copied().unwrap_or(0))
            .sum::<u128>()
    };
    let (f, q) = (sum(&FLOAT), sum(&QUANT));
    let total = f + q;
    if total == 0 {
        return Precision::Unknown;
    }
    if f.min(q) * 10 >= total {
        return Precision::Mixed;
    }
    let group: &[&str] = if f > q { &FLOAT } else { &QUANT };
    // Ties resolve to the first dtype listed in the group.
    let mut best = group[0];
    for d in group {
        if bits.get(d).copied().unwrap_or(0) > bits.get(best).copied().unwrap_or(0) {
            best = d;
        }
    }
    match best {
        "float32" => Precision::Float32,
        "float16" => Precision::Float16,
        "bfloat16" => Precision::Bfloat16,
        "int8" => Precision::Int8,
        "uint8" => Precision::Uint8,
        "int4" | "uint4" => Precision::Int4,
        _ => Precision::Unknown,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(v: &[(&'static str, u128)]) -> Precision {
        precision_from_bits(&v.iter().copied().collect())
    }

    #[test]
    fn precision_rule() {
        assert_eq!(p(&[]), Precision::Unknown);
        assert_eq!(p(&[("int64", 640)]), Precision::Unknown);
        assert_eq!(
            p(&[("float32", 3200), ("int64", 64_000)]),
            Precision::Float32
        );
        assert_eq!(
            p(&[("float32", 320), ("float16", 16_000)]),
            Precision::Float16
        );
        assert_eq!(
            p(&[("int8", 8000), ("float32", 320), ("int32", 9999)]),
            Precision::Int8
        );
        assert_eq!(p(&[("uint8", 8000), ("int8", 80)]), Precision::Uint8);
        assert_eq!(p(&[("int4", 800), ("uint4", 8000)]), Precision::Int4);
        assert_eq!(p(&[("int8", 800), ("float32", 200)]), Precision::Mixed);
        assert_eq!(p(&[("int8", 100), ("float32", 900)]), Precision::Mixed);
        assert_eq!(p(&[("float64", 900)]), Precision::Unknown);
    }

    #[test]
    fn empty_and_unknown_bytes_are_opaque() {
        let info = inspect_bytes("x", bytes::Bytes::new()).unwrap();
        assert_eq!(info.format, ModelFormat::Opaque);
        let info = inspect_bytes("x.hef", bytes::Bytes::from_static(b"\x01HEF garbage")).unwrap();
        assert_eq!(info.format, ModelFormat::Opaque);
        let err = inspect_bytes("m.tflite", bytes::Bytes::from_static(b"not a flatbuffer"));
        let err = err.unwrap_err().to_string();
        assert!(err.contains("m.tflite") && err.contains("TFL3"), "{err}");
        let err = inspect_bytes("m.onnx", bytes::Bytes::from_static(b"\xff\xff\xff"));
        let err = err.unwrap_err().to_string();
        assert!(err.contains("m.onnx is not a valid ONNX model"), "{err}");
    }
}

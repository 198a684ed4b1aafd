//! What edgecd knows about a model file without running it (filled in by `edgecd-inspect`).
//! Serialized into the bundle's profile layer, the ModelPack config and the SBOM model card.

use serde::{Deserialize, Serialize};

/// What kind of file a model is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ModelFormat {
    Onnx,
    Tflite,
    /// A format we do not parse (an accelerator's compiled file, e.g. Hailo `.hef`).
    Opaque,
}

/// Weight precision summarised from initializer / tensor dtypes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    Float32,
    Float16,
    Bfloat16,
    Int8,
    Uint8,
    Int4,
    Mixed,
    Unknown,
}

/// One input or output of the graph.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TensorSignature {
    pub name: String,
    /// Lower-case dtype name: float32, float16, int8, uint8, int32, int64, bool, …
    pub dtype: String,
    /// Dimensions; `None` for a symbolic/unknown dimension (its name is in `dim_names`).
    pub shape: Vec<Option<i64>>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dim_names: Vec<String>,
}

/// Quantization parameters of one tensor (per-tensor: one scale; per-axis: one per channel).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QuantParam {
    /// The quantized tensor (ONNX: the Q/DQ node's input or output tensor name; TFLite: tensor name).
    pub tensor: String,
    /// ONNX: the node's op_type (QuantizeLinear, DequantizeLinear, QLinearConv, …); TFLite: "tensor".
    pub source: String,
    pub scale: Vec<f32>,
    pub zero_point: Vec<i64>,
    /// Quantized dtype (int8, uint8, int16, int4…).
    pub dtype: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub axis: Option<i64>,
}

/// Everything we read from one model file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelInfo {
    pub format: ModelFormat,
    pub precision: Precision,
    /// ONNX: producer_name + producer_version; TFLite: description.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub producer: Option<String>,
    /// ONNX default-domain opset version; TFLite schema version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub opset: Option<i64>,
    pub inputs: Vec<TensorSignature>,
    pub outputs: Vec<TensorSignature>,
    /// Distinct operator types in the graph, sorted.
    pub operators: Vec<String>,
    /// Count of weight tensors by dtype (sorted by dtype name).
    pub weight_dtypes: std::collections::BTreeMap<String, u64>,
    /// Every quantization parameter found, in graph order.
    pub quantization: Vec<QuantParam>,
}

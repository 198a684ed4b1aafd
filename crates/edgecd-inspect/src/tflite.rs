//! TFLite model inspection: reads the `Model` flatbuffer (schema.fbs, file identifier `TFL3`)
//! through the `flatbuffers` crate's low-level `Table` API.
//!
//! The whole subset we read is first checked by `flatbuffers::Verifier` (every table, vector and
//! string we later follow is in bounds, aligned and well-formed); only then are fields read, so a
//! truncated or corrupt file yields [`InspectError::Malformed`], never a panic or an
//! out-of-bounds read. Field slots are the vtable offsets from TFLite's `schema.fbs`
//! (`4 + 2 * field_id`).
//!
//! Reported: schema version (as `opset`), description (as `producer`), subgraph 0's inputs,
//! outputs and tensors' quantization parameters, the distinct builtin/custom operator names of
//! the model's operator codes, and weight tensors (those backed by a non-empty buffer, inline or
//! at an external `offset`/`size`).

use std::collections::{BTreeSet, HashSet};

use flatbuffers::{
    ForwardsUOffset, InvalidFlatbuffer, Vector, Verifiable, Verifier, VerifierOptions,
};

use crate::{InspectError, ModelFormat, ModelInfo, QuantParam, TensorSignature, WeightTally};

/// Typed, verified views over TFLite tables. This is the only place that calls the unsafe
/// `Table` accessors; each is sound because the table was checked by its `Verifiable` impl with
/// the same field type before any accessor runs (see `SAFETY` notes).
#[allow(unsafe_code)]
mod fb {
    use super::*;
    use flatbuffers::{Follow, Table};

    // Vtable slots (schema.fbs field id → 4 + 2 * id).
    pub const MODEL_VERSION: u16 = 4;
    pub const MODEL_OPERATOR_CODES: u16 = 6;
    pub const MODEL_SUBGRAPHS: u16 = 8;
    pub const MODEL_DESCRIPTION: u16 = 10;
    pub const MODEL_BUFFERS: u16 = 12;
    pub const SUBGRAPH_TENSORS: u16 = 4;
    pub const SUBGRAPH_INPUTS: u16 = 6;
    pub const SUBGRAPH_OUTPUTS: u16 = 8;
    pub const SUBGRAPH_NAME: u16 = 12;
    pub const TENSOR_SHAPE: u16 = 4;
    pub const TENSOR_TYPE: u16 = 6;
    pub const TENSOR_BUFFER: u16 = 8;
    pub const TENSOR_NAME: u16 = 10;
    pub const TENSOR_QUANTIZATION: u16 = 12;
    pub const TENSOR_SHAPE_SIGNATURE: u16 = 18;
    pub const QUANT_MIN: u16 = 4;
    pub const QUANT_MAX: u16 = 6;
    pub const QUANT_SCALE: u16 = 8;
    pub const QUANT_ZERO_POINT: u16 = 10;
    pub const QUANT_QUANTIZED_DIMENSION: u16 = 16;
    pub const OPCODE_DEPRECATED_BUILTIN_CODE: u16 = 4;
    pub const OPCODE_CUSTOM_CODE: u16 = 6;
    pub const OPCODE_VERSION: u16 = 8;
    pub const OPCODE_BUILTIN_CODE: u16 = 10;
    pub const BUFFER_DATA: u16 = 4;
    pub const BUFFER_OFFSET: u16 = 6;
    pub const BUFFER_SIZE: u16 = 8;

    pub type Tables<'a, T> = ForwardsUOffset<Vector<'a, ForwardsUOffset<T>>>;
    pub type Scalars<'a, T> = ForwardsUOffset<Vector<'a, T>>;
    pub type Str<'a> = ForwardsUOffset<&'a str>;

    macro_rules! table {
        ($name:ident, |$v:ident, $pos:ident| $verify:expr) => {
            #[derive(Clone, Copy)]
            pub struct $name<'a>(Table<'a>);

            impl<'a> Follow<'a> for $name<'a> {
                type Inner = $name<'a>;
                unsafe fn follow(buf: &'a [u8], loc: usize) -> Self::Inner {
                    // SAFETY: forwarded from the caller's contract (a table starts at `loc`).
                    $name(unsafe { Table::new(buf, loc) })
                }
            }

            impl Verifiable for $name<'_> {
                fn run_verifier($v: &mut Verifier, $pos: usize) -> Result<(), InvalidFlatbuffer> {
                    $verify;
                    Ok(())
                }
            }

            impl<'a> $name<'a> {
                /// # Safety
                /// `T` must be the type this table's `Verifiable` impl checked at `slot`.
                #[inline]
                unsafe fn field<T: Follow<'a> + 'a>(&self, slot: u16) -> Option<T::Inner> {
                    // SAFETY: the buffer was verified (tables reached only via `root`), and the
                    // caller passes the verified field type.
                    unsafe { self.0.get::<T>(slot, None) }
                }
            }
        };
    }

    table!(Model, |v, pos| v
        .visit_table(pos)?
        .visit_field::<u32>("version", MODEL_VERSION, false)?
        .visit_field::<Tables<OperatorCode>>("operator_codes", MODEL_OPERATOR_CODES, false)?
        .visit_field::<Tables<SubGraph>>("subgraphs", MODEL_SUBGRAPHS, false)?
        .visit_field::<Str>("description", MODEL_DESCRIPTION, false)?
        .visit_field::<Tables<Buffer>>("buffers", MODEL_BUFFERS, false)?
        .finish());

    table!(SubGraph, |v, pos| v
        .visit_table(pos)?
        .visit_field::<Tables<Tensor>>("tensors", SUBGRAPH_TENSORS, false)?
        .visit_field::<Scalars<i32>>("inputs", SUBGRAPH_INPUTS, false)?
        .visit_field::<Scalars<i32>>("outputs", SUBGRAPH_OUTPUTS, false)?
        .visit_field::<Str>("name", SUBGRAPH_NAME, false)?
        .finish());

    table!(Tensor, |v, pos| v
        .visit_table(pos)?
        .visit_field::<Scalars<i32>>("shape", TENSOR_SHAPE, false)?
        .visit_field::<i8>("type", TENSOR_TYPE, false)?
        .visit_field::<u32>("buffer", TENSOR_BUFFER, false)?
        .visit_field::<Str>("name", TENSOR_NAME, false)?
        .visit_field::<ForwardsUOffset<Quantization>>("quantization", TENSOR_QUANTIZATION, false)?
        .visit_field::<Scalars<i32>>("shape_signature", TENSOR_SHAPE_SIGNATURE, false)?
        .finish());

    table!(Quantization, |v, pos| v
        .visit_table(pos)?
        .visit_field::<Scalars<f32>>("min", QUANT_MIN, false)?
        .visit_field::<Scalars<f32>>("max", QUANT_MAX, false)?
        .visit_field::<Scalars<f32>>("scale", QUANT_SCALE, false)?
        .visit_field::<Scalars<i64>>("zero_point", QUANT_ZERO_POINT, false)?
        .visit_field::<i32>("quantized_dimension", QUANT_QUANTIZED_DIMENSION, false)?
        .finish());

    table!(OperatorCode, |v, pos| v
        .visit_table(pos)?
        .visit_field::<i8>(
            "deprecated_builtin_code",
            OPCODE_DEPRECATED_BUILTIN_CODE,
            false
        )?
        .visit_field::<Str>("custom_code", OPCODE_CUSTOM_CODE, false)?
        .visit_field::<i32>("version", OPCODE_VERSION, false)?
        .visit_field::<i32>("builtin_code", OPCODE_BUILTIN_CODE, false)?
        .finish());

    table!(Buffer, |v, pos| v
        .visit_table(pos)?
        .visit_field::<Scalars<u8>>("data", BUFFER_DATA, false)?
        .visit_field::<u64>("offset", BUFFER_OFFSET, false)?
        .visit_field::<u64>("size", BUFFER_SIZE, false)?
        .finish());

    /// Verifies `data` and returns its root `Model`.
    pub fn root(data: &[u8]) -> Result<Model<'_>, InvalidFlatbuffer> {
        let opts = VerifierOptions {
            max_depth: 64,
            max_tables: 50_000_000,
            max_apparent_size: usize::MAX,
            ignore_missing_null_terminator: true,
        };
        flatbuffers::root_with_opts::<Model>(&opts, data)
    }

    // SAFETY (all accessors below): each reads a field with exactly the type its table's
    // `Verifiable` impl verified at the same slot.
    impl<'a> Model<'a> {
        pub fn version(&self) -> u32 {
            unsafe { self.field::<u32>(MODEL_VERSION) }.unwrap_or(0)
        }
        pub fn operator_codes(&self) -> Option<Vector<'a, ForwardsUOffset<OperatorCode<'a>>>> {
            unsafe { self.field::<Tables<OperatorCode>>(MODEL_OPERATOR_CODES) }
        }
        pub fn subgraphs(&self) -> Option<Vector<'a, ForwardsUOffset<SubGraph<'a>>>> {
            unsafe { self.field::<Tables<SubGraph>>(MODEL_SUBGRAPHS) }
        }
        pub fn description(&self) -> Option<&'a str> {
            unsafe { self.field::<Str>(MODEL_DESCRIPTION) }
        }
        pub fn buffers(&self) -> Option<Vector<'a, ForwardsUOffset<Buffer<'a>>>> {
            unsafe { self.field::<Tables<Buffer>>(MODEL_BUFFERS) }
        }
    }

    impl<'a> SubGraph<'a> {
        pub fn tensors(&self) -> Option<Vector<'a, ForwardsUOffset<Tensor<'a>>>> {
            unsafe { self.field::<Tables<Tensor>>(SUBGRAPH_TENSORS) }
        }
        pub fn inputs(&self) -> Option<Vector<'a, i32>> {
            unsafe { self.field::<Scalars<i32>>(SUBGRAPH_INPUTS) }
        }
        pub fn outputs(&self) -> Option<Vector<'a, i32>> {
            unsafe { self.field::<Scalars<i32>>(SUBGRAPH_OUTPUTS) }
        }
    }

    impl<'a> Tensor<'a> {
        pub fn shape(&self) -> Option<Vector<'a, i32>> {
            unsafe { self.field::<Scalars<i32>>(TENSOR_SHAPE) }
        }
        pub fn shape_signature(&self) -> Option<Vector<'a, i32>> {
            unsafe { self.field::<Scalars<i32>>(TENSOR_SHAPE_SIGNATURE) }
        }
        pub fn type_(&self) -> i8 {
            unsafe { self.field::<i8>(TENSOR_TYPE) }.unwrap_or(0)
        }
        pub fn buffer(&self) -> u32 {
            unsafe { self.field::<u32>(TENSOR_BUFFER) }.unwrap_or(0)
        }
        pub fn name(&self) -> &'a str {
            unsafe { self.field::<Str>(TENSOR_NAME) }.unwrap_or("")
        }
        pub fn quantization(&self) -> Option<Quantization<'a>> {
            unsafe { self.field::<ForwardsUOffset<Quantization>>(TENSOR_QUANTIZATION) }
        }
    }

    impl<'a> Quantization<'a> {
        pub fn scale(&self) -> Option<Vector<'a, f32>> {
            unsafe { self.field::<Scalars<f32>>(QUANT_SCALE) }
        }
        pub fn zero_point(&self) -> Option<Vector<'a, i64>> {
            unsafe { self.field::<Scalars<i64>>(QUANT_ZERO_POINT) }
        }
        pub fn quantized_dimension(&self) -> i32 {
            unsafe { self.field::<i32>(QUANT_QUANTIZED_DIMENSION) }.unwrap_or(0)
        }
    }

    impl<'a> OperatorCode<'a> {
        pub fn deprecated_builtin_code(&self) -> i8 {
            unsafe { self.field::<i8>(OPCODE_DEPRECATED_BUILTIN_CODE) }.unwrap_or(0)
        }
        pub fn builtin_code(&self) -> i32 {
            unsafe { self.field::<i32>(OPCODE_BUILTIN_CODE) }.unwrap_or(0)
        }
        pub fn custom_code(&self) -> Option<&'a str> {
            unsafe { self.field::<Str>(OPCODE_CUSTOM_CODE) }
        }
    }

    impl<'a> Buffer<'a> {
        pub fn data_len(&self) -> usize {
            unsafe { self.field::<Scalars<u8>>(BUFFER_DATA) }.map_or(0, |v| v.len())
        }
        pub fn offset(&self) -> u64 {
            unsafe { self.field::<u64>(BUFFER_OFFSET) }.unwrap_or(0)
        }
        pub fn size(&self) -> u64 {
            unsafe { self.field::<u64>(BUFFER_SIZE) }.unwrap_or(0)
        }
    }
}

/// Lower-case name of a TFLite `TensorType`.
pub fn tensor_type_name(t: i8) -> String {
    let s = match t {
        0 => "float32",
        1 => "float16",
        2 => "int32",
        3 => "uint8",
        4 => "int64",
        5 => "string",
        6 => "bool",
        7 => "int16",
        8 => "complex64",
        9 => "int8",
        10 => "float64",
        11 => "complex128",
        12 => "uint64",
        13 => "resource",
        14 => "variant",
        15 => "uint32",
        16 => "uint16",
        17 => "int4",
        18 => "bfloat16",
        other => return format!("type{other}"),
    };
    s.to_string()
}

fn tensor_type_bits(t: i8) -> u64 {
    match t {
        17 => 4,
        3 | 6 | 9 => 8,
        1 | 7 | 16 | 18 => 16,
        0 | 2 | 15 => 32,
        4 | 8 | 10 | 12 => 64,
        11 => 128,
        _ => 0,
    }
}

/// Name of a TFLite `BuiltinOperator` (upper snake case, as in schema.fbs).
pub fn builtin_name(code: i32) -> String {
    const NAMES: &[&str] = &[
        "ADD",
        "AVERAGE_POOL_2D",
        "CONCATENATION",
        "CONV_2D",
        "DEPTHWISE_CONV_2D",
        "DEPTH_TO_SPACE",
        "DEQUANTIZE",
        "EMBEDDING_LOOKUP",
        "FLOOR",
        "FULLY_CONNECTED",
        "HASHTABLE_LOOKUP",
        "L2_NORMALIZATION",
        "L2_POOL_2D",
        "LOCAL_RESPONSE_NORMALIZATION",
        "LOGISTIC",
        "LSH_PROJECTION",
        "LSTM",
        "MAX_POOL_2D",
        "MUL",
        "RELU",
        "RELU_N1_TO_1",
        "RELU6",
        "RESHAPE",
        "RESIZE_BILINEAR",
        "RNN",
        "SOFTMAX",
        "SPACE_TO_DEPTH",
        "SVDF",
        "TANH",
        "CONCAT_EMBEDDINGS",
        "SKIP_GRAM",
        "CALL",
        "CUSTOM",
        "EMBEDDING_LOOKUP_SPARSE",
        "PAD",
        "UNIDIRECTIONAL_SEQUENCE_RNN",
        "GATHER",
        "BATCH_TO_SPACE_ND",
        "SPACE_TO_BATCH_ND",
        "TRANSPOSE",
        "MEAN",
        "SUB",
        "DIV",
        "SQUEEZE",
        "UNIDIRECTIONAL_SEQUENCE_LSTM",
        "STRIDED_SLICE",
        "BIDIRECTIONAL_SEQUENCE_RNN",
        "EXP",
        "TOPK_V2",
        "SPLIT",
        "LOG_SOFTMAX",
        "DELEGATE",
        "BIDIRECTIONAL_SEQUENCE_LSTM",
        "CAST",
        "PRELU",
        "MAXIMUM",
        "ARG_MAX",
        "MINIMUM",
        "LESS",
        "NEG",
        "PADV2",
        "GREATER",
        "GREATER_EQUAL",
        "LESS_EQUAL",
        "SELECT",
        "SLICE",
        "SIN",
        "TRANSPOSE_CONV",
        "SPARSE_TO_DENSE",
        "TILE",
        "EXPAND_DIMS",
        "EQUAL",
        "NOT_EQUAL",
        "LOG",
        "SUM",
        "SQRT",
        "RSQRT",
        "SHAPE",
        "POW",
        "ARG_MIN",
        "FAKE_QUANT",
        "REDUCE_PROD",
        "REDUCE_MAX",
        "PACK",
        "LOGICAL_OR",
        "ONE_HOT",
        "LOGICAL_AND",
        "LOGICAL_NOT",
        "UNPACK",
        "REDUCE_MIN",
        "FLOOR_DIV",
        "REDUCE_ANY",
        "SQUARE",
        "ZEROS_LIKE",
        "FILL",
        "FLOOR_MOD",
        "RANGE",
        "RESIZE_NEAREST_NEIGHBOR",
        "LEAKY_RELU",
        "SQUARED_DIFFERENCE",
        "MIRROR_PAD",
        "ABS",
        "SPLIT_V",
        "UNIQUE",
        "CEIL",
        "REVERSE_V2",
        "ADD_N",
        "GATHER_ND",
        "COS",
        "WHERE",
        "RANK",
        "ELU",
        "REVERSE_SEQUENCE",
        "MATRIX_DIAG",
        "QUANTIZE",
        "MATRIX_SET_DIAG",
        "ROUND",
        "HARD_SWISH",
        "IF",
        "WHILE",
        "NON_MAX_SUPPRESSION_V4",
        "NON_MAX_SUPPRESSION_V5",
        "SCATTER_ND",
        "SELECT_V2",
        "DENSIFY",
        "SEGMENT_SUM",
        "BATCH_MATMUL",
        "PLACEHOLDER_FOR_GREATER_OP_CODES",
        "CUMSUM",
        "CALL_ONCE",
        "BROADCAST_TO",
        "RFFT2D",
        "CONV_3D",
        "IMAG",
        "REAL",
        "COMPLEX_ABS",
        "HASHTABLE",
        "HASHTABLE_FIND",
        "HASHTABLE_IMPORT",
        "HASHTABLE_SIZE",
        "REDUCE_ALL",
        "CONV_3D_TRANSPOSE",
        "VAR_HANDLE",
        "READ_VARIABLE",
        "ASSIGN_VARIABLE",
        "BROADCAST_ARGS",
        "RANDOM_STANDARD_NORMAL",
        "BUCKETIZE",
        "RANDOM_UNIFORM",
        "MULTINOMIAL",
        "GELU",
        "DYNAMIC_UPDATE_SLICE",
        "RELU_0_TO_1",
        "UNSORTED_SEGMENT_PROD",
        "UNSORTED_SEGMENT_MAX",
        "UNSORTED_SEGMENT_SUM",
        "ATAN2",
        "UNSORTED_SEGMENT_MIN",
        "SIGN",
        "BITCAST",
        "BITWISE_XOR",
        "RIGHT_SHIFT",
    ];
    match usize::try_from(code).ok().and_then(|i| NAMES.get(i)) {
        Some(n) => (*n).to_string(),
        None => format!("BUILTIN_{code}"),
    }
}

/// The effective builtin code of an operator code: TFLite writes codes < 127 to both fields
/// and larger ones only to `builtin_code` (with `deprecated_builtin_code` = 127); old files have
/// only `deprecated_builtin_code`. The larger of the two is the real one (as in TFLite's
/// `GetBuiltinCode`).
fn effective_builtin(code: &fb::OperatorCode<'_>) -> i32 {
    i32::from(code.deprecated_builtin_code()).max(code.builtin_code())
}

/// Inspects TFLite flatbuffer bytes. `path` is only used in error messages.
pub fn inspect(path: &str, data: &[u8]) -> Result<ModelInfo, InspectError> {
    let malformed = |reason: String| InspectError::Malformed {
        path: path.to_string(),
        format: "TFLite",
        reason,
    };
    let model =
        fb::root(data).map_err(|e| malformed(format!("flatbuffer verification failed: {e}")))?;

    let mut operators = BTreeSet::new();
    for code in model.operator_codes().iter().flatten() {
        let b = effective_builtin(&code);
        if b == 32 {
            operators.insert(format!("CUSTOM:{}", code.custom_code().unwrap_or("")));
        } else {
            operators.insert(builtin_name(b));
        }
    }

    let subgraph = model
        .subgraphs()
        .filter(|s| !s.is_empty())
        .map(|s| s.get(0))
        .ok_or_else(|| malformed("model has no subgraph".into()))?;
    let tensors: Vec<fb::Tensor<'_>> = subgraph.tensors().iter().flatten().collect();
    let buffers: Vec<fb::Buffer<'_>> = model.buffers().iter().flatten().collect();

    let sig = |idx: i32| -> Result<TensorSignature, InspectError> {
        let t = usize::try_from(idx)
            .ok()
            .and_then(|i| tensors.get(i))
            .ok_or_else(|| {
                malformed(format!(
                    "subgraph 0 refers to tensor {idx}, which does not exist"
                ))
            })?;
        let dims = t
            .shape_signature()
            .filter(|s| !s.is_empty())
            .or_else(|| t.shape());
        Ok(TensorSignature {
            name: t.name().to_string(),
            dtype: tensor_type_name(t.type_()),
            shape: dims
                .iter()
                .flatten()
                .map(|d| (d >= 0).then_some(i64::from(d)))
                .collect(),
            dim_names: vec![],
        })
    };
    let inputs = subgraph
        .inputs()
        .iter()
        .flatten()
        .map(sig)
        .collect::<Result<Vec<_>, _>>()?;
    let outputs = subgraph
        .outputs()
        .iter()
        .flatten()
        .map(sig)
        .collect::<Result<Vec<_>, _>>()?;

    let mut tally = WeightTally::default();
    let mut quantization = Vec::new();
    for t in &tensors {
        let b = t.buffer() as usize;
        let backed = b != 0
            && buffers
                .get(b)
                .is_some_and(|buf| buf.data_len() > 0 || (buf.offset() > 1 && buf.size() > 0));
        if backed {
            let elems = t
                .shape()
                .iter()
                .flatten()
                .fold(1u64, |a, d| a.saturating_mul(u64::try_from(d).unwrap_or(0)));
            tally.add(
                t.name(),
                &tensor_type_name(t.type_()),
                elems.saturating_mul(tensor_type_bits(t.type_())),
            );
        }
        if let Some(q) = t.quantization() {
            let scale: Vec<f32> = q.scale().iter().flatten().collect();
            if scale.is_empty() {
                continue;
            }
            let zero_point: Vec<i64> = q.zero_point().iter().flatten().collect();
            quantization.push(QuantParam {
                tensor: t.name().to_string(),
                source: "tensor".into(),
                axis: (scale.len() > 1).then_some(i64::from(q.quantized_dimension())),
                scale,
                zero_point,
                dtype: tensor_type_name(t.type_()),
            });
        }
    }

    let producer = model
        .description()
        .map(str::trim)
        .filter(|d| !d.is_empty())
        .map(str::to_string);
    Ok(ModelInfo {
        format: ModelFormat::Tflite,
        precision: tally.precision(&HashSet::new()),
        producer,
        opset: Some(i64::from(model.version())),
        inputs,
        outputs,
        operators: operators.into_iter().collect(),
        weight_dtypes: std::mem::take(&mut tally.counts),
        quantization,
    })
}

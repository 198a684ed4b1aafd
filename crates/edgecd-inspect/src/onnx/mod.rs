//! ONNX model inspection: decodes the `ModelProto` (zero-copy for `raw_data`) and summarises the
//! main graph: producer, default-domain opset, inputs/outputs, operator set, weight dtypes,
//! precision, and the quantization parameters of Q/DQ and QLinear* nodes.
//!
//! Scope: the main graph and every subgraph (If branches, Loop/Scan bodies, at any depth) for
//! weights, operators and quantization parameters; inputs and outputs are the main graph's.
//! Model-local functions are not walked. Weights are the graph's initializers, sparse initializers (counted by their values'
//! dtype) and the tensors of `Constant` nodes. External-data tensors are counted (their size comes
//! from `dims`) but never read; a scale or zero point stored externally is reported empty.
//! [`external_data`] lists them (all graphs) so a bundle can carry their files.

pub mod proto;

use std::borrow::Cow;
use std::collections::{BTreeSet, HashMap, HashSet};

use bytes::Bytes;
use prost::Message;

use crate::{InspectError, ModelFormat, ModelInfo, QuantParam, TensorSignature, WeightTally};
use proto::{
    AttributeProto, GraphProto, ModelProto, NodeProto, TensorProto, TypeProto, ValueInfoProto,
    data_type as dt,
};

/// Decodes `data` as an ONNX `ModelProto`. Returns the raw prost error on failure.
pub fn decode_model(data: Bytes) -> Result<ModelProto, prost::DecodeError> {
    ModelProto::decode(data)
}

/// Lower-case dtype name of an ONNX `TensorProto.DataType` (`FLOAT` is `float32`, `DOUBLE` is
/// `float64`); unknown codes become `dtype<N>`.
pub fn dtype_name(code: i32) -> String {
    let s = match code {
        dt::UNDEFINED => "undefined",
        dt::FLOAT => "float32",
        dt::UINT8 => "uint8",
        dt::INT8 => "int8",
        dt::UINT16 => "uint16",
        dt::INT16 => "int16",
        dt::INT32 => "int32",
        dt::INT64 => "int64",
        dt::STRING => "string",
        dt::BOOL => "bool",
        dt::FLOAT16 => "float16",
        dt::DOUBLE => "float64",
        dt::UINT32 => "uint32",
        dt::UINT64 => "uint64",
        dt::COMPLEX64 => "complex64",
        dt::COMPLEX128 => "complex128",
        dt::BFLOAT16 => "bfloat16",
        dt::FLOAT8E4M3FN => "float8e4m3fn",
        dt::FLOAT8E4M3FNUZ => "float8e4m3fnuz",
        dt::FLOAT8E5M2 => "float8e5m2",
        dt::FLOAT8E5M2FNUZ => "float8e5m2fnuz",
        dt::UINT4 => "uint4",
        dt::INT4 => "int4",
        dt::FLOAT4E2M1 => "float4e2m1",
        dt::FLOAT8E8M0 => "float8e8m0",
        dt::UINT2 => "uint2",
        dt::INT2 => "int2",
        dt::FLOAT6E2M3 => "float6e2m3",
        dt::FLOAT6E3M2 => "float6e3m2",
        other => return format!("dtype{other}"),
    };
    s.to_string()
}

/// Bits per element of an ONNX dtype (0 for strings and unknown codes).
fn dtype_bits(code: i32) -> u64 {
    match code {
        dt::UINT2 | dt::INT2 => 2,
        dt::UINT4 | dt::INT4 | dt::FLOAT4E2M1 => 4,
        dt::FLOAT6E2M3 | dt::FLOAT6E3M2 => 6,
        dt::UINT8
        | dt::INT8
        | dt::BOOL
        | dt::FLOAT8E4M3FN
        | dt::FLOAT8E4M3FNUZ
        | dt::FLOAT8E5M2
        | dt::FLOAT8E5M2FNUZ
        | dt::FLOAT8E8M0 => 8,
        dt::UINT16 | dt::INT16 | dt::FLOAT16 | dt::BFLOAT16 => 16,
        dt::FLOAT | dt::INT32 | dt::UINT32 => 32,
        dt::INT64 | dt::UINT64 | dt::DOUBLE | dt::COMPLEX64 => 64,
        dt::COMPLEX128 => 128,
        _ => 0,
    }
}

fn is_default_domain(domain: &str) -> bool {
    domain.is_empty() || domain == "ai.onnx"
}

/// Inspects an already-decoded model. `path` is only used in error messages.
pub fn inspect_model(path: &str, model: &ModelProto) -> Result<ModelInfo, InspectError> {
    let malformed = |reason: String| InspectError::Malformed {
        path: path.to_string(),
        format: "ONNX",
        reason,
    };
    let graph = model
        .graph
        .as_ref()
        .ok_or_else(|| malformed("ModelProto has no graph".into()))?;

    let producer = {
        let p = format!(
            "{} {}",
            model.producer_name.trim(),
            model.producer_version.trim()
        );
        let p = p.trim().to_string();
        (!p.is_empty()).then_some(p)
    };
    let opset = model
        .opset_import
        .iter()
        .filter(|o| is_default_domain(&o.domain))
        .filter_map(|o| o.version)
        .max();

    // Constant tensors: initializers, then Constant node outputs (later definitions win).
    // Borrowed where possible: a model's typed-field weights are not copied again.
    let graphs = all_graphs(graph);
    let mut constants: HashMap<&str, Cow<'_, TensorProto>> = HashMap::new();
    let mut tally = WeightTally::default();
    for t in graphs.iter().flat_map(|g| &g.initializer) {
        tally.add(
            &t.name,
            &dtype_name(t.data_type),
            num_elements(&t.dims).saturating_mul(dtype_bits(t.data_type)),
        );
        constants.insert(t.name.as_str(), Cow::Borrowed(t));
    }
    for s in graphs.iter().flat_map(|g| &g.sparse_initializer) {
        if let Some(v) = &s.values {
            tally.add(
                &v.name,
                &dtype_name(v.data_type),
                num_elements(&v.dims).saturating_mul(dtype_bits(v.data_type)),
            );
        }
    }
    for node in graphs.iter().flat_map(|g| &g.node) {
        if node.op_type == "Constant"
            && is_default_domain(&node.domain)
            && let Some(t) = constant_node_tensor(node)
        {
            tally.add(
                node.output.first().map_or("", String::as_str),
                &dtype_name(t.data_type),
                num_elements(&t.dims).saturating_mul(dtype_bits(t.data_type)),
            );
            if let Some(out) = node.output.first() {
                constants.insert(out.as_str(), t);
            }
        }
    }

    // ConstantOfShape with a constant shape materialises a weight (the onnx light models build
    // all their weights this way): it counts for precision, not in `weight_dtypes`.
    for node in graphs.iter().flat_map(|g| &g.node) {
        if node.op_type == "ConstantOfShape"
            && is_default_domain(&node.domain)
            && let Some(shape) = node
                .input
                .first()
                .and_then(|n| constants.get(n.as_str()).map(|c| &**c))
                .and_then(tensor_i64)
        {
            let code = attr(node, "value")
                .and_then(|a| a.t.as_ref())
                .map_or(dt::FLOAT, |t| t.data_type);
            let elems = shape.iter().fold(1u64, |acc, &d| {
                acc.saturating_mul(u64::try_from(d).unwrap_or(0))
            });
            let name = node.output.first().map_or("", String::as_str);
            tally.add_precision_only(
                name,
                &dtype_name(code),
                elems.saturating_mul(dtype_bits(code)),
            );
        }
    }

    let init_names: BTreeSet<&str> = graph.initializer.iter().map(|t| t.name.as_str()).collect();
    let inputs = graph
        .input
        .iter()
        .filter(|v| !init_names.contains(v.name.as_str()))
        .map(signature)
        .collect();
    let outputs = graph.output.iter().map(signature).collect();

    let operators: BTreeSet<String> = graphs
        .iter()
        .flat_map(|g| &g.node)
        .map(|n| {
            if is_default_domain(&n.domain) {
                n.op_type.clone()
            } else {
                format!("{}:{}", n.domain, n.op_type)
            }
        })
        .collect();

    let (quantization, qparam_tensors) = quant_params(&graphs, &constants);
    let precision = tally.precision(&qparam_tensors);

    Ok(ModelInfo {
        format: ModelFormat::Onnx,
        precision,
        producer,
        opset,
        inputs,
        outputs,
        operators: operators.into_iter().collect(),
        weight_dtypes: tally.counts,
        quantization,
    })
}

/// Product of dims (negative dims count as 0; overflow saturates).
fn num_elements(dims: &[i64]) -> u64 {
    dims.iter().fold(1u64, |acc, &d| {
        acc.saturating_mul(u64::try_from(d).unwrap_or(0))
    })
}

/// The value of a `Constant` node as a tensor (`value`, `value_float(s)`, `value_int(s)`,
/// `value_string(s)`, or the values of `sparse_value`).
fn constant_node_tensor(node: &NodeProto) -> Option<Cow<'_, TensorProto>> {
    let attr = node.attribute.first()?;
    let mut t = TensorProto::default();
    match attr.name.as_str() {
        "value" => return attr.t.as_ref().map(Cow::Borrowed),
        "sparse_value" => {
            return attr
                .sparse_tensor
                .as_ref()
                .and_then(|s| s.values.as_ref())
                .map(Cow::Borrowed);
        }
        "value_float" => {
            t.data_type = dt::FLOAT;
            t.float_data = vec![attr.f.unwrap_or_default()];
        }
        "value_floats" => {
            t.data_type = dt::FLOAT;
            t.dims = vec![attr.floats.len() as i64];
            t.float_data = attr.floats.clone();
        }
        "value_int" => {
            t.data_type = dt::INT64;
            t.int64_data = vec![attr.i.unwrap_or_default()];
        }
        "value_ints" => {
            t.data_type = dt::INT64;
            t.dims = vec![attr.ints.len() as i64];
            t.int64_data = attr.ints.clone();
        }
        "value_string" => {
            t.data_type = dt::STRING;
            t.string_data = vec![attr.s.clone().unwrap_or_default()];
        }
        "value_strings" => {
            t.data_type = dt::STRING;
            t.dims = vec![attr.strings.len() as i64];
            t.string_data = attr.strings.clone();
        }
        _ => return None,
    }
    t.name = node.output.first().cloned().unwrap_or_default();
    Some(Cow::Owned(t))
}

fn signature(v: &ValueInfoProto) -> TensorSignature {
    let mut sig = TensorSignature {
        name: v.name.clone(),
        dtype: "unknown".into(),
        shape: vec![],
        dim_names: vec![],
    };
    let Some(ty) = &v.r#type else { return sig };
    let tensor = match &ty.value {
        Some(proto::type_proto::Value::TensorType(t)) => t,
        Some(proto::type_proto::Value::SparseTensorType(t)) => t,
        other => {
            sig.dtype = type_kind(other).into();
            return sig;
        }
    };
    sig.dtype = tensor
        .elem_type
        .map_or_else(|| "unknown".into(), dtype_name);
    if let Some(shape) = &tensor.shape {
        let mut any_name = false;
        let mut names = Vec::with_capacity(shape.dim.len());
        for d in &shape.dim {
            use proto::tensor_shape_proto::dimension::Value;
            match &d.value {
                Some(Value::DimValue(n)) => {
                    sig.shape.push(Some(*n));
                    names.push(String::new());
                }
                Some(Value::DimParam(p)) => {
                    sig.shape.push(None);
                    any_name |= !p.is_empty();
                    names.push(p.clone());
                }
                None => {
                    sig.shape.push(None);
                    names.push(String::new());
                }
            }
        }
        if any_name {
            sig.dim_names = names;
        }
    }
    sig
}

fn type_kind(v: &Option<proto::type_proto::Value>) -> &'static str {
    use proto::type_proto::Value;
    match v {
        Some(Value::SequenceType(_)) => "sequence",
        Some(Value::MapType(_)) => "map",
        Some(Value::OptionalType(_)) => "optional",
        Some(Value::TensorType(_)) | Some(Value::SparseTensorType(_)) => "tensor",
        None => "unknown",
    }
}

/// Which tensor a quantization parameter belongs to.
#[derive(Clone, Copy)]
enum Slot {
    Input(usize),
    Output(usize),
}

/// How a per-axis scale's axis is determined.
#[derive(Clone, Copy)]
enum AxisRule {
    /// The node's `axis` attribute (default 1), when the scale is 1-D.
    Attr,
    /// A fixed axis when the scale is 1-D with more than one element (QLinearConv weights: 0;
    /// QLinearMatMul `b`: -1, the last dimension).
    PerChannel(i64),
    None,
}

/// One (tensor, scale input, zero-point input) triple of a quantized operator.
#[derive(Clone, Copy)]
struct Triple {
    tensor: Slot,
    scale: Option<usize>,
    zp: Option<usize>,
    axis: AxisRule,
}

const fn t(tensor: Slot, scale: usize, zp: usize) -> Triple {
    Triple {
        tensor,
        scale: Some(scale),
        zp: Some(zp),
        axis: AxisRule::None,
    }
}

const fn tw(tensor: Slot, scale: usize, zp: usize, axis: i64) -> Triple {
    Triple {
        tensor,
        scale: Some(scale),
        zp: Some(zp),
        axis: AxisRule::PerChannel(axis),
    }
}

/// Input positions of scale/zero point per quantized operator (ONNX and com.microsoft specs).
fn triples(node: &NodeProto) -> Option<Vec<Triple>> {
    use Slot::{Input as I, Output as O};
    let ms = node.domain == "com.microsoft";
    let onnx = is_default_domain(&node.domain);
    let v = match node.op_type.as_str() {
        "QuantizeLinear" if onnx || ms => {
            vec![Triple {
                tensor: O(0),
                scale: Some(1),
                zp: Some(2),
                axis: AxisRule::Attr,
            }]
        }
        "DequantizeLinear" if onnx || ms => {
            vec![Triple {
                tensor: I(0),
                scale: Some(1),
                zp: Some(2),
                axis: AxisRule::Attr,
            }]
        }
        "QLinearConv" if onnx || ms => vec![t(I(0), 1, 2), tw(I(3), 4, 5, 0), t(O(0), 6, 7)],
        "QLinearConvTranspose" if ms => vec![t(I(0), 1, 2), tw(I(3), 4, 5, 1), t(O(0), 6, 7)],
        "QLinearMatMul" if onnx || ms => vec![t(I(0), 1, 2), tw(I(3), 4, 5, -1), t(O(0), 6, 7)],
        "QLinearAdd" | "QLinearMul" if ms => vec![t(I(0), 1, 2), t(I(3), 4, 5), t(O(0), 6, 7)],
        "QLinearSigmoid"
        | "QLinearLeakyRelu"
        | "QLinearSoftmax"
        | "QLinearAveragePool"
        | "QLinearGlobalAveragePool"
        | "QLinearReduceMean"
            if ms =>
        {
            vec![t(I(0), 1, 2), t(O(0), 3, 4)]
        }
        "QGemm" if ms => {
            let mut v = vec![t(I(0), 1, 2), tw(I(3), 4, 5, -1)];
            if node.input.len() > 7 {
                v.push(t(O(0), 7, 8));
            }
            v
        }
        "QLinearConcat" if ms => {
            // Y_scale, Y_zero_point, then (X, X_scale, X_zero_point) per input.
            let mut v = vec![t(O(0), 0, 1)];
            let mut i = 2;
            while i < node.input.len() {
                v.push(t(I(i), i + 1, i + 2));
                i += 3;
            }
            v
        }
        "DynamicQuantizeLinear" if onnx => {
            vec![Triple {
                tensor: O(0),
                scale: None,
                zp: None,
                axis: AxisRule::None,
            }]
        }
        "MatMulInteger" if onnx => vec![
            Triple {
                tensor: I(0),
                scale: None,
                zp: Some(2),
                axis: AxisRule::None,
            },
            Triple {
                tensor: I(1),
                scale: None,
                zp: Some(3),
                axis: AxisRule::PerChannel(-1),
            },
        ],
        "ConvInteger" if onnx => vec![
            Triple {
                tensor: I(0),
                scale: None,
                zp: Some(2),
                axis: AxisRule::None,
            },
            Triple {
                tensor: I(1),
                scale: None,
                zp: Some(3),
                axis: AxisRule::PerChannel(0),
            },
        ],
        "MatMulIntegerToFloat" if ms => vec![
            Triple {
                tensor: I(0),
                scale: Some(2),
                zp: Some(4),
                axis: AxisRule::None,
            },
            Triple {
                tensor: I(1),
                scale: Some(3),
                zp: Some(5),
                axis: AxisRule::PerChannel(-1),
            },
        ],
        "DynamicQuantizeMatMul" if ms => {
            vec![Triple {
                tensor: I(1),
                scale: Some(2),
                zp: Some(3),
                axis: AxisRule::PerChannel(-1),
            }]
        }
        _ => return None,
    };
    Some(v)
}

fn attr<'a>(node: &'a NodeProto, name: &str) -> Option<&'a AttributeProto> {
    node.attribute.iter().find(|a| a.name == name)
}

fn input_name(node: &NodeProto, i: usize) -> Option<&str> {
    node.input
        .get(i)
        .map(String::as_str)
        .filter(|s| !s.is_empty())
}

/// `graph` and every graph in its nodes' attributes (If branches, Loop/Scan bodies), depth
/// first, `graph` first.
fn all_graphs(graph: &GraphProto) -> Vec<&GraphProto> {
    let mut out = vec![graph];
    let mut i = 0;
    while i < out.len() {
        let g = out[i];
        for a in g.node.iter().flat_map(|n| &n.attribute) {
            out.extend(a.g.iter().map(|g| &**g).chain(&a.graphs));
        }
        i += 1;
    }
    out
}

/// The quantization parameters in graph order, and the names of the scale/zero-point tensors.
fn quant_params<'g>(
    graphs: &[&'g GraphProto],
    constants: &HashMap<&str, Cow<'_, TensorProto>>,
) -> (Vec<QuantParam>, HashSet<&'g str>) {
    let mut param_tensors = HashSet::new();
    // dtypes of graph values known from value_info / inputs / outputs / initializers.
    let mut value_types: HashMap<&str, i32> = HashMap::new();
    for v in graphs
        .iter()
        .flat_map(|g| g.input.iter().chain(&g.output).chain(&g.value_info))
    {
        if let Some(TypeProto {
            value: Some(proto::type_proto::Value::TensorType(t)),
            ..
        }) = &v.r#type
            && let Some(e) = t.elem_type
        {
            value_types.insert(v.name.as_str(), e);
        }
    }
    for (name, t) in constants {
        value_types.insert(name, t.data_type);
    }
    // What quantizing operators produce, for the operators that read it (a DequantizeLinear or
    // MatMulInteger without a zero point says nothing of its input's dtype): QuantizeLinear's
    // `output_dtype` (opset 21), else its zero point's dtype, else uint8; DynamicQuantizeLinear's
    // uint8 values and zero point and float scale.
    for node in graphs.iter().flat_map(|g| &g.node) {
        if !is_default_domain(&node.domain) {
            continue;
        }
        let out = |i: usize| {
            node.output
                .get(i)
                .map(String::as_str)
                .filter(|s| !s.is_empty())
        };
        match node.op_type.as_str() {
            "QuantizeLinear" => {
                let code = attr(node, "output_dtype")
                    .and_then(|a| a.i)
                    .and_then(|c| i32::try_from(c).ok())
                    .filter(|&c| c != dt::UNDEFINED)
                    .or_else(|| input_name(node, 2).and_then(|z| value_types.get(z).copied()))
                    .unwrap_or(dt::UINT8);
                if let Some(y) = out(0) {
                    value_types.entry(y).or_insert(code);
                }
            }
            "DynamicQuantizeLinear" => {
                for (i, code) in [(0, dt::UINT8), (1, dt::FLOAT), (2, dt::UINT8)] {
                    if let Some(y) = out(i) {
                        value_types.entry(y).or_insert(code);
                    }
                }
            }
            _ => {}
        }
    }

    let mut out = Vec::new();
    for node in graphs.iter().flat_map(|g| &g.node) {
        let Some(list) = triples(node) else { continue };
        for tr in list {
            let tensor = match tr.tensor {
                Slot::Input(i) => node.input.get(i),
                Slot::Output(i) => node.output.get(i),
            };
            let Some(tensor) = tensor.filter(|s| !s.is_empty()) else {
                continue;
            };
            let scale_name = tr.scale.and_then(|i| input_name(node, i));
            let scale_t = scale_name.and_then(|n| constants.get(n)).map(|c| &**c);
            let zp_name = tr.zp.and_then(|i| input_name(node, i));
            param_tensors.extend(scale_name);
            param_tensors.extend(zp_name);
            let zp_t = zp_name.and_then(|n| constants.get(n)).map(|c| &**c);
            let scale = scale_t.and_then(tensor_f32).unwrap_or_default();
            let zero_point = zp_t.and_then(tensor_i64).unwrap_or_default();

            let dtype_code = zp_name
                .and_then(|n| value_types.get(n).copied())
                .or_else(|| {
                    // QuantizeLinear opset 21: `output_dtype`; otherwise the quantized tensor's
                    // known dtype; QuantizeLinear/DynamicQuantizeLinear default to uint8.
                    (node.op_type == "QuantizeLinear")
                        .then(|| {
                            attr(node, "output_dtype")
                                .and_then(|a| a.i)
                                .and_then(|c| i32::try_from(c).ok())
                                .filter(|&c| c != 0)
                        })
                        .flatten()
                })
                .or_else(|| value_types.get(tensor.as_str()).copied())
                .or_else(|| {
                    matches!(
                        node.op_type.as_str(),
                        "QuantizeLinear" | "DynamicQuantizeLinear"
                    )
                    .then_some(dt::UINT8)
                });
            let dtype = dtype_code.map_or_else(|| "unknown".to_string(), dtype_name);

            let scale_rank = scale_t.map(|t| t.dims.len());
            let scale_len = scale_t.map(|t| num_elements(&t.dims));
            let axis = match tr.axis {
                AxisRule::Attr => (scale_rank.unwrap_or(0) >= 1)
                    .then(|| attr(node, "axis").and_then(|a| a.i).unwrap_or(1)),
                AxisRule::PerChannel(a) => {
                    let len = scale_len.or_else(|| zp_t.map(|t| num_elements(&t.dims)));
                    let rank = scale_rank.or_else(|| zp_t.map(|t| t.dims.len()));
                    (rank.unwrap_or(0) >= 1 && len.unwrap_or(0) > 1).then_some(a)
                }
                AxisRule::None => None,
            };
            out.push(QuantParam {
                tensor: tensor.clone(),
                source: node.op_type.clone(),
                scale,
                zero_point,
                dtype,
                axis,
            });
        }
    }
    (out, param_tensors)
}

/// `(tensor, location)` of every tensor the model keeps in an external data file: initializers,
/// sparse initializers, and tensors in node attributes, in every graph and subgraph.
pub fn external_data(model: &ModelProto) -> Vec<(String, String)> {
    fn tensor(t: &TensorProto, out: &mut Vec<(String, String)>) {
        if is_external(t) {
            let location = t
                .external_data
                .iter()
                .find(|e| e.key == "location")
                .map_or_else(String::new, |e| e.value.clone());
            out.push((t.name.clone(), location));
        }
    }
    fn graph(g: &GraphProto, out: &mut Vec<(String, String)>) {
        for t in &g.initializer {
            tensor(t, out);
        }
        for s in &g.sparse_initializer {
            s.values
                .iter()
                .chain(&s.indices)
                .for_each(|t| tensor(t, out));
        }
        for a in g.node.iter().flat_map(|n| &n.attribute) {
            a.t.iter().chain(&a.tensors).for_each(|t| tensor(t, out));
            if let Some(s) = &a.sparse_tensor {
                s.values
                    .iter()
                    .chain(&s.indices)
                    .for_each(|t| tensor(t, out));
            }
            a.g.iter()
                .map(|g| &**g)
                .chain(&a.graphs)
                .for_each(|g| graph(g, out));
        }
    }
    let mut out = Vec::new();
    if let Some(g) = &model.graph {
        graph(g, &mut out);
    }
    out
}

fn is_external(t: &TensorProto) -> bool {
    t.data_location == proto::DATA_LOCATION_EXTERNAL
}

/// Raw little-endian elements of a tensor (`raw_data`), or `None` when absent.
fn raw(t: &TensorProto) -> Option<&[u8]> {
    (!t.raw_data.is_empty()).then_some(&t.raw_data[..])
}

/// The values of a float-typed tensor (float32/float16/bfloat16/float64) as f32.
fn tensor_f32(t: &TensorProto) -> Option<Vec<f32>> {
    if is_external(t) {
        return None;
    }
    let half = |bits: u16| f16_to_f32(bits);
    let bf = |bits: u16| f32::from_bits(u32::from(bits) << 16);
    match t.data_type {
        dt::FLOAT => Some(match raw(t) {
            Some(r) => r
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
            None => t.float_data.clone(),
        }),
        dt::FLOAT16 | dt::BFLOAT16 => {
            let conv: &dyn Fn(u16) -> f32 = if t.data_type == dt::FLOAT16 {
                &half
            } else {
                &bf
            };
            Some(match raw(t) {
                Some(r) => r
                    .chunks_exact(2)
                    .map(|c| conv(u16::from_le_bytes([c[0], c[1]])))
                    .collect(),
                None => t.int32_data.iter().map(|&v| conv(v as u16)).collect(),
            })
        }
        dt::DOUBLE => Some(match raw(t) {
            Some(r) => r
                .chunks_exact(8)
                .map(|c| {
                    f64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]) as f32
                })
                .collect(),
            None => t.double_data.iter().map(|&v| v as f32).collect(),
        }),
        _ => None,
    }
}

/// The values of an integer-typed tensor as i64 (4-bit types unpacked, low nibble first;
/// 8-bit float zero points are returned as their raw byte values).
fn tensor_i64(t: &TensorProto) -> Option<Vec<i64>> {
    if is_external(t) {
        return None;
    }
    let n = usize::try_from(num_elements(&t.dims)).unwrap_or(usize::MAX);
    let le = |w: usize, f: &dyn Fn(&[u8]) -> i64| -> Option<Vec<i64>> {
        raw(t).map(|r| r.chunks_exact(w).map(f).collect())
    };
    let v = match t.data_type {
        dt::INT8 => le(1, &|c| i64::from(c[0] as i8)),
        dt::UINT8
        | dt::BOOL
        | dt::FLOAT8E4M3FN
        | dt::FLOAT8E4M3FNUZ
        | dt::FLOAT8E5M2
        | dt::FLOAT8E5M2FNUZ => le(1, &|c| i64::from(c[0])),
        dt::INT16 => le(2, &|c| i64::from(i16::from_le_bytes([c[0], c[1]]))),
        dt::UINT16 => le(2, &|c| i64::from(u16::from_le_bytes([c[0], c[1]]))),
        dt::INT32 => le(4, &|c| {
            i64::from(i32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        }),
        dt::UINT32 => le(4, &|c| {
            i64::from(u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        }),
        dt::INT64 => le(8, &|c| {
            i64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]])
        }),
        dt::UINT64 => le(8, &|c| {
            u64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]) as i64
        }),
        dt::INT4 | dt::UINT4 => {
            let signed = t.data_type == dt::INT4;
            let bytes: Vec<u8> = match raw(t) {
                Some(r) => r.to_vec(),
                None => t.int32_data.iter().map(|&v| v as u8).collect(),
            };
            let mut vals = Vec::with_capacity(bytes.len() * 2);
            for b in bytes {
                for nib in [b & 0x0f, b >> 4] {
                    vals.push(if signed {
                        i64::from(((nib << 4) as i8) >> 4)
                    } else {
                        i64::from(nib)
                    });
                }
            }
            vals.truncate(n);
            return Some(vals);
        }
        _ => None,
    };
    v.or_else(|| match t.data_type {
        dt::INT64 => Some(t.int64_data.clone()),
        dt::UINT64 => Some(t.uint64_data.iter().map(|&v| v as i64).collect()),
        dt::INT8 => Some(t.int32_data.iter().map(|&v| i64::from(v as i8)).collect()),
        dt::UINT8 => Some(t.int32_data.iter().map(|&v| i64::from(v as u8)).collect()),
        dt::INT16 => Some(t.int32_data.iter().map(|&v| i64::from(v as i16)).collect()),
        dt::UINT16 => Some(t.int32_data.iter().map(|&v| i64::from(v as u16)).collect()),
        dt::INT32 | dt::BOOL | dt::UINT32 => {
            Some(t.int32_data.iter().map(|&v| i64::from(v)).collect())
        }
        _ => Some(t.int32_data.iter().map(|&v| i64::from(v)).collect()),
    })
}

/// IEEE 754 binary16 → binary32.
fn f16_to_f32(h: u16) -> f32 {
    let sign = u32::from(h >> 15) << 31;
    let exp = u32::from((h >> 10) & 0x1f);
    let mant = u32::from(h & 0x3ff);
    let bits = match (exp, mant) {
        (0, 0) => sign,
        (0, m) => {
            // Subnormal: normalise.
            let mut e: i32 = -14;
            let mut m = m;
            while m & 0x400 == 0 {
                m <<= 1;
                e -= 1;
            }
            sign | (((e + 127) as u32) << 23) | ((m & 0x3ff) << 13)
        }
        (0x1f, m) => sign | 0x7f80_0000 | (m << 13),
        (e, m) => sign | ((e + 127 - 15) << 23) | (m << 13),
    };
    f32::from_bits(bits)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn f16_conversion() {
        assert_eq!(f16_to_f32(0x3c00), 1.0);
        assert_eq!(f16_to_f32(0xc000), -2.0);
        assert_eq!(f16_to_f32(0x0001), 2f32.powi(-24));
        assert!(f16_to_f32(0x7c00).is_infinite());
        assert_eq!(f16_to_f32(0x3555), 0.333_251_95);
    }

    #[test]
    fn raw_data_is_not_copied_when_decoding_from_bytes() {
        let model = ModelProto {
            graph: Some(GraphProto {
                initializer: vec![TensorProto {
                    name: "w".into(),
                    dims: vec![1024],
                    data_type: dt::FLOAT,
                    raw_data: vec![7u8; 4096].into(),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            ..Default::default()
        };
        let buf = Bytes::from(model.encode_to_vec());
        let decoded = decode_model(buf.clone()).expect("decode");
        let raw = &decoded.graph.expect("graph").initializer[0].raw_data;
        let range = buf.as_ptr_range();
        assert!(
            range.contains(&raw.as_ptr()),
            "raw_data must slice the input buffer"
        );
    }

    fn n(op: &str, domain: &str, inputs: &[&str], outputs: &[&str]) -> NodeProto {
        NodeProto {
            op_type: op.into(),
            domain: domain.into(),
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: outputs.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        }
    }

    fn scalar(name: &str, data_type: i32, raw: &[u8]) -> TensorProto {
        TensorProto {
            name: name.into(),
            data_type,
            raw_data: Bytes::copy_from_slice(raw),
            ..Default::default()
        }
    }

    #[test]
    fn dynamic_integer_and_concat_quantization() {
        let graph = GraphProto {
            node: vec![
                n("DynamicQuantizeLinear", "", &["x"], &["xq", "xs", "xz"]),
                n("MatMulInteger", "", &["xq", "w", "xz", "wz"], &["mm"]),
                n(
                    "QLinearConcat",
                    "com.microsoft",
                    &["ys", "yz", "a", "as", "az", "b", "as", "az"],
                    &["y"],
                ),
            ],
            initializer: vec![
                scalar("wz", dt::INT8, &[0xfe]),
                scalar("ys", dt::FLOAT16, &[0x00, 0x3c]),
                scalar("yz", dt::UINT8, &[128]),
                scalar("as", dt::DOUBLE, &0.5f64.to_le_bytes()),
                scalar("az", dt::UINT8, &[7]),
            ],
            ..Default::default()
        };
        let model = ModelProto {
            graph: Some(graph),
            ..Default::default()
        };
        let info = inspect_model("t.onnx", &model).expect("inspect");
        let got: Vec<_> = info
            .quantization
            .iter()
            .map(|q| {
                (
                    q.tensor.as_str(),
                    q.source.as_str(),
                    q.scale.clone(),
                    q.zero_point.clone(),
                    q.dtype.as_str(),
                )
            })
            .collect();
        assert_eq!(
            got,
            vec![
                ("xq", "DynamicQuantizeLinear", vec![], vec![], "uint8"),
                ("xq", "MatMulInteger", vec![], vec![], "uint8"),
                ("w", "MatMulInteger", vec![], vec![-2], "int8"),
                ("y", "QLinearConcat", vec![1.0], vec![128], "uint8"),
                ("a", "QLinearConcat", vec![0.5], vec![7], "uint8"),
                ("b", "QLinearConcat", vec![0.5], vec![7], "uint8"),
            ]
        );
        assert_eq!(
            info.operators,
            [
                "DynamicQuantizeLinear",
                "MatMulInteger",
                "com.microsoft:QLinearConcat"
            ]
        );
        // Every weight here is a quantization parameter: nothing is left to decide precision.
        assert_eq!(info.precision, crate::Precision::Unknown);
    }

    fn int_attr(name: &str, v: i64) -> AttributeProto {
        AttributeProto {
            name: name.into(),
            i: Some(v),
            ..Default::default()
        }
    }

    #[test]
    fn quantize_output_dtype_and_dynamic_outputs_reach_their_readers() {
        let mut q = n("QuantizeLinear", "", &["x", "s"], &["xq"]);
        q.attribute
            .push(int_attr("output_dtype", i64::from(dt::INT8)));
        let graph = GraphProto {
            node: vec![
                q,
                n("DequantizeLinear", "", &["xq", "s"], &["xd"]),
                n("DynamicQuantizeLinear", "", &["xd"], &["yq", "ys", "yz"]),
                n("DequantizeLinear", "", &["yq", "ys"], &["y"]),
            ],
            initializer: vec![scalar("s", dt::FLOAT, &0.5f32.to_le_bytes())],
            ..Default::default()
        };
        let model = ModelProto {
            graph: Some(graph),
            ..Default::default()
        };
        let info = inspect_model("q.onnx", &model).expect("inspect");
        let got: Vec<_> = info
            .quantization
            .iter()
            .map(|q| (q.tensor.as_str(), q.source.as_str(), q.dtype.as_str()))
            .collect();
        assert_eq!(
            got,
            vec![
                ("xq", "QuantizeLinear", "int8"),
                ("xq", "DequantizeLinear", "int8"),
                ("yq", "DynamicQuantizeLinear", "uint8"),
                ("yq", "DequantizeLinear", "uint8"),
            ]
        );
    }

    #[test]
    fn subgraphs_count_for_precision_operators_and_quantization() {
        let int8_weights = TensorProto {
            name: "w".into(),
            dims: vec![64],
            data_type: dt::INT8,
            raw_data: Bytes::from(vec![1u8; 64]),
            ..Default::default()
        };
        let body = GraphProto {
            node: vec![
                n("DequantizeLinear", "", &["w", "ws", "wz"], &["wd"]),
                n("MatMul", "", &["x", "wd"], &["y"]),
            ],
            initializer: vec![
                int8_weights,
                scalar("ws", dt::FLOAT, &0.25f32.to_le_bytes()),
                scalar("wz", dt::INT8, &[0]),
            ],
            ..Default::default()
        };
        let mut if_node = n("If", "", &["cond"], &["out"]);
        if_node.attribute.push(AttributeProto {
            name: "then_branch".into(),
            g: Some(Box::new(body)),
            ..Default::default()
        });
        if_node.attribute.push(AttributeProto {
            name: "else_branch".into(),
            g: Some(Box::new(GraphProto {
                node: vec![n("Identity", "", &["x"], &["y"])],
                ..Default::default()
            })),
            ..Default::default()
        });
        let model = ModelProto {
            graph: Some(GraphProto {
                node: vec![if_node],
                ..Default::default()
            }),
            ..Default::default()
        };
        let info = inspect_model("if.onnx", &model).expect("inspect");
        assert_eq!(info.precision, crate::Precision::Int8);
        assert_eq!(
            info.operators,
            ["DequantizeLinear", "Identity", "If", "MatMul"]
        );
        assert_eq!(info.quantization.len(), 1);
        assert_eq!(info.quantization[0].scale, vec![0.25]);
        assert_eq!(info.quantization[0].dtype, "int8");
    }

    #[test]
    fn int4_unpacking() {
        let t = TensorProto {
            data_type: dt::INT4,
            dims: vec![3],
            raw_data: Bytes::from_static(&[0xf7, 0x08]),
            ..Default::default()
        };
        assert_eq!(tensor_i64(&t), Some(vec![7, -1, -8]));
    }
}

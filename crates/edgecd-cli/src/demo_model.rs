//! A small, real ONNX classifier that the demo (and tests) generate instead of downloading:
//! `probs = Softmax(Gemm(Relu(Gemm(features, W1, b1)), W2, b2))`, 16 features → 4 classes,
//! deterministic weights from a seed. Written with edgecd-inspect's ONNX protobuf types.
use edgecd_inspect::onnx::proto::{
    AttributeProto, GraphProto, ModelProto, NodeProto, OperatorSetIdProto, TensorProto,
    TensorShapeProto, TypeProto, ValueInfoProto, attribute_type, data_type, tensor_shape_proto,
    type_proto,
};
use prost::Message;

pub const INPUTS: usize = 16;
pub const HIDDEN: usize = 8;
pub const CLASSES: usize = 4;

fn value_info(name: &str, dims: &[i64]) -> ValueInfoProto {
    use tensor_shape_proto::{Dimension, dimension::Value};
    ValueInfoProto {
        name: name.into(),
        r#type: Some(TypeProto {
            value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                elem_type: Some(data_type::FLOAT),
                shape: Some(TensorShapeProto {
                    dim: dims
                        .iter()
                        .map(|d| Dimension {
                            value: Some(Value::DimValue(*d)),
                            ..Default::default()
                        })
                        .collect(),
                }),
            })),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn weights(name: &str, dims: &[i64], seed: &mut u64) -> TensorProto {
    let n: i64 = dims.iter().product();
    let data: Vec<u8> = (0..n)
        .flat_map(|_| {
            *seed ^= *seed << 13;
            *seed ^= *seed >> 7;
            *seed ^= *seed << 17;
            let v = ((*seed >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 0.8;
            v.to_le_bytes()
        })
        .collect();
    TensorProto {
        name: name.into(),
        dims: dims.to_vec(),
        data_type: data_type::FLOAT,
        raw_data: data.into(),
        ..Default::default()
    }
}

fn node(op: &str, inputs: &[&str], output: &str, attribute: Vec<AttributeProto>) -> NodeProto {
    NodeProto {
        input: inputs.iter().map(|s| s.to_string()).collect(),
        output: vec![output.to_string()],
        name: output.to_string(),
        op_type: op.into(),
        attribute,
        ..Default::default()
    }
}

/// The encoded model for `seed` (different seeds: different weights, same architecture).
pub fn classifier_onnx(seed: u64) -> Vec<u8> {
    classifier_onnx_sized(seed, HIDDEN, 0)
}

/// The same classifier with `hidden` units per layer and `extra_layers` more hidden layers:
/// a heavier model, for a real latency regression.
pub fn classifier_onnx_sized(seed: u64, hidden: usize, extra_layers: usize) -> Vec<u8> {
    classifier_onnx_custom(seed, hidden, extra_layers, "features")
}

/// Fully configurable: also the name of the input tensor (a model whose input signature no
/// longer matches what callers send is a classic bad release).
pub fn classifier_onnx_custom(
    seed: u64,
    hidden: usize,
    extra_layers: usize,
    input: &str,
) -> Vec<u8> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let (i, h, c) = (INPUTS as i64, hidden as i64, CLASSES as i64);
    let mut initializer = vec![weights("W1", &[i, h], &mut s), weights("b1", &[h], &mut s)];
    let mut nodes = vec![
        node("Gemm", &[input, "W1", "b1"], "hidden0", vec![]),
        node("Relu", &["hidden0"], "act0", vec![]),
    ];
    for l in 1..=extra_layers {
        let (w, b) = (format!("Wh{l}"), format!("bh{l}"));
        initializer.push(weights(&w, &[h, h], &mut s));
        initializer.push(weights(&b, &[h], &mut s));
        let (prev, hid, act) = (
            format!("act{}", l - 1),
            format!("hidden{l}"),
            format!("act{l}"),
        );
        nodes.push(node("Gemm", &[&prev, &w, &b], &hid, vec![]));
        nodes.push(node("Relu", &[&hid], &act, vec![]));
    }
    initializer.push(weights("W2", &[h, c], &mut s));
    initializer.push(weights("b2", &[c], &mut s));
    let last = format!("act{extra_layers}");
    nodes.push(node("Gemm", &[&last, "W2", "b2"], "logits", vec![]));
    nodes.push(node(
        "Softmax",
        &["logits"],
        "probs",
        vec![AttributeProto {
            name: "axis".into(),
            r#type: Some(attribute_type::INT),
            i: Some(1),
            ..Default::default()
        }],
    ));
    let graph = GraphProto {
        name: "receipt-classifier".into(),
        initializer,
        node: nodes,
        input: vec![value_info(input, &[1, i])],
        output: vec![value_info("probs", &[1, c])],
        ..Default::default()
    };
    ModelProto {
        ir_version: Some(8),
        opset_import: vec![OperatorSetIdProto {
            domain: String::new(),
            version: Some(13),
        }],
        producer_name: "edgecd-demo".into(),
        producer_version: env!("CARGO_PKG_VERSION").into(),
        graph: Some(graph),
        ..Default::default()
    }
    .encode_to_vec()
}

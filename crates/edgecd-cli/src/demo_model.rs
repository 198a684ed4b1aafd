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
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let (i, h, c) = (INPUTS as i64, HIDDEN as i64, CLASSES as i64);
    let graph = GraphProto {
        name: "receipt-classifier".into(),
        initializer: vec![
            weights("W1", &[i, h], &mut s),
            weights("b1", &[h], &mut s),
            weights("W2", &[h, c], &mut s),
            weights("b2", &[c], &mut s),
        ],
        node: vec![
            node("Gemm", &["features", "W1", "b1"], "hidden", vec![]),
            node("Relu", &["hidden"], "act", vec![]),
            node("Gemm", &["act", "W2", "b2"], "logits", vec![]),
            node(
                "Softmax",
                &["logits"],
                "probs",
                vec![AttributeProto {
                    name: "axis".into(),
                    r#type: Some(attribute_type::INT),
                    i: Some(1),
                    ..Default::default()
                }],
            ),
        ],
        input: vec![value_info("features", &[1, i])],
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

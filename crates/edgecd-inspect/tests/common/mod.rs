//! Helpers shared by edgecd-inspect's integration tests: running the Python reference scripts
//! in the test venv, locating the `onnx` wheel's light models and unpacking the PP-OCR models.

#![allow(dead_code)]

use std::path::PathBuf;

/// `tests/py/<name>`.
pub fn script(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/py")
        .join(name)
}

#[allow(unused_imports)]
pub use edgecd_testkit::{light_models, ppocr_models, run_py};

use edgecd_inspect::onnx::proto::{
    AttributeProto, GraphProto, ModelProto, NodeProto, OperatorSetIdProto, TensorProto,
    TensorShapeProto, TypeProto, ValueInfoProto, attribute_type, data_type, tensor_shape_proto,
    type_proto,
};

fn value_info(name: &str, elem: i32, dims: &[Result<i64, &str>]) -> ValueInfoProto {
    use tensor_shape_proto::{Dimension, dimension::Value};
    let dim = dims
        .iter()
        .map(|d| Dimension {
            value: Some(match d {
                Ok(n) => Value::DimValue(*n),
                Err(p) => Value::DimParam((*p).to_string()),
            }),
            ..Default::default()
        })
        .collect();
    ValueInfoProto {
        name: name.into(),
        r#type: Some(TypeProto {
            value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                elem_type: Some(elem),
                shape: Some(TensorShapeProto { dim }),
            })),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn node(op: &str, inputs: &[&str], outputs: &[&str], attribute: Vec<AttributeProto>) -> NodeProto {
    NodeProto {
        input: inputs.iter().map(|s| s.to_string()).collect(),
        output: outputs.iter().map(|s| s.to_string()).collect(),
        name: outputs[0].to_string(),
        op_type: op.into(),
        attribute,
        ..Default::default()
    }
}

fn int_attr(name: &str, i: i64) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        r#type: Some(attribute_type::INT),
        i: Some(i),
        ..Default::default()
    }
}

fn tensor_attr(t: TensorProto) -> AttributeProto {
    AttributeProto {
        name: "value".into(),
        r#type: Some(attribute_type::TENSOR),
        t: Some(t),
        ..Default::default()
    }
}

/// A small QDQ model written with edgecd's own prost structs:
/// `y = Flatten(MatMul(DQ(Q(x)), DQ(w)), axis=0)`, with the activation scale/zero point in
/// `Constant` nodes (raw_data) and the per-axis weight scale/zero point as initializers in the
/// typed fields (float_data, int32_data).
/// Expected quantization: x (scale 0.5, zp 3, uint8) twice, w (scales [0.25, 0.125], zps [-1, 2],
/// int8, axis 1).
pub fn demo_qdq_model() -> ModelProto {
    let w: [i8; 8] = [1, -2, 3, -4, 5, -6, 7, -127];
    let init = vec![
        TensorProto {
            name: "w".into(),
            dims: vec![4, 2],
            data_type: data_type::INT8,
            raw_data: w.iter().map(|v| *v as u8).collect::<Vec<u8>>().into(),
            ..Default::default()
        },
        TensorProto {
            name: "w_scale".into(),
            dims: vec![2],
            data_type: data_type::FLOAT,
            float_data: vec![0.25, 0.125],
            ..Default::default()
        },
        TensorProto {
            name: "w_zp".into(),
            dims: vec![2],
            data_type: data_type::INT8,
            int32_data: vec![-1, 2],
            ..Default::default()
        },
    ];
    let nodes = vec![
        node(
            "Constant",
            &[],
            &["x_scale"],
            vec![tensor_attr(TensorProto {
                data_type: data_type::FLOAT,
                raw_data: 0.5f32.to_le_bytes().to_vec().into(),
                ..Default::default()
            })],
        ),
        node(
            "Constant",
            &[],
            &["x_zp"],
            vec![tensor_attr(TensorProto {
                data_type: data_type::UINT8,
                raw_data: vec![3u8].into(),
                ..Default::default()
            })],
        ),
        node("QuantizeLinear", &["x", "x_scale", "x_zp"], &["xq"], vec![]),
        node(
            "DequantizeLinear",
            &["xq", "x_scale", "x_zp"],
            &["xd"],
            vec![],
        ),
        node(
            "DequantizeLinear",
            &["w", "w_scale", "w_zp"],
            &["wd"],
            vec![int_attr("axis", 1)],
        ),
        node("MatMul", &["xd", "wd"], &["mm"], vec![]),
        node("Flatten", &["mm"], &["y"], vec![int_attr("axis", 0)]),
    ];
    ModelProto {
        ir_version: Some(7),
        opset_import: vec![OperatorSetIdProto {
            domain: String::new(),
            version: Some(13),
        }],
        producer_name: "edgecd-test".into(),
        producer_version: "1".into(),
        graph: Some(GraphProto {
            node: nodes,
            name: "demo".into(),
            initializer: init,
            input: vec![value_info("x", data_type::FLOAT, &[Err("n"), Ok(4)])],
            output: vec![value_info("y", data_type::FLOAT, &[Ok(1), Err("n2")])],
            ..Default::default()
        }),
        ..Default::default()
    }
}

//! Test helpers: tiny ONNX models written as raw protobuf (no Python needed), installed bundle
//! directories, and a minimal HTTP/1.1 client over a TCP socket.
#![allow(dead_code)]

use edgecd_api::model::{ModelFormat, ModelInfo, Precision, TensorSignature};
use edgecd_api::profile::{HardwareProfile, ModelEntry, Profile, RuntimePin, SelfTest};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

// ---- protobuf writer -------------------------------------------------------------------------

fn varint(out: &mut Vec<u8>, mut v: u64) {
    loop {
        let b = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            out.push(b);
            return;
        }
        out.push(b | 0x80);
    }
}

fn field_varint(out: &mut Vec<u8>, field: u32, v: u64) {
    varint(out, u64::from(field) << 3);
    varint(out, v);
}

fn field_bytes(out: &mut Vec<u8>, field: u32, b: &[u8]) {
    varint(out, (u64::from(field) << 3) | 2);
    varint(out, b.len() as u64);
    out.extend_from_slice(b);
}

fn node(inputs: &[&str], outputs: &[&str], name: &str, op: &str) -> Vec<u8> {
    let mut n = Vec::new();
    for i in inputs {
        field_bytes(&mut n, 1, i.as_bytes());
    }
    for o in outputs {
        field_bytes(&mut n, 2, o.as_bytes());
    }
    field_bytes(&mut n, 3, name.as_bytes());
    field_bytes(&mut n, 4, op.as_bytes());
    n
}

fn float_tensor(name: &str, dims: &[u64], data: &[f32]) -> Vec<u8> {
    let mut t = Vec::new();
    for d in dims {
        field_varint(&mut t, 1, *d);
    }
    field_varint(&mut t, 2, 1); // FLOAT
    let raw: Vec<u8> = data.iter().flat_map(|f| f.to_le_bytes()).collect();
    field_bytes(&mut t, 8, name.as_bytes());
    field_bytes(&mut t, 9, &raw); // raw_data
    t
}

/// A float tensor value info; `None` dims are symbolic ("N").
fn value_info(name: &str, dims: &[Option<u64>]) -> Vec<u8> {
    let mut shape = Vec::new();
    for d in dims {
        let mut dim = Vec::new();
        match d {
            Some(v) => field_varint(&mut dim, 1, *v),
            None => field_bytes(&mut dim, 2, b"N"),
        }
        field_bytes(&mut shape, 1, &dim);
    }
    let mut tensor_type = Vec::new();
    field_varint(&mut tensor_type, 1, 1);
    field_bytes(&mut tensor_type, 2, &shape);
    let mut type_proto = Vec::new();
    field_bytes(&mut type_proto, 1, &tensor_type);
    let mut vi = Vec::new();
    field_bytes(&mut vi, 1, name.as_bytes());
    field_bytes(&mut vi, 2, &type_proto);
    vi
}

fn model(graph: &[u8]) -> Vec<u8> {
    let mut m = Vec::new();
    field_varint(&mut m, 1, 8); // ir_version
    let mut opset = Vec::new();
    field_bytes(&mut opset, 1, b"");
    field_varint(&mut opset, 2, 13);
    field_bytes(&mut m, 8, &opset);
    field_bytes(&mut m, 7, graph);
    m
}

/// The classifier weights: logits = x · W + bias, x: [N, 4], W: [4, 3].
pub const W: [f32; 12] = [
    0.5, -1.0, 0.25, 1.0, 0.0, -0.5, -0.25, 0.75, 1.5, 0.1, 0.2, 0.3,
];

/// A 4-feature, 3-class linear classifier with a symbolic batch dimension: input `x` [N, 4],
/// output `logits` [N, 3]. `bias` tells models apart.
pub fn tiny_classifier(bias: [f32; 3]) -> Vec<u8> {
    let mut g = Vec::new();
    field_bytes(&mut g, 1, &node(&["x", "W"], &["xw"], "matmul", "MatMul"));
    field_bytes(&mut g, 1, &node(&["xw", "B"], &["logits"], "add", "Add"));
    field_bytes(&mut g, 2, b"tiny");
    field_bytes(&mut g, 5, &float_tensor("W", &[4, 3], &W));
    field_bytes(&mut g, 5, &float_tensor("B", &[3], &bias));
    field_bytes(&mut g, 11, &value_info("x", &[None, Some(4)]));
    field_bytes(&mut g, 12, &value_info("logits", &[None, Some(3)]));
    model(&g)
}

/// A model whose only node is an operator no runtime knows.
pub fn unsupported_model() -> Vec<u8> {
    let mut g = Vec::new();
    field_bytes(&mut g, 1, &node(&["x"], &["y"], "frob", "FrobnicateOp"));
    field_bytes(&mut g, 2, b"unsupported");
    field_bytes(&mut g, 11, &value_info("x", &[Some(1), Some(4)]));
    field_bytes(&mut g, 12, &value_info("y", &[Some(1), Some(4)]));
    model(&g)
}

/// A model that loads but fails every run: `y = Gather(x, indices=[5], axis=0)` on `x` [N, 4].
/// With N symbolic tract cannot check the index when it loads the model; any request with
/// fewer than 6 rows (every generated input, N = 1) is out of bounds — like a model exported
/// with an index that assumes a larger batch.
pub fn gather_out_of_bounds_model() -> Vec<u8> {
    let mut idx = Vec::new();
    field_varint(&mut idx, 1, 1); // dims [1]
    field_varint(&mut idx, 2, 7); // INT64
    field_bytes(&mut idx, 8, b"idx");
    field_bytes(&mut idx, 9, &5i64.to_le_bytes());
    let mut gather = node(&["x", "idx"], &["y"], "gather", "Gather");
    let mut axis = Vec::new();
    field_bytes(&mut axis, 1, b"axis");
    field_varint(&mut axis, 3, 0); // i
    field_varint(&mut axis, 20, 2); // type INT
    field_bytes(&mut gather, 5, &axis);
    let mut g = Vec::new();
    field_bytes(&mut g, 1, &gather);
    field_bytes(&mut g, 2, b"gather_oob");
    field_bytes(&mut g, 5, &idx);
    field_bytes(&mut g, 11, &value_info("x", &[None, Some(4)]));
    field_bytes(&mut g, 12, &value_info("y", &[Some(1), Some(4)]));
    model(&g)
}

/// What `tiny_classifier(bias)` computes.
pub fn expected_logits(x: &[f32], bias: [f32; 3]) -> Vec<f32> {
    let mut out = Vec::new();
    for row in x.chunks(4) {
        for j in 0..3 {
            out.push((0..4).map(|k| row[k] * W[k * 3 + j]).sum::<f32>() + bias[j]);
        }
    }
    out
}

// ---- Python helpers -------------------------------------------------------------------------

/// Runs `tests/py/SCRIPT OUT_DIR` with the test venv's Python into a fresh directory; `None`
/// (the test is skipped) when the venv is not installed.
pub fn py_outputs(script: &str) -> Option<tempfile::TempDir> {
    let python = edgecd_testkit::python()?;
    let dir = tempfile::tempdir().unwrap();
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/py")
        .join(script);
    let st = std::process::Command::new(python)
        .arg(path)
        .arg(dir.path())
        .status()
        .unwrap();
    assert!(st.success(), "{script} failed");
    Some(dir)
}

/// A tensor's values as f64, in order.
pub fn tensor_values(t: &tract_onnx::prelude::Tensor) -> Vec<f64> {
    t.cast_to::<f64>()
        .unwrap()
        .to_plain_array_view::<f64>()
        .unwrap()
        .iter()
        .copied()
        .collect()
}

// ---- bundles -------------------------------------------------------------------------------

fn sig(name: &str, shape: Vec<Option<i64>>) -> TensorSignature {
    TensorSignature {
        name: name.into(),
        dtype: "float32".into(),
        shape,
        dim_names: vec![],
    }
}

/// Writes an installed bundle: `dir/profile.json` and `dir/models/model.onnx`.
pub fn write_bundle(
    dir: &Path,
    name: &str,
    version: &str,
    model_bytes: &[u8],
    selftest: Option<SelfTest>,
) {
    std::fs::create_dir_all(dir.join("models")).unwrap();
    std::fs::write(dir.join("models/model.onnx"), model_bytes).unwrap();
    let profile = Profile {
        schema_version: 1,
        name: name.into(),
        version: version.into(),
        hardware: HardwareProfile {
            board: "rpi5".into(),
            accelerator: None,
            min_ram_mb: None,
        },
        runtime: RuntimePin {
            name: "edgecd-infer".into(),
            version: "0.1.0".into(),
        },
        models: vec![ModelEntry {
            filepath: "model.onnx".into(),
            digest: "sha256:00".into(),
            size: model_bytes.len() as u64,
            info: ModelInfo {
                format: ModelFormat::Onnx,
                precision: Precision::Float32,
                producer: None,
                opset: Some(13),
                inputs: vec![sig("x", vec![None, Some(4)])],
                outputs: vec![sig("logits", vec![None, Some(3)])],
                operators: vec!["Add".into(), "MatMul".into()],
                weight_dtypes: BTreeMap::new(),
                quantization: vec![],
            },
        }],
        selftest,
        labels: BTreeMap::new(),
    };
    std::fs::write(
        dir.join("profile.json"),
        serde_json::to_vec_pretty(&profile).unwrap(),
    )
    .unwrap();
}

/// Points `link` at `target` atomically (symlink to a temp name, then rename), like the agent.
pub fn swap_symlink(link: &Path, target: &Path) {
    let tmp = link.with_extension("tmp");
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(target, &tmp).unwrap();
    std::fs::rename(&tmp, link).unwrap();
}

pub fn config(dir: &Path, thermal: PathBuf) -> edgecd_infer::ServeConfig {
    let mut cfg = edgecd_infer::ServeConfig::new(dir, 2);
    cfg.listen = "127.0.0.1:0".parse().unwrap();
    cfg.thermal_path = thermal;
    cfg.thermal_interval = std::time::Duration::from_millis(20);
    cfg
}

// ---- HTTP client ---------------------------------------------------------------------------

pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// One HTTP/1.1 request on a fresh connection (`Connection: close`).
pub async fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> std::io::Result<Reply> {
    let mut s = tokio::net::TcpStream::connect(addr).await?;
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).await?;
    s.write_all(body).await?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await?;
    let split = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| std::io::Error::other("no header end"))?;
    let head = String::from_utf8_lossy(&buf[..split]).into_owned();
    let mut lines = head.split("\r\n");
    let status: u16 = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| std::io::Error::other("bad status line"))?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    let mut body = buf[split + 4..].to_vec();
    if headers
        .iter()
        .any(|(k, v)| k.eq_ignore_ascii_case("transfer-encoding") && v.contains("chunked"))
    {
        let mut out = Vec::new();
        let mut rest = &body[..];
        while let Some(nl) = rest.windows(2).position(|w| w == b"\r\n") {
            let n =
                usize::from_str_radix(String::from_utf8_lossy(&rest[..nl]).trim(), 16).unwrap_or(0);
            if n == 0 {
                break;
            }
            out.extend_from_slice(&rest[nl + 2..nl + 2 + n]);
            rest = &rest[nl + 2 + n + 2..];
        }
        body = out;
    }
    Ok(Reply {
        status,
        headers,
        body,
    })
}

/// `POST /v1/infer` of `rows` rows of `x` as JSON.
pub async fn post_infer(addr: SocketAddr, x: &[f32], rows: usize) -> Reply {
    http(
        addr,
        "POST",
        "/v1/infer",
        &[("Content-Type", "application/json")],
        &infer_body(x, rows),
    )
    .await
    .unwrap()
}

pub fn infer_body(x: &[f32], rows: usize) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({"inputs": [{"name": "x", "dtype": "float32", "shape": [rows, 4], "data": x}]})).unwrap()
}

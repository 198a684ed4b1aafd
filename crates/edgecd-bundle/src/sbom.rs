//! CycloneDX 1.6 SBOM for a bundle: the bundle as the described component, one
//! `machine-learning-model` component per model file (SHA-256, model card with inputs,
//! outputs, precision and quantization), the pinned runtime and the target board.
//! Deterministic: no timestamps; the serial number is derived from the content.
use edgecd_api::profile::{HardwareProfile, ModelEntry, RuntimePin};
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};

pub const CYCLONEDX_SPEC_VERSION: &str = "1.6";

/// Everything the SBOM describes.
pub struct SbomInput<'a> {
    pub name: &'a str,
    pub version: &'a str,
    pub models: &'a [ModelEntry],
    pub runtime: &'a RuntimePin,
    pub hardware: &'a HardwareProfile,
    pub tool_version: &'a str,
}

/// A content-derived RFC 4122 UUID (version 5 layout) so rebuilding gives the same SBOM.
fn serial_number(input: &SbomInput<'_>) -> String {
    let mut h = Sha256::new();
    for part in [
        input.name,
        input.version,
        &input.runtime.to_string(),
        &input.hardware.board,
    ] {
        h.update(part.as_bytes());
        h.update([0]);
    }
    for m in input.models {
        h.update(m.filepath.as_bytes());
        h.update([0]);
        h.update(m.digest.as_bytes());
        h.update([0]);
    }
    let d = h.finalize();
    let mut b = [0u8; 16];
    b.copy_from_slice(&d[..16]);
    b[6] = (b[6] & 0x0f) | 0x50;
    b[8] = (b[8] & 0x3f) | 0x80;
    let x = hex::encode(b);
    format!(
        "urn:uuid:{}-{}-{}-{}-{}",
        &x[0..8],
        &x[8..12],
        &x[12..16],
        &x[16..20],
        &x[20..32]
    )
}

fn tensor_format(t: &edgecd_api::model::TensorSignature) -> String {
    let dims: Vec<String> = t
        .shape
        .iter()
        .enumerate()
        .map(|(i, d)| match d {
            Some(v) => v.to_string(),
            None => t
                .dim_names
                .get(i)
                .cloned()
                .filter(|s| !s.is_empty())
                .unwrap_or_else(|| "?".into()),
        })
        .collect();
    format!("{} {}[{}]", t.name, t.dtype, dims.join(","))
}

fn model_component(m: &ModelEntry, version: &str) -> Value {
    let info = &m.info;
    let hex = crate::digest::digest_hex(&m.digest).unwrap_or_default();
    let fmt = serde_json::to_value(info.format).expect("enum serializes");
    let precision = serde_json::to_value(info.precision).expect("enum serializes");
    let mut props = vec![
        json!({"name": "edgecd:format", "value": fmt}),
        json!({"name": "edgecd:precision", "value": precision}),
        json!({"name": "edgecd:size", "value": m.size.to_string()}),
        json!({"name": "edgecd:quantized-tensors", "value": info.quantization.len().to_string()}),
    ];
    if let Some(opset) = info.opset {
        props.push(json!({"name": "edgecd:opset", "value": opset.to_string()}));
    }
    if let Some(p) = &info.producer {
        props.push(json!({"name": "edgecd:producer", "value": p}));
    }
    if !info.operators.is_empty() {
        props.push(json!({"name": "edgecd:operators", "value": info.operators.join(",")}));
    }
    let mut params = serde_json::Map::new();
    params.insert("modelArchitecture".into(), json!(m.filepath));
    if !info.inputs.is_empty() {
        params.insert(
            "inputs".into(),
            Value::Array(
                info.inputs
                    .iter()
                    .map(|t| json!({"format": tensor_format(t)}))
                    .collect(),
            ),
        );
    }
    if !info.outputs.is_empty() {
        params.insert(
            "outputs".into(),
            Value::Array(
                info.outputs
                    .iter()
                    .map(|t| json!({"format": tensor_format(t)}))
                    .collect(),
            ),
        );
    }
    json!({
        "type": "machine-learning-model",
        "bom-ref": format!("model:{}", m.filepath),
        "name": m.filepath,
        "version": version,
        "hashes": [{"alg": "SHA-256", "content": hex}],
        "properties": props,
        "modelCard": {
            "modelParameters": Value::Object(params),
            "considerations": {
                "technicalLimitations": [format!("quantization: {}", crate::metadata::quantization_summary(info))]
            }
        }
    })
}

/// Builds the SBOM JSON document.
pub fn build_sbom(input: &SbomInput<'_>) -> Value {
    let mut components: Vec<Value> = input
        .models
        .iter()
        .map(|m| model_component(m, input.version))
        .collect();
    let runtime_ref = format!("runtime:{}", input.runtime);
    components.push(json!({
        "type": "framework",
        "bom-ref": runtime_ref,
        "name": input.runtime.name,
        "version": input.runtime.version,
        "description": "inference runtime the bundle is pinned to"
    }));
    let board_ref = format!("device:{}", input.hardware.board);
    components.push(json!({"type": "device", "bom-ref": board_ref, "name": input.hardware.board}));
    let mut depends: Vec<Value> = input
        .models
        .iter()
        .map(|m| json!(format!("model:{}", m.filepath)))
        .collect();
    depends.push(json!(runtime_ref));
    depends.push(json!(board_ref));
    if let Some(acc) = &input.hardware.accelerator {
        let r = format!("device:{acc}");
        components.push(
            json!({"type": "device", "bom-ref": r, "name": acc, "description": "accelerator"}),
        );
        depends.push(json!(r));
    }
    let bundle_ref = format!("bundle:{}@{}", input.name, input.version);
    json!({
        "$schema": "http://cyclonedx.org/schema/bom-1.6.schema.json",
        "bomFormat": "CycloneDX",
        "specVersion": CYCLONEDX_SPEC_VERSION,
        "serialNumber": serial_number(input),
        "version": 1,
        "metadata": {
            "tools": {"components": [{"type": "application", "name": "edgecd", "version": input.tool_version}]},
            "component": {"type": "file", "bom-ref": bundle_ref, "name": input.name, "version": input.version,
                          "description": "edgecd model bundle"}
        },
        "components": components,
        "dependencies": [{"ref": bundle_ref, "dependsOn": depends}]
    })
}

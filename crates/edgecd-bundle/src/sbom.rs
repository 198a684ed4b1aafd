//! CycloneDX 1.6 SBOM for a bundle: the bundle as the described component, one
//! `machine-learning-model` component per model file (SHA-256, model card with inputs,
//! outputs, precision and quantization), the pinned runtime and the target board.
//! With a [`Provenance`]: one `data` component per dataset (its hash), the model card's
//! `datasets` (references to them) and `performanceMetrics` (the run's metrics), the git
//! commit as the bundle's `pedigree`, and a `formulation` whose workflow is the training run
//! (parameters, datasets in, models out).
//! Deterministic: no timestamps; the serial number is derived from the content.
use crate::provenance::{Provenance, TrackedFile};
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
    pub provenance: Option<&'a Provenance>,
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
    if let Some(p) = input.provenance {
        h.update(serde_json::to_vec(p).expect("provenance serializes"));
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

fn prop(name: &str, value: impl Into<String>) -> Value {
    json!({"name": name, "value": value.into()})
}

fn data_ref(f: &TrackedFile) -> String {
    format!("data:{}", f.path)
}

/// A dataset as a CycloneDX `data` component.
fn data_component(f: &TrackedFile) -> Value {
    let mut c = json!({
        "type": "data",
        "bom-ref": data_ref(f),
        "name": f.path,
        "data": [{"type": "dataset", "name": f.path}],
    });
    if let Some(md5) = f.md5() {
        c["hashes"] = json!([{"alg": "MD5", "content": md5}]);
    }
    if let Some(uri) = &f.uri {
        c["data"][0]["contents"] = json!({"url": uri});
    }
    let mut props = vec![
        prop("edgecd:origin", f.origin.as_str()),
        prop(&format!("{}:hash", f.origin), f.hash.as_str()),
    ];
    if let Some(s) = f.size {
        props.push(prop("edgecd:size", s.to_string()));
    }
    if let Some(n) = f.nfiles {
        props.push(prop("edgecd:nfiles", n.to_string()));
    }
    c["properties"] = Value::Array(props);
    c
}

/// The training run as a formulation workflow: parameters in, datasets in, models out.
fn formulation(p: &Provenance, models: &[ModelEntry]) -> Option<Value> {
    let run = p.training_run.as_ref()?;
    let mut inputs: Vec<Value> = p
        .datasets
        .iter()
        .map(|d| json!({"resource": {"ref": data_ref(d)}}))
        .collect();
    if !run.params.is_empty() {
        inputs.push(json!({"parameters": run.params.iter()
            .map(|(k, v)| json!({"name": k, "value": v})).collect::<Vec<_>>()}));
    }
    let outputs: Vec<Value> = models
        .iter()
        .map(|m| json!({"type": "artifact", "resource": {"ref": format!("model:{}", m.filepath)}}))
        .collect();
    let mut props = vec![prop("edgecd:training-system", run.system.as_str())];
    for (k, v) in [
        ("edgecd:experiment", &run.experiment),
        ("edgecd:model-uri", &run.model_uri),
        ("edgecd:command", &run.command),
    ] {
        if let Some(v) = v {
            props.push(prop(k, v.as_str()));
        }
    }
    if let Some(g) = &p.git {
        props.push(prop("edgecd:git-commit", g.commit.as_str()));
        if g.dirty {
            props.push(prop("edgecd:git-dirty", "true"));
        }
    }
    for (k, v) in &run.metrics {
        props.push(prop(&format!("{}:metric:{k}", run.system), v.to_string()));
    }
    let mut wf = json!({
        "bom-ref": format!("training:{}", run.id),
        "uid": run.id,
        "name": run.name.clone().unwrap_or_else(|| run.id.clone()),
        "description": format!("{} training run that produced the models", run.system),
        "taskTypes": ["build"],
        "properties": props,
    });
    if !inputs.is_empty() {
        wf["inputs"] = Value::Array(inputs);
    }
    if !outputs.is_empty() {
        wf["outputs"] = Value::Array(outputs);
    }
    Some(json!([{"bom-ref": "formulation:training", "workflows": [wf]}]))
}

fn model_component(m: &ModelEntry, version: &str, provenance: Option<&Provenance>) -> Value {
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
    let mut card = serde_json::Map::new();
    if let Some(p) = provenance {
        if !p.datasets.is_empty() {
            params.insert(
                "datasets".into(),
                p.datasets
                    .iter()
                    .map(|d| json!({"ref": data_ref(d)}))
                    .collect(),
            );
        }
        if let Some(run) = &p.training_run {
            props.push(prop(
                "edgecd:training-run",
                format!("{}:{}", run.system, run.id),
            ));
            if !run.metrics.is_empty() {
                card.insert(
                    "quantitativeAnalysis".into(),
                    json!({"performanceMetrics": run.metrics.iter()
                        .map(|(k, v)| json!({"type": k, "value": v.to_string()}))
                        .collect::<Vec<_>>()}),
                );
            }
        }
        for t in p.models.iter().filter(|t| t.path == m.filepath) {
            props.push(prop(&format!("{}:hash", t.origin), t.hash.as_str()));
        }
    }
    card.insert("modelParameters".into(), Value::Object(params));
    card.insert(
        "considerations".into(),
        json!({"technicalLimitations": [format!("quantization: {}", crate::metadata::quantization_summary(info))]}),
    );
    json!({
        "type": "machine-learning-model",
        "bom-ref": format!("model:{}", m.filepath),
        "name": m.filepath,
        "version": version,
        "hashes": [{"alg": "SHA-256", "content": hex}],
        "properties": props,
        "modelCard": Value::Object(card),
    })
}

/// Builds the SBOM JSON document.
pub fn build_sbom(input: &SbomInput<'_>) -> Value {
    let mut components: Vec<Value> = input
        .models
        .iter()
        .map(|m| model_component(m, input.version, input.provenance))
        .collect();
    if let Some(p) = input.provenance {
        components.extend(p.datasets.iter().map(data_component));
    }
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
    let mut bundle = json!({"type": "file", "bom-ref": bundle_ref, "name": input.name, "version": input.version,
                            "description": "edgecd model bundle"});
    if let Some(g) = input.provenance.and_then(|p| p.git.as_ref()) {
        bundle["pedigree"] = json!({"commits": [{"uid": g.commit}]});
    }
    let mut bom = json!({
        "$schema": "http://cyclonedx.org/schema/bom-1.6.schema.json",
        "bomFormat": "CycloneDX",
        "specVersion": CYCLONEDX_SPEC_VERSION,
        "serialNumber": serial_number(input),
        "version": 1,
        "metadata": {
            "tools": {"components": [{"type": "application", "name": "edgecd", "version": input.tool_version}]},
            "component": bundle
        },
        "components": components,
        "dependencies": [{"ref": bundle_ref, "dependsOn": depends}]
    });
    if let Some(f) = input.provenance.and_then(|p| formulation(p, input.models)) {
        bom["formulation"] = f;
    }
    bom
}

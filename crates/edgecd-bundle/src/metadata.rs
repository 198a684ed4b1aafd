//! Pure rendering of a bundle's metadata (oci-layout, index, manifest, ModelPack config,
//! profile, SBOM) from what the builder knows, and the archive's fixed entry order.
//!
//! Entry order (this is the format): `oci-layout`, `index.json`, manifest blob, config blob,
//! profile blob, SBOM blob, then the model blobs in `filepath` order. A reader meets every
//! descriptor before the data it describes, so it verifies in one streaming pass and rejects
//! a bad signature before reading any model bytes.
use crate::digest::{digest_hex, sha256_digest};
use crate::oci::*;
use crate::sbom::{SbomInput, build_sbom};
use crate::tarfmt::{TRAILER_LEN, entry_len};
use edgecd_api::model::{ModelFormat, ModelInfo, Precision};
use edgecd_api::profile::{
    HardwareProfile, ModelEntry, PROFILE_MEDIA_TYPE, PROFILE_SCHEMA_VERSION, Profile, RuntimePin,
    SelfTest,
};
use std::collections::BTreeMap;

/// What a bundle says about itself besides its model files.
#[derive(Debug, Clone)]
pub struct BundleMeta {
    pub name: String,
    pub version: String,
    pub hardware: HardwareProfile,
    pub runtime: RuntimePin,
    pub selftest: Option<SelfTest>,
    pub labels: BTreeMap<String, String>,
    /// Where the models came from (MLflow run, DVC datasets, git commit): recorded in the
    /// manifest's annotations and the SBOM; `None` adds nothing.
    pub provenance: Option<crate::provenance::Provenance>,
}

/// Rendered metadata documents and their digests.
#[derive(Debug, Clone)]
pub struct Rendered {
    pub oci_layout: Vec<u8>,
    pub index: Vec<u8>,
    pub manifest: Vec<u8>,
    pub config: Vec<u8>,
    pub profile_json: Vec<u8>,
    pub sbom: Vec<u8>,
    pub manifest_digest: String,
    pub profile: Profile,
}

fn blob_path(digest: &str) -> String {
    format!(
        "blobs/sha256/{}",
        digest_hex(digest).expect("rendered digests are well formed")
    )
}

impl Rendered {
    /// The archive entries in order: (entry name, bytes). Model blobs follow these.
    pub fn entries(&self) -> [(String, &[u8]); 6] {
        [
            (OCI_LAYOUT_FILE.to_string(), &self.oci_layout),
            (INDEX_FILE.to_string(), &self.index),
            (blob_path(&sha256_digest(&self.manifest)), &self.manifest),
            (blob_path(&sha256_digest(&self.config)), &self.config),
            (
                blob_path(&sha256_digest(&self.profile_json)),
                &self.profile_json,
            ),
            (blob_path(&sha256_digest(&self.sbom)), &self.sbom),
        ]
    }

    /// Total archive length with model files of the given sizes.
    pub fn archive_len(&self, model_sizes: impl Iterator<Item = u64>) -> u64 {
        let meta: u64 = self
            .entries()
            .iter()
            .map(|(_, b)| entry_len(b.len() as u64))
            .sum();
        meta + model_sizes.map(entry_len).sum::<u64>() + TRAILER_LEN
    }
}

/// One line describing a model's quantization, e.g. `int8, 12 tensors (per-tensor)`.
pub fn quantization_summary(info: &ModelInfo) -> String {
    if info.quantization.is_empty() {
        return "none".to_string();
    }
    let mut dtypes: Vec<&str> = info.quantization.iter().map(|q| q.dtype.as_str()).collect();
    dtypes.sort_unstable();
    dtypes.dedup();
    let per_axis = info
        .quantization
        .iter()
        .filter(|q| q.scale.len() > 1)
        .count();
    let gran = match per_axis {
        0 => "per-tensor".to_string(),
        n if n == info.quantization.len() => "per-axis".to_string(),
        n => format!("{n} per-axis"),
    };
    format!(
        "{}, {} tensors ({gran})",
        dtypes.join("/"),
        info.quantization.len()
    )
}

fn combined_format(models: &[ModelEntry]) -> String {
    let mut fmts: Vec<ModelFormat> = models.iter().map(|m| m.info.format).collect();
    fmts.dedup();
    if fmts.len() == 1 {
        json_name(&fmts[0])
    } else {
        "mixed".to_string()
    }
}

fn combined_precision(models: &[ModelEntry]) -> String {
    let mut ps: Vec<Precision> = models
        .iter()
        .map(|m| m.info.precision)
        .filter(|p| *p != Precision::Unknown)
        .collect();
    ps.dedup();
    match ps.as_slice() {
        [] => json_name(&Precision::Unknown),
        [p] => json_name(p),
        _ => json_name(&Precision::Mixed),
    }
}

fn json_name<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_value(v)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

/// Renders every metadata document for `models` (already sorted by filepath, digests known
/// or placeholders of the same length).
pub fn render(meta: &BundleMeta, models: &[ModelEntry], tool_version: &str) -> Rendered {
    let profile = Profile {
        schema_version: PROFILE_SCHEMA_VERSION,
        name: meta.name.clone(),
        version: meta.version.clone(),
        hardware: meta.hardware.clone(),
        runtime: meta.runtime.clone(),
        models: models.to_vec(),
        selftest: meta.selftest.clone(),
        labels: meta.labels.clone(),
    };
    let profile_json = canonical_json(&profile);
    let sbom = canonical_json(&build_sbom(&SbomInput {
        name: &meta.name,
        version: &meta.version,
        models,
        runtime: &meta.runtime,
        hardware: &meta.hardware,
        tool_version,
        provenance: meta.provenance.as_ref().filter(|p| !p.is_empty()),
    }));
    let quantized: Vec<String> = models
        .iter()
        .filter(|m| !m.info.quantization.is_empty())
        .map(|m| format!("{}: {}", m.filepath, quantization_summary(&m.info)))
        .collect();
    let config = canonical_json(&ModelConfig {
        descriptor: ModelDescriptor {
            name: meta.name.clone(),
            version: meta.version.clone(),
        },
        config: ModelConfigDetails {
            architecture: meta.labels.get("architecture").cloned(),
            format: combined_format(models),
            precision: combined_precision(models),
            quantization: (!quantized.is_empty()).then(|| quantized.join("; ")),
        },
        modelfs: ModelFs {
            kind: "layers".to_string(),
            diff_ids: models.iter().map(|m| m.digest.clone()).collect(),
        },
    });
    let mut layers = vec![
        Descriptor {
            media_type: PROFILE_MEDIA_TYPE.to_string(),
            digest: sha256_digest(&profile_json),
            size: profile_json.len() as u64,
            artifact_type: None,
            annotations: BTreeMap::new(),
        },
        Descriptor {
            media_type: SBOM_MEDIA_TYPE.to_string(),
            digest: sha256_digest(&sbom),
            size: sbom.len() as u64,
            artifact_type: None,
            annotations: BTreeMap::new(),
        },
    ];
    layers.extend(models.iter().map(|m| Descriptor {
        media_type: MODEL_WEIGHT_MEDIA_TYPE.to_string(),
        digest: m.digest.clone(),
        size: m.size,
        artifact_type: None,
        annotations: BTreeMap::from([(FILEPATH_ANNOTATION.to_string(), m.filepath.clone())]),
    }));
    let manifest = canonical_json(&ImageManifest {
        schema_version: 2,
        media_type: OCI_MANIFEST_MEDIA_TYPE.to_string(),
        artifact_type: Some(MODEL_ARTIFACT_TYPE.to_string()),
        config: Descriptor {
            media_type: MODEL_CONFIG_MEDIA_TYPE.to_string(),
            digest: sha256_digest(&config),
            size: config.len() as u64,
            artifact_type: None,
            annotations: BTreeMap::new(),
        },
        layers,
        annotations: {
            let mut a = meta
                .provenance
                .as_ref()
                .map(|p| p.annotations())
                .unwrap_or_default();
            a.insert(TITLE_ANNOTATION.to_string(), meta.name.clone());
            a.insert(VERSION_ANNOTATION.to_string(), meta.version.clone());
            a
        },
    });
    let manifest_digest = sha256_digest(&manifest);
    let index = render_index(&manifest_digest, manifest.len() as u64, &meta.version);
    let oci_layout = render_oci_layout();
    Rendered {
        oci_layout,
        index,
        manifest,
        config,
        profile_json,
        sbom,
        manifest_digest,
        profile,
    }
}

/// The one `index.json` a bundle with this manifest has.
pub fn render_index(manifest_digest: &str, manifest_size: u64, version: &str) -> Vec<u8> {
    canonical_json(&ImageIndex {
        schema_version: 2,
        media_type: OCI_INDEX_MEDIA_TYPE.to_string(),
        manifests: vec![Descriptor {
            media_type: OCI_MANIFEST_MEDIA_TYPE.to_string(),
            digest: manifest_digest.to_string(),
            size: manifest_size,
            artifact_type: Some(MODEL_ARTIFACT_TYPE.to_string()),
            annotations: BTreeMap::from([(REF_NAME_ANNOTATION.to_string(), version.to_string())]),
        }],
    })
}

/// The `oci-layout` file.
pub fn render_oci_layout() -> Vec<u8> {
    canonical_json(&OciLayout {
        image_layout_version: "1.0.0".to_string(),
    })
}

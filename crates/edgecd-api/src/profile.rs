//! The edgecd profile layer (`application/vnd.edgecd.profile.v1+json`): what a device needs
//! to run the bundle and how to check that it does.

use crate::model::ModelInfo;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

pub const PROFILE_MEDIA_TYPE: &str = "application/vnd.edgecd.profile.v1+json";
pub const PROFILE_SCHEMA_VERSION: u32 = 1;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Profile {
    pub schema_version: u32,
    pub name: String,
    pub version: String,
    pub hardware: HardwareProfile,
    pub runtime: RuntimePin,
    pub models: Vec<ModelEntry>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selftest: Option<SelfTest>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

/// The hardware a bundle is built for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HardwareProfile {
    /// Board id, e.g. `rpi5`.
    pub board: String,
    /// Accelerator id, e.g. `hailo-10h`; `None` runs on the CPU.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub accelerator: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_ram_mb: Option<u64>,
}

/// The inference runtime and version the bundle is pinned to (`NAME@VERSION`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuntimePin {
    pub name: String,
    pub version: String,
}

impl RuntimePin {
    /// Parses `NAME@VERSION`.
    pub fn parse(s: &str) -> Result<Self, String> {
        match s.split_once('@') {
            Some((n, v)) if !n.is_empty() && !v.is_empty() && !v.contains('@') => Ok(Self {
                name: n.to_string(),
                version: v.to_string(),
            }),
            _ => Err(format!(
                "runtime pin {s:?} must look like NAME@VERSION, e.g. edgecd-infer@0.1.0"
            )),
        }
    }
}

impl std::fmt::Display for RuntimePin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}@{}", self.name, self.version)
    }
}

/// One model file in the bundle.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ModelEntry {
    /// Relative path inside `models/` (the layer's `org.cncf.model.filepath`).
    pub filepath: String,
    /// `sha256:<hex>` of the file.
    pub digest: String,
    pub size: u64,
    pub info: ModelInfo,
}

/// Self-test vectors the device runs before it commits a release.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SelfTest {
    pub cases: Vec<SelfTestCase>,
    /// Largest allowed |actual - expected| per element is `abs + rel * |expected|`.
    pub tolerance: Tolerance,
    /// Largest allowed latency of one case on the device, in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_budget_ms: Option<f64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tolerance {
    pub abs: f64,
    pub rel: f64,
}

impl Tolerance {
    /// Max |a - e| and max |a - e| / (abs + rel·|e|) over the elements (≤ 1 passes; NaN when a
    /// value is NaN where the other is not). The self-test's comparison, shared by whoever runs
    /// the vectors (the agent through a runtime's inference API).
    pub fn compare(&self, actual: &[f64], expected: &[f64]) -> (f64, f64) {
        let (mut max_abs, mut max_ratio) = (0f64, 0f64);
        for (a, e) in actual.iter().zip(expected) {
            if a.is_nan() && e.is_nan() {
                continue;
            }
            let d = (a - e).abs();
            if d.is_nan() {
                return (f64::NAN, f64::NAN);
            }
            let allowed = self.abs + self.rel * e.abs();
            max_abs = max_abs.max(d);
            max_ratio = max_ratio.max(if allowed > 0.0 {
                d / allowed
            } else if d > 0.0 {
                f64::INFINITY
            } else {
                0.0
            });
        }
        (max_abs, max_ratio)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SelfTestCase {
    pub name: String,
    /// The model file (a `ModelEntry::filepath`) this case runs.
    pub model: String,
    pub inputs: Vec<TensorData>,
    pub outputs: Vec<TensorData>,
}

/// A small tensor given inline (row-major). Used for self-test vectors and JSON inference.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TensorData {
    pub name: String,
    pub dtype: String,
    pub shape: Vec<usize>,
    pub data: Vec<f64>,
}

//! Where a bundle's models came from: the source commit, the training run (MLflow run or DVC
//! stage) with its parameters and metrics, and the hashes of the datasets it was trained on.
//! Pure types: the CLI gathers them (MLflow's REST API, `dvc.lock`/`.dvc` files, git) and the
//! bundle records them in its signed OCI manifest ([`PROVENANCE_ANNOTATION`] and
//! [`REVISION_ANNOTATION`]), its CycloneDX SBOM (`sbom`: `data` components, the model card's
//! datasets and metrics, `formulation`) and the release manifest (`release`).
use crate::error::BundleError;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Manifest annotation holding the [`Provenance`] as compact JSON.
pub const PROVENANCE_ANNOTATION: &str = "org.edgecd.provenance";
/// The OCI standard annotation for the source revision (the git commit).
pub const REVISION_ANNOTATION: &str = "org.opencontainers.image.revision";
/// The provenance must fit well inside the manifest's 1 MiB cap.
pub const MAX_PROVENANCE_BYTES: usize = 256 << 10;

/// Where the models came from. Every part is optional: a bundle built from plain files has
/// none (and then no annotation at all, so such bundles are byte-identical to older ones).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Provenance {
    /// The git commit of the repository holding the training code / DVC pipeline.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub git: Option<GitSource>,
    /// The training run that produced the models.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub training_run: Option<TrainingRun>,
    /// The data the run was trained on.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub datasets: Vec<TrackedFile>,
    /// The bundle's model files as the training system recorded them (e.g. DVC's hash of
    /// the output), keyed by nothing: `path` is the model's file path in the bundle.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub models: Vec<TrackedFile>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GitSource {
    /// Full commit hash (40 or 64 hex digits).
    pub commit: String,
    /// The work tree had uncommitted changes to the tracked files when the bundle was built.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub dirty: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TrainingRun {
    /// `mlflow` or `dvc`.
    pub system: String,
    /// MLflow run id, or the DVC stage name.
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// MLflow experiment id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub experiment: Option<String>,
    /// The model the bundle was built from, e.g. `models:/detector/3` or `runs:/RUN/model`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_uri: Option<String>,
    /// The command a DVC stage ran.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub params: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub metrics: BTreeMap<String, serde_json::Number>,
}

/// A file or directory a training system tracks by hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TrackedFile {
    /// Path relative to the repository root (DVC), dataset name (MLflow), or the model's
    /// file path in the bundle (`Provenance::models`).
    pub path: String,
    /// `dvc` or `mlflow`.
    pub origin: String,
    /// `md5:<hex>` (DVC file), `md5:<hex>.dir` (DVC directory), or `mlflow:<digest>`.
    pub hash: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    /// Number of files of a tracked directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nfiles: Option<u64>,
    /// Where the data lives (MLflow dataset source), when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uri: Option<String>,
}

impl TrackedFile {
    /// The plain MD5 hex of a DVC-tracked file (`None` for directories and other hashes).
    pub fn md5(&self) -> Option<&str> {
        self.hash
            .strip_prefix("md5:")
            .filter(|h| h.len() == 32 && h.bytes().all(|b| b.is_ascii_hexdigit()))
    }
}

impl Provenance {
    pub fn is_empty(&self) -> bool {
        self == &Self::default()
    }

    /// Checks what the bundle would carry: a commit is hex, hashes name their algorithm.
    pub fn validate(&self) -> Result<(), BundleError> {
        let bad = |reason: String| BundleError::InvalidMetadata {
            what: "provenance",
            reason,
        };
        if let Some(g) = &self.git
            && !(matches!(g.commit.len(), 40 | 64)
                && g.commit.bytes().all(|b| b.is_ascii_hexdigit()))
        {
            return Err(bad(format!(
                "git commit {:?} is not a full commit hash",
                g.commit
            )));
        }
        if let Some(r) = &self.training_run
            && (r.system.is_empty() || r.id.is_empty())
        {
            return Err(bad("the training run has no system or id".into()));
        }
        for f in self.datasets.iter().chain(&self.models) {
            if f.path.is_empty() || !f.hash.contains(':') {
                return Err(bad(format!(
                    "tracked file {:?} has hash {:?}; expected ALGORITHM:VALUE",
                    f.path, f.hash
                )));
            }
        }
        let len = serde_json::to_vec(self).map_or(0, |v| v.len());
        if len > MAX_PROVENANCE_BYTES {
            return Err(bad(format!(
                "it is {len} bytes, more than {MAX_PROVENANCE_BYTES} (the bundle manifest holds it): the training run has too many params, metrics or datasets to record"
            )));
        }
        Ok(())
    }

    /// The manifest annotations that record it (none when empty).
    pub fn annotations(&self) -> BTreeMap<String, String> {
        let mut a = BTreeMap::new();
        if self.is_empty() {
            return a;
        }
        a.insert(
            PROVENANCE_ANNOTATION.to_string(),
            serde_json::to_string(self).expect("provenance serializes"),
        );
        if let Some(g) = &self.git {
            a.insert(REVISION_ANNOTATION.to_string(), g.commit.clone());
        }
        a
    }

    /// Reads it back from a manifest's annotations (`None`: the bundle records none).
    pub fn from_annotations(a: &BTreeMap<String, String>) -> Result<Option<Self>, BundleError> {
        let Some(json) = a.get(PROVENANCE_ANNOTATION) else {
            return Ok(None);
        };
        let p: Self = serde_json::from_str(json).map_err(|e| BundleError::InvalidMetadata {
            what: "provenance annotation",
            reason: e.to_string(),
        })?;
        p.validate()?;
        Ok(Some(p))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn annotations_round_trip_and_empty_adds_none() {
        assert!(Provenance::default().annotations().is_empty());
        let p = Provenance {
            git: Some(GitSource {
                commit: "a".repeat(40),
                dirty: false,
            }),
            training_run: Some(TrainingRun {
                system: "mlflow".into(),
                id: "r1".into(),
                name: None,
                experiment: Some("0".into()),
                model_uri: Some("models:/m/1".into()),
                command: None,
                params: BTreeMap::from([("lr".into(), "0.1".into())]),
                metrics: BTreeMap::from([(
                    "acc".into(),
                    serde_json::Number::from_f64(0.5).unwrap(),
                )]),
            }),
            datasets: vec![TrackedFile {
                path: "data/train.csv".into(),
                origin: "dvc".into(),
                hash: format!("md5:{}", "b".repeat(32)),
                size: Some(3),
                nfiles: None,
                uri: None,
            }],
            models: vec![],
        };
        let a = p.annotations();
        assert_eq!(a[REVISION_ANNOTATION], "a".repeat(40));
        assert_eq!(Provenance::from_annotations(&a).unwrap(), Some(p.clone()));
        assert_eq!(p.datasets[0].md5(), Some("b".repeat(32).as_str()));
        let mut bad = p.clone();
        bad.git.as_mut().unwrap().commit = "HEAD".into();
        let e = bad.validate().unwrap_err().to_string();
        assert!(e.contains("not a full commit hash"), "{e}");
        let mut huge = p;
        let run = huge.training_run.as_mut().unwrap();
        for i in 0..20_000 {
            run.params.insert(format!("param{i}"), "x".repeat(10));
        }
        let e = huge.validate().unwrap_err().to_string();
        assert!(e.contains("too many params"), "{e}");
    }
}

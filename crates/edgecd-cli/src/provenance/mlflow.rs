//! Pulling a model from an MLflow tracking server over its REST API: `models:/NAME/VERSION`,
//! `models:/NAME@ALIAS` or `runs:/RUN_ID/PATH`; the run's id, name, experiment, params,
//! latest metrics, logged datasets and git commit tag become the bundle's [`Provenance`].
//! Artifacts are read through the server's artifact proxy (`mlflow-artifacts:` URIs, the
//! default of `mlflow server`) or, for `file:` URIs, from the local file system.
use anyhow::{Context as _, bail};
use edgecd_bundle::provenance::{GitSource, Provenance, TrackedFile, TrainingRun};
use serde_json::Value;
use std::collections::BTreeMap;
use std::io::Read as _;
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

/// Extensions picked as model files when the artifact is a directory.
const MODEL_EXTENSIONS: &[&str] = &["onnx", "tflite", "hef", "rknn"];
/// At most this many artifact files are looked at (a model directory, not a whole run).
const MAX_FILES: usize = 1000;

/// A model pulled from MLflow: its files (under the caller's directory) and provenance.
#[derive(Debug)]
pub struct Pulled {
    pub models: Vec<PathBuf>,
    pub provenance: Provenance,
}

/// A parsed `models:/…` or `runs:/…` URI.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelUri {
    Version { name: String, version: String },
    Alias { name: String, alias: String },
    Run { run_id: String, path: String },
}

impl ModelUri {
    pub fn parse(s: &str) -> anyhow::Result<Self> {
        let usage = "expected models:/NAME/VERSION, models:/NAME@ALIAS or runs:/RUN_ID/PATH";
        if let Some(rest) = s.strip_prefix("models:/") {
            if let Some((name, alias)) = rest.rsplit_once('@')
                && !name.is_empty()
                && !alias.is_empty()
                && !alias.contains('/')
            {
                return Ok(Self::Alias {
                    name: name.into(),
                    alias: alias.into(),
                });
            }
            if let Some((name, version)) = rest.rsplit_once('/')
                && !name.is_empty()
                && !version.is_empty()
                && version.bytes().all(|b| b.is_ascii_digit())
            {
                return Ok(Self::Version {
                    name: name.into(),
                    version: version.into(),
                });
            }
            bail!("{s:?}: {usage} (VERSION is a number)");
        }
        if let Some(rest) = s.strip_prefix("runs:/") {
            let (run_id, path) = rest.split_once('/').unwrap_or((rest, ""));
            if run_id.is_empty() || !run_id.bytes().all(|b| b.is_ascii_alphanumeric()) {
                bail!("{s:?}: {usage}");
            }
            return Ok(Self::Run {
                run_id: run_id.into(),
                path: path.trim_matches('/').into(),
            });
        }
        bail!("{s:?}: {usage}")
    }
}

/// A blocking client of one tracking server.
pub struct Client {
    base: String,
    agent: ureq::Agent,
    auth: Option<String>,
}

fn encode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn encode_path(p: &str) -> String {
    p.split('/').map(encode).collect::<Vec<_>>().join("/")
}

impl Client {
    /// `tracking_uri`: `http(s)://host:port[/prefix]`. Credentials come from MLflow's own
    /// variables: `MLFLOW_TRACKING_TOKEN` (bearer) or `MLFLOW_TRACKING_USERNAME`/`_PASSWORD`.
    pub fn new(tracking_uri: &str) -> anyhow::Result<Self> {
        let base = tracking_uri.trim_end_matches('/').to_string();
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            bail!(
                "MLflow tracking URI {tracking_uri:?} is not http(s)://…: edgecd talks to a tracking server (`mlflow server`), not a local store"
            );
        }
        let auth = match (
            std::env::var("MLFLOW_TRACKING_TOKEN").ok(),
            std::env::var("MLFLOW_TRACKING_USERNAME").ok(),
        ) {
            (Some(t), _) if !t.is_empty() => Some(format!("Bearer {t}")),
            (_, Some(u)) if !u.is_empty() => {
                use base64::Engine as _;
                let p = std::env::var("MLFLOW_TRACKING_PASSWORD").unwrap_or_default();
                Some(format!(
                    "Basic {}",
                    base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}"))
                ))
            }
            _ => None,
        };
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_connect(Some(Duration::from_secs(10)))
            .timeout_recv_response(Some(Duration::from_secs(120)))
            .build()
            .into();
        Ok(Self { base, agent, auth })
    }

    fn get(&self, path: &str) -> anyhow::Result<ureq::http::Response<ureq::Body>> {
        let url = format!("{}{path}", self.base);
        let mut req = self.agent.get(&url);
        if let Some(a) = &self.auth {
            req = req.header("authorization", a);
        }
        req.call()
            .with_context(|| format!("MLflow tracking server {}: GET {path}", self.base))
    }

    /// A JSON API answer; a non-2xx answer becomes an error with MLflow's message.
    fn get_json(&self, path: &str) -> anyhow::Result<Value> {
        let mut resp = self.get(path)?;
        let status = resp.status().as_u16();
        let text = resp
            .body_mut()
            .with_config()
            .limit(16 << 20)
            .read_to_string()
            .with_context(|| format!("reading MLflow's answer to {path}"))?;
        if !(200..300).contains(&status) {
            let msg = serde_json::from_str::<Value>(&text)
                .ok()
                .and_then(|v| v["message"].as_str().map(str::to_string))
                .unwrap_or(text);
            bail!(
                "MLflow tracking server {} answered {status} to {path}: {msg}",
                self.base
            );
        }
        serde_json::from_str(&text)
            .with_context(|| format!("MLflow's answer to {path} is not JSON"))
    }

    fn model_version(&self, uri: &ModelUri) -> anyhow::Result<Value> {
        let v = match uri {
            ModelUri::Version { name, version } => self.get_json(&format!(
                "/api/2.0/mlflow/model-versions/get?name={}&version={}",
                encode(name),
                encode(version)
            ))?,
            ModelUri::Alias { name, alias } => self.get_json(&format!(
                "/api/2.0/mlflow/registered-models/alias?name={}&alias={}",
                encode(name),
                encode(alias)
            ))?,
            ModelUri::Run { .. } => unreachable!("runs:/ URIs have no model version"),
        };
        Ok(v["model_version"].clone())
    }

    fn run(&self, run_id: &str) -> anyhow::Result<Value> {
        let v = self.get_json(&format!(
            "/api/2.0/mlflow/runs/get?run_id={}",
            encode(run_id)
        ))?;
        Ok(v["run"].clone())
    }

    /// Lists the files under a proxied artifact path (recursively); `[]` when it is a file.
    fn list(&self, path: &str, out: &mut Vec<String>) -> anyhow::Result<()> {
        let v = self.get_json(&format!(
            "/api/2.0/mlflow-artifacts/artifacts?path={}",
            encode(path)
        ))?;
        for f in v["files"].as_array().into_iter().flatten() {
            let Some(name) = f["path"].as_str() else {
                continue;
            };
            let full = format!("{path}/{name}");
            if f["is_dir"].as_bool() == Some(true) {
                self.list(&full, out)?;
            } else {
                out.push(full);
            }
            if out.len() > MAX_FILES {
                bail!(
                    "the MLflow artifact {path} holds more than {MAX_FILES} files: name the model file in the URI (…/model/model.onnx)"
                );
            }
        }
        Ok(())
    }

    /// Downloads a proxied artifact to `dest`; `Ok(false)` when there is none at `path`.
    fn download(&self, path: &str, dest: &Path) -> anyhow::Result<bool> {
        let resp = self.get(&format!(
            "/api/2.0/mlflow-artifacts/artifacts/{}",
            encode_path(path)
        ))?;
        let status = resp.status().as_u16();
        if status == 404 {
            return Ok(false);
        }
        if !(200..300).contains(&status) {
            let mut text = String::new();
            let _ = resp
                .into_body()
                .into_reader()
                .take(4096)
                .read_to_string(&mut text);
            bail!(
                "MLflow tracking server {} answered {status} to a download of {path}: {text}",
                self.base
            );
        }
        if let Some(d) = dest.parent() {
            std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
        }
        let mut f =
            std::fs::File::create(dest).with_context(|| format!("creating {}", dest.display()))?;
        std::io::copy(&mut resp.into_body().into_reader(), &mut f)
            .with_context(|| format!("downloading {path} from MLflow"))?;
        f.sync_all()?;
        Ok(true)
    }
}

/// A relative path from the server, checked: no `..`, no root.
fn safe_relative(p: &str) -> anyhow::Result<PathBuf> {
    let path = Path::new(p);
    if p.is_empty() || !path.components().all(|c| matches!(c, Component::Normal(_))) {
        bail!("MLflow named an artifact file {p:?} that is not a plain relative path");
    }
    Ok(path.to_path_buf())
}

fn is_model_file(p: &Path) -> bool {
    p.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| MODEL_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
}

/// Fetches the artifact at `artifact_uri` into `into`; returns the model files.
fn fetch_artifact(
    client: &Client,
    artifact_uri: &str,
    into: &Path,
) -> anyhow::Result<Vec<PathBuf>> {
    // Local artifact stores (`file:` URIs or plain paths) are read directly.
    let local = artifact_uri
        .strip_prefix("file://")
        .or_else(|| artifact_uri.starts_with('/').then_some(artifact_uri));
    if let Some(local) = local {
        let src = PathBuf::from(local);
        if src.is_file() {
            let dest = into.join(src.file_name().context("artifact file name")?);
            std::fs::copy(&src, &dest).with_context(|| format!("copying {}", src.display()))?;
            return Ok(vec![dest]);
        }
        if !src.is_dir() {
            bail!(
                "the MLflow artifact {artifact_uri} is not on this machine: start the tracking server with --serve-artifacts, or build on the machine that holds it"
            );
        }
        let mut models = vec![];
        copy_tree(&src, into, &mut models, 0)?;
        return pick_models(models, artifact_uri);
    }
    let Some(rest) = artifact_uri.strip_prefix("mlflow-artifacts:") else {
        bail!(
            "the MLflow artifact {artifact_uri} is in a store edgecd cannot read: start the tracking server with --serve-artifacts (artifacts as mlflow-artifacts: URIs) or use a file: store"
        );
    };
    // `mlflow-artifacts:/path` or `mlflow-artifacts://host:port/path`.
    let path = match rest.strip_prefix("//") {
        Some(hostpath) => hostpath.split_once('/').map_or("", |(_, p)| p),
        None => rest.trim_start_matches('/'),
    }
    .trim_end_matches('/');
    let mut files = vec![];
    client.list(path, &mut files)?;
    if files.is_empty() {
        // A file, not a directory.
        let name = path.rsplit('/').next().unwrap_or(path);
        let dest = into.join(safe_relative(name)?);
        if !client.download(path, &dest)? {
            bail!("MLflow has no artifact at {artifact_uri}");
        }
        return Ok(vec![dest]);
    }
    let mut all = vec![];
    for f in files {
        let rel = f.strip_prefix(path).unwrap_or(&f).trim_start_matches('/');
        let dest = into.join(safe_relative(rel)?);
        if !client.download(&f, &dest)? {
            bail!("MLflow listed {f} but has no such artifact");
        }
        all.push(dest);
    }
    pick_models(all, artifact_uri)
}

fn copy_tree(src: &Path, dst: &Path, out: &mut Vec<PathBuf>, depth: usize) -> anyhow::Result<()> {
    if depth > 16 || out.len() > MAX_FILES {
        bail!(
            "the MLflow artifact directory {} is too deep or too large",
            src.display()
        );
    }
    std::fs::create_dir_all(dst)?;
    for e in std::fs::read_dir(src).with_context(|| format!("reading {}", src.display()))? {
        let e = e?;
        let (s, d) = (e.path(), dst.join(e.file_name()));
        if e.file_type()?.is_dir() {
            copy_tree(&s, &d, out, depth + 1)?;
        } else {
            std::fs::copy(&s, &d).with_context(|| format!("copying {}", s.display()))?;
            out.push(d);
        }
    }
    Ok(())
}

fn pick_models(mut all: Vec<PathBuf>, artifact_uri: &str) -> anyhow::Result<Vec<PathBuf>> {
    all.sort();
    let models: Vec<PathBuf> = all.iter().filter(|p| is_model_file(p)).cloned().collect();
    if models.is_empty() {
        let names: Vec<String> = all
            .iter()
            .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            .collect();
        bail!(
            "the MLflow artifact {artifact_uri} holds no model file (.{}); it holds: {}. Name the file in the URI (runs:/RUN_ID/path/to/model.bin)",
            MODEL_EXTENSIONS.join(", ."),
            if names.is_empty() {
                "nothing".to_string()
            } else {
                names.join(", ")
            }
        );
    }
    Ok(models)
}

fn kv(list: &Value) -> impl Iterator<Item = (&str, &Value)> {
    list.as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| Some((e["key"].as_str()?, &e["value"])))
}

/// The run's provenance: id, name, experiment, params, metrics, datasets, git commit tag.
fn run_provenance(run: &Value, model_uri: &str) -> anyhow::Result<Provenance> {
    let info = &run["info"];
    let id = info["run_id"]
        .as_str()
        .or_else(|| info["run_uuid"].as_str())
        .context("MLflow's run has no run_id")?
        .to_string();
    let tags: BTreeMap<&str, &str> = kv(&run["data"]["tags"])
        .filter_map(|(k, v)| Some((k, v.as_str()?)))
        .collect();
    let params = kv(&run["data"]["params"])
        .filter_map(|(k, v)| Some((k.to_string(), v.as_str()?.to_string())))
        .collect();
    // Non-finite metrics have no JSON number: they are left out.
    let metrics = kv(&run["data"]["metrics"])
        .filter_map(|(k, v)| Some((k.to_string(), v.as_number()?.clone())))
        .collect();
    let name = info["run_name"]
        .as_str()
        .or_else(|| tags.get("mlflow.runName").copied())
        .filter(|s| !s.is_empty())
        .map(str::to_string);
    let git = tags
        .get("mlflow.source.git.commit")
        .filter(|c| matches!(c.len(), 40 | 64) && c.bytes().all(|b| b.is_ascii_hexdigit()))
        .map(|c| GitSource {
            commit: c.to_ascii_lowercase(),
            dirty: false,
        });
    let mut datasets: Vec<TrackedFile> = run["inputs"]["dataset_inputs"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|d| {
            let ds = &d["dataset"];
            let uri = ds["source"]
                .as_str()
                .and_then(|s| serde_json::from_str::<Value>(s).ok())
                .and_then(|s| s["uri"].as_str().map(str::to_string));
            Some(TrackedFile {
                path: ds["name"].as_str()?.to_string(),
                origin: "mlflow".into(),
                hash: format!("mlflow:{}", ds["digest"].as_str()?),
                size: None,
                nfiles: None,
                uri,
            })
        })
        .collect();
    datasets.sort_by(|a, b| a.path.cmp(&b.path).then(a.hash.cmp(&b.hash)));
    datasets.dedup_by(|a, b| a.path == b.path);
    Ok(Provenance {
        git,
        training_run: Some(TrainingRun {
            system: "mlflow".into(),
            id,
            name,
            experiment: info["experiment_id"].as_str().map(str::to_string),
            model_uri: Some(model_uri.to_string()),
            command: None,
            params,
            metrics,
        }),
        datasets,
        models: vec![],
    })
}

/// Pulls `model_uri` from the tracking server at `tracking_uri` into `into`.
pub fn pull(tracking_uri: &str, model_uri: &str, into: &Path) -> anyhow::Result<Pulled> {
    let uri = ModelUri::parse(model_uri)?;
    let client = Client::new(tracking_uri)?;
    let (run_id, artifact_uri) = match &uri {
        ModelUri::Run { run_id, path } => {
            let run = client.run(run_id)?;
            let root = run["info"]["artifact_uri"]
                .as_str()
                .context("MLflow's run has no artifact_uri")?
                .trim_end_matches('/')
                .to_string();
            let art = if path.is_empty() {
                root
            } else {
                format!("{root}/{path}")
            };
            (run_id.clone(), art)
        }
        _ => {
            let mv = client.model_version(&uri)?;
            let run_id = mv["run_id"]
                .as_str()
                .filter(|r| !r.is_empty())
                .with_context(|| {
                    format!("{model_uri} has no training run in MLflow (it was registered without run_id), so its provenance is unknown")
                })?
                .to_string();
            let (name, version) = (
                mv["name"].as_str().unwrap_or_default().to_string(),
                mv["version"].as_str().unwrap_or_default().to_string(),
            );
            let dl = client.get_json(&format!(
                "/api/2.0/mlflow/model-versions/get-download-uri?name={}&version={}",
                encode(&name),
                encode(&version)
            ))?;
            let art = dl["artifact_uri"]
                .as_str()
                .or_else(|| mv["source"].as_str())
                .context("MLflow gave no artifact location for the model version")?
                .to_string();
            (run_id, art)
        }
    };
    let run = client.run(&run_id)?;
    let mut provenance = run_provenance(&run, model_uri)?;
    if let (ModelUri::Alias { name, .. }, Some(r)) = (&uri, provenance.training_run.as_mut()) {
        // Record the version the alias pointed at: the alias moves, the version does not.
        let mv = client.model_version(&uri)?;
        r.model_uri = Some(format!(
            "models:/{name}/{}",
            mv["version"].as_str().unwrap_or_default()
        ));
    }
    let models = fetch_artifact(&client, &artifact_uri, into)
        .with_context(|| format!("pulling {model_uri} ({artifact_uri})"))?;
    Ok(Pulled { models, provenance })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_uris() {
        assert_eq!(
            ModelUri::parse("models:/det/3").unwrap(),
            ModelUri::Version {
                name: "det".into(),
                version: "3".into()
            }
        );
        assert_eq!(
            ModelUri::parse("models:/det@champion").unwrap(),
            ModelUri::Alias {
                name: "det".into(),
                alias: "champion".into()
            }
        );
        assert_eq!(
            ModelUri::parse("runs:/abc123/model/m.onnx").unwrap(),
            ModelUri::Run {
                run_id: "abc123".into(),
                path: "model/m.onnx".into()
            }
        );
        for bad in [
            "models:/det",
            "models:/det/latest",
            "runs:/",
            "s3://x",
            "runs:/../x",
        ] {
            assert!(ModelUri::parse(bad).is_err(), "{bad}");
        }
        assert!(safe_relative("../x").is_err() && safe_relative("/x").is_err());
        assert_eq!(encode_path("1/a b/c"), "1/a%20b/c");
    }
}

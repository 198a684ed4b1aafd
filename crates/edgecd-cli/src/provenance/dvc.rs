//! DVC provenance of local model files: a `MODEL.dvc` file next to the model, and the
//! `dvc.lock` stage (in the model's directory or one above it, up to the DVC root) that
//! outputs it — its command, params, and the hashes of its data dependencies — plus the
//! git commit of the enclosing repository. The model's bytes are checked against the md5
//! DVC recorded: a model that changed since (`dvc repro`/`dvc commit` not run) is refused,
//! so the bundle never claims a lineage its model does not have.
use anyhow::{Context as _, bail};
use edgecd_bundle::provenance::{GitSource, Provenance, TrackedFile, TrainingRun};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};
use std::process::Command;

#[derive(Debug, Deserialize)]
struct Lock {
    #[serde(default)]
    stages: BTreeMap<String, Stage>,
}

#[derive(Debug, Deserialize)]
struct Stage {
    #[serde(default)]
    cmd: serde_yaml::Value,
    #[serde(default)]
    deps: Vec<Out>,
    #[serde(default)]
    outs: Vec<Out>,
    #[serde(default)]
    params: BTreeMap<String, BTreeMap<String, serde_yaml::Value>>,
}

/// A `.dvc` file: its outputs.
#[derive(Debug, Deserialize)]
struct DvcFile {
    #[serde(default)]
    outs: Vec<Out>,
}

#[derive(Debug, Deserialize)]
struct Out {
    path: String,
    #[serde(default)]
    md5: Option<String>,
    #[serde(default)]
    size: Option<u64>,
    #[serde(default)]
    nfiles: Option<u64>,
}

impl Out {
    fn tracked(&self, path: String) -> Option<TrackedFile> {
        Some(TrackedFile {
            path,
            origin: "dvc".into(),
            hash: format!("md5:{}", self.md5.as_deref()?),
            size: self.size,
            nfiles: self.nfiles,
            uri: None,
        })
    }
}

/// `a/./b/../c` → `a/c`, without touching the file system.
fn normalize(p: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            c => out.push(c),
        }
    }
    out
}

fn ancestors_until<'a>(start: &'a Path, root: &'a Path) -> impl Iterator<Item = &'a Path> {
    start.ancestors().take_while(move |a| a.starts_with(root))
}

/// The nearest directory at or above `dir` holding `marker`.
fn find_up(dir: &Path, marker: &str) -> Option<PathBuf> {
    dir.ancestors()
        .find(|a| a.join(marker).exists())
        .map(Path::to_path_buf)
}

fn md5_file(p: &Path) -> anyhow::Result<String> {
    use md5::Digest as _;
    let mut f = std::fs::File::open(p).with_context(|| format!("opening {}", p.display()))?;
    let mut h = md5::Md5::new();
    std::io::copy(&mut f, &mut h).with_context(|| format!("reading {}", p.display()))?;
    Ok(hex::encode(h.finalize()))
}

fn yaml_scalar(v: &serde_yaml::Value) -> String {
    match v {
        serde_yaml::Value::String(s) => s.clone(),
        serde_yaml::Value::Null => "null".into(),
        other => serde_json::to_string(other)
            .unwrap_or_default()
            .trim_matches('"')
            .to_string(),
    }
}

fn rel(p: &Path, root: &Path) -> String {
    p.strip_prefix(root)
        .unwrap_or(p)
        .to_string_lossy()
        .into_owned()
}

fn git(root: &Path, args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new("git")
        .arg("-C")
        .arg(root)
        .args(args)
        .output()
        .context("running git (needed to record the commit of a DVC-tracked model)")?;
    if !out.status.success() {
        bail!(
            "git {} in {}: {}",
            args.join(" "),
            root.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// What DVC says about one model file: the `.dvc` entry, or the `dvc.lock` stage
/// outputting it (with its data dependencies). `Ok(None)`: the model is not DVC-tracked.
fn model_provenance(
    model: &Path,
    filepath: &str,
    dvc_root: &Path,
    git_root: Option<&Path>,
    into: &mut Provenance,
    metadata_files: &mut Vec<PathBuf>,
) -> anyhow::Result<bool> {
    let dir = model.parent().unwrap_or(Path::new("/"));
    let name = model
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let check = |out: &Out, source: &Path| -> anyhow::Result<()> {
        let actual = md5_file(model)?;
        if out.md5.as_deref() != Some(actual.as_str()) {
            bail!(
                "{} (md5 {actual}) is not the file {} records (md5 {}): run `dvc repro` or `dvc commit` (or `dvc checkout` to restore it) and build again",
                model.display(),
                source.display(),
                out.md5.as_deref().unwrap_or("none")
            );
        }
        Ok(())
    };
    let mut found = false;
    let dvc_file = dir.join(format!("{name}.dvc"));
    if dvc_file.is_file() {
        let text = std::fs::read_to_string(&dvc_file)
            .with_context(|| format!("reading {}", dvc_file.display()))?;
        let f: DvcFile = serde_yaml::from_str(&text)
            .with_context(|| format!("parsing {}", dvc_file.display()))?;
        if let Some(out) = f
            .outs
            .iter()
            .find(|o| normalize(&dir.join(&o.path)) == model)
        {
            check(out, &dvc_file)?;
            into.models.extend(out.tracked(filepath.to_string()));
            metadata_files.push(dvc_file.clone());
            found = true;
        }
    }
    for lock_dir in ancestors_until(dir, dvc_root) {
        let lock_path = lock_dir.join("dvc.lock");
        if !lock_path.is_file() {
            continue;
        }
        let text = std::fs::read_to_string(&lock_path)
            .with_context(|| format!("reading {}", lock_path.display()))?;
        let lock: Lock = serde_yaml::from_str(&text)
            .with_context(|| format!("parsing {}", lock_path.display()))?;
        for (stage_name, stage) in &lock.stages {
            let Some(out) = stage
                .outs
                .iter()
                .find(|o| normalize(&lock_dir.join(&o.path)) == model)
            else {
                continue;
            };
            check(out, &lock_path)?;
            metadata_files.push(lock_path.clone());
            if !found {
                into.models.extend(out.tracked(filepath.to_string()));
            }
            found = true;
            let repo_root = git_root.unwrap_or(dvc_root);
            // Dependencies git tracks are code; the others (DVC-tracked) are data.
            let deps: Vec<(String, &Out)> = stage
                .deps
                .iter()
                .map(|d| (rel(&normalize(&lock_dir.join(&d.path)), repo_root), d))
                .collect();
            let in_git: Vec<String> = match git_root {
                Some(g) if !deps.is_empty() => {
                    let mut args = vec!["ls-files", "--"];
                    args.extend(deps.iter().map(|(p, _)| p.as_str()));
                    git(g, &args)?.lines().map(str::to_string).collect()
                }
                _ => vec![],
            };
            for (path, d) in deps {
                if !in_git
                    .iter()
                    .any(|g| g == &path || g.starts_with(&format!("{path}/")))
                {
                    into.datasets.extend(d.tracked(path));
                }
            }
            if into.training_run.is_none() {
                let mut params = BTreeMap::new();
                for (file, values) in &stage.params {
                    for (k, v) in values {
                        let key = if file == "params.yaml" {
                            k.clone()
                        } else {
                            format!("{file}:{k}")
                        };
                        params.insert(key, yaml_scalar(v));
                    }
                }
                let command = match &stage.cmd {
                    serde_yaml::Value::String(s) => Some(s.clone()),
                    serde_yaml::Value::Sequence(v) => {
                        Some(v.iter().map(yaml_scalar).collect::<Vec<_>>().join(" && "))
                    }
                    _ => None,
                };
                let lock_rel = rel(&lock_path, repo_root);
                into.training_run = Some(TrainingRun {
                    system: "dvc".into(),
                    id: stage_name.clone(),
                    name: Some(format!("{lock_rel}:{stage_name}")),
                    experiment: None,
                    model_uri: None,
                    command,
                    params,
                    metrics: BTreeMap::new(),
                });
            }
        }
    }
    Ok(found)
}

/// DVC provenance of `models` (absolute paths, each with its file path in the bundle);
/// `Ok(None)` when none of them is DVC-tracked.
pub fn provenance(models: &[(PathBuf, String)]) -> anyhow::Result<Option<Provenance>> {
    let mut p = Provenance::default();
    let mut metadata_files = vec![];
    let mut git_root = None;
    let mut any = false;
    for (model, filepath) in models {
        let model = normalize(
            &std::path::absolute(model)
                .with_context(|| format!("resolving {}", model.display()))?,
        );
        let dir = model.parent().unwrap_or(Path::new("/"));
        let Some(dvc_root) = find_up(dir, ".dvc").filter(|r| r.join(".dvc").is_dir()) else {
            continue;
        };
        let g = find_up(dir, ".git");
        if model_provenance(
            &model,
            filepath,
            &dvc_root,
            g.as_deref(),
            &mut p,
            &mut metadata_files,
        )? {
            any = true;
            git_root = git_root.or(g);
        }
    }
    if !any {
        return Ok(None);
    }
    if let Some(root) = git_root {
        let commit = git(&root, &["rev-parse", "HEAD"])
            .with_context(|| {
                format!(
                    "{} has no commit yet: commit dvc.lock / the .dvc files first",
                    root.display()
                )
            })?
            .trim()
            .to_string();
        let mut args = vec!["status".to_string(), "--porcelain".into(), "--".into()];
        args.extend(metadata_files.iter().map(|f| rel(f, &root)));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let dirty = !git(&root, &args)?.trim().is_empty();
        if dirty {
            eprintln!(
                "note: the DVC files of the model have uncommitted changes in {}: the bundle records commit {commit} as dirty",
                root.display()
            );
        }
        p.git = Some(GitSource { commit, dirty });
    }
    p.datasets.sort_by(|a, b| a.path.cmp(&b.path));
    p.datasets.dedup_by(|a, b| a.path == b.path);
    p.models.sort_by(|a, b| a.path.cmp(&b.path));
    p.models.dedup_by(|a, b| a.path == b.path);
    Ok(Some(p))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_normalize_without_the_file_system() {
        assert_eq!(
            normalize(Path::new("/r/a/./b/../c.onnx")),
            Path::new("/r/a/c.onnx")
        );
        let dirs: Vec<&Path> = ancestors_until(Path::new("/r/a/b"), Path::new("/r")).collect();
        assert_eq!(
            dirs,
            [Path::new("/r/a/b"), Path::new("/r/a"), Path::new("/r")]
        );
        assert_eq!(
            rel(Path::new("/r/data/x.csv"), Path::new("/r")),
            "data/x.csv"
        );
    }

    #[test]
    fn dvc_lock_stages_parse() {
        let lock: Lock = serde_yaml::from_str(
            "schema: '2.0'\nstages:\n  train:\n    cmd: python train.py\n    deps:\n    - path: data\n      hash: md5\n      md5: 0123456789abcdef0123456789abcdef.dir\n      size: 10\n      nfiles: 2\n    params:\n      params.yaml:\n        lr: 0.01\n    outs:\n    - path: model.onnx\n      hash: md5\n      md5: 0123456789abcdef0123456789abcdef\n      size: 4\n",
        )
        .unwrap();
        let t = &lock.stages["train"];
        assert_eq!(yaml_scalar(&t.params["params.yaml"]["lr"]), "0.01");
        let d = t.deps[0].tracked("data".into()).unwrap();
        assert_eq!(
            (d.md5(), d.nfiles),
            (None, Some(2)),
            "a directory hash is no file MD5"
        );
        assert_eq!(
            t.outs[0].tracked("m".into()).unwrap().md5(),
            Some("0123456789abcdef0123456789abcdef")
        );
    }
}

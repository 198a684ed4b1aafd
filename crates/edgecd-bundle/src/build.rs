//! Building a bundle from model files on disk (the I/O half; rendering is in `metadata`).
//!
//! Model files stream once: a reader thread reads and hashes fixed-size chunks while the
//! calling thread writes them at their precomputed offsets, so a multi-GB model never sits in
//! memory and hashing overlaps writing. Metadata sizes are fixed before hashing (digests have
//! a fixed length), so the archive layout is known up front and the metadata entries are
//! filled in at the front once the digests are known. Output is written to a temporary file,
//! fsynced and renamed into place: a failed build never leaves a half-written bundle.
use crate::digest::{format_digest, placeholder_digest};
use crate::error::BundleError;
use crate::metadata::{BundleMeta, Rendered, render};
use crate::tarfmt::{entry_len, file_header};
use edgecd_api::profile::{ModelEntry, Profile, SelfTest};
use sha2::{Digest as _, Sha256};
use std::fs::File;
use std::io::{Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// Chunk size of the streaming copy; `PIPELINE_DEPTH` chunks are in flight at most.
const CHUNK: usize = 1 << 20;
const PIPELINE_DEPTH: usize = 4;

/// What to build.
#[derive(Debug, Clone)]
pub struct BuildSpec {
    pub meta: BundleMeta,
    pub models: Vec<PathBuf>,
}

/// A bundle written to disk.
#[derive(Debug, Clone)]
pub struct BuiltBundle {
    pub path: PathBuf,
    pub sbom_path: PathBuf,
    /// The bundle's identity: `sha256:` of its OCI manifest.
    pub digest: String,
    pub archive_size: u64,
    pub profile: Profile,
}

/// The tool version recorded in SBOMs.
pub const TOOL_VERSION: &str = env!("CARGO_PKG_VERSION");

/// Checks a bundle name: 1-64 of `[a-z0-9._-]`, starting with a letter or digit.
pub fn validate_name(name: &str) -> Result<(), BundleError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
        && name.as_bytes()[0].is_ascii_alphanumeric();
    if ok {
        Ok(())
    } else {
        Err(BundleError::InvalidName(name.to_string()))
    }
}

/// Checks a semantic version.
pub fn validate_version(version: &str) -> Result<(), BundleError> {
    semver::Version::parse(version)
        .map(|_| ())
        .map_err(|e| BundleError::InvalidVersion(version.to_string(), e.to_string()))
}

/// File name of the bundle for `name` and `version`.
pub fn bundle_file_name(name: &str, version: &str) -> String {
    format!("{name}-{version}.edgecd")
}

/// Total bytes of model data a build will stream (for progress bars).
pub fn total_model_bytes(spec: &BuildSpec) -> u64 {
    spec.models
        .iter()
        .filter_map(|p| std::fs::metadata(p).ok())
        .map(|m| m.len())
        .sum()
}

/// Reads self-test vectors: `PATH` may be a `selftest.json` file or a directory holding one.
pub fn load_selftest(path: &Path) -> Result<SelfTest, BundleError> {
    let file = if path.is_dir() {
        path.join("selftest.json")
    } else {
        path.to_path_buf()
    };
    let bytes = std::fs::read(&file)
        .map_err(|e| BundleError::io(format!("reading self-test vectors {}", file.display()), e))?;
    let st: SelfTest =
        serde_json::from_slice(&bytes).map_err(|e| BundleError::InvalidSelfTest {
            path: file.clone(),
            reason: e.to_string(),
        })?;
    for case in &st.cases {
        for t in case.inputs.iter().chain(&case.outputs) {
            let n: usize = t.shape.iter().product();
            if n != t.data.len() {
                return Err(BundleError::InvalidSelfTest {
                    path: file.clone(),
                    reason: format!(
                        "case {:?} tensor {:?}: shape {:?} holds {n} values but data has {}",
                        case.name,
                        t.name,
                        t.shape,
                        t.data.len()
                    ),
                });
            }
        }
    }
    Ok(st)
}

struct ModelSource {
    path: PathBuf,
    entry: ModelEntry,
}

/// Adds the external data files of the ONNX models among `sources` (tensors stored outside
/// the `.onnx` file) as model files of their own, so a bundle never holds a model without its
/// data. Installed, every model file sits in `models/` under its file name, so a data file must
/// be beside its model under a plain file name; anything else is refused with the reason. A
/// data file also given with `--model` is packaged once.
fn add_external_data(sources: &mut Vec<ModelSource>) -> Result<(), BundleError> {
    let mut extra: Vec<ModelSource> = Vec::new();
    for s in sources.iter() {
        if s.entry.info.format != edgecd_api::model::ModelFormat::Onnx {
            continue;
        }
        for (tensor, location) in edgecd_inspect::onnx_external_data(&s.path)? {
            let refuse = |problem: &str| BundleError::ExternalData {
                model: s.entry.filepath.clone(),
                tensor: tensor.clone(),
                location: location.clone(),
                problem: problem.to_string(),
            };
            if location.contains('/') || !crate::read::valid_filepath(&location) {
                return Err(refuse(
                    "is not a plain file name beside the model (the bundle keeps model files flat)",
                ));
            }
            let data_path = s.path.parent().unwrap_or(Path::new(".")).join(&location);
            if !data_path.is_file() {
                return Err(refuse(&format!(
                    "does not exist ({} not found)",
                    data_path.display()
                )));
            }
            let same = |p: &Path| p.canonicalize().ok() == data_path.canonicalize().ok();
            let given = sources
                .iter()
                .chain(&extra)
                .find(|o| o.entry.filepath == location);
            match given {
                Some(o) if same(&o.path) => continue,
                Some(o) => {
                    return Err(refuse(&format!(
                        "is not the file {} also given as a model file under that name",
                        o.path.display()
                    )));
                }
                None => {}
            }
            let size = std::fs::metadata(&data_path)
                .map_err(|e| {
                    BundleError::io(format!("reading external data {}", data_path.display()), e)
                })?
                .len();
            extra.push(ModelSource {
                entry: ModelEntry {
                    filepath: location.clone(),
                    digest: placeholder_digest(),
                    size,
                    // Raw tensor bytes, never a model of its own.
                    info: edgecd_api::model::ModelInfo {
                        format: edgecd_api::model::ModelFormat::Opaque,
                        precision: edgecd_api::model::Precision::Unknown,
                        producer: None,
                        opset: None,
                        inputs: vec![],
                        outputs: vec![],
                        operators: vec![],
                        weight_dtypes: Default::default(),
                        quantization: vec![],
                    },
                },
                path: data_path,
            });
        }
    }
    sources.extend(extra);
    Ok(())
}

/// Builds `NAME-VERSION.edgecd` and `NAME-VERSION.cdx.json` in `out_dir`.
/// `progress` is called with the number of model bytes written since the last call.
pub fn build_bundle(
    spec: &BuildSpec,
    out_dir: &Path,
    progress: &mut dyn FnMut(u64),
) -> Result<BuiltBundle, BundleError> {
    let meta = &spec.meta;
    validate_name(&meta.name)?;
    validate_version(&meta.version)?;
    if let Some(p) = &meta.provenance {
        p.validate()?;
    }
    for (k, v) in &meta.labels {
        if k.is_empty()
            || k.len() > 63
            || !k
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-/".contains(&b))
        {
            return Err(BundleError::InvalidLabel(
                format!("{k}={v}"),
                "keys are 1-63 characters of a-z, 0-9, '.', '_', '-', '/'".into(),
            ));
        }
        if v.len() > 256 || v.chars().any(char::is_control) {
            return Err(BundleError::InvalidLabel(
                format!("{k}={v}"),
                "values are at most 256 printable characters".into(),
            ));
        }
    }
    if spec.models.is_empty() {
        return Err(BundleError::NoModels);
    }
    if let Some(st) = &meta.selftest {
        for c in &st.cases {
            if !spec
                .models
                .iter()
                .any(|p| p.file_name().and_then(|n| n.to_str()) == Some(c.model.as_str()))
            {
                return Err(BundleError::InvalidSelfTest {
                    path: PathBuf::from("selftest"),
                    reason: format!(
                        "case {:?} names model {:?}, which is not one of the --model files",
                        c.name, c.model
                    ),
                });
            }
        }
    }

    // Inspect every model (memory-mapped reads; no inference).
    let mut sources = Vec::with_capacity(spec.models.len());
    for path in &spec.models {
        let filepath = path
            .file_name()
            .and_then(|n| n.to_str())
            .filter(|n| crate::read::valid_filepath(n))
            .ok_or_else(|| BundleError::InvalidFilePath(path.display().to_string()))?
            .to_string();
        let size = std::fs::metadata(path)
            .map_err(|e| BundleError::io(format!("reading model file {}", path.display()), e))?
            .len();
        let info = edgecd_inspect::inspect_path(path)?;
        sources.push(ModelSource {
            path: path.clone(),
            entry: ModelEntry {
                filepath,
                digest: placeholder_digest(),
                size,
                info,
            },
        });
    }
    add_external_data(&mut sources)?;
    sources.sort_by(|a, b| a.entry.filepath.cmp(&b.entry.filepath));
    for w in sources.windows(2) {
        if w[0].entry.filepath == w[1].entry.filepath {
            return Err(BundleError::DuplicateModelName(w[0].entry.filepath.clone()));
        }
    }

    // Layout with placeholder digests: every size is already final.
    let entries: Vec<ModelEntry> = sources.iter().map(|s| s.entry.clone()).collect();
    let sized = render(meta, &entries, TOOL_VERSION);
    let meta_len: u64 = sized
        .entries()
        .iter()
        .map(|(_, b)| entry_len(b.len() as u64))
        .sum();
    let total = sized.archive_len(entries.iter().map(|e| e.size));

    std::fs::create_dir_all(out_dir).map_err(|e| {
        BundleError::io(
            format!("creating output directory {}", out_dir.display()),
            e,
        )
    })?;
    let file_name = bundle_file_name(&meta.name, &meta.version);
    let final_path = out_dir.join(&file_name);
    let tmp = tempfile::Builder::new()
        .prefix(&format!(".{file_name}."))
        .suffix(".tmp")
        .tempfile_in(out_dir)
        .map_err(|e| {
            BundleError::io(
                format!("creating a temporary file in {}", out_dir.display()),
                e,
            )
        })?;
    let out = tmp.as_file();
    out.set_len(total).map_err(|e| {
        BundleError::io(
            format!("reserving {total} bytes for {}", final_path.display()),
            e,
        )
    })?;

    // Stream model files into place.
    let mut offset = meta_len;
    for s in &mut sources {
        let hash = copy_hashing(&s.path, s.entry.size, out, offset + 512, progress)?;
        let digest = format_digest(&hash);
        let name = format!("blobs/sha256/{}", hex::encode(hash));
        out.write_all_at(&file_header(&name, s.entry.size), offset)
            .map_err(|e| BundleError::io(format!("writing {}", final_path.display()), e))?;
        s.entry.digest = digest;
        offset += entry_len(s.entry.size);
    }
    for (i, a) in sources.iter().enumerate() {
        if let Some(b) = sources[i + 1..]
            .iter()
            .find(|b| b.entry.digest == a.entry.digest)
        {
            return Err(BundleError::DuplicateModelContent(
                a.entry.filepath.clone(),
                b.entry.filepath.clone(),
                a.entry.digest.clone(),
            ));
        }
    }

    // Real metadata: same sizes, real digests.
    let entries: Vec<ModelEntry> = sources.iter().map(|s| s.entry.clone()).collect();
    let rendered = render(meta, &entries, TOOL_VERSION);
    write_metadata(out, &rendered, &sized)
        .map_err(|e| BundleError::io(format!("writing {}", final_path.display()), e))?;
    make_public(out, &final_path)?;
    out.sync_all()
        .map_err(|e| BundleError::io(format!("syncing {}", final_path.display()), e))?;
    tmp.persist(&final_path)
        .map_err(|e| BundleError::io(format!("renaming into {}", final_path.display()), e.error))?;

    let sbom_path = out_dir.join(format!("{}-{}.cdx.json", meta.name, meta.version));
    write_atomic(&sbom_path, &rendered.sbom)?;
    sync_dir(out_dir)?;
    Ok(BuiltBundle {
        path: final_path,
        sbom_path,
        digest: rendered.manifest_digest.clone(),
        archive_size: total,
        profile: rendered.profile,
    })
}

fn write_metadata(out: &File, rendered: &Rendered, sized: &Rendered) -> std::io::Result<()> {
    let mut offset = 0u64;
    for ((name, bytes), (_, planned)) in rendered.entries().iter().zip(sized.entries().iter()) {
        assert_eq!(
            bytes.len(),
            planned.len(),
            "metadata size must not depend on digest values ({name})"
        );
        out.write_all_at(&file_header(name, bytes.len() as u64), offset)?;
        out.write_all_at(bytes, offset + 512)?;
        offset += entry_len(bytes.len() as u64);
    }
    Ok(())
}

/// Copies exactly `len` bytes of `src` to `dst` at `offset`, hashing them on a second thread.
fn copy_hashing(
    src: &Path,
    len: u64,
    dst: &File,
    offset: u64,
    progress: &mut dyn FnMut(u64),
) -> Result<[u8; 32], BundleError> {
    let mut input = File::open(src)
        .map_err(|e| BundleError::io(format!("opening model file {}", src.display()), e))?;
    let (full_tx, full_rx) = std::sync::mpsc::sync_channel::<(Vec<u8>, usize)>(PIPELINE_DEPTH);
    let (free_tx, free_rx) = std::sync::mpsc::sync_channel::<Vec<u8>>(PIPELINE_DEPTH);
    for _ in 0..PIPELINE_DEPTH {
        free_tx.send(vec![0u8; CHUNK]).expect("channel has room");
    }
    std::thread::scope(|scope| {
        let reader = scope.spawn(move || -> Result<[u8; 32], BundleError> {
            let mut hasher = Sha256::new();
            let mut left = len;
            while left > 0 {
                let Ok(mut buf) = free_rx.recv() else { break };
                let want = left.min(CHUNK as u64) as usize;
                let mut got = 0;
                while got < want {
                    match input.read(&mut buf[got..want]) {
                        Ok(0) => {
                            return Err(BundleError::ModelChanged {
                                path: src.to_path_buf(),
                                expected: len,
                            });
                        }
                        Ok(n) => got += n,
                        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                        Err(e) => {
                            return Err(BundleError::io(
                                format!("reading model file {}", src.display()),
                                e,
                            ));
                        }
                    }
                }
                hasher.update(&buf[..want]);
                left -= want as u64;
                if full_tx.send((buf, want)).is_err() {
                    break;
                }
            }
            let mut probe = [0u8; 1];
            if matches!(input.read(&mut probe), Ok(n) if n > 0) {
                return Err(BundleError::ModelChanged {
                    path: src.to_path_buf(),
                    expected: len,
                });
            }
            Ok(hasher.finalize().into())
        });
        let mut pos = offset;
        let mut write_err = None;
        for (buf, n) in full_rx {
            if let Err(e) = dst.write_all_at(&buf[..n], pos) {
                write_err = Some(BundleError::io("writing the bundle", e));
                break;
            }
            pos += n as u64;
            progress(n as u64);
            // The reader may already be done (and its receiver gone): keep draining.
            let _ = free_tx.send(buf);
        }
        drop(free_tx);
        let hashed = reader.join().expect("hashing thread does not panic");
        match write_err {
            Some(e) => Err(e),
            None => hashed,
        }
    })
}

/// Gives a file being written for `path` mode 0644 (public artifacts: bundles, signatures,
/// SBOMs, release manifests), set explicitly so neither the temporary file's 0600 nor the
/// umask decides it.
fn make_public(f: &File, path: &Path) -> Result<(), BundleError> {
    use std::os::unix::fs::PermissionsExt as _;
    f.set_permissions(std::fs::Permissions::from_mode(0o644))
        .map_err(|e| BundleError::io(format!("setting permissions of {}", path.display()), e))
}

/// Writes a public artifact: `bytes` to `path` (mode 0644) via a temporary file, fsync and
/// rename.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), BundleError> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let mut tmp = tempfile::Builder::new()
        .prefix(".edgecd.")
        .suffix(".tmp")
        .tempfile_in(dir)
        .map_err(|e| {
            BundleError::io(format!("creating a temporary file in {}", dir.display()), e)
        })?;
    tmp.write_all(bytes)
        .map_err(|e| BundleError::io(format!("writing {}", path.display()), e))?;
    make_public(tmp.as_file(), path)?;
    tmp.as_file()
        .sync_all()
        .map_err(|e| BundleError::io(format!("syncing {}", path.display()), e))?;
    tmp.persist(path)
        .map_err(|e| BundleError::io(format!("renaming into {}", path.display()), e.error))?;
    Ok(())
}

fn sync_dir(dir: &Path) -> Result<(), BundleError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| BundleError::io(format!("syncing directory {}", dir.display()), e))
}

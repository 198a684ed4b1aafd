//! Reading a bundle safely: one streaming pass that checks the archive's structure, every
//! blob's digest and size, the manifest's signature (before any model byte is read), and
//! the profile's agreement with the manifest; optionally unpacking into a target directory.
//!
//! Refused, each with its own error: absolute paths, `..`, symlinks, hard links, device
//! files and FIFOs, duplicate entries, unexpected names, blobs whose content differs from
//! their name or descriptor, a manifest over 1 MiB, a declared size larger than the file,
//! more than `MAX_ENTRIES` entries. Nothing is ever written outside the target directory:
//! every path written is built from fixed names and validated model file paths.
use crate::digest::{digest_hex, format_digest, sha256_digest};
use crate::error::BundleError;
use crate::oci::*;
use edgecd_api::layout;
use edgecd_api::profile::{PROFILE_MEDIA_TYPE, Profile};
use edgecd_sign::{SigstoreBundle, VerifyingKey};
use sha2::{Digest as _, Sha256};
use std::collections::{BTreeMap, HashSet};
use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

/// Most entries a bundle archive may hold.
pub const MAX_ENTRIES: usize = 1024;
/// Largest `index.json`, `oci-layout` or manifest accepted.
pub const MAX_MANIFEST_BYTES: u64 = 1 << 20;
/// Largest config, profile or SBOM accepted (self-test vectors can be sizeable).
pub const MAX_METADATA_BYTES: u64 = 64 << 20;

/// What a successful read learned about a bundle.
#[derive(Debug, Clone)]
pub struct BundleSummary {
    /// `sha256:` of the manifest: the bundle's identity, and what signatures cover.
    pub digest: String,
    pub manifest_bytes: Vec<u8>,
    pub manifest: ImageManifest,
    pub config: ModelConfig,
    pub profile: Profile,
    pub sbom_digest: Option<String>,
    pub sbom: Option<Vec<u8>>,
    /// Size and SHA-256 of the whole `.edgecd` file.
    pub archive_size: u64,
    pub archive_digest: String,
    /// The key hint of the signature that was checked, if one was.
    pub signed_by: Option<String>,
}

/// A value that passed signature and digest verification. Only this crate constructs it.
#[derive(Debug, Clone)]
pub struct Verified<T>(T);

impl<T> Verified<T> {
    pub fn into_inner(self) -> T {
        self.0
    }
}

impl<T> std::ops::Deref for Verified<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

impl<T> Verified<T> {
    pub(crate) fn new(value: T) -> Self {
        Self(value)
    }
}

/// Reads `path`, checking structure and every digest, without a signature check
/// (for `bundle inspect`). Anything that must be trusted needs [`verify_bundle`].
pub fn read_bundle(
    path: &Path,
    progress: &mut dyn FnMut(u64),
) -> Result<BundleSummary, BundleError> {
    run(path, None, None, progress)
}

/// Reads `path` and checks the Sigstore `signature` over its manifest with `key`, then every
/// blob digest and size and the archive's structure.
pub fn verify_bundle(
    path: &Path,
    key: &VerifyingKey,
    signature: &SigstoreBundle,
    progress: &mut dyn FnMut(u64),
) -> Result<Verified<BundleSummary>, BundleError> {
    run(path, Some((key, signature)), None, progress).map(Verified::new)
}

/// Verifies like [`verify_bundle`] and unpacks into `target` (created if missing; must be
/// empty) in the layout of `edgecd_api::layout`. On any error `target` is left empty.
pub fn unpack_bundle(
    path: &Path,
    target: &Path,
    key: &VerifyingKey,
    signature: &SigstoreBundle,
    progress: &mut dyn FnMut(u64),
) -> Result<Verified<BundleSummary>, BundleError> {
    let existed = target.exists();
    if existed {
        let mut entries = std::fs::read_dir(target)
            .map_err(|e| BundleError::io(format!("reading {}", target.display()), e))?;
        if entries.next().is_some() {
            return Err(BundleError::TargetNotEmpty(target.to_path_buf()));
        }
    } else {
        std::fs::create_dir_all(target)
            .map_err(|e| BundleError::io(format!("creating {}", target.display()), e))?;
    }
    let result = run(path, Some((key, signature)), Some(target), progress);
    if result.is_err() {
        // Leave nothing half-unpacked behind.
        let _ = std::fs::remove_dir_all(target);
        if existed {
            let _ = std::fs::create_dir(target);
        }
    }
    result.map(Verified::new)
}

/// A model file path from the manifest is safe to join under a directory: relative, no `..`
/// or `.` or empty components, no backslashes or NULs, at most 255 bytes.
pub fn valid_filepath(p: &str) -> bool {
    !p.is_empty()
        && p.len() <= 255
        && !p.starts_with('/')
        && !p.contains('\\')
        && !p.contains('\0')
        && p.split('/').all(|c| !c.is_empty() && c != "." && c != "..")
}

/// Counts and hashes every byte the tar parser reads.
struct CountingReader<R> {
    inner: R,
    hasher: Sha256,
    read: u64,
}

impl<R: Read> Read for CountingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.read += n as u64;
        Ok(n)
    }
}

enum Stage {
    /// Before `index.json`.
    Start,
    /// `index.json` read; the manifest blob comes next.
    Manifest(Descriptor),
    /// Manifest read; the blobs it describes follow.
    Blobs,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BlobKind {
    Config,
    Profile,
    Sbom,
    Model,
}

struct Expected {
    kind: BlobKind,
    descriptor: Descriptor,
}

fn what(e: &Expected) -> String {
    match e.kind {
        BlobKind::Config => "ModelPack config".into(),
        BlobKind::Profile => "edgecd profile".into(),
        BlobKind::Sbom => "SBOM".into(),
        BlobKind::Model => format!(
            "model file {}",
            e.descriptor
                .annotations
                .get(FILEPATH_ANNOTATION)
                .map(String::as_str)
                .unwrap_or("?")
        ),
    }
}

fn read_err(context: &str) -> impl FnOnce(std::io::Error) -> BundleError + '_ {
    move |source| BundleError::Read {
        context: context.to_string(),
        source,
    }
}

fn run(
    path: &Path,
    signature: Option<(&VerifyingKey, &SigstoreBundle)>,
    target: Option<&Path>,
    progress: &mut dyn FnMut(u64),
) -> Result<BundleSummary, BundleError> {
    let shown = path.display().to_string();
    let file =
        File::open(path).map_err(|e| BundleError::io(format!("opening bundle {shown}"), e))?;
    let total_len = file
        .metadata()
        .map_err(|e| BundleError::io(format!("reading {shown}"), e))?
        .len();
    let mut reader = CountingReader {
        inner: std::io::BufReader::with_capacity(256 << 10, file),
        hasher: Sha256::new(),
        read: 0,
    };

    let mut seen: HashSet<String> = HashSet::new();
    let mut count = 0usize;
    let mut stage = Stage::Start;
    let mut have_layout = false;
    let mut expected: BTreeMap<String, Expected> = BTreeMap::new();
    let mut manifest: Option<(String, Vec<u8>, ImageManifest)> = None;
    let mut config: Option<ModelConfig> = None;
    let mut profile: Option<Profile> = None;
    let mut sbom: Option<(String, Vec<u8>)> = None;
    let mut signed_by = None;
    let mut index_bytes = Vec::new();

    loop {
        let mut hdr = [0u8; 512];
        read_block(&mut reader, &mut hdr, &shown)?;
        if hdr.iter().all(|&b| b == 0) {
            // End of archive: exactly one more zero block, then end of file.
            read_block(&mut reader, &mut hdr, &shown)?;
            let mut extra = [0u8; 1];
            if hdr.iter().any(|&b| b != 0)
                || reader
                    .read(&mut extra)
                    .map_err(read_err("the end of the archive"))?
                    != 0
            {
                return Err(BundleError::TrailingData {
                    offset: reader.read - 512,
                });
            }
            break;
        }
        let header = tar::Header::from_byte_slice(&hdr);
        let stored = header.cksum().map_err(|e| BundleError::NotAnArchive {
            path: shown.clone(),
            reason: format!("corrupt tar header at byte {}: {e}", reader.read - 512),
        })?;
        let computed: u32 = hdr
            .iter()
            .enumerate()
            .map(|(i, &b)| {
                if (148..156).contains(&i) {
                    32
                } else {
                    u32::from(b)
                }
            })
            .sum();
        if stored != computed {
            return Err(BundleError::NotAnArchive {
                path: shown.clone(),
                reason: format!(
                    "tar header checksum mismatch at byte {} (corrupted)",
                    reader.read - 512
                ),
            });
        }
        count += 1;
        if count > MAX_ENTRIES {
            return Err(BundleError::TooManyEntries { limit: MAX_ENTRIES });
        }
        let name = String::from_utf8_lossy(&header.path_bytes()).into_owned();
        let raw_name = name.clone();
        let kind = header.entry_type();
        use tar::EntryType as T;
        match kind {
            T::Symlink => return Err(BundleError::Symlink { entry: raw_name }),
            T::Link => return Err(BundleError::HardLink { entry: raw_name }),
            T::Char | T::Block | T::Fifo => {
                return Err(BundleError::SpecialFile { entry: raw_name });
            }
            _ => {}
        }
        if name.starts_with('/') {
            return Err(BundleError::AbsolutePath { entry: raw_name });
        }
        if name.split('/').any(|c| c == "..") {
            return Err(BundleError::ParentTraversal { entry: raw_name });
        }
        if kind != T::Regular {
            return Err(BundleError::UnsupportedEntry {
                entry: raw_name,
                kind: format!("{kind:?}"),
            });
        }
        if !seen.insert(name.clone()) {
            return Err(BundleError::DuplicateEntry { entry: raw_name });
        }
        let size = header.size().map_err(|e| BundleError::NotAnArchive {
            path: shown.clone(),
            reason: e.to_string(),
        })?;
        let available = total_len.saturating_sub(reader.read);
        if size > available {
            return Err(BundleError::DeclaredSizeTooLarge {
                entry: raw_name,
                declared: size,
                available,
            });
        }
        if hdr != crate::tarfmt::file_header(&name, size) {
            return Err(BundleError::NonCanonicalHeader { entry: raw_name });
        }
        let mut entry = (&mut reader).take(size);
        'entry: {
            if name == OCI_LAYOUT_FILE {
                let bytes = read_small(&mut entry, &name, "oci-layout", size, MAX_MANIFEST_BYTES)?;
                if bytes != crate::metadata::render_oci_layout() {
                    return Err(BundleError::InvalidMetadata { what: "oci-layout", reason: "not the canonical {\"imageLayoutVersion\": \"1.0.0\"} document (modified?)".into() });
                }
                have_layout = true;
                break 'entry;
            }
            if name == INDEX_FILE {
                let bytes = read_small(&mut entry, &name, "index.json", size, MAX_MANIFEST_BYTES)?;
                let index: ImageIndex = parse("index.json", &bytes)?;
                let [desc] = index.manifests.as_slice() else {
                    return Err(BundleError::InvalidMetadata {
                        what: "index.json",
                        reason: format!(
                            "a bundle holds exactly one manifest, this index lists {}",
                            index.manifests.len()
                        ),
                    });
                };
                if desc.media_type != OCI_MANIFEST_MEDIA_TYPE || digest_hex(&desc.digest).is_none()
                {
                    return Err(BundleError::InvalidMetadata {
                        what: "index.json",
                        reason: format!(
                            "manifest descriptor {} ({}) is not an OCI image manifest",
                            desc.digest, desc.media_type
                        ),
                    });
                }
                if desc.size > MAX_MANIFEST_BYTES {
                    return Err(BundleError::MetadataTooLarge {
                        what: "manifest",
                        entry: desc.digest.clone(),
                        size: desc.size,
                        limit: MAX_MANIFEST_BYTES,
                    });
                }
                index_bytes = bytes.clone();
                stage = Stage::Manifest(desc.clone());
                break 'entry;
            }
            let Some(hex) = name
                .strip_prefix("blobs/sha256/")
                .filter(|h| digest_hex(&format!("sha256:{h}")).is_some())
            else {
                return Err(BundleError::UnexpectedEntry { entry: raw_name });
            };
            let digest = format!("sha256:{hex}");
            match &stage {
                Stage::Start => {
                    return Err(BundleError::OutOfOrder {
                        entry: name,
                        expected: "oci-layout and index.json first".into(),
                    });
                }
                Stage::Manifest(desc) => {
                    if !have_layout {
                        return Err(BundleError::OutOfOrder {
                            entry: name,
                            expected: "oci-layout before the blobs".into(),
                        });
                    }
                    if digest != desc.digest {
                        return Err(BundleError::OutOfOrder {
                            entry: name,
                            expected: format!("the manifest blob {} first", desc.digest),
                        });
                    }
                    let bytes =
                        read_small(&mut entry, &name, "manifest", size, MAX_MANIFEST_BYTES)?;
                    check_blob(&name, &bytes, desc, "manifest")?;
                    let m: ImageManifest = parse("manifest", &bytes)?;
                    let version = m
                        .annotations
                        .get(VERSION_ANNOTATION)
                        .cloned()
                        .unwrap_or_default();
                    if index_bytes
                        != crate::metadata::render_index(&digest, bytes.len() as u64, &version)
                    {
                        return Err(BundleError::InvalidMetadata { what: "index.json", reason: "it is not the canonical index for this manifest (modified after the bundle was built?)".into() });
                    }
                    if let Some((key, sig)) = signature {
                        edgecd_sign::verify_artifact(sig, &bytes, key)?;
                        signed_by = Some(key.hint());
                    }
                    expected = expectations(&m)?;
                    manifest = Some((digest, bytes, m));
                    stage = Stage::Blobs;
                }
                Stage::Blobs => {
                    let Some(exp) = expected.remove(&digest) else {
                        return Err(BundleError::UnreferencedBlob { entry: name });
                    };
                    if size != exp.descriptor.size {
                        return Err(BundleError::BlobSizeMismatch {
                            digest,
                            what: what(&exp),
                            expected: exp.descriptor.size,
                            actual: size,
                        });
                    }
                    match exp.kind {
                        BlobKind::Model => {
                            let filepath = exp.descriptor.annotations[FILEPATH_ANNOTATION].clone();
                            stream_model(&mut entry, &name, size, target, &filepath)?;
                        }
                        kind => {
                            let bytes = read_small(
                                &mut entry,
                                &name,
                                "metadata blob",
                                size,
                                MAX_METADATA_BYTES,
                            )?;
                            check_blob(&name, &bytes, &exp.descriptor, &what(&exp))?;
                            match kind {
                                BlobKind::Config => {
                                    config = Some(parse("ModelPack config", &bytes)?)
                                }
                                BlobKind::Profile => {
                                    profile = Some(parse("edgecd profile", &bytes)?)
                                }
                                _ => sbom = Some((digest.clone(), bytes.clone())),
                            }
                            if let Some(dir) = target {
                                let file = match kind {
                                    BlobKind::Config => layout::CONFIG_FILE,
                                    BlobKind::Profile => layout::PROFILE_FILE,
                                    _ => layout::SBOM_FILE,
                                };
                                write_new(&dir.join(file), &bytes)?;
                            }
                        }
                    }
                }
            }
        }
        let padding = size.div_ceil(512) * 512 - size;
        let mut pad = [0u8; 512];
        reader
            .read_exact(&mut pad[..padding as usize])
            .map_err(read_err(&name))?;
        if pad.iter().any(|&b| b != 0) {
            return Err(BundleError::NonZeroPadding { entry: name });
        }
        progress(512 + size + padding);
    }

    let Some((digest, manifest_bytes, manifest)) = manifest else {
        return Err(BundleError::InvalidMetadata {
            what: "archive",
            reason: "no index.json and manifest found: this is not an edgecd bundle".into(),
        });
    };
    if let Some(exp) = expected.into_values().next() {
        return Err(BundleError::MissingBlob {
            digest: exp.descriptor.digest.clone(),
            what: what(&exp),
        });
    }
    let config = config.expect("config is an expected blob");
    let profile = profile.expect("profile is an expected blob");
    check_profile(&manifest, &config, &profile)?;
    if let Some(dir) = target {
        write_new(&dir.join(layout::MANIFEST_FILE), &manifest_bytes)?;
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| BundleError::io(format!("syncing {}", dir.display()), e))?;
    }
    Ok(BundleSummary {
        digest,
        manifest_bytes,
        manifest,
        config,
        profile,
        sbom_digest: sbom.as_ref().map(|s| s.0.clone()),
        sbom: sbom.map(|s| s.1),
        archive_size: reader.read,
        archive_digest: format_digest(&reader.hasher.finalize().into()),
        signed_by,
    })
}

fn read_block(
    reader: &mut impl Read,
    block: &mut [u8; 512],
    shown: &str,
) -> Result<(), BundleError> {
    reader.read_exact(block).map_err(|e| match e.kind() {
        std::io::ErrorKind::UnexpectedEof => BundleError::NotAnArchive {
            path: shown.to_string(),
            reason: "the archive ends without its end-of-archive marker (truncated download?)"
                .into(),
        },
        _ => BundleError::Read {
            context: shown.to_string(),
            source: e,
        },
    })
}

fn parse<T: serde::de::DeserializeOwned>(
    what: &'static str,
    bytes: &[u8],
) -> Result<T, BundleError> {
    serde_json::from_slice(bytes).map_err(|e| BundleError::InvalidMetadata {
        what,
        reason: e.to_string(),
    })
}

fn read_small(
    entry: &mut impl Read,
    name: &str,
    what: &'static str,
    size: u64,
    limit: u64,
) -> Result<Vec<u8>, BundleError> {
    if size > limit {
        return Err(BundleError::MetadataTooLarge {
            what,
            entry: name.to_string(),
            size,
            limit,
        });
    }
    let mut buf = Vec::with_capacity(size as usize);
    entry
        .take(size)
        .read_to_end(&mut buf)
        .map_err(read_err(name))?;
    if buf.len() as u64 != size {
        return Err(BundleError::DeclaredSizeTooLarge {
            entry: name.to_string(),
            declared: size,
            available: buf.len() as u64,
        });
    }
    Ok(buf)
}

fn check_blob(name: &str, bytes: &[u8], desc: &Descriptor, what: &str) -> Result<(), BundleError> {
    let actual = sha256_digest(bytes);
    if !name.ends_with(digest_hex(&actual).expect("well formed")) {
        return Err(BundleError::BlobDigestMismatch {
            entry: name.to_string(),
            actual,
        });
    }
    if bytes.len() as u64 != desc.size {
        return Err(BundleError::BlobSizeMismatch {
            digest: actual,
            what: what.to_string(),
            expected: desc.size,
            actual: bytes.len() as u64,
        });
    }
    Ok(())
}

fn stream_model(
    entry: &mut impl Read,
    name: &str,
    size: u64,
    target: Option<&Path>,
    filepath: &str,
) -> Result<(), BundleError> {
    let mut out = match target {
        Some(dir) => {
            let path = dir.join(layout::MODELS_DIR).join(filepath);
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent)
                    .map_err(|e| BundleError::io(format!("creating {}", parent.display()), e))?;
            }
            Some((
                File::create_new(&path)
                    .map_err(|e| BundleError::io(format!("creating {}", path.display()), e))?,
                path,
            ))
        }
        None => None,
    };
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; size.clamp(1, 1 << 20) as usize];
    let mut left = size;
    while left > 0 {
        let want = left.min(buf.len() as u64) as usize;
        let n = entry.read(&mut buf[..want]).map_err(read_err(name))?;
        if n == 0 {
            return Err(BundleError::DeclaredSizeTooLarge {
                entry: name.to_string(),
                declared: size,
                available: size - left,
            });
        }
        hasher.update(&buf[..n]);
        if let Some((f, path)) = out.as_mut() {
            f.write_all(&buf[..n])
                .map_err(|e| BundleError::io(format!("writing {}", path.display()), e))?;
        }
        left -= n as u64;
    }
    let actual = format_digest(&hasher.finalize().into());
    if !name.ends_with(digest_hex(&actual).expect("well formed")) {
        return Err(BundleError::BlobDigestMismatch {
            entry: name.to_string(),
            actual,
        });
    }
    if let Some((f, path)) = out {
        f.sync_all()
            .map_err(|e| BundleError::io(format!("syncing {}", path.display()), e))?;
    }
    Ok(())
}

fn write_new(path: &PathBuf, bytes: &[u8]) -> Result<(), BundleError> {
    let mut f = File::create_new(path)
        .map_err(|e| BundleError::io(format!("creating {}", path.display()), e))?;
    f.write_all(bytes)
        .and_then(|_| f.sync_all())
        .map_err(|e| BundleError::io(format!("writing {}", path.display()), e))
}

/// What the manifest promises: every blob that must follow, keyed by digest.
fn expectations(m: &ImageManifest) -> Result<BTreeMap<String, Expected>, BundleError> {
    let bad = |reason: String| BundleError::InvalidMetadata {
        what: "manifest",
        reason,
    };
    if m.schema_version != 2 || m.media_type != OCI_MANIFEST_MEDIA_TYPE {
        return Err(bad(format!(
            "schemaVersion {} / mediaType {:?} is not an OCI image manifest",
            m.schema_version, m.media_type
        )));
    }
    if m.artifact_type.as_deref() != Some(MODEL_ARTIFACT_TYPE) {
        return Err(bad(format!(
            "artifactType {:?} is not {MODEL_ARTIFACT_TYPE}",
            m.artifact_type
        )));
    }
    if m.config.media_type != MODEL_CONFIG_MEDIA_TYPE {
        return Err(bad(format!(
            "config mediaType {:?} is not {MODEL_CONFIG_MEDIA_TYPE}",
            m.config.media_type
        )));
    }
    if m.layers.len() + 3 > MAX_ENTRIES {
        return Err(BundleError::TooManyEntries { limit: MAX_ENTRIES });
    }
    let mut out = BTreeMap::new();
    let mut add = |kind: BlobKind, d: &Descriptor| -> Result<(), BundleError> {
        if digest_hex(&d.digest).is_none() {
            return Err(bad(format!(
                "descriptor digest {:?} is not sha256:<64 hex>",
                d.digest
            )));
        }
        if out
            .insert(
                d.digest.clone(),
                Expected {
                    kind,
                    descriptor: d.clone(),
                },
            )
            .is_some()
        {
            return Err(bad(format!("blob {} is listed twice", d.digest)));
        }
        Ok(())
    };
    add(BlobKind::Config, &m.config)?;
    let (mut profiles, mut sboms, mut models) = (0, 0, 0);
    let mut paths = HashSet::new();
    for l in &m.layers {
        let kind = match l.media_type.as_str() {
            PROFILE_MEDIA_TYPE => {
                profiles += 1;
                BlobKind::Profile
            }
            SBOM_MEDIA_TYPE => {
                sboms += 1;
                BlobKind::Sbom
            }
            t if t.starts_with("application/vnd.cncf.model.weight.") => {
                models += 1;
                let fp = l.annotations.get(FILEPATH_ANNOTATION).ok_or_else(|| {
                    bad(format!(
                        "model layer {} has no {FILEPATH_ANNOTATION} annotation",
                        l.digest
                    ))
                })?;
                if !valid_filepath(fp) {
                    return Err(BundleError::InvalidFilePath(fp.clone()));
                }
                if !paths.insert(fp.clone()) {
                    return Err(bad(format!("two model layers use the file path {fp:?}")));
                }
                BlobKind::Model
            }
            other => return Err(bad(format!("unknown layer media type {other:?}"))),
        };
        add(kind, l)?;
    }
    if profiles != 1 || sboms > 1 || models == 0 {
        return Err(bad(format!(
            "a bundle has exactly one profile layer, at most one SBOM and at least one model layer (found {profiles}, {sboms}, {models})"
        )));
    }
    Ok(out)
}

fn check_profile(m: &ImageManifest, config: &ModelConfig, p: &Profile) -> Result<(), BundleError> {
    let mismatch = |s: String| BundleError::ProfileMismatch(s);
    let models: Vec<&Descriptor> = m
        .layers
        .iter()
        .filter(|l| l.annotations.contains_key(FILEPATH_ANNOTATION))
        .collect();
    if p.models.len() != models.len() {
        return Err(mismatch(format!(
            "profile lists {} models, manifest {}",
            p.models.len(),
            models.len()
        )));
    }
    for (pm, l) in p.models.iter().zip(&models) {
        if pm.filepath != l.annotations[FILEPATH_ANNOTATION]
            || pm.digest != l.digest
            || pm.size != l.size
        {
            return Err(mismatch(format!(
                "model {:?} ({} bytes, {}) differs from its manifest layer",
                pm.filepath, pm.size, pm.digest
            )));
        }
    }
    if config.modelfs.diff_ids != models.iter().map(|l| l.digest.clone()).collect::<Vec<_>>() {
        return Err(mismatch(
            "ModelPack config diffIds differ from the model layers".into(),
        ));
    }
    if m.annotations.get(TITLE_ANNOTATION) != Some(&p.name)
        || m.annotations.get(VERSION_ANNOTATION) != Some(&p.version)
    {
        return Err(mismatch(format!(
            "manifest names {:?} {:?}, profile {} {}",
            m.annotations.get(TITLE_ANNOTATION),
            m.annotations.get(VERSION_ANNOTATION),
            p.name,
            p.version
        )));
    }
    Ok(())
}

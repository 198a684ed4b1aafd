//! Every way building, reading or verifying a bundle can fail, each with a message that says
//! what is wrong and what to do.
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    // ---- building ----
    #[error(
        "invalid bundle name {0:?}: use 1-64 characters from a-z, 0-9, '.', '_' and '-', starting with a letter or digit"
    )]
    InvalidName(String),
    #[error("invalid version {0:?}: {1} (use semantic versioning, e.g. 1.4.0)")]
    InvalidVersion(String, String),
    #[error("no model files given: pass at least one --model PATH")]
    NoModels,
    #[error(
        "two model files are both called {0:?}: model file names must be unique inside a bundle"
    )]
    DuplicateModelName(String),
    #[error("model files {0:?} and {1:?} have identical content ({2}); package it once")]
    DuplicateModelContent(String, String, String),
    #[error(
        "model file {path} changed while the bundle was being built (expected {expected} bytes); build again from a stable copy"
    )]
    ModelChanged { path: PathBuf, expected: u64 },
    #[error(
        "model {model} keeps tensor {tensor:?} in the external data file {location:?}, which {problem}: \
         keep the data file beside the model under a plain file name (onnx.save(..., \
         save_as_external_data=True, location=\"NAME.data\")), or save the model with its \
         data inside"
    )]
    ExternalData {
        model: String,
        tensor: String,
        location: String,
        problem: String,
    },
    #[error("invalid label {0:?}: {1}")]
    InvalidLabel(String, String),
    #[error("invalid self-test vectors in {path}: {reason}")]
    InvalidSelfTest { path: PathBuf, reason: String },
    #[error(transparent)]
    Inspect(#[from] edgecd_inspect::InspectError),
    #[error("{context}: {source}")]
    Io {
        context: String,
        source: std::io::Error,
    },

    // ---- reading ----
    #[error("{path}: not a readable bundle archive: {reason}")]
    NotAnArchive { path: String, reason: String },
    #[error("refusing archive entry {entry:?}: absolute paths are not allowed in a bundle")]
    AbsolutePath { entry: String },
    #[error("refusing archive entry {entry:?}: '..' path components are not allowed in a bundle")]
    ParentTraversal { entry: String },
    #[error("refusing archive entry {entry:?}: symbolic links are not allowed in a bundle")]
    Symlink { entry: String },
    #[error("refusing archive entry {entry:?}: hard links are not allowed in a bundle")]
    HardLink { entry: String },
    #[error("refusing archive entry {entry:?}: device files and FIFOs are not allowed in a bundle")]
    SpecialFile { entry: String },
    #[error("refusing archive entry {entry:?}: unsupported entry type {kind}")]
    UnsupportedEntry { entry: String, kind: String },
    #[error("refusing archive entry {entry:?}: it appears twice in the archive")]
    DuplicateEntry { entry: String },
    #[error(
        "refusing archive entry {entry:?}: a bundle holds only oci-layout, index.json and blobs/sha256/<digest>"
    )]
    UnexpectedEntry { entry: String },
    #[error(
        "refusing archive: more than {limit} entries (a bundle has a handful); it may be a decompression bomb"
    )]
    TooManyEntries { limit: usize },
    #[error(
        "refusing archive entry {entry:?}: it declares {declared} bytes but the archive ends {available} bytes later (truncated or forged size)"
    )]
    DeclaredSizeTooLarge {
        entry: String,
        declared: u64,
        available: u64,
    },
    #[error("refusing {what} ({entry}): {size} bytes is over the {limit}-byte limit")]
    MetadataTooLarge {
        what: &'static str,
        entry: String,
        size: u64,
        limit: u64,
    },
    #[error(
        "blob {entry} does not match its name: its content hashes to {actual} (corrupted or tampered)"
    )]
    BlobDigestMismatch { entry: String, actual: String },
    #[error("blob {digest} ({what}) is {actual} bytes but its descriptor says {expected}")]
    BlobSizeMismatch {
        digest: String,
        what: String,
        expected: u64,
        actual: u64,
    },
    #[error("blob {digest} ({what}) is described by the manifest but missing from the archive")]
    MissingBlob { digest: String, what: String },
    #[error(
        "archive entry {entry} is not referenced by the manifest (or appears before the manifest)"
    )]
    UnreferencedBlob { entry: String },
    #[error(
        "archive entry {entry} appears out of order: expected {expected} (edgecd bundles store metadata before data)"
    )]
    OutOfOrder { entry: String, expected: String },
    #[error(
        "refusing archive entry {entry:?}: its tar header differs from edgecd's canonical form (mode, owner, time or format changed)"
    )]
    NonCanonicalHeader { entry: String },
    #[error(
        "refusing archive entry {entry:?}: the padding after its data is not zero (the archive was modified)"
    )]
    NonZeroPadding { entry: String },
    #[error(
        "refusing archive: unexpected data after the end-of-archive marker at byte {offset} (the archive was modified or two files were concatenated)"
    )]
    TrailingData { offset: u64 },
    #[error("invalid {what}: {reason}")]
    InvalidMetadata { what: &'static str, reason: String },
    #[error(
        "invalid model file path {0:?} in the manifest: must be a relative path without '..', '.', empty or hidden-absolute components"
    )]
    InvalidFilePath(String),
    #[error("the profile layer disagrees with the manifest: {0}")]
    ProfileMismatch(String),
    #[error("archive read error at {context}: {source}")]
    Read {
        context: String,
        source: std::io::Error,
    },
    #[error("target directory {0} is not empty: unpack into a new or empty directory")]
    TargetNotEmpty(PathBuf),

    #[error("the release manifest does not match this bundle: {0}")]
    ReleaseMismatch(String),

    // ---- signatures ----
    #[error("bundle signature check failed: {0}")]
    Signature(#[from] edgecd_sign::SignatureError),
}

impl BundleError {
    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Self::Io {
            context: context.into(),
            source,
        }
    }
}

//! Small helpers: clock, random tokens, hashing, atomic private files.

use crate::error::ApiError;
use base64::Engine as _;
use rand_core::{OsRng, RngCore};
use sha2::{Digest, Sha256};
use std::io::Write;
use std::path::Path;

/// Unix seconds now.
pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Devices whose last check-in (their enrollment, if they never checked in) is older than this
/// (unix seconds) are silent: 3 check-in intervals ago.
pub fn silent_before(checkin_interval_secs: u64) -> i64 {
    (now() as i64).saturating_sub(
        i64::try_from(checkin_interval_secs)
            .unwrap_or(i64::MAX)
            .saturating_mul(3),
    )
}

/// A random secret with a readable prefix, e.g. `edt_…` (32 random bytes, base64url).
pub fn random_token(prefix: &str) -> String {
    let mut b = [0u8; 32];
    OsRng.fill_bytes(&mut b);
    format!(
        "{prefix}_{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
    )
}

/// A random device id (16 hex chars).
pub fn random_id() -> String {
    let mut b = [0u8; 8];
    OsRng.fill_bytes(&mut b);
    format!("dev-{}", hex::encode(b))
}

/// SHA-256 hex of a secret: secrets are high-entropy random strings, so a fast hash suffices.
pub fn hash_secret(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// Compares two strings in time independent of where they differ.
pub fn ct_eq(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

/// Writes `bytes` to `path` with mode 0600 (fails if it exists).
pub fn write_private_new(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}

/// A secret from the configuration (token, HMAC key, webhook URL): `Debug` and `Display`
/// print `<redacted>`, so it never reaches a log line or an error message by accident.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Self(s.into())
    }
    /// The secret itself, for the one place that uses it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

impl std::fmt::Display for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

/// Parses a JSON column of the store; a column that does not parse is a server error.
pub fn json_col<T: serde::de::DeserializeOwned>(s: &str) -> Result<T, ApiError> {
    serde_json::from_str(s).map_err(ApiError::internal)
}

//! SHA-256 digests in OCI form (`sha256:<64 lowercase hex>`).
use sha2::{Digest as _, Sha256};

/// The algorithm prefix of every digest we produce.
pub const SHA256_PREFIX: &str = "sha256:";

/// `sha256:<hex>` of `bytes`.
pub fn sha256_digest(bytes: &[u8]) -> String {
    format_digest(&Sha256::digest(bytes).into())
}

/// `sha256:<hex>` and length of everything `r` yields (e.g. a file), read 64 KiB at a time.
pub fn sha256_reader(mut r: impl std::io::Read) -> std::io::Result<(String, u64)> {
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut len = 0u64;
    loop {
        let n = r.read(&mut buf)?;
        if n == 0 {
            break;
        }
        len += n as u64;
        h.update(&buf[..n]);
    }
    Ok((format_digest(&h.finalize().into()), len))
}

/// `sha256:<hex>` of a raw 32-byte hash.
pub fn format_digest(hash: &[u8; 32]) -> String {
    format!("{SHA256_PREFIX}{}", hex::encode(hash))
}

/// The hex part of a well-formed `sha256:<64 lowercase hex>` digest, or `None`.
pub fn digest_hex(digest: &str) -> Option<&str> {
    let hex = digest.strip_prefix(SHA256_PREFIX)?;
    (hex.len() == 64
        && hex
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)))
    .then_some(hex)
}

/// A digest-shaped placeholder of the right length, used to size metadata before hashing.
pub(crate) fn placeholder_digest() -> String {
    format!("{SHA256_PREFIX}{}", "0".repeat(64))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests_are_oci_form() {
        let d = sha256_digest(b"abc");
        assert_eq!(
            d,
            "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(digest_hex(&d).map(str::len), Some(64));
        assert_eq!(placeholder_digest().len(), d.len());
        assert!(digest_hex("sha256:ABC").is_none());
        assert!(digest_hex("sha512:00").is_none());
        assert!(digest_hex(&format!("sha256:{}", "G".repeat(64))).is_none());
    }
}

//! Release manifests: the signed statement that binds an app version to exactly one bundle
//! (manifest digest and archive digest/size), its SBOM, an optional container image digest,
//! the runtime pin and the hardware profile. Signed like bundles (Sigstore bundle v0.3 over
//! the file's bytes, stored as `release.json.sigstore.json`). Pure: time comes in as an argument.
use crate::digest::digest_hex;
use crate::error::BundleError;
use crate::oci::canonical_json;
use crate::read::BundleSummary;
use edgecd_api::profile::{HardwareProfile, RuntimePin};
use serde::{Deserialize, Serialize};

pub const RELEASE_MEDIA_TYPE: &str = "application/vnd.edgecd.release.v1+json";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ReleaseManifest {
    pub media_type: String,
    pub app: String,
    pub version: String,
    pub bundle: BundleRef,
    /// A container image pinned by digest: `name@sha256:<hex>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sbom: Option<BlobRef>,
    pub runtime: RuntimePin,
    pub hardware: HardwareProfile,
    /// RFC 3339 UTC time the release was created.
    pub created: String,
    /// A Sigstore bundle signing the image (`image`) by its digest with a release key: its
    /// message digest is the image digest (the SHA-256 of the image's manifest or index), so
    /// `cosign verify-blob`/`@sigstore/verify` check it against the manifest bytes. When
    /// present, devices pull and run the image only if it verifies with the key that signed
    /// this release.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_signature: Option<edgecd_sign::SigstoreBundle>,
    /// Where the bundle's models came from (git commit, training run, dataset hashes), as
    /// the bundle's signed manifest records it. Absent for bundles without provenance, so
    /// their release manifests are unchanged; `release create --no-provenance` leaves it out
    /// for agents that predate the field (they refuse unknown fields).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provenance: Option<crate::provenance::Provenance>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BundleRef {
    /// The bundle's identity: `sha256:` of its OCI manifest (what its signature covers).
    pub digest: String,
    /// `sha256:` of the whole `.edgecd` file, and its size: a download is capped at this size.
    pub archive_digest: String,
    pub archive_size: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BlobRef {
    pub digest: String,
    pub size: u64,
}

/// Checks `name@sha256:<64 hex>` (a tag alone is mutable and is refused).
pub fn validate_image_ref(image: &str) -> Result<(), BundleError> {
    let bad = |why: &str| BundleError::InvalidMetadata {
        what: "image reference",
        reason: format!("{image:?} {why}; pin it by digest: registry/name@sha256:<64 hex>"),
    };
    let (name, digest) = image
        .rsplit_once('@')
        .ok_or_else(|| bad("has no @sha256: digest"))?;
    if name.is_empty() || name.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(bad("has an empty or invalid name"));
    }
    digest_hex(digest)
        .map(|_| ())
        .ok_or_else(|| bad("has a malformed digest"))
}

impl ReleaseManifest {
    /// A release for a verified bundle.
    pub fn for_bundle(
        summary: &BundleSummary,
        image: Option<String>,
        created: String,
    ) -> Result<Self, BundleError> {
        if let Some(i) = &image {
            validate_image_ref(i)?;
        }
        let p = &summary.profile;
        Ok(Self {
            media_type: RELEASE_MEDIA_TYPE.to_string(),
            app: p.name.clone(),
            version: p.version.clone(),
            bundle: BundleRef {
                digest: summary.digest.clone(),
                archive_digest: summary.archive_digest.clone(),
                archive_size: summary.archive_size,
            },
            image,
            sbom: summary
                .sbom_digest
                .clone()
                .zip(summary.sbom.as_ref())
                .map(|(digest, b)| BlobRef {
                    digest,
                    size: b.len() as u64,
                }),
            runtime: p.runtime.clone(),
            hardware: p.hardware.clone(),
            created,
            image_signature: None,
            provenance: crate::provenance::Provenance::from_annotations(
                &summary.manifest.annotations,
            )?,
        })
    }

    /// The image digest as raw SHA-256 bytes (`None`: no image pinned).
    pub fn image_digest(&self) -> Option<[u8; 32]> {
        let (_, digest) = self.image.as_deref()?.rsplit_once('@')?;
        let hex = digest_hex(digest)?;
        let mut out = [0u8; 32];
        hex::decode_to_slice(hex, &mut out).ok()?;
        Some(out)
    }

    /// Signs the pinned image by its digest with `key` (see [`ReleaseManifest::image_signature`]).
    pub fn sign_image(&mut self, key: &edgecd_sign::SigningKey) -> Result<(), BundleError> {
        let digest = self
            .image_digest()
            .ok_or_else(|| BundleError::InvalidMetadata {
                what: "image signature",
                reason: "the release pins no image (--image registry/name@sha256:<hex>) to sign"
                    .into(),
            })?;
        self.image_signature = Some(edgecd_sign::sign_digest(key, &digest));
        Ok(())
    }

    /// Checks the image signature (if any) with the release's key: `Ok(false)` when the
    /// release carries none.
    pub fn verify_image_signature(
        &self,
        key: &edgecd_sign::VerifyingKey,
    ) -> Result<bool, BundleError> {
        let Some(sig) = &self.image_signature else {
            return Ok(false);
        };
        let bad = |reason: String| BundleError::InvalidMetadata {
            what: "image signature",
            reason,
        };
        let digest = self
            .image_digest()
            .ok_or_else(|| bad("present, but the release pins no image".into()))?;
        edgecd_sign::verify_digest(sig, &digest, key).map_err(|e| {
            bad(format!(
                "does not verify for {} with key {}: {e}",
                self.image.as_deref().unwrap_or_default(),
                key.hint()
            ))
        })?;
        Ok(true)
    }

    pub fn to_json(&self) -> Vec<u8> {
        canonical_json(self)
    }

    pub fn from_json(bytes: &[u8]) -> Result<Self, BundleError> {
        let r: Self = serde_json::from_slice(bytes).map_err(|e| BundleError::InvalidMetadata {
            what: "release manifest",
            reason: e.to_string(),
        })?;
        if r.media_type != RELEASE_MEDIA_TYPE {
            return Err(BundleError::InvalidMetadata {
                what: "release manifest",
                reason: format!("mediaType {:?} is not {RELEASE_MEDIA_TYPE}", r.media_type),
            });
        }
        if let Some(i) = &r.image {
            validate_image_ref(i)?;
        }
        if r.image_signature.is_some() && r.image.is_none() {
            return Err(BundleError::InvalidMetadata {
                what: "release manifest",
                reason: "imageSignature is present but no image is pinned".into(),
            });
        }
        Ok(r)
    }

    /// Checks that `summary` (a bundle that was read and verified) is the bundle this release names.
    pub fn check_bundle(&self, summary: &BundleSummary) -> Result<(), BundleError> {
        let mut problems = Vec::new();
        if self.bundle.digest != summary.digest {
            problems.push(format!(
                "bundle digest is {} but the release names {}",
                summary.digest, self.bundle.digest
            ));
        }
        if self.bundle.archive_digest != summary.archive_digest
            || self.bundle.archive_size != summary.archive_size
        {
            problems.push(format!(
                "bundle file is {} ({} bytes) but the release names {} ({} bytes)",
                summary.archive_digest,
                summary.archive_size,
                self.bundle.archive_digest,
                self.bundle.archive_size
            ));
        }
        if self.app != summary.profile.name || self.version != summary.profile.version {
            problems.push(format!(
                "bundle is {}@{} but the release is {}@{}",
                summary.profile.name, summary.profile.version, self.app, self.version
            ));
        }
        if self.sbom.as_ref().map(|s| &s.digest) != summary.sbom_digest.as_ref() {
            problems.push("SBOM digest differs".to_string());
        }
        if self.runtime != summary.profile.runtime || self.hardware != summary.profile.hardware {
            problems.push("runtime pin or hardware profile differs".to_string());
        }
        // A release may leave the bundle's provenance out (for agents that predate the field);
        // one it states must be the bundle's.
        if let Some(stated) = &self.provenance {
            match crate::provenance::Provenance::from_annotations(&summary.manifest.annotations) {
                Ok(Some(p)) if &p == stated => {}
                Ok(_) => problems.push(
                    "provenance (git commit, training run, datasets) differs from the bundle's"
                        .to_string(),
                ),
                Err(e) => problems.push(e.to_string()),
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(BundleError::ReleaseMismatch(problems.join("; ")))
        }
    }
}

/// Formats seconds since the Unix epoch as RFC 3339 UTC (`2026-11-27T16:49:41Z`).
pub fn rfc3339_utc(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_known_dates() {
        assert_eq!(rfc3339_utc(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339_utc(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339_utc(1_795_798_181), "2026-11-27T16:49:41Z");
    }

    #[test]
    fn image_signature_binds_the_image_digest_to_the_release_key() {
        let key = edgecd_sign::SigningKey::generate();
        let hex = "ab".repeat(32);
        let mut m = ReleaseManifest {
            media_type: RELEASE_MEDIA_TYPE.into(),
            app: "a".into(),
            version: "1".into(),
            bundle: BundleRef {
                digest: format!("sha256:{}", "1".repeat(64)),
                archive_digest: format!("sha256:{}", "2".repeat(64)),
                archive_size: 1,
            },
            image: None,
            sbom: None,
            runtime: RuntimePin {
                name: "edgecd-infer".into(),
                version: "0.1.0".into(),
            },
            hardware: HardwareProfile {
                board: "rpi5".into(),
                accelerator: None,
                min_ram_mb: None,
            },
            created: rfc3339_utc(0),
            image_signature: None,
            provenance: None,
        };
        assert!(m.sign_image(&key).is_err(), "no image to sign");
        assert!(!m.verify_image_signature(&key.verifying_key()).unwrap());
        m.image = Some(format!("127.0.0.1:5000/infer@sha256:{hex}"));
        m.sign_image(&key).unwrap();
        let back = ReleaseManifest::from_json(&m.to_json()).unwrap();
        assert_eq!(back, m);
        assert!(back.verify_image_signature(&key.verifying_key()).unwrap());
        let sig = back.image_signature.as_ref().unwrap();
        assert_eq!(
            sig.message_digest().unwrap().to_vec(),
            hex::decode(&hex).unwrap(),
            "the signed message digest is the image digest"
        );
        // Another image under the same signature, or another key: refused, saying why.
        let mut swapped = back.clone();
        swapped.image = Some(format!("127.0.0.1:5000/infer@sha256:{}", "cd".repeat(32)));
        let e = swapped
            .verify_image_signature(&key.verifying_key())
            .unwrap_err()
            .to_string();
        assert!(e.contains("image signature") && e.contains("cdcd"), "{e}");
        let other = edgecd_sign::SigningKey::generate().verifying_key();
        assert!(back.verify_image_signature(&other).is_err());
        // A signature without an image is malformed.
        let mut orphan = back;
        orphan.image = None;
        assert!(ReleaseManifest::from_json(&orphan.to_json()).is_err());
    }

    #[test]
    fn image_refs_must_be_pinned() {
        let hex = "a".repeat(64);
        assert!(validate_image_ref(&format!("ghcr.io/org/edge-infer@sha256:{hex}")).is_ok());
        assert!(validate_image_ref("ghcr.io/org/edge-infer:latest").is_err());
        assert!(validate_image_ref("ghcr.io/org/edge-infer@sha256:abc").is_err());
        assert!(validate_image_ref(&format!("@sha256:{hex}")).is_err());
    }
}

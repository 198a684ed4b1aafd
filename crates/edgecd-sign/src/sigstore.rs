//! Sigstore bundle v0.3 (`application/vnd.dev.sigstore.bundle.v0.3+json`) with a
//! `messageSignature` over an artifact, verified offline with a public key.
//!
//! Owns: the bundle's JSON form (the protobuf-specs JSON mapping: camelCase fields, bytes as
//! standard base64, enums by name), its validation, and signing / verifying an artifact with it.
//! Only key-based bundles (`verificationMaterial.publicKey`) are produced and verified; no
//! transparency log or timestamps are needed, so bundles verify offline
//! (`cosign verify-blob --key K.pub --bundle S --insecure-ignore-tlog`, `@sigstore/verify`).
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
use sha2::{Digest, Sha256};

use crate::{KeyError, SigningKey, VerifyingKey};

pub const SIGSTORE_BUNDLE_MEDIA_TYPE: &str = "application/vnd.dev.sigstore.bundle.v0.3+json";

/// The protobuf-specs name of SHA-256 in `messageDigest.algorithm`.
pub const HASH_ALGORITHM_SHA2_256: &str = "SHA2_256";

/// Errors reading or verifying a Sigstore bundle. Each variant says what is wrong and what to do.
#[derive(Debug, thiserror::Error)]
pub enum SignatureError {
    #[error("not a Sigstore bundle: invalid JSON ({0})")]
    Json(#[from] serde_json::Error),
    #[error(
        "unsupported Sigstore bundle mediaType {found:?}: edgecd reads {SIGSTORE_BUNDLE_MEDIA_TYPE} (re-sign the artifact with `edgecd` or `cosign sign-blob --new-bundle-format`)"
    )]
    UnsupportedMediaType { found: String },
    #[error(
        "the Sigstore bundle holds a DSSE envelope (an attestation), not a messageSignature over an artifact: use the artifact's signature bundle"
    )]
    DsseEnvelope,
    #[error("the Sigstore bundle has no messageSignature: it does not sign an artifact")]
    NoMessageSignature,
    #[error(
        "the Sigstore bundle carries a {found} (keyless signature); edgecd verifies key-based bundles only (`verificationMaterial.publicKey`)"
    )]
    KeylessMaterial { found: &'static str },
    #[error(
        "the Sigstore bundle's verificationMaterial has no publicKey: it was not signed with a key"
    )]
    NoPublicKey,
    #[error("malformed Sigstore bundle: {field} is not valid base64 ({detail})")]
    Base64 { field: &'static str, detail: String },
    #[error("unsupported messageDigest algorithm {found:?}: only SHA2_256 is supported")]
    UnsupportedDigestAlgorithm { found: String },
    #[error(
        "malformed Sigstore bundle: messageDigest.digest must be 32 bytes (SHA-256), got {len}"
    )]
    DigestLength { len: usize },
    #[error("malformed Sigstore bundle: messageSignature.signature is empty")]
    EmptySignature,
    #[error(
        "artifact digest does not match the signature's messageDigest — the file was changed after signing (artifact sha256:{actual}, signed sha256:{signed})"
    )]
    DigestMismatch { actual: String, signed: String },
    #[error(
        "signed by key {bundle_hint}, not by {key_hint} (your key): verify with the public key that made this signature"
    )]
    WrongKey {
        bundle_hint: String,
        key_hint: String,
    },
    #[error("the Sigstore bundle's signature is invalid: {0}")]
    Signature(#[source] KeyError),
}

/// A Sigstore bundle (serde: the protobuf-specs JSON form, camelCase).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SigstoreBundle {
    pub media_type: String,
    pub verification_material: VerificationMaterial,
    pub message_signature: MessageSignature,
}

/// `verificationMaterial` of a key-based bundle.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VerificationMaterial {
    pub public_key: PublicKeyIdentifier,
    /// Transparency log entries, kept as JSON (edgecd writes none and does not check them).
    #[serde(default)]
    pub tlog_entries: Vec<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp_verification_data: Option<TimestampVerificationData>,
}

/// `publicKey`: names the signing key by its hint (base64 SHA-256 of the SPKI DER).
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PublicKeyIdentifier {
    /// Empty when the bundle does not name its key (protobuf JSON omits empty strings).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub hint: String,
}

/// `timestampVerificationData`: RFC 3161 timestamps, kept as JSON.
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TimestampVerificationData {
    #[serde(default)]
    pub rfc3161_timestamps: Vec<serde_json::Value>,
}

/// `messageSignature`: the digest of the artifact and the signature over the artifact.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MessageSignature {
    pub message_digest: HashOutput,
    /// base64 of the ASN.1 DER ECDSA signature.
    pub signature: String,
}

/// `messageDigest`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct HashOutput {
    /// protobuf `HashAlgorithm` enum name, e.g. `SHA2_256`.
    pub algorithm: String,
    /// base64 of the raw digest.
    pub digest: String,
}

/// protobuf JSON parsers accept standard and URL-safe base64, padded or not.
fn decode_b64(field: &'static str, s: &str) -> Result<Vec<u8>, SignatureError> {
    STANDARD
        .decode(s)
        .or_else(|_| STANDARD_NO_PAD.decode(s))
        .or_else(|_| URL_SAFE.decode(s))
        .or_else(|_| URL_SAFE_NO_PAD.decode(s))
        .map_err(|e| SignatureError::Base64 {
            field,
            detail: e.to_string(),
        })
}

impl SigstoreBundle {
    /// Pretty JSON with a fixed field order: the same bundle always gives the same bytes.
    pub fn to_json_pretty(&self) -> String {
        let mut s = serde_json::to_string_pretty(self).expect("bundle serializes to JSON");
        s.push('\n');
        s
    }

    /// Parses and validates a bundle: v0.3 mediaType, key-based material, a messageSignature
    /// with a SHA2_256 digest, and valid base64 throughout.
    pub fn from_json(bytes: &[u8]) -> Result<Self, SignatureError> {
        let value: serde_json::Value = serde_json::from_slice(bytes)?;
        let obj = value.as_object().ok_or_else(|| {
            SignatureError::Json(serde::de::Error::custom(
                "expected a JSON object at the top level",
            ))
        })?;
        let media_type = obj
            .get("mediaType")
            .and_then(|m| m.as_str())
            .unwrap_or_default();
        if media_type != SIGSTORE_BUNDLE_MEDIA_TYPE {
            return Err(SignatureError::UnsupportedMediaType {
                found: media_type.to_string(),
            });
        }
        if obj.contains_key("dsseEnvelope") {
            return Err(SignatureError::DsseEnvelope);
        }
        if !obj.contains_key("messageSignature") {
            return Err(SignatureError::NoMessageSignature);
        }
        if let Some(vm) = obj.get("verificationMaterial").and_then(|v| v.as_object()) {
            if vm.contains_key("certificate") {
                return Err(SignatureError::KeylessMaterial {
                    found: "certificate",
                });
            }
            if vm.contains_key("x509CertificateChain") {
                return Err(SignatureError::KeylessMaterial {
                    found: "x509CertificateChain",
                });
            }
            if !vm.contains_key("publicKey") {
                return Err(SignatureError::NoPublicKey);
            }
        }
        let bundle: SigstoreBundle = serde_json::from_value(value)?;
        bundle.validate()?;
        Ok(bundle)
    }

    fn validate(&self) -> Result<(), SignatureError> {
        if self.media_type != SIGSTORE_BUNDLE_MEDIA_TYPE {
            return Err(SignatureError::UnsupportedMediaType {
                found: self.media_type.clone(),
            });
        }
        self.message_digest()?;
        self.signature_der()?;
        if !self.verification_material.public_key.hint.is_empty() {
            decode_b64(
                "verificationMaterial.publicKey.hint",
                &self.verification_material.public_key.hint,
            )?;
        }
        Ok(())
    }

    /// The `publicKey.hint` of the verification material.
    pub fn key_hint(&self) -> &str {
        &self.verification_material.public_key.hint
    }

    /// The SHA-256 of the signed artifact as recorded in `messageDigest` (raw 32 bytes).
    pub fn message_digest(&self) -> Result<[u8; 32], SignatureError> {
        let md = &self.message_signature.message_digest;
        if md.algorithm != HASH_ALGORITHM_SHA2_256 {
            return Err(SignatureError::UnsupportedDigestAlgorithm {
                found: md.algorithm.clone(),
            });
        }
        let raw = decode_b64("messageSignature.messageDigest.digest", &md.digest)?;
        raw.as_slice()
            .try_into()
            .map_err(|_| SignatureError::DigestLength { len: raw.len() })
    }

    /// The raw ASN.1 DER signature from `messageSignature.signature`.
    pub fn signature_der(&self) -> Result<Vec<u8>, SignatureError> {
        let sig = decode_b64(
            "messageSignature.signature",
            &self.message_signature.signature,
        )?;
        if sig.is_empty() {
            return Err(SignatureError::EmptySignature);
        }
        Ok(sig)
    }
}

/// Signs `artifact` (ECDSA P-256 / SHA-256) and wraps it in a Sigstore bundle v0.3 with
/// `verificationMaterial.publicKey.hint` = base64(SHA-256(SPKI DER)), empty tlogEntries.
pub fn sign_artifact(key: &SigningKey, artifact: &[u8]) -> SigstoreBundle {
    let digest = Sha256::digest(artifact);
    let signature = key.sign(artifact);
    SigstoreBundle {
        media_type: SIGSTORE_BUNDLE_MEDIA_TYPE.to_string(),
        verification_material: VerificationMaterial {
            public_key: PublicKeyIdentifier {
                hint: key.verifying_key().hint(),
            },
            tlog_entries: Vec::new(),
            timestamp_verification_data: Some(TimestampVerificationData::default()),
        },
        message_signature: MessageSignature {
            message_digest: HashOutput {
                algorithm: HASH_ALGORITHM_SHA2_256.to_string(),
                digest: STANDARD.encode(digest),
            },
            signature: STANDARD.encode(signature),
        },
    }
}

/// Signs an artifact known only by its SHA-256 (e.g. a container image, whose digest is the
/// SHA-256 of its manifest): the same bundle [`sign_artifact`] gives for the artifact's bytes,
/// so it verifies with [`verify_artifact`] given those bytes, or with [`verify_digest`].
pub fn sign_digest(key: &SigningKey, sha256: &[u8; 32]) -> SigstoreBundle {
    let signature = key.sign_prehash(sha256);
    SigstoreBundle {
        media_type: SIGSTORE_BUNDLE_MEDIA_TYPE.to_string(),
        verification_material: VerificationMaterial {
            public_key: PublicKeyIdentifier {
                hint: key.verifying_key().hint(),
            },
            tlog_entries: Vec::new(),
            timestamp_verification_data: Some(TimestampVerificationData::default()),
        },
        message_signature: MessageSignature {
            message_digest: HashOutput {
                algorithm: HASH_ALGORITHM_SHA2_256.to_string(),
                digest: STANDARD.encode(sha256),
            },
            signature: STANDARD.encode(signature),
        },
    }
}

/// Like [`verify_artifact`] for an artifact known only by its SHA-256: the bundle's message
/// digest must be `sha256`, its hint (when present) must name `key`, and the signature must
/// verify over that digest.
pub fn verify_digest(
    bundle: &SigstoreBundle,
    sha256: &[u8; 32],
    key: &VerifyingKey,
) -> Result<(), SignatureError> {
    bundle.validate()?;
    let signed = bundle.message_digest()?;
    if &signed != sha256 {
        return Err(SignatureError::DigestMismatch {
            actual: hex(sha256),
            signed: hex(&signed),
        });
    }
    check_hint(bundle, key)?;
    key.verify_prehash(sha256, &bundle.signature_der()?)
        .map_err(SignatureError::Signature)
}

fn check_hint(bundle: &SigstoreBundle, key: &VerifyingKey) -> Result<(), SignatureError> {
    let key_hint = key.hint();
    let bundle_hint = bundle.key_hint();
    if !bundle_hint.is_empty() {
        let same = decode_b64("verificationMaterial.publicKey.hint", bundle_hint)?
            == STANDARD
                .decode(&key_hint)
                .expect("our hint is standard base64");
        if !same {
            return Err(SignatureError::WrongKey {
                bundle_hint: bundle_hint.to_string(),
                key_hint,
            });
        }
    }
    Ok(())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Checks that `bundle` is a well-formed v0.3 bundle, its message digest is SHA-256(artifact),
/// its hint (when present) names `key`, and the signature verifies with `key`.
pub fn verify_artifact(
    bundle: &SigstoreBundle,
    artifact: &[u8],
    key: &VerifyingKey,
) -> Result<(), SignatureError> {
    bundle.validate()?;
    let signed = bundle.message_digest()?;
    let actual: [u8; 32] = Sha256::digest(artifact).into();
    if signed != actual {
        return Err(SignatureError::DigestMismatch {
            actual: hex(&actual),
            signed: hex(&signed),
        });
    }
    check_hint(bundle, key)?;
    key.verify(artifact, &bundle.signature_der()?)
        .map_err(SignatureError::Signature)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signed() -> (SigningKey, Vec<u8>, SigstoreBundle) {
        let k = SigningKey::generate();
        let artifact = b"{\"schemaVersion\":2}".to_vec();
        let b = sign_artifact(&k, &artifact);
        (k, artifact, b)
    }

    #[test]
    fn a_signature_over_a_digest_is_the_signature_over_the_artifact() {
        let (k, artifact, b) = signed();
        let digest: [u8; 32] = Sha256::digest(&artifact).into();
        let d = sign_digest(&k, &digest);
        // RFC 6979: deterministic, so the same bytes as signing the artifact itself.
        assert_eq!(d, b);
        verify_artifact(&d, &artifact, &k.verifying_key()).unwrap();
        verify_digest(&b, &digest, &k.verifying_key()).unwrap();
        let mut other = digest;
        other[0] ^= 1;
        assert!(matches!(
            verify_digest(&d, &other, &k.verifying_key()),
            Err(SignatureError::DigestMismatch { .. })
        ));
        let stranger = SigningKey::generate().verifying_key();
        assert!(verify_digest(&d, &digest, &stranger).is_err());
        // A bundle whose digest field was swapped to another artifact's fails the signature.
        let mut forged = d.clone();
        forged.message_signature.message_digest.digest = STANDARD.encode(other);
        assert!(matches!(
            verify_digest(&forged, &other, &k.verifying_key()),
            Err(SignatureError::Signature(_))
        ));
    }

    #[test]
    fn sign_verify_round_trip_via_json() {
        let (k, artifact, b) = signed();
        let json = b.to_json_pretty();
        let b2 = SigstoreBundle::from_json(json.as_bytes()).unwrap();
        assert_eq!(b, b2);
        assert_eq!(json, b2.to_json_pretty());
        verify_artifact(&b2, &artifact, &k.verifying_key()).unwrap();
        assert_eq!(
            b2.message_digest().unwrap(),
            <[u8; 32]>::from(Sha256::digest(&artifact))
        );
        assert_eq!(b2.key_hint(), k.verifying_key().hint());
    }

    #[test]
    fn json_has_the_protobuf_specs_shape() {
        let (k, artifact, b) = signed();
        let v: serde_json::Value = serde_json::from_str(&b.to_json_pretty()).unwrap();
        let expected = serde_json::json!({
            "mediaType": "application/vnd.dev.sigstore.bundle.v0.3+json",
            "verificationMaterial": {
                "publicKey": {"hint": k.verifying_key().hint()},
                "tlogEntries": [],
                "timestampVerificationData": {"rfc3161Timestamps": []},
            },
            "messageSignature": {
                "messageDigest": {"algorithm": "SHA2_256", "digest": STANDARD.encode(Sha256::digest(&artifact))},
                "signature": b.message_signature.signature,
            },
        });
        assert_eq!(v, expected);
        // Field order is fixed (mediaType first, as protobuf-specs writes it).
        let json = b.to_json_pretty();
        let pos = |s: &str| json.find(s).unwrap();
        assert!(pos("\"mediaType\"") < pos("\"verificationMaterial\""));
        assert!(pos("\"verificationMaterial\"") < pos("\"messageSignature\""));
    }

    #[test]
    fn signing_is_deterministic() {
        let (k, artifact, b) = signed();
        assert_eq!(
            b.to_json_pretty(),
            sign_artifact(&k, &artifact).to_json_pretty()
        );
    }

    #[test]
    fn changed_artifact_byte_fails_with_digest_error() {
        let (k, mut artifact, b) = signed();
        artifact[3] ^= 1;
        let e = verify_artifact(&b, &artifact, &k.verifying_key()).unwrap_err();
        assert!(matches!(e, SignatureError::DigestMismatch { .. }), "{e}");
        assert!(
            e.to_string().contains("the file was changed after signing"),
            "{e}"
        );
    }

    #[test]
    fn changed_signature_byte_fails() {
        let (k, artifact, mut b) = signed();
        let mut sig = b.signature_der().unwrap();
        let n = sig.len();
        sig[n - 2] ^= 0x40;
        b.message_signature.signature = STANDARD.encode(&sig);
        let e = verify_artifact(&b, &artifact, &k.verifying_key()).unwrap_err();
        assert!(matches!(e, SignatureError::Signature(_)), "{e}");
    }

    #[test]
    fn consistent_digest_and_artifact_change_still_fails() {
        // An attacker who changes the artifact and fixes up messageDigest is caught by the signature.
        let (k, mut artifact, mut b) = signed();
        artifact.push(b' ');
        b.message_signature.message_digest.digest = STANDARD.encode(Sha256::digest(&artifact));
        let e = verify_artifact(&b, &artifact, &k.verifying_key()).unwrap_err();
        assert!(
            matches!(e, SignatureError::Signature(KeyError::BadSignature { .. })),
            "{e}"
        );
    }

    #[test]
    fn wrong_key_names_both_hints() {
        let (k, artifact, b) = signed();
        let other = SigningKey::generate().verifying_key();
        let e = verify_artifact(&b, &artifact, &other)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains(&format!(
                "signed by key {}, not by {}",
                k.verifying_key().hint(),
                other.hint()
            )),
            "{e}"
        );
    }

    #[test]
    fn wrong_key_without_hint_fails_on_signature() {
        let (_, artifact, mut b) = signed();
        b.verification_material.public_key.hint.clear();
        let json = b.to_json_pretty();
        assert!(!json.contains("\"hint\""), "{json}");
        let b = SigstoreBundle::from_json(json.as_bytes()).unwrap();
        let other = SigningKey::generate().verifying_key();
        assert!(matches!(
            verify_artifact(&b, &artifact, &other),
            Err(SignatureError::Signature(_))
        ));
    }

    #[test]
    fn bad_json_rejected() {
        assert!(matches!(
            SigstoreBundle::from_json(b"{not json"),
            Err(SignatureError::Json(_))
        ));
        assert!(matches!(
            SigstoreBundle::from_json(b"[]"),
            Err(SignatureError::Json(_))
        ));
        let (_, _, b) = signed();
        let mut v: serde_json::Value = serde_json::to_value(&b).unwrap();
        v["messageSignature"]["signature"] = "!!!not base64!!!".into();
        let e = SigstoreBundle::from_json(&serde_json::to_vec(&v).unwrap()).unwrap_err();
        assert!(
            matches!(
                e,
                SignatureError::Base64 {
                    field: "messageSignature.signature",
                    ..
                }
            ),
            "{e}"
        );
        let mut v: serde_json::Value = serde_json::to_value(&b).unwrap();
        v["messageSignature"]["messageDigest"]["algorithm"] = "SHA2_384".into();
        let e = SigstoreBundle::from_json(&serde_json::to_vec(&v).unwrap()).unwrap_err();
        assert!(e.to_string().contains("SHA2_384"), "{e}");
        let mut v: serde_json::Value = serde_json::to_value(&b).unwrap();
        v["messageSignature"]["messageDigest"]["digest"] = STANDARD.encode([1u8; 20]).into();
        let e = SigstoreBundle::from_json(&serde_json::to_vec(&v).unwrap()).unwrap_err();
        assert!(matches!(e, SignatureError::DigestLength { len: 20 }), "{e}");
    }

    #[test]
    fn wrong_media_type_rejected() {
        let (_, _, b) = signed();
        for mt in [
            "application/vnd.dev.sigstore.bundle+json;version=0.2",
            "application/json",
            "",
        ] {
            let mut v: serde_json::Value = serde_json::to_value(&b).unwrap();
            v["mediaType"] = mt.into();
            let e = SigstoreBundle::from_json(&serde_json::to_vec(&v).unwrap()).unwrap_err();
            assert!(
                matches!(e, SignatureError::UnsupportedMediaType { .. }),
                "{e}"
            );
            assert!(e.to_string().contains(SIGSTORE_BUNDLE_MEDIA_TYPE), "{e}");
        }
        // A bundle whose fields were edited in memory is rejected by verify_artifact too.
        let (k, artifact, mut b) = signed();
        b.media_type = "application/vnd.dev.sigstore.bundle.v0.1+json".into();
        assert!(matches!(
            verify_artifact(&b, &artifact, &k.verifying_key()),
            Err(SignatureError::UnsupportedMediaType { .. })
        ));
    }

    #[test]
    fn dsse_and_keyless_bundles_rejected_clearly() {
        let (_, _, b) = signed();
        let mut v: serde_json::Value = serde_json::to_value(&b).unwrap();
        let obj = v.as_object_mut().unwrap();
        obj.remove("messageSignature");
        obj.insert(
            "dsseEnvelope".into(),
            serde_json::json!({"payload": "", "payloadType": "x", "signatures": []}),
        );
        let e = SigstoreBundle::from_json(&serde_json::to_vec(&v).unwrap()).unwrap_err();
        assert!(matches!(e, SignatureError::DsseEnvelope), "{e}");

        let mut v: serde_json::Value = serde_json::to_value(&b).unwrap();
        let vm = v["verificationMaterial"].as_object_mut().unwrap();
        vm.remove("publicKey");
        vm.insert(
            "certificate".into(),
            serde_json::json!({"rawBytes": "AAAA"}),
        );
        let e = SigstoreBundle::from_json(&serde_json::to_vec(&v).unwrap()).unwrap_err();
        assert!(
            matches!(
                e,
                SignatureError::KeylessMaterial {
                    found: "certificate"
                }
            ),
            "{e}"
        );

        let mut v: serde_json::Value = serde_json::to_value(&b).unwrap();
        v.as_object_mut().unwrap().remove("messageSignature");
        let e = SigstoreBundle::from_json(&serde_json::to_vec(&v).unwrap()).unwrap_err();
        assert!(matches!(e, SignatureError::NoMessageSignature), "{e}");
    }

    #[test]
    fn foreign_fields_round_trip() {
        // tlog entries and timestamps from other signers are kept (not checked).
        let (k, artifact, b) = signed();
        let mut v: serde_json::Value = serde_json::to_value(&b).unwrap();
        v["verificationMaterial"]["tlogEntries"] = serde_json::json!([{"logIndex": "1", "kindVersion": {"kind": "hashedrekord", "version": "0.0.1"}}]);
        v["verificationMaterial"]
            .as_object_mut()
            .unwrap()
            .remove("timestampVerificationData");
        let b2 = SigstoreBundle::from_json(&serde_json::to_vec(&v).unwrap()).unwrap();
        assert_eq!(b2.verification_material.tlog_entries.len(), 1);
        assert!(
            b2.verification_material
                .timestamp_verification_data
                .is_none()
        );
        verify_artifact(&b2, &artifact, &k.verifying_key()).unwrap();
        let v2: serde_json::Value = serde_json::from_str(&b2.to_json_pretty()).unwrap();
        assert_eq!(v, v2);
    }
}

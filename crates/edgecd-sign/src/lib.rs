//! Keys and signatures for edgecd.
//!
//! Owns: ECDSA P-256 key pairs (PKCS#8 PEM private keys, SPKI PEM public keys, cosign's
//! `ENCRYPTED SIGSTORE PRIVATE KEY` files), and Sigstore bundles v0.3 (`messageSignature`
//! over an artifact's bytes, verified offline against a public key). No network, no clock.
//! Used by bundles (signature over the OCI manifest), release manifests and, later, the
//! server's signed assignments.

mod keys;
mod sigstore;

pub use keys::{KeyError, SigningKey, VerifyingKey, private_key_label, write_key_pair};
pub use sigstore::{
    HASH_ALGORITHM_SHA2_256, HashOutput, MessageSignature, PublicKeyIdentifier,
    SIGSTORE_BUNDLE_MEDIA_TYPE, SignatureError, SigstoreBundle, TimestampVerificationData,
    VerificationMaterial, sign_artifact, sign_digest, verify_artifact, verify_digest,
};

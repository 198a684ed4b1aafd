//! P-256 keys: generation, PEM (PKCS#8 / SEC1 / SPKI), cosign encrypted private keys, key hints.
//!
//! Owns: every way edgecd reads or writes a key. Private keys are ECDSA P-256 only; they are
//! read from PKCS#8 `PRIVATE KEY`, SEC1 `EC PRIVATE KEY` or cosign's `ENCRYPTED SIGSTORE PRIVATE
//! KEY` PEM (scrypt + NaCl secretbox around a PKCS#8 DER) and written as PKCS#8 PEM (optionally
//! in cosign's encrypted format). Public keys are SPKI PEM; a key's id (`hint`) is
//! base64(SHA-256(SPKI DER)), the value Sigstore bundles carry in `publicKey.hint`.
use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use p256::ecdsa::signature::{Signer as _, Verifier as _};
use p256::pkcs8::der::pem::LineEnding;
use p256::pkcs8::{
    DecodePrivateKey, DecodePublicKey, EncodePrivateKey, EncodePublicKey, ObjectIdentifier,
};
use sha2::{Digest, Sha256};
use xsalsa20poly1305::aead::{Aead, KeyInit};

/// Errors reading, parsing or writing keys. Each variant says what is wrong and what to do.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// A key file could not be read.
    #[error("cannot read key file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// A key file was read but its content is not usable; wraps the parse error.
    #[error("key file {path}: {source}")]
    InFile {
        path: PathBuf,
        source: Box<KeyError>,
    },
    /// The text is not PEM at all.
    #[error(
        "not a PEM key ({detail}): expected a block such as `-----BEGIN PRIVATE KEY-----` or `-----BEGIN PUBLIC KEY-----`"
    )]
    NotPem { detail: String },
    /// A PEM block of a kind edgecd does not read.
    #[error("unsupported PEM block `{label}`: {hint}")]
    UnsupportedPem { label: String, hint: &'static str },
    /// A key of another algorithm or curve.
    #[error(
        "unsupported key type {kind}: edgecd signs with ECDSA P-256 keys only; create one with `edgecd keygen` or `cosign generate-key-pair`"
    )]
    UnsupportedKeyType { kind: String },
    /// The PEM label is right but the DER inside is not a valid key.
    #[error("malformed {what}: {detail}")]
    Malformed { what: &'static str, detail: String },
    /// An encrypted cosign key without a password.
    #[error(
        "this is an encrypted cosign private key and no password was given: set COSIGN_PASSWORD to the key's password (it may be empty: COSIGN_PASSWORD=)"
    )]
    PasswordRequired,
    /// secretbox authentication failed.
    #[error(
        "cannot decrypt the cosign private key: wrong password or corrupted key (check COSIGN_PASSWORD)"
    )]
    WrongPassword,
    /// An encrypted key using a KDF or cipher other than scrypt + nacl/secretbox.
    #[error(
        "unsupported encrypted key format: {detail} (cosign keys use kdf \"scrypt\" and cipher \"nacl/secretbox\")"
    )]
    UnsupportedEncryption { detail: String },
    /// scrypt parameters that are invalid or would take unreasonable memory or time.
    #[error(
        "refusing scrypt parameters N={n}, r={r}, p={p}: {reason} (cosign uses N=32768, r=8, p=1)"
    )]
    ScryptParams {
        n: u64,
        r: u64,
        p: u64,
        reason: &'static str,
    },
    /// `write_key_pair` would overwrite a file.
    #[error(
        "refusing to overwrite existing key file {path}: move it away or choose another output prefix"
    )]
    AlreadyExists { path: PathBuf },
    /// Writing a key file or creating its directory failed.
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    /// Random generation failed (OS randomness unavailable).
    #[error("cannot get OS randomness: {0}")]
    Random(String),
    /// A signature that is not DER (or 64-byte r||s) encoded.
    #[error(
        "malformed ECDSA signature: expected ASN.1 DER (or 64-byte r||s), got {len} bytes that do not parse"
    )]
    MalformedSignature { len: usize },
    /// A well-formed signature that does not verify with this key.
    #[error(
        "signature does not verify with key {hint}: the data was changed after signing, or another key signed it"
    )]
    BadSignature { hint: String },
}

/// An ECDSA P-256 private key used to sign manifests.
#[derive(Clone)]
pub struct SigningKey(p256::ecdsa::SigningKey);

/// An ECDSA P-256 public key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifyingKey(p256::ecdsa::VerifyingKey);

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKey")
            .field("public_key_hint", &self.verifying_key().hint())
            .finish_non_exhaustive()
    }
}

/// PEM labels of cosign's encrypted private keys (new and old spelling).
const COSIGN_LABELS: [&str; 2] = [
    "ENCRYPTED SIGSTORE PRIVATE KEY",
    "ENCRYPTED COSIGN PRIVATE KEY",
];

/// Scrypt parameters cosign writes.
const COSIGN_SCRYPT_LOG_N: u8 = 15;
const COSIGN_SCRYPT_R: u32 = 8;
const COSIGN_SCRYPT_P: u32 = 1;
/// Largest accepted scrypt N (2^20) and memory (128·N·r bytes, 1 GiB).
const MAX_SCRYPT_LOG_N: u32 = 20;
const MAX_SCRYPT_MEMORY: u64 = 1 << 30;

const OID_EC_PUBLIC_KEY: &str = "1.2.840.10045.2.1";
const OID_P256: &str = "1.2.840.10045.3.1.7";

impl SigningKey {
    /// A fresh random key (OS randomness).
    pub fn generate() -> Self {
        SigningKey(p256::ecdsa::SigningKey::random(&mut rand_core::OsRng))
    }

    /// Parses a PEM private key: PKCS#8 `PRIVATE KEY`, SEC1 `EC PRIVATE KEY`, or cosign's
    /// `ENCRYPTED SIGSTORE PRIVATE KEY` (needs `password`; a missing or wrong password is its own error).
    pub fn from_pem(pem: &str, password: Option<&[u8]>) -> Result<Self, KeyError> {
        let (label, der) = decode_pem(pem)?;
        match label.as_str() {
            "PRIVATE KEY" => Self::from_pkcs8_der(&der),
            "EC PRIVATE KEY" => p256::SecretKey::from_sec1_der(&der)
                .map(|k| SigningKey(k.into()))
                .map_err(|e| KeyError::Malformed {
                    what: "SEC1 EC private key",
                    detail: format!("{e} (only P-256 keys are supported)"),
                }),
            l if COSIGN_LABELS.contains(&l) => {
                let password = password.ok_or(KeyError::PasswordRequired)?;
                let plain = decrypt_cosign(&der, password)?;
                Self::from_pkcs8_der(&plain)
            }
            "RSA PRIVATE KEY" => Err(KeyError::UnsupportedKeyType { kind: "RSA".into() }),
            "OPENSSH PRIVATE KEY" => Err(KeyError::UnsupportedPem {
                label,
                hint: "OpenSSH keys are not supported; use a PKCS#8 ECDSA P-256 key (`edgecd keygen`)",
            }),
            "ENCRYPTED PRIVATE KEY" => Err(KeyError::UnsupportedPem {
                label,
                hint: "PKCS#8-encrypted keys are not supported; decrypt it with `openssl pkcs8 -in KEY -out KEY.pem` or use a cosign key",
            }),
            "PUBLIC KEY" => Err(KeyError::UnsupportedPem {
                label,
                hint: "this is a public key; signing needs the private key (`.key`)",
            }),
            _ => Err(KeyError::UnsupportedPem {
                label,
                hint: "expected `PRIVATE KEY`, `EC PRIVATE KEY` or `ENCRYPTED SIGSTORE PRIVATE KEY`",
            }),
        }
    }

    fn from_pkcs8_der(der: &[u8]) -> Result<Self, KeyError> {
        let info = p256::pkcs8::PrivateKeyInfo::try_from(der).map_err(|e| KeyError::Malformed {
            what: "PKCS#8 private key",
            detail: e.to_string(),
        })?;
        check_algorithm(info.algorithm.oid, info.algorithm.parameters_oid().ok())?;
        p256::ecdsa::SigningKey::from_pkcs8_der(der)
            .map(SigningKey)
            .map_err(|e| KeyError::Malformed {
                what: "PKCS#8 P-256 private key",
                detail: e.to_string(),
            })
    }

    /// Reads and parses a private key file (see `from_pem`); errors name the path.
    pub fn load(path: &Path, password: Option<&[u8]>) -> Result<Self, KeyError> {
        let text = read_text(path)?;
        Self::from_pem(&text, password).map_err(|e| in_file(path, e))
    }

    /// PKCS#8 PEM (`-----BEGIN PRIVATE KEY-----`).
    pub fn to_pkcs8_pem(&self) -> String {
        self.0
            .to_pkcs8_pem(LineEnding::LF)
            .expect("a P-256 key always encodes as PKCS#8")
            .to_string()
    }

    /// Cosign's `ENCRYPTED SIGSTORE PRIVATE KEY` PEM: the PKCS#8 DER sealed with NaCl secretbox
    /// under scrypt(password, random salt, N=32768, r=8, p=1).
    pub fn to_cosign_encrypted_pem(&self, password: &[u8]) -> Result<String, KeyError> {
        use rand_core::RngCore as _;
        let der = self
            .0
            .to_pkcs8_der()
            .expect("a P-256 key always encodes as PKCS#8");
        let mut salt = [0u8; 32];
        let mut nonce = [0u8; 24];
        rand_core::OsRng
            .try_fill_bytes(&mut salt)
            .map_err(|e| KeyError::Random(e.to_string()))?;
        rand_core::OsRng
            .try_fill_bytes(&mut nonce)
            .map_err(|e| KeyError::Random(e.to_string()))?;
        let params = scrypt::Params::new(COSIGN_SCRYPT_LOG_N, COSIGN_SCRYPT_R, COSIGN_SCRYPT_P, 32)
            .expect("cosign's scrypt parameters are valid");
        let mut key = [0u8; 32];
        scrypt::scrypt(password, &salt, &params, &mut key)
            .expect("32-byte output is valid for scrypt");
        let cipher = xsalsa20poly1305::XSalsa20Poly1305::new(&key.into());
        let ciphertext = cipher
            .encrypt(&nonce.into(), der.as_bytes())
            .map_err(|_| KeyError::Random("secretbox encryption failed".into()))?;
        let body = serde_json::json!({
            "kdf": {
                "name": "scrypt",
                "params": {"N": 1u64 << COSIGN_SCRYPT_LOG_N, "r": COSIGN_SCRYPT_R, "p": COSIGN_SCRYPT_P},
                "salt": B64.encode(salt),
            },
            "cipher": {"name": "nacl/secretbox", "nonce": B64.encode(nonce)},
            "ciphertext": B64.encode(ciphertext),
        });
        let json = serde_json::to_vec(&body).expect("JSON value serializes");
        Ok(
            p256::pkcs8::der::pem::encode_string(COSIGN_LABELS[0], LineEnding::LF, &json)
                .expect("PEM encoding of bytes"),
        )
    }

    pub fn verifying_key(&self) -> VerifyingKey {
        VerifyingKey(*self.0.verifying_key())
    }

    /// ECDSA P-256 over SHA-256(msg), ASN.1 DER encoded signature.
    pub fn sign(&self, msg: &[u8]) -> Vec<u8> {
        let sig: p256::ecdsa::Signature = self.0.sign(msg);
        sig.to_der().as_bytes().to_vec()
    }

    /// ECDSA P-256 over a SHA-256 digest computed elsewhere (the same signature as
    /// [`SigningKey::sign`] over the bytes that hash to it), ASN.1 DER encoded.
    pub fn sign_prehash(&self, sha256: &[u8; 32]) -> Vec<u8> {
        use p256::ecdsa::signature::hazmat::PrehashSigner as _;
        let sig: p256::ecdsa::Signature = self
            .0
            .sign_prehash(sha256)
            .expect("a 32-byte prehash always signs");
        sig.to_der().as_bytes().to_vec()
    }
}

impl VerifyingKey {
    /// Parses an SPKI PEM public key (`-----BEGIN PUBLIC KEY-----`).
    pub fn from_pem(pem: &str) -> Result<Self, KeyError> {
        let (label, der) = decode_pem(pem)?;
        match label.as_str() {
            "PUBLIC KEY" => Self::from_spki_der(&der),
            "RSA PUBLIC KEY" => Err(KeyError::UnsupportedKeyType { kind: "RSA".into() }),
            l if l.contains("PRIVATE KEY") => Err(KeyError::UnsupportedPem {
                label,
                hint: "this is a private key; verification needs the public key (`.pub`, `-----BEGIN PUBLIC KEY-----`)",
            }),
            "CERTIFICATE" => Err(KeyError::UnsupportedPem {
                label,
                hint: "certificates are not supported; extract the public key with `openssl x509 -pubkey -noout -in CERT`",
            }),
            _ => Err(KeyError::UnsupportedPem {
                label,
                hint: "expected an SPKI public key (`-----BEGIN PUBLIC KEY-----`)",
            }),
        }
    }

    /// Parses an SPKI DER public key.
    pub fn from_spki_der(der: &[u8]) -> Result<Self, KeyError> {
        let info = p256::pkcs8::spki::SubjectPublicKeyInfoRef::try_from(der).map_err(|e| {
            KeyError::Malformed {
                what: "SPKI public key",
                detail: e.to_string(),
            }
        })?;
        check_algorithm(info.algorithm.oid, info.algorithm.parameters_oid().ok())?;
        p256::ecdsa::VerifyingKey::from_public_key_der(der)
            .map(VerifyingKey)
            .map_err(|e| KeyError::Malformed {
                what: "SPKI P-256 public key",
                detail: e.to_string(),
            })
    }

    pub fn load(path: &Path) -> Result<Self, KeyError> {
        let text = read_text(path)?;
        Self::from_pem(&text).map_err(|e| in_file(path, e))
    }

    pub fn to_spki_pem(&self) -> String {
        self.0
            .to_public_key_pem(LineEnding::LF)
            .expect("a P-256 key always encodes as SPKI")
    }

    pub fn to_spki_der(&self) -> Vec<u8> {
        self.0
            .to_public_key_der()
            .expect("a P-256 key always encodes as SPKI")
            .into_vec()
    }

    /// base64(SHA-256(SPKI DER)): the Sigstore `publicKey.hint` and our key id.
    pub fn hint(&self) -> String {
        B64.encode(Sha256::digest(self.to_spki_der()))
    }

    /// Checks an ASN.1 DER ECDSA signature over SHA-256(msg). A 64-byte fixed-size (r||s)
    /// signature is accepted too.
    pub fn verify(&self, msg: &[u8], der_signature: &[u8]) -> Result<(), KeyError> {
        let sig = p256::ecdsa::Signature::from_der(der_signature)
            .or_else(|e| {
                if der_signature.len() == 64 {
                    p256::ecdsa::Signature::from_slice(der_signature)
                } else {
                    Err(e)
                }
            })
            .map_err(|_| KeyError::MalformedSignature {
                len: der_signature.len(),
            })?;
        self.0
            .verify(msg, &sig)
            .map_err(|_| KeyError::BadSignature { hint: self.hint() })
    }

    /// Checks an ASN.1 DER (or 64-byte r||s) ECDSA signature over a SHA-256 digest.
    pub fn verify_prehash(&self, sha256: &[u8; 32], der_signature: &[u8]) -> Result<(), KeyError> {
        use p256::ecdsa::signature::hazmat::PrehashVerifier as _;
        let sig = p256::ecdsa::Signature::from_der(der_signature)
            .or_else(|e| {
                if der_signature.len() == 64 {
                    p256::ecdsa::Signature::from_slice(der_signature)
                } else {
                    Err(e)
                }
            })
            .map_err(|_| KeyError::MalformedSignature {
                len: der_signature.len(),
            })?;
        self.0
            .verify_prehash(sha256, &sig)
            .map_err(|_| KeyError::BadSignature { hint: self.hint() })
    }
}

/// Writes `<prefix>.key` (PKCS#8 PEM, mode 0600, never overwrites an existing file) and
/// `<prefix>.pub` (SPKI PEM, mode 0644) and returns the key pair.
pub fn write_key_pair(prefix: &Path) -> Result<SigningKey, KeyError> {
    let key_path = with_suffix(prefix, "key");
    let pub_path = with_suffix(prefix, "pub");
    for p in [&key_path, &pub_path] {
        if p.exists() {
            return Err(KeyError::AlreadyExists { path: p.clone() });
        }
    }
    if let Some(dir) = key_path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|source| KeyError::Write {
            path: dir.to_path_buf(),
            source,
        })?;
    }
    let key = SigningKey::generate();
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        opts.mode(0o600);
    }
    let mut f = opts.open(&key_path).map_err(|source| {
        if source.kind() == std::io::ErrorKind::AlreadyExists {
            KeyError::AlreadyExists {
                path: key_path.clone(),
            }
        } else {
            KeyError::Write {
                path: key_path.clone(),
                source,
            }
        }
    })?;
    f.write_all(key.to_pkcs8_pem().as_bytes())
        .and_then(|()| f.sync_all())
        .map_err(|source| KeyError::Write {
            path: key_path.clone(),
            source,
        })?;
    let mut pf = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&pub_path)
        .map_err(|source| {
            if source.kind() == std::io::ErrorKind::AlreadyExists {
                KeyError::AlreadyExists {
                    path: pub_path.clone(),
                }
            } else {
                KeyError::Write {
                    path: pub_path.clone(),
                    source,
                }
            }
        })?;
    // Modes set explicitly, whatever the umask: the private key 0600, the public key 0644.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        for (p, file, mode) in [(&key_path, &f, 0o600), (&pub_path, &pf, 0o644)] {
            file.set_permissions(std::fs::Permissions::from_mode(mode))
                .map_err(|source| KeyError::Write {
                    path: p.clone(),
                    source,
                })?;
        }
    }
    pf.write_all(key.verifying_key().to_spki_pem().as_bytes())
        .and_then(|()| pf.sync_all())
        .map_err(|source| KeyError::Write {
            path: pub_path.clone(),
            source,
        })?;
    Ok(key)
}

fn with_suffix(prefix: &Path, ext: &str) -> PathBuf {
    let mut s = prefix.as_os_str().to_owned();
    s.push(".");
    s.push(ext);
    PathBuf::from(s)
}

fn read_text(path: &Path) -> Result<String, KeyError> {
    std::fs::read_to_string(path).map_err(|source| KeyError::Read {
        path: path.to_path_buf(),
        source,
    })
}

fn in_file(path: &Path, e: KeyError) -> KeyError {
    KeyError::InFile {
        path: path.to_path_buf(),
        source: Box::new(e),
    }
}

/// The label of the first private-key PEM block anywhere in `text` (PKCS#8 `PRIVATE KEY`,
/// SEC1 `EC PRIVATE KEY`, cosign's `ENCRYPTED SIGSTORE PRIVATE KEY`, …), if it holds one:
/// what must never be sent where a public key is expected.
pub fn private_key_label(text: &str) -> Option<String> {
    text.lines()
        .filter_map(|l| l.trim().strip_prefix("-----BEGIN "))
        .filter_map(|l| l.strip_suffix("-----"))
        .find(|label| label.contains("PRIVATE KEY"))
        .map(str::to_string)
}

/// Decodes the first PEM block of `pem` (leading text before `-----BEGIN` is ignored).
fn decode_pem(pem: &str) -> Result<(String, Vec<u8>), KeyError> {
    let start = pem.find("-----BEGIN ").ok_or_else(|| KeyError::NotPem {
        detail: "no `-----BEGIN` line".into(),
    })?;
    let block = pem[start..].trim_end();
    let (label, der) = p256::pkcs8::der::pem::decode_vec(block.as_bytes()).or_else(|e| {
        // Retry with only the first block, in case several are concatenated.
        let end_idx = block.find("-----END ").ok_or_else(|| KeyError::NotPem {
            detail: e.to_string(),
        })?;
        let after = block[end_idx..]
            .find("\n")
            .map(|i| end_idx + i)
            .unwrap_or(block.len());
        p256::pkcs8::der::pem::decode_vec(block[..after].trim_end().as_bytes()).map_err(|e| {
            KeyError::NotPem {
                detail: e.to_string(),
            }
        })
    })?;
    Ok((label.to_string(), der))
}

/// Rejects any algorithm other than id-ecPublicKey on P-256, naming what was found.
fn check_algorithm(oid: ObjectIdentifier, curve: Option<ObjectIdentifier>) -> Result<(), KeyError> {
    let oid_s = oid.to_string();
    if oid_s == OID_EC_PUBLIC_KEY {
        let curve_s = curve.map(|c| c.to_string()).unwrap_or_default();
        return match curve_s.as_str() {
            OID_P256 => Ok(()),
            "1.3.132.0.34" => Err(KeyError::UnsupportedKeyType {
                kind: "ECDSA P-384".into(),
            }),
            "1.3.132.0.35" => Err(KeyError::UnsupportedKeyType {
                kind: "ECDSA P-521".into(),
            }),
            "1.3.132.0.10" => Err(KeyError::UnsupportedKeyType {
                kind: "ECDSA secp256k1".into(),
            }),
            "" => Err(KeyError::UnsupportedKeyType {
                kind: "EC key without a named curve".into(),
            }),
            other => Err(KeyError::UnsupportedKeyType {
                kind: format!("EC key on curve {other}"),
            }),
        };
    }
    let kind = match oid_s.as_str() {
        "1.2.840.113549.1.1.1" | "1.2.840.113549.1.1.10" => "RSA".to_string(),
        "1.3.101.112" => "Ed25519".to_string(),
        "1.3.101.113" => "Ed448".to_string(),
        "1.3.101.110" => "X25519".to_string(),
        "1.3.101.111" => "X448".to_string(),
        "1.2.840.10040.4.1" => "DSA".to_string(),
        other => format!("with algorithm OID {other}"),
    };
    Err(KeyError::UnsupportedKeyType { kind })
}

#[derive(serde::Deserialize)]
struct CosignEncrypted {
    kdf: CosignKdf,
    cipher: CosignCipher,
    ciphertext: String,
}

#[derive(serde::Deserialize)]
struct CosignKdf {
    name: String,
    params: CosignScryptParams,
    salt: String,
}

#[derive(serde::Deserialize)]
struct CosignScryptParams {
    #[serde(rename = "N")]
    n: u64,
    r: u64,
    p: u64,
}

#[derive(serde::Deserialize)]
struct CosignCipher {
    name: String,
    nonce: String,
}

fn cosign_field(field: &'static str, value: &str) -> Result<Vec<u8>, KeyError> {
    B64.decode(value.trim()).map_err(|e| KeyError::Malformed {
        what: "encrypted cosign private key",
        detail: format!("field `{field}` is not valid base64: {e}"),
    })
}

/// Opens the JSON body of a cosign encrypted key: scrypt → secretbox → PKCS#8 DER.
fn decrypt_cosign(body: &[u8], password: &[u8]) -> Result<Vec<u8>, KeyError> {
    let enc: CosignEncrypted = serde_json::from_slice(body).map_err(|e| KeyError::Malformed {
        what: "encrypted cosign private key",
        detail: format!("the PEM body is not the expected JSON ({e})"),
    })?;
    if enc.kdf.name != "scrypt" {
        return Err(KeyError::UnsupportedEncryption {
            detail: format!("kdf \"{}\"", enc.kdf.name),
        });
    }
    if enc.cipher.name != "nacl/secretbox" {
        return Err(KeyError::UnsupportedEncryption {
            detail: format!("cipher \"{}\"", enc.cipher.name),
        });
    }
    let (n, r, p) = (enc.kdf.params.n, enc.kdf.params.r, enc.kdf.params.p);
    let bad = |reason| KeyError::ScryptParams { n, r, p, reason };
    if n < 2 || !n.is_power_of_two() {
        return Err(bad("N must be a power of two greater than 1"));
    }
    let log_n = n.trailing_zeros();
    if log_n > MAX_SCRYPT_LOG_N {
        return Err(bad("N is larger than 2^20"));
    }
    if r == 0 || p == 0 {
        return Err(bad("r and p must be at least 1"));
    }
    if r > 64 || p > 16 {
        return Err(bad("r must be at most 64 and p at most 16"));
    }
    if 128 * n * r > MAX_SCRYPT_MEMORY {
        return Err(bad("it would need more than 1 GiB of memory (128·N·r)"));
    }
    let salt = cosign_field("kdf.salt", &enc.kdf.salt)?;
    let nonce = cosign_field("cipher.nonce", &enc.cipher.nonce)?;
    let ciphertext = cosign_field("ciphertext", &enc.ciphertext)?;
    let nonce: [u8; 24] = nonce
        .as_slice()
        .try_into()
        .map_err(|_| KeyError::Malformed {
            what: "encrypted cosign private key",
            detail: format!("cipher.nonce must be 24 bytes, got {}", nonce.len()),
        })?;
    let params = scrypt::Params::new(log_n as u8, r as u32, p as u32, 32)
        .map_err(|_| bad("scrypt rejects them"))?;
    let mut key = [0u8; 32];
    scrypt::scrypt(password, &salt, &params, &mut key).map_err(|_| bad("scrypt rejects them"))?;
    let cipher = xsalsa20poly1305::XSalsa20Poly1305::new(&key.into());
    cipher
        .decrypt(&nonce.into(), ciphertext.as_slice())
        .map_err(|_| KeyError::WrongPassword)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err_text<T: fmt::Debug>(r: Result<T, KeyError>) -> String {
        r.expect_err("expected an error").to_string()
    }

    #[test]
    fn sign_verify_round_trip() {
        let k = SigningKey::generate();
        let sig = k.sign(b"hello");
        k.verifying_key().verify(b"hello", &sig).unwrap();
        let e = err_text(k.verifying_key().verify(b"hellO", &sig));
        assert!(e.contains("does not verify"), "{e}");
    }

    #[test]
    fn fixed_size_signature_accepted() {
        let k = SigningKey::generate();
        let der = k.sign(b"m");
        let sig = p256::ecdsa::Signature::from_der(&der).unwrap();
        k.verifying_key().verify(b"m", &sig.to_bytes()).unwrap();
    }

    #[test]
    fn changed_signature_byte_fails() {
        let k = SigningKey::generate();
        let mut sig = k.sign(b"data");
        let last = sig.len() - 1;
        sig[last] ^= 1;
        assert!(k.verifying_key().verify(b"data", &sig).is_err());
        assert!(matches!(
            k.verifying_key().verify(b"data", b"junk"),
            Err(KeyError::MalformedSignature { len: 4 })
        ));
    }

    #[test]
    fn wrong_key_fails() {
        let a = SigningKey::generate();
        let b = SigningKey::generate();
        let sig = a.sign(b"x");
        assert!(matches!(
            b.verifying_key().verify(b"x", &sig),
            Err(KeyError::BadSignature { .. })
        ));
    }

    #[test]
    fn pkcs8_and_spki_pem_round_trip() {
        let k = SigningKey::generate();
        let pem = k.to_pkcs8_pem();
        assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----\n"), "{pem}");
        let k2 = SigningKey::from_pem(&pem, None).unwrap();
        assert_eq!(k.verifying_key(), k2.verifying_key());
        let pub_pem = k.verifying_key().to_spki_pem();
        assert!(
            pub_pem.starts_with("-----BEGIN PUBLIC KEY-----\n"),
            "{pub_pem}"
        );
        assert_eq!(VerifyingKey::from_pem(&pub_pem).unwrap(), k.verifying_key());
        // Leading text is tolerated (e.g. comments before the block).
        assert_eq!(
            VerifyingKey::from_pem(&format!("# key\n{pub_pem}")).unwrap(),
            k.verifying_key()
        );
    }

    #[test]
    fn sec1_pem_accepted() {
        let k = SigningKey::generate();
        let secret = p256::SecretKey::from(k.0.clone());
        let sec1 = secret.to_sec1_pem(LineEnding::LF).unwrap();
        assert!(sec1.starts_with("-----BEGIN EC PRIVATE KEY-----"));
        let k2 = SigningKey::from_pem(&sec1, None).unwrap();
        assert_eq!(k.verifying_key(), k2.verifying_key());
    }

    #[test]
    fn hint_is_b64_sha256_of_spki() {
        let k = SigningKey::generate().verifying_key();
        let h = B64.decode(k.hint()).unwrap();
        assert_eq!(h.len(), 32);
        assert_eq!(h, Sha256::digest(k.to_spki_der()).to_vec());
        assert_ne!(k.hint(), SigningKey::generate().verifying_key().hint());
    }

    #[test]
    fn debug_hides_secret() {
        let k = SigningKey::generate();
        let secret_hex: String = k.0.to_bytes().iter().map(|b| format!("{b:02x}")).collect();
        let dbg = format!("{k:?} {k:#?}");
        assert!(!dbg.to_lowercase().contains(&secret_hex), "{dbg}");
        assert!(
            !dbg.contains(&format!("{:?}", k.0.to_bytes().as_slice())),
            "{dbg}"
        );
        assert!(dbg.contains(&k.verifying_key().hint()), "{dbg}");
    }

    #[test]
    fn pem_errors_are_clear() {
        let e = err_text(SigningKey::from_pem("hello", None));
        assert!(e.contains("not a PEM key"), "{e}");
        let e = err_text(SigningKey::from_pem(
            "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
            None,
        ));
        assert!(e.contains("malformed PKCS#8"), "{e}");
        let e = err_text(SigningKey::from_pem(
            "-----BEGIN RSA PRIVATE KEY-----\nAAAA\n-----END RSA PRIVATE KEY-----\n",
            None,
        ));
        assert!(e.contains("unsupported key type RSA"), "{e}");
        let k = SigningKey::generate();
        let e = err_text(SigningKey::from_pem(&k.verifying_key().to_spki_pem(), None));
        assert!(e.contains("public key"), "{e}");
        let e = err_text(VerifyingKey::from_pem(&k.to_pkcs8_pem()));
        assert!(e.contains("private key"), "{e}");
        let e = err_text(VerifyingKey::from_pem(
            "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n",
        ));
        assert!(e.contains("malformed SPKI"), "{e}");
    }

    // Ed25519 PKCS#8 and SPKI from RFC 8410 §10.3 / §10.1.
    const ED25519_PRIV: &str = "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEINTuctv5E1hK1bbY8fdp+K06/nwoy/HU++CXqI9EdVhC\n-----END PRIVATE KEY-----\n";
    const ED25519_PUB: &str = "-----BEGIN PUBLIC KEY-----\nMCowBQYDK2VwAyEAGb9ECWmEzf6FQbrBZ9w7lshQhqowtrbLDFw4rXAxZuE=\n-----END PUBLIC KEY-----\n";

    #[test]
    fn ed25519_rejected_by_name() {
        let e = err_text(SigningKey::from_pem(ED25519_PRIV, None));
        assert!(e.contains("unsupported key type Ed25519"), "{e}");
        let e = err_text(VerifyingKey::from_pem(ED25519_PUB));
        assert!(e.contains("unsupported key type Ed25519"), "{e}");
    }

    #[test]
    fn cosign_encrypted_round_trip_and_errors() {
        let k = SigningKey::generate();
        let pem = k.to_cosign_encrypted_pem(b"s3cret").unwrap();
        assert!(
            pem.starts_with("-----BEGIN ENCRYPTED SIGSTORE PRIVATE KEY-----\n"),
            "{pem}"
        );
        let k2 = SigningKey::from_pem(&pem, Some(b"s3cret")).unwrap();
        assert_eq!(k.verifying_key(), k2.verifying_key());

        let e = err_text(SigningKey::from_pem(&pem, None));
        assert!(e.contains("COSIGN_PASSWORD"), "{e}");
        let e = err_text(SigningKey::from_pem(&pem, Some(b"wrong")));
        assert!(e.contains("wrong password or corrupted key"), "{e}");
    }

    fn cosign_pem_with(body: serde_json::Value) -> String {
        p256::pkcs8::der::pem::encode_string(
            COSIGN_LABELS[0],
            LineEnding::LF,
            &serde_json::to_vec(&body).unwrap(),
        )
        .unwrap()
    }

    #[test]
    fn cosign_absurd_params_rejected() {
        let body = |n: u64, r: u64, p: u64| {
            serde_json::json!({
                "kdf": {"name": "scrypt", "params": {"N": n, "r": r, "p": p}, "salt": B64.encode([0u8; 32])},
                "cipher": {"name": "nacl/secretbox", "nonce": B64.encode([0u8; 24])},
                "ciphertext": B64.encode([0u8; 64]),
            })
        };
        for (n, r, p) in [
            (1u64 << 21, 8, 1),
            (1000, 8, 1),
            (32768, 0, 1),
            (32768, 8, 1000),
            (1 << 20, 16, 1),
        ] {
            let e = err_text(SigningKey::from_pem(
                &cosign_pem_with(body(n, r, p)),
                Some(b"x"),
            ));
            assert!(e.contains("refusing scrypt parameters"), "{n} {r} {p}: {e}");
        }
        // Small valid parameters reach decryption, which fails authentication.
        let e = err_text(SigningKey::from_pem(
            &cosign_pem_with(body(16, 1, 1)),
            Some(b"x"),
        ));
        assert!(e.contains("wrong password or corrupted key"), "{e}");

        let mut other = body(16, 1, 1);
        other["kdf"]["name"] = "pbkdf2".into();
        let e = err_text(SigningKey::from_pem(&cosign_pem_with(other), Some(b"x")));
        assert!(
            e.contains("unsupported encrypted key format") && e.contains("pbkdf2"),
            "{e}"
        );

        let e = err_text(SigningKey::from_pem(
            &cosign_pem_with(serde_json::json!({"a": 1})),
            Some(b"x"),
        ));
        assert!(e.contains("malformed encrypted cosign private key"), "{e}");
    }

    #[test]
    fn cosign_ciphertext_tamper_detected() {
        let k = SigningKey::generate();
        let pem = k.to_cosign_encrypted_pem(b"pw").unwrap();
        let (_, body) = decode_pem(&pem).unwrap();
        let mut v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        let mut ct = B64.decode(v["ciphertext"].as_str().unwrap()).unwrap();
        ct[20] ^= 0x80;
        v["ciphertext"] = B64.encode(ct).into();
        let e = err_text(SigningKey::from_pem(&cosign_pem_with(v), Some(b"pw")));
        assert!(e.contains("wrong password or corrupted key"), "{e}");
    }

    #[test]
    fn write_key_pair_files() {
        let dir = tempfile::tempdir().unwrap();
        let prefix = dir.path().join("sub/dir/release");
        let k = write_key_pair(&prefix).unwrap();
        let key_path = dir.path().join("sub/dir/release.key");
        let pub_path = dir.path().join("sub/dir/release.pub");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(&key_path).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600);
        }
        let loaded = SigningKey::load(&key_path, None).unwrap();
        assert_eq!(loaded.verifying_key(), k.verifying_key());
        assert_eq!(VerifyingKey::load(&pub_path).unwrap(), k.verifying_key());

        let e = err_text(write_key_pair(&prefix));
        assert!(
            e.contains("refusing to overwrite") && e.contains("release.key"),
            "{e}"
        );
        // The existing key is untouched.
        assert_eq!(
            SigningKey::load(&key_path, None).unwrap().verifying_key(),
            k.verifying_key()
        );
    }

    #[test]
    fn load_errors_name_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope.key");
        let e = err_text(SigningKey::load(&missing, None));
        assert!(e.contains("nope.key"), "{e}");
        let bad = dir.path().join("bad.pub");
        std::fs::write(&bad, "not a key").unwrap();
        let e = err_text(VerifyingKey::load(&bad));
        assert!(e.contains("bad.pub") && e.contains("not a PEM key"), "{e}");
    }
}

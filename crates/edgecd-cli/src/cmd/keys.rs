//! `edgecd keygen` and key loading shared by the signing commands.
use anyhow::Context;
use edgecd_sign::{SigningKey, VerifyingKey};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(Debug, clap::Args)]
pub struct KeygenArgs {
    /// Path prefix: writes PREFIX.key (PKCS#8 PEM, mode 0600) and PREFIX.pub (SPKI PEM).
    #[arg(long, value_name = "PREFIX")]
    pub out: PathBuf,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
}

pub fn keygen(a: KeygenArgs) -> anyhow::Result<ExitCode> {
    let key = edgecd_sign::write_key_pair(&a.out)
        .with_context(|| format!("generating a key pair at {}", a.out.display()))?;
    let hint = key.verifying_key().hint();
    let (k, p) = (a.out.with_extension("key"), a.out.with_extension("pub"));
    if a.json {
        crate::output::print_json(
            &serde_json::json!({"privateKey": k, "publicKey": p, "keyId": hint}),
        )?;
    } else {
        crate::outln!(
            "wrote {} (private, mode 0600) and {}",
            k.display(),
            p.display()
        );
        crate::outln!("key id: {hint}");
    }
    Ok(ExitCode::SUCCESS)
}

/// Loads a private signing key; encrypted cosign keys take their password from COSIGN_PASSWORD.
pub fn load_signing_key(path: &Path) -> anyhow::Result<SigningKey> {
    let password = std::env::var_os("COSIGN_PASSWORD").map(|p| p.into_encoded_bytes());
    SigningKey::load(path, password.as_deref())
        .with_context(|| format!("loading signing key {}", path.display()))
}

pub fn load_public_key(path: &Path) -> anyhow::Result<VerifyingKey> {
    VerifyingKey::load(path).with_context(|| format!("loading public key {}", path.display()))
}

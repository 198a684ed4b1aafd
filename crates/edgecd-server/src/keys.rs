//! Release signing keys the server trusts: trusting one (a P-256 public key; a private key
//! sent by mistake is refused and nothing is stored) and listing them.

use crate::AppState;
use crate::error::ApiError;
use crate::store::TrustedKeyRow;
use crate::validate::check_text;
use edgecd_api::protocol::{TrustKeyRequest, TrustedKey};

/// Trusts the public key in `req` for release signatures.
pub async fn trust(st: &AppState, req: TrustKeyRequest) -> Result<TrustedKey, ApiError> {
    if let Some(n) = &req.name {
        check_text("name", n, 128)?;
    }
    if let Some(label) = edgecd_sign::private_key_label(&req.public_key_pem) {
        tracing::warn!("refused a private key sent as a release key to trust");
        return Err(ApiError::bad_request(format!(
            "this is a private key (`{label}`), not a public one: nothing was stored; pass the public key file (KEY.pub, `-----BEGIN PUBLIC KEY-----`) and keep the private key secret (consider it exposed and rotate it)"
        )));
    }
    let key = edgecd_sign::VerifyingKey::from_pem(&req.public_key_pem)
        .map_err(|e| ApiError::bad_request(format!("not a P-256 SPKI PEM public key: {e}")))?;
    let k = TrustedKey {
        hint: key.hint(),
        name: req.name,
        public_key_pem: key.to_spki_pem(),
        added: st.now(),
    };
    st.store
        .put_trusted_key(&TrustedKeyRow {
            hint: k.hint.clone(),
            name: k.name.clone(),
            pem: k.public_key_pem.clone(),
            added: k.added as i64,
        })
        .await?;
    st.store
        .event(None, st.now() as i64, "key-trusted", &k.hint)
        .await?;
    Ok(k)
}

/// Every trusted release key.
pub async fn trusted(st: &AppState) -> Result<Vec<TrustedKey>, ApiError> {
    Ok(st
        .store
        .trusted_keys()
        .await?
        .into_iter()
        .map(|k| TrustedKey {
            hint: k.hint,
            name: k.name,
            public_key_pem: k.pem,
            added: k.added as u64,
        })
        .collect())
}

//! Verification before install (design §3): the server's assignment signature, version
//! monotonicity (rollback attack) and expiry (freeze attack), the release manifest's
//! signature by a pinned release key, digests and sizes matching the signed metadata
//! (mix-and-match), and hardware / runtime compatibility with this device.
//! Every function here is pure (the clock is an argument); a refusal says why.

use base64::Engine as _;
use edgecd_api::profile::{HardwareProfile, RuntimePin};
use edgecd_api::protocol::{Assignment, Inventory, ReleaseRef, SignedAssignment, valid_digest};
use edgecd_sign::{SigstoreBundle, VerifyingKey, verify_artifact};

/// Why something was refused (reported to the server verbatim).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Refusal(pub String);

fn refuse<T>(msg: impl Into<String>) -> Result<T, Refusal> {
    Err(Refusal(msg.into()))
}

/// Checks the server's signature over the payload bytes, then parses and checks the
/// assignment: addressed to `device_id`, not older than `highest_version`, not expired.
pub fn verify_assignment(
    signed: &SignedAssignment,
    key: &VerifyingKey,
    device_id: &str,
    highest_version: u64,
    now: u64,
) -> Result<Assignment, Refusal> {
    if signed.key_hint != key.hint() {
        return refuse(format!(
            "assignment signed by unknown key {:?} (pinned assignment key is {:?})",
            signed.key_hint,
            key.hint()
        ));
    }
    let sig = base64::engine::general_purpose::STANDARD
        .decode(signed.signature.as_bytes())
        .map_err(|e| Refusal(format!("assignment signature is not base64: {e}")))?;
    if key.verify(signed.payload.as_bytes(), &sig).is_err() {
        return refuse("assignment signature does not verify with the pinned assignment key");
    }
    let a: Assignment = serde_json::from_str(&signed.payload)
        .map_err(|e| Refusal(format!("assignment payload: {e}")))?;
    if a.device_id != device_id {
        return refuse(format!(
            "assignment is for device {}, not {device_id}",
            a.device_id
        ));
    }
    if a.version < highest_version {
        return refuse(format!(
            "assignment version {} is lower than the highest accepted version {highest_version} (rollback attack?)",
            a.version
        ));
    }
    if a.expires <= now {
        return refuse(format!(
            "assignment version {} expired at {} (now {now}): stale metadata (freeze attack?)",
            a.version, a.expires
        ));
    }
    for (what, b) in [
        ("release manifest", &a.release.manifest),
        ("release signature", &a.release.manifest_sig),
        ("bundle", &a.release.bundle),
        ("bundle signature", &a.release.bundle_sig),
    ] {
        if !valid_digest(&b.digest) {
            return refuse(format!(
                "assignment names an invalid {what} digest {:?}",
                b.digest
            ));
        }
    }
    Ok(a)
}

/// Checks a check-in answer's signed timestamp (`edgecd_api::protocol::Timestamp`): signed by
/// the pinned assignment key, for this device, not expired.
pub fn verify_timestamp(
    text: &str,
    signature_b64: &str,
    key: &VerifyingKey,
    device_id: &str,
    now: u64,
) -> Result<edgecd_api::protocol::Timestamp, Refusal> {
    let t = edgecd_api::protocol::Timestamp::parse(text).ok_or_else(|| {
        Refusal(format!(
            "timestamp {text:?} is not v1;device=…;issued=…;expires=…;version=…"
        ))
    })?;
    let sig = base64::engine::general_purpose::STANDARD
        .decode(signature_b64.as_bytes())
        .map_err(|e| Refusal(format!("timestamp signature is not base64: {e}")))?;
    if key.verify(&t.signed_bytes(), &sig).is_err() {
        return refuse("timestamp signature does not verify with the pinned assignment key");
    }
    if t.device_id != device_id {
        return refuse(format!(
            "timestamp is for device {}, not {device_id}",
            t.device_id
        ));
    }
    if t.expires <= now {
        return refuse(format!(
            "timestamp expired at {} (now {now}): a stale or replayed answer",
            t.expires
        ));
    }
    Ok(t)
}

/// Before the bundle is downloaded: its signature must be by the key that signed the
/// release manifest (so an untrusted signer is refused before a byte of the model moves).
pub fn check_bundle_signature_key(sig_json: &[u8], key: &VerifyingKey) -> Result<(), Refusal> {
    let sig = SigstoreBundle::from_json(sig_json)
        .map_err(|e| Refusal(format!("bundle signature: {e}")))?;
    let hint = sig.key_hint();
    if !hint.is_empty() && hint != key.hint() {
        return refuse(format!(
            "bundle is signed by key {hint:?}, not by the release's key {:?}",
            key.hint()
        ));
    }
    Ok(())
}

/// Checks that a release built for `hw` and pinned to `rt` can run on this device.
pub fn check_compatible(
    hw: &HardwareProfile,
    rt: &RuntimePin,
    inv: &Inventory,
) -> Result<(), Refusal> {
    if hw.board != inv.board {
        return refuse(format!(
            "release is built for board {:?}, this device is {:?}",
            hw.board, inv.board
        ));
    }
    if let Some(acc) = &hw.accelerator
        && inv.accelerator.as_deref() != Some(acc.as_str())
    {
        return refuse(format!(
            "release needs accelerator {acc:?}, this device has {}",
            inv.accelerator
                .as_deref()
                .map_or("none".to_string(), |a| format!("{a:?}"))
        ));
    }
    if let Some(min) = hw.min_ram_mb
        && inv.ram_mb < min
    {
        return refuse(format!(
            "release needs {min} MB of RAM, this device has {} MB",
            inv.ram_mb
        ));
    }
    match inv.runtimes.get(&rt.name) {
        Some(v) if *v == rt.version => Ok(()),
        Some(v) => refuse(format!(
            "release is pinned to runtime {rt}, this device has {}@{v}",
            rt.name
        )),
        None => refuse(format!(
            "release is pinned to runtime {rt}, which this device does not have"
        )),
    }
}

/// Verifies `release.json` against the pinned release keys and checks that it says what the
/// assignment says (no mix-and-match). Returns the key that signed it.
pub fn verify_release_manifest(
    manifest: &[u8],
    sig_json: &[u8],
    keys: &[VerifyingKey],
    r: &ReleaseRef,
) -> Result<VerifyingKey, Refusal> {
    let sig = SigstoreBundle::from_json(sig_json)
        .map_err(|e| Refusal(format!("release signature: {e}")))?;
    let hint = sig.key_hint().to_string();
    let key = keys
        .iter()
        .find(|k| hint.is_empty() || k.hint() == hint)
        .ok_or_else(|| Refusal(format!("release is signed by key {hint:?}, which is not a trusted release key on this device")))?;
    verify_artifact(&sig, manifest, key)
        .map_err(|e| Refusal(format!("release manifest signature does not verify: {e}")))?;
    let m = edgecd_bundle::release::ReleaseManifest::from_json(manifest)
        .map_err(|e| Refusal(format!("release manifest: {e}")))?;
    if m.app != r.app || m.version != r.version {
        return refuse(format!(
            "release manifest is {}@{}, the assignment says {}@{}",
            m.app, m.version, r.app, r.version
        ));
    }
    if m.bundle.digest != r.bundle_digest {
        return refuse(format!(
            "release manifest names bundle {}, the assignment says {}",
            m.bundle.digest, r.bundle_digest
        ));
    }
    if m.bundle.archive_digest != r.bundle.digest || m.bundle.archive_size != r.bundle.size {
        return refuse(format!(
            "release manifest names bundle file {} ({} bytes), the assignment says {} ({} bytes)",
            m.bundle.archive_digest, m.bundle.archive_size, r.bundle.digest, r.bundle.size
        ));
    }
    if m.hardware != r.hardware || m.runtime != r.runtime {
        return refuse(
            "release manifest's hardware profile or runtime pin differs from the assignment",
        );
    }
    Ok(key.clone())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn inv() -> Inventory {
        Inventory {
            board: "rpi5".into(),
            board_model: None,
            ram_mb: 4096,
            accelerator: None,
            runtimes: BTreeMap::from([("edgecd-infer".to_string(), "0.1.0".to_string())]),
            agent_version: "0.1.0".into(),
            ..Default::default()
        }
    }

    #[test]
    fn compatibility() {
        let hw = HardwareProfile {
            board: "rpi5".into(),
            accelerator: None,
            min_ram_mb: Some(1024),
        };
        let rt = RuntimePin {
            name: "edgecd-infer".into(),
            version: "0.1.0".into(),
        };
        assert!(check_compatible(&hw, &rt, &inv()).is_ok());
        let wrong_board = HardwareProfile {
            board: "jetson".into(),
            ..hw.clone()
        };
        assert!(
            check_compatible(&wrong_board, &rt, &inv())
                .unwrap_err()
                .0
                .contains("board")
        );
        let acc = HardwareProfile {
            accelerator: Some("hailo-10h".into()),
            ..hw.clone()
        };
        assert!(
            check_compatible(&acc, &rt, &inv())
                .unwrap_err()
                .0
                .contains("accelerator")
        );
        let ram = HardwareProfile {
            min_ram_mb: Some(8192),
            ..hw.clone()
        };
        assert!(
            check_compatible(&ram, &rt, &inv())
                .unwrap_err()
                .0
                .contains("RAM")
        );
        let rt2 = RuntimePin {
            name: "edgecd-infer".into(),
            version: "0.2.0".into(),
        };
        assert!(
            check_compatible(&hw, &rt2, &inv())
                .unwrap_err()
                .0
                .contains("runtime")
        );
    }
}

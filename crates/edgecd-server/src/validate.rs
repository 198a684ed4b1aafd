//! Input checks shared by the handlers and the domain: labels, free text, a device's
//! inventory, blob digests. Each refuses with a 400 that says what is wrong.

use crate::error::ApiError;
use edgecd_api::protocol::{Inventory, valid_digest, valid_label};
use std::collections::BTreeMap;

/// Labels: at most 64, each key and value 1-63 characters of `[A-Za-z0-9._-]`.
pub fn check_labels(labels: &BTreeMap<String, String>) -> Result<(), ApiError> {
    if labels.len() > 64 {
        return Err(ApiError::bad_request("too many labels (max 64)"));
    }
    for (k, v) in labels {
        if !valid_label(k, v) {
            return Err(ApiError::bad_request(format!(
                "invalid label {k:?}={v:?}: use 1-63 characters of [A-Za-z0-9._-] (keys may contain /)"
            )));
        }
    }
    Ok(())
}

/// Free text: at most `max` bytes, no control characters.
pub fn check_text(what: &str, s: &str, max: usize) -> Result<(), ApiError> {
    if s.len() > max || s.chars().any(char::is_control) {
        return Err(ApiError::bad_request(format!(
            "{what} is too long or contains control characters"
        )));
    }
    Ok(())
}

/// The inventory a device reports (bounded text, at most 32 runtimes).
pub fn check_inventory(inv: &Inventory) -> Result<(), ApiError> {
    check_text("inventory.board", &inv.board, 64)?;
    check_text(
        "inventory.boardModel",
        inv.board_model.as_deref().unwrap_or(""),
        256,
    )?;
    check_text(
        "inventory.accelerator",
        inv.accelerator.as_deref().unwrap_or(""),
        64,
    )?;
    check_text("inventory.agentVersion", &inv.agent_version, 64)?;
    check_text(
        "inventory.hostname",
        inv.hostname.as_deref().unwrap_or(""),
        253,
    )?;
    check_text("inventory.serial", inv.serial.as_deref().unwrap_or(""), 128)?;
    if inv.runtimes.len() > 32 {
        return Err(ApiError::bad_request("too many runtimes"));
    }
    for (k, v) in &inv.runtimes {
        check_text("runtime name", k, 64)?;
        check_text("runtime version", v, 64)?;
    }
    Ok(())
}

/// A blob digest: `sha256:` and 64 lowercase hex digits.
pub fn check_digest(digest: &str) -> Result<(), ApiError> {
    if valid_digest(digest) {
        Ok(())
    } else {
        Err(ApiError::bad_request(
            "blob digest must be sha256:<64 lowercase hex>",
        ))
    }
}

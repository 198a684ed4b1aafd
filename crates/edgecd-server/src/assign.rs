//! The one path that changes what a device should run (one assignment per app; a removal
//! is an assignment too, [`remove`]): [`assign`] (deploy, rollouts,
//! rollbacks, fleets) and [`resign`] (a fresh signature for the same release: refresh before expiry,
//! resync after a restored database). Each signs an assignment at the device's next version
//! and stores it only if no other writer took that version meanwhile (the store refuses a
//! version that is not higher), retrying with the next one, then records the event.

use crate::store::AssignmentRow;
use crate::{ApiError, AppState};
use base64::Engine as _;
use edgecd_api::protocol::{Assignment, ReleaseRef};

/// How many times a write that lost a race for a version is retried.
const ATTEMPTS: usize = 5;

/// What an assignment was made for, recorded in the device's events.
pub enum Why<'a> {
    Deploy,
    Rollout(&'a str),
    /// The fleet (desired state) the device belongs to.
    Fleet(&'a str),
}

/// Assigns `release` to `device_id` at its next version unless that device is already
/// assigned it (then `None`: nothing changed). Returns the stored assignment.
pub async fn assign(
    st: &AppState,
    device_id: &str,
    release: &ReleaseRef,
    why: Why<'_>,
) -> Result<Option<AssignmentRow>, ApiError> {
    let current = st
        .store
        .app_assignment(device_id, &release.app)
        .await?
        .filter(|a| !a.removed);
    if current
        .as_ref()
        .is_some_and(|a| a.release_version == release.version)
        && matches!(why, Why::Rollout(_) | Why::Fleet(_))
    {
        return Ok(None);
    }
    crate::placement::check_device(st, device_id, release).await?;
    let a = store_next(st, device_id, release, false).await?;
    let name = format!("{}@{}", release.app, release.version);
    let detail = match why {
        Why::Deploy => format!("{name} v{}", a.version),
        Why::Rollout(id) => format!("{name} v{} by rollout {id}", a.version),
        Why::Fleet(f) => format!("{name} v{} by fleet {f}", a.version),
    };
    st.store
        .event(Some(device_id), st.now() as i64, "assigned", &detail)
        .await?;
    Ok(Some(a))
}

/// Signs `a` again for `device_id` at its next version (same release, or same removal,
/// new expiry).
pub async fn resign(
    st: &AppState,
    device_id: &str,
    a: &Assignment,
) -> Result<AssignmentRow, ApiError> {
    store_next(st, device_id, &a.release, a.remove).await
}

/// Removes `app` from `device_id`: a signed removal at the device's next version (the agent
/// stops the app's runtime and deletes its slots). `None`: the device holds no such app.
pub async fn remove(
    st: &AppState,
    device_id: &str,
    app: &str,
    why: Why<'_>,
) -> Result<Option<AssignmentRow>, ApiError> {
    let Some(current) = st
        .store
        .app_assignment(device_id, app)
        .await?
        .filter(|a| !a.removed)
    else {
        return Ok(None);
    };
    let held: Assignment = crate::util::json_col(&current.payload)?;
    let a = store_next(st, device_id, &held.release, true).await?;
    let name = format!("{app}@{}", held.release.version);
    let detail = match why {
        Why::Deploy => format!("{name} v{}", a.version),
        Why::Rollout(id) => format!("{name} v{} by rollout {id}", a.version),
        Why::Fleet(f) => format!("{name} v{} by fleet {f} (on_unmatch: remove)", a.version),
    };
    st.store
        .event(Some(device_id), st.now() as i64, "removed", &detail)
        .await?;
    Ok(Some(a))
}

async fn store_next(
    st: &AppState,
    device_id: &str,
    release: &ReleaseRef,
    remove: bool,
) -> Result<AssignmentRow, ApiError> {
    for _ in 0..ATTEMPTS {
        let version = st.store.next_assignment_version(device_id).await?;
        let now = st.now();
        let expires = now + st.config.assignment_ttl_secs;
        let a = sign_at(
            st,
            device_id,
            version,
            release.clone(),
            remove,
            now,
            expires,
        )?;
        if st.store.put_assignment(&a).await? {
            return Ok(a);
        }
    }
    Err(ApiError::new(
        axum::http::StatusCode::CONFLICT,
        format!("device {device_id}'s assignment kept changing while assigning; retry"),
    ))
}

/// Signs a new assignment of `release` to `device_id` at `version`.
pub fn sign_assignment(
    st: &AppState,
    device_id: &str,
    version: u64,
    release: ReleaseRef,
) -> Result<AssignmentRow, ApiError> {
    let now = st.now();
    sign_assignment_at(
        st,
        device_id,
        version,
        release,
        now,
        now + st.config.assignment_ttl_secs,
    )
}

/// Signs an assignment with explicit times (tests use it to make expired assignments).
pub fn sign_assignment_at(
    st: &AppState,
    device_id: &str,
    version: u64,
    release: ReleaseRef,
    issued: u64,
    expires: u64,
) -> Result<AssignmentRow, ApiError> {
    sign_at(st, device_id, version, release, false, issued, expires)
}

fn sign_at(
    st: &AppState,
    device_id: &str,
    version: u64,
    release: ReleaseRef,
    remove: bool,
    issued: u64,
    expires: u64,
) -> Result<AssignmentRow, ApiError> {
    // A removal gives access to no blob.
    let blobs = if remove {
        vec![]
    } else {
        vec![
            release.manifest.digest.clone(),
            release.manifest_sig.digest.clone(),
            release.bundle.digest.clone(),
            release.bundle_sig.digest.clone(),
        ]
    };
    let (app, rv) = (release.app.clone(), release.version.clone());
    let a = Assignment {
        device_id: device_id.to_string(),
        version,
        issued,
        expires,
        release,
        remove,
    };
    let payload = serde_json::to_string(&a).map_err(ApiError::internal)?;
    let sig = st.signing_key.sign(payload.as_bytes());
    Ok(AssignmentRow {
        device_id: device_id.to_string(),
        version: version as i64,
        app,
        release_version: rv,
        signature: base64::engine::general_purpose::STANDARD.encode(sig),
        payload,
        expires: expires as i64,
        blobs: serde_json::to_string(&blobs).map_err(ApiError::internal)?,
        removed: remove,
    })
}

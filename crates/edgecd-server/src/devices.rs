//! Devices as the domain sees them: enrollment (with its tokens), the API's view of a device,
//! the filters of `GET /api/v1/admin/devices?selector=k=v[,k=v]&state=…` (label selector; a
//! phase, `online`, `offline` or `revoked`), relabelling, revocation and deletion (the
//! device, its credential and its assignment go; the deletion is recorded as an event).

use crate::error::ApiError;
use crate::store::{DeviceRow, NewDevice, TokenRefusal};
use crate::util::json_col;
use crate::validate::{check_inventory, check_labels};
use crate::{AppState, util};
use edgecd_api::protocol::{
    CreateTokenRequest, CreateTokenResponse, DeviceInfo, EnrollRequest, EnrollResponse,
    PROTOCOL_VERSION, Phase, valid_label,
};
use std::collections::BTreeMap;

/// The query string of `GET /api/v1/admin/devices`.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceQuery {
    /// `k=v[,k=v…]`: devices whose labels match all of them.
    pub selector: Option<String>,
    /// A phase (`committed`, `rollingBack`, …), `online`, `offline` or `revoked`.
    pub state: Option<String>,
}

/// Which devices `state=` keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StateFilter {
    /// Devices whose last reported install phase is this one.
    Phase(Phase),
    /// Not revoked, checked in within the last 3 check-in intervals.
    Online,
    /// Not revoked, silent for more than 3 check-in intervals (as `edgecd_server_devices_silent`).
    Offline,
    Revoked,
}

const PHASES: [Phase; 9] = [
    Phase::Idle,
    Phase::Downloading,
    Phase::Verifying,
    Phase::Staged,
    Phase::SelfTest,
    Phase::Activating,
    Phase::Trial,
    Phase::Committed,
    Phase::RollingBack,
];

impl StateFilter {
    /// Parses a state name, ignoring case, `-` and `_` (`rolling-back` = `rollingBack`).
    pub fn parse(s: &str) -> Result<Self, String> {
        let norm = |x: &str| {
            x.chars()
                .filter(|c| *c != '-' && *c != '_')
                .collect::<String>()
                .to_ascii_lowercase()
        };
        let n = norm(s);
        match n.as_str() {
            "online" => Ok(Self::Online),
            "offline" => Ok(Self::Offline),
            "revoked" => Ok(Self::Revoked),
            _ => PHASES
                .iter()
                .find(|p| norm(&p.to_string()) == n)
                .map(|p| Self::Phase(*p))
                .ok_or_else(|| {
                    let phases: Vec<String> = PHASES.iter().map(ToString::to_string).collect();
                    format!(
                        "unknown device state {s:?}: use online, offline, revoked or a phase ({})",
                        phases.join(", ")
                    )
                }),
        }
    }
}

/// A parsed [`DeviceQuery`].
#[derive(Debug, Default)]
pub struct DeviceFilter {
    selector: BTreeMap<String, String>,
    state: Option<StateFilter>,
}

impl DeviceFilter {
    pub fn parse(q: &DeviceQuery) -> Result<Self, ApiError> {
        let mut selector = BTreeMap::new();
        for part in q.selector.as_deref().unwrap_or("").split(',') {
            if part.is_empty() {
                continue;
            }
            match part.split_once('=') {
                Some((k, v)) if !v.is_empty() && valid_label(k, v) => {
                    selector.insert(k.to_string(), v.to_string());
                }
                _ => {
                    return Err(ApiError::bad_request(format!(
                        "selector {part:?} must be k=v with 1-63 characters of [A-Za-z0-9._-] (keys may contain /), several separated by commas"
                    )));
                }
            }
        }
        let state = q
            .state
            .as_deref()
            .map(StateFilter::parse)
            .transpose()
            .map_err(ApiError::bad_request)?;
        Ok(Self { selector, state })
    }

    /// Whether `d` passes; `silent_before` is [`util::silent_before`] now.
    pub fn keeps(&self, d: &DeviceInfo, silent_before: i64) -> bool {
        if !self
            .selector
            .iter()
            .all(|(k, v)| d.labels.get(k) == Some(v))
        {
            return false;
        }
        let silent = (d.last_seen.unwrap_or(d.enrolled) as i64) < silent_before;
        match self.state {
            None => true,
            Some(StateFilter::Phase(p)) => d.status.as_ref().is_some_and(|s| s.phase == p),
            Some(StateFilter::Online) => !d.revoked && !silent,
            Some(StateFilter::Offline) => !d.revoked && silent,
            Some(StateFilter::Revoked) => d.revoked,
        }
    }
}

/// Removes the device `id` (with it its credential, which no longer authenticates) and its
/// assignment; returns the device as it was.
pub async fn delete(st: &AppState, id: &str) -> Result<DeviceInfo, ApiError> {
    let info = device_info(st, device_or_404(st, id).await?).await?;
    if !st.store.delete_device(id).await? {
        return Err(ApiError::not_found(format!("no device {id}")));
    }
    let detail = serde_json::json!({
        "labels": info.labels,
        "assigned": info.assigned,
        "hostname": info.inventory.as_ref().and_then(|i| i.hostname.as_deref()),
    });
    st.store
        .event(Some(id), st.now() as i64, "deleted", &detail.to_string())
        .await?;
    tracing::info!(device = %id, "device deleted");
    Ok(info)
}

/// Enrolls a device with a one-time enrollment token: a new id and credential, the token's
/// labels merged with the device's own.
pub async fn enroll(st: &AppState, req: &EnrollRequest) -> Result<EnrollResponse, ApiError> {
    check_inventory(&req.inventory)?;
    check_labels(&req.labels)?;
    let now = st.now() as i64;
    let id = util::random_id();
    let credential = format!("edc_{id}.{}", util::random_token("s"));
    let new = NewDevice {
        id: id.clone(),
        cred_hash: util::hash_secret(&credential),
        labels: req.labels.clone(),
        enrolled: now,
        inventory: serde_json::to_string(&req.inventory).map_err(ApiError::internal)?,
    };
    let hash = util::hash_secret(&req.token);
    let labels = st.store.enroll(&hash, now, &new).await?.map_err(|r| {
        ApiError::unauthorized(match r {
            TokenRefusal::Unknown => "unknown enrollment token",
            TokenRefusal::Expired => "enrollment token expired",
            TokenRefusal::UsedUp => "enrollment token already used",
        })
    })?;
    let detail = serde_json::to_string(&labels).unwrap_or_default();
    st.store.event(Some(&id), now, "enrolled", &detail).await?;
    tracing::info!(device = %id, "device enrolled");
    let keys = st.store.trusted_keys().await?;
    Ok(EnrollResponse {
        device_id: id,
        credential,
        assignment_key_pem: st.signing_key.verifying_key().to_spki_pem(),
        trusted_release_keys: keys.into_iter().map(|k| k.pem).collect(),
        next_checkin_secs: st.config.checkin_interval_secs,
        protocol: PROTOCOL_VERSION.into(),
    })
}

/// A new enrollment token for devices that will carry `req.labels` (1 s to 365 days,
/// 1 to 100,000 uses).
pub async fn create_enroll_token(
    st: &AppState,
    req: &CreateTokenRequest,
) -> Result<CreateTokenResponse, ApiError> {
    check_labels(&req.labels)?;
    let secs = req.expires_in_secs.unwrap_or(24 * 3600);
    if secs == 0 || secs > 365 * 24 * 3600 {
        return Err(ApiError::bad_request(
            "expiry must be between 1 second and 365 days",
        ));
    }
    let max_uses = req.max_uses.unwrap_or(1);
    if max_uses == 0 || max_uses > 100_000 {
        return Err(ApiError::bad_request(
            "max uses must be between 1 and 100000",
        ));
    }
    let token = util::random_token("edt");
    let expires = st.now() + secs;
    st.store
        .create_enroll_token(
            &util::hash_secret(&token),
            &serde_json::to_string(&req.labels).map_err(ApiError::internal)?,
            expires as i64,
            i64::from(max_uses),
        )
        .await?;
    Ok(CreateTokenResponse {
        token,
        expires,
        max_uses,
    })
}

/// Changes the labels of device `id`: each of `changes` is set, or removed when its value is
/// empty.
pub async fn relabel(
    st: &AppState,
    id: &str,
    changes: BTreeMap<String, String>,
) -> Result<DeviceInfo, ApiError> {
    check_labels(&changes)?;
    let d = device_or_404(st, id).await?;
    let mut labels: BTreeMap<String, String> = json_col(&d.labels)?;
    for (k, v) in changes {
        if v.is_empty() {
            labels.remove(&k);
        } else {
            labels.insert(k, v);
        }
    }
    let text = serde_json::to_string(&labels).map_err(ApiError::internal)?;
    st.store.set_labels(id, &text).await?;
    device_info(st, device_or_404(st, id).await?).await
}

/// Revokes device `id`: its credential stops working (403).
pub async fn revoke(st: &AppState, id: &str) -> Result<DeviceInfo, ApiError> {
    if !st.store.revoke(id).await? {
        return Err(ApiError::not_found(format!("no device {id}")));
    }
    st.store
        .event(Some(id), st.now() as i64, "revoked", "")
        .await?;
    device_info(st, device_or_404(st, id).await?).await
}

/// The devices `q` selects, in enrollment order.
pub async fn list(st: &AppState, q: &DeviceQuery) -> Result<Vec<DeviceInfo>, ApiError> {
    let filter = DeviceFilter::parse(q)?;
    let silent_before = util::silent_before(st.config.checkin_interval_secs);
    let mut out = Vec::new();
    for d in st.store.devices().await? {
        let info = device_info(st, d).await?;
        if filter.keeps(&info, silent_before) {
            out.push(info);
        }
    }
    Ok(out)
}

/// A device's row as the API shows it, with its current assignment.
pub async fn device_info(st: &AppState, d: DeviceRow) -> Result<DeviceInfo, ApiError> {
    // One read: every app's assignment (removals left out), the newest of them `assigned`.
    let all: Vec<_> = st
        .store
        .device_assignments(&d.id)
        .await?
        .into_iter()
        .filter(|a| !a.removed)
        .collect();
    let a = all.iter().max_by_key(|a| a.version);
    Ok(DeviceInfo {
        assignments: all
            .iter()
            .map(|a| format!("{}@{}", a.app, a.release_version))
            .collect(),
        labels: json_col(&d.labels)?,
        enrolled: d.enrolled as u64,
        last_seen: d.last_seen.map(|t| t as u64),
        revoked: d.revoked,
        inventory: d.inventory.as_deref().map(json_col).transpose()?,
        status: d.status.as_deref().map(json_col).transpose()?,
        assigned: a.map(|a| format!("{}@{}", a.app, a.release_version)),
        assignment_version: a.map(|a| a.version as u64),
        id: d.id,
    })
}

/// The device `id`, or 404.
pub async fn device_or_404(st: &AppState, id: &str) -> Result<DeviceRow, ApiError> {
    st.store
        .device(id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no device {id}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use edgecd_api::protocol::DeviceStatus;

    fn dev(labels: &[(&str, &str)], last_seen: Option<u64>, phase: Phase) -> DeviceInfo {
        DeviceInfo {
            id: "dev-1".into(),
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            enrolled: 100,
            last_seen,
            revoked: false,
            inventory: None,
            status: Some(DeviceStatus {
                apps: Default::default(),
                phase,
                running: None,
                assignment_version: 0,
                last_outcome: None,
                download: None,
                stale_since: None,
                assignment_proof: None,
            }),
            assigned: None,
            assignments: Vec::new(),
            assignment_version: None,
        }
    }

    fn filter(selector: Option<&str>, state: Option<&str>) -> Result<DeviceFilter, ApiError> {
        DeviceFilter::parse(&DeviceQuery {
            selector: selector.map(str::to_string),
            state: state.map(str::to_string),
        })
    }

    #[test]
    fn states_parse_loosely_and_refuse_unknown_names() {
        assert_eq!(
            StateFilter::parse("rolling-back"),
            Ok(StateFilter::Phase(Phase::RollingBack))
        );
        assert_eq!(
            StateFilter::parse("Committed"),
            Ok(StateFilter::Phase(Phase::Committed))
        );
        assert_eq!(StateFilter::parse("OFFLINE"), Ok(StateFilter::Offline));
        let e = StateFilter::parse("asleep").unwrap_err();
        assert!(e.contains("offline") && e.contains("rollingBack"), "{e}");
        assert!(filter(Some("site"), None).is_err());
        assert!(filter(Some("site=a b"), None).is_err());
    }

    #[test]
    fn selector_and_state_both_apply() {
        let d = dev(
            &[("site", "a"), ("fleet", "x")],
            Some(1000),
            Phase::Committed,
        );
        let keeps = |sel, state| filter(sel, state).unwrap().keeps(&d, 500);
        assert!(keeps(None, None));
        assert!(keeps(Some("site=a,fleet=x"), Some("committed")));
        assert!(!keeps(Some("site=a,fleet=y"), None));
        assert!(!keeps(Some("site=a"), Some("idle")));
        assert!(keeps(None, Some("online")));
        assert!(!keeps(None, Some("offline")));
        // Silent since before the threshold, or never seen since an old enrollment: offline.
        assert!(filter(None, Some("offline")).unwrap().keeps(&d, 2000));
        let never = dev(&[], None, Phase::Idle);
        assert!(filter(None, Some("offline")).unwrap().keeps(&never, 101));
        assert!(!filter(None, Some("revoked")).unwrap().keeps(&never, 101));
    }
}

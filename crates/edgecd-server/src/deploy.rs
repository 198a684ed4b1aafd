//! `deploy`: assigns a release to the devices a label selector matches that can run it (the
//! rollout engine's compatibility check), through the one assign path; incompatible devices
//! are listed with the reason. A dry run computes the same answer without assigning.
//! A deployment also writes desired state (`fleets::record_deploy`: the `deploy:` fleet), so
//! devices that enroll or match later get the release too.

use crate::AppState;
use crate::error::ApiError;
use crate::util::json_col;
use crate::validate::check_labels;
use edgecd_api::protocol::{
    DeployRequest, DeployResponse, DeployedDevice, ReleaseInfo, SkippedDevice,
};
use edgecd_rollout::cohort::Requirements;

/// Which devices a deployment considers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Every device the selector matches.
    Selector,
    /// Only devices of the app (assigned it, or reporting it running): what `edgecd
    /// rollback` asks for.
    App,
}

impl Scope {
    /// Parses `selector` or `app` (none: `selector`).
    pub fn parse(s: Option<&str>) -> Result<Self, ApiError> {
        match s {
            None | Some("selector") => Ok(Scope::Selector),
            Some("app") => Ok(Scope::App),
            Some(other) => Err(ApiError::bad_request(format!(
                "unknown deployment scope {other:?}: use selector or app"
            ))),
        }
    }
}

/// Deploys `req`; 404 for an unknown release, 422 (saying why) when no device would get it.
pub async fn deploy(
    st: &AppState,
    req: &DeployRequest,
    scope: Scope,
    dry_run: bool,
) -> Result<DeployResponse, ApiError> {
    check_labels(&req.selector)?;
    let name = format!("{}@{}", req.app, req.version);
    let row = st.store.release(&req.app, &req.version).await?;
    let info: ReleaseInfo =
        json_col(&row.ok_or_else(|| ApiError::not_found(format!("no release {name}")))?)?;
    let requirements = Requirements {
        hardware: info.release.hardware.clone(),
        runtime: info.release.runtime.clone(),
    };
    // The desired state is written under the same lock: no reconcile pass runs in between.
    let _fleets = crate::fleets::lock(st).await?;
    crate::gitops::refuse_change_over(st, &req.app, &req.selector).await?;
    let (mut assigned, mut skipped, mut matched) = (Vec::new(), Vec::new(), 0usize);
    for d in crate::rollouts::fleet(st, &req.app).await? {
        if !req.selector.iter().all(|(k, v)| d.labels.get(k) == Some(v)) {
            continue;
        }
        if scope == Scope::App && !of_app(st, &d, &req.app).await? {
            continue;
        }
        matched += 1;
        let refused = match requirements.check(&d) {
            Err(reason) => Some(reason),
            Ok(()) => crate::placement::refusal(st, &d.id, &info.release).await?,
        };
        if let Some(reason) = refused {
            skipped.push(SkippedDevice {
                device_id: d.id,
                reason,
            });
            continue;
        }
        let assignment_version = if dry_run {
            st.store.next_assignment_version(&d.id).await?
        } else {
            crate::assign::assign(st, &d.id, &info.release, crate::assign::Why::Deploy)
                .await?
                .map_or(0, |a| a.version as u64)
        };
        assigned.push(DeployedDevice {
            device_id: d.id,
            assignment_version,
        });
    }
    if assigned.is_empty() {
        return Err(nobody(req, scope, matched, skipped, &name));
    }
    if !dry_run {
        let ids: Vec<String> = assigned.iter().map(|a| a.device_id.clone()).collect();
        let only_app = scope == Scope::App;
        crate::fleets::record_deploy(st, &req.app, &req.version, &req.selector, only_app, &ids)
            .await?;
    }
    tracing::info!(app = %req.app, version = %req.version, devices = assigned.len(), skipped = skipped.len(), dry_run, "deployed");
    Ok(DeployResponse {
        assigned,
        skipped,
        dry_run,
    })
}

/// Whether device `d` is one of `app`'s: assigned it, or reporting it running.
async fn of_app(
    st: &AppState,
    d: &edgecd_rollout::cohort::Device,
    app: &str,
) -> Result<bool, ApiError> {
    let current = st
        .store
        .app_assignment(&d.id, app)
        .await?
        .filter(|a| !a.removed);
    let prefix = format!("{app}@");
    Ok(current.is_some() || d.running.as_deref().is_some_and(|r| r.starts_with(&prefix)))
}

/// The 422 of a deployment no device would get, saying why.
fn nobody(
    req: &DeployRequest,
    scope: Scope,
    matched: usize,
    skipped: Vec<SkippedDevice>,
    name: &str,
) -> ApiError {
    let devices = match scope {
        Scope::App => format!("devices of {}", req.app),
        Scope::Selector => "devices".to_string(),
    };
    let bad: Vec<(String, String)> = skipped
        .into_iter()
        .map(|s| (s.device_id, s.reason))
        .collect();
    ApiError::unprocessable(crate::rollouts::no_device_reason(
        &devices,
        &req.selector,
        matched,
        &bad,
        name,
    ))
}

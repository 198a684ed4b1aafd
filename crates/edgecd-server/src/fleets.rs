//! Fleets: desired state the controller reconciles. A fleet names a label selector and, per
//! app, the release its devices should run (`apps.APP.release`), optionally with the rollout
//! policy that carries a new release there (`apps.APP.rollout`: a rollout spec without
//! `release` and `selector`, which the fleet supplies). `edgecd deploy` writes a fleet too
//! (origin `deploy`, named `deploy:APP[:SELECTOR]`), so a device that enrolls later also
//! gets the release. Fleets from a GitOps repo have origin `gitops` ([`crate::gitops`]).
//!
//! **Sans-IO core.** [`FleetSpec::validate`], [`plan`] (who owns each device, what it should
//! run, what to assign, converged/converging/blocked with why) and [`preview`] are pure;
//! [`reconcile`] (one controller pass, leader only) and the API functions around them read
//! the store and assign through [`crate::assign`]. A pass reads every device; the controller
//! spaces passes so that they take at most a tenth of its time.
//!
//! **Rules.**
//! - Several apps per device: fleets may place different apps on one device, within what
//!   the device can hold (`placement`: its agent's app limit, RAM, storage); an app that
//!   does not fit is *blocked* with the reason, and two applied fleets placing the same app
//!   on one device leave that app *blocked* (nothing is guessed). Fleets written by
//!   `deploy` give way to applied fleets, and among themselves the newest wins (what
//!   imperative deploys did).
//! - Like Argo CD's auto-sync without self-heal, a fleet assigns a device when the device
//!   joins it or the fleet's release changes; a device changed afterwards by another path (a
//!   rollout with a bare selector, a rollback) is reported *drifted*, not forced back.
//!   `fleet apply` syncs again: every device is brought to the fleet's release.
//! - Devices in an active rollout's cohort belong to the rollout. While a fleet's rollout
//!   runs, the fleet holds its other devices (and devices that join) at the baseline; once it
//!   completes, the fleet's release moves to the rolled-out one.
//!   A fleet whose release changes while its own rollout runs (a `git revert`, a newer
//!   release) aborts that rollout — its cohort goes back to the baseline — and moves on from
//!   its current release.
//! - `on_unmatch`: a device that stops matching is listed as `left`. `keep` leaves it the
//!   fleet's release; `remove` sends a signed removal of each of the fleet's apps no other
//!   fleet now places (`assign::remove`: the agent stops the app's runtime and deletes its
//!   slots). An agent of protocol 1.1 cannot remove an app: it keeps what it runs, and the
//!   entry says so.

use crate::controller::Fence;
use crate::placement::{Budget, fits};
use crate::rollouts::StartRollout;
use crate::store::FleetRow;
use crate::util::json_col;
use crate::{ApiError, AppState, assign};
use edgecd_api::protocol::{ReleaseInfo, ReleaseRef};
use edgecd_rollout::RolloutSpec;
use edgecd_rollout::cohort::{Device, Requirements};
use edgecd_rollout::engine::Phase;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// Prefix of the fleets `edgecd deploy` writes (applied fleets' names cannot contain `:`).
pub const DEPLOY_PREFIX: &str = "deploy:";

/// A fleet as people write it (`fleet.yaml`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FleetSpec {
    pub name: String,
    /// Devices whose labels have all of these (the selector `deploy` and rollouts use).
    #[serde(default)]
    pub selector: BTreeMap<String, String>,
    /// What the fleet's devices run, per app.
    pub apps: BTreeMap<String, Placement>,
    #[serde(default)]
    pub on_unmatch: OnUnmatch,
}

/// Where an app's devices should be.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Placement {
    /// The version devices should run (`APP@VERSION` is accepted too).
    pub release: String,
    /// How a new release reaches the fleet: a rollout spec without `release` and
    /// `selector`. Absent: every device is assigned the release directly.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout: Option<serde_json::Map<String, serde_json::Value>>,
}

/// What happens to a device that stops matching the fleet's selector.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnUnmatch {
    /// The device keeps the fleet's release (its assignment stays).
    #[default]
    Keep,
    /// The fleet stops managing the device (which keeps its installed release: agents cannot
    /// uninstall yet).
    Remove,
}

/// Who wrote a fleet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Origin {
    /// `edgecd fleet apply`.
    Apply,
    /// `edgecd deploy`.
    Deploy,
    /// A fleet file in the GitOps repo (see [`crate::gitops`]): CLI changes are refused.
    Gitops,
}

impl Origin {
    pub fn as_str(self) -> &'static str {
        match self {
            Origin::Apply => "apply",
            Origin::Deploy => "deploy",
            Origin::Gitops => "gitops",
        }
    }
}

/// What the reconciler keeps between passes.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FleetState {
    #[serde(default)]
    pub apps: BTreeMap<String, AppProgress>,
    /// Devices the fleet owns (matched, not given to another fleet).
    #[serde(default)]
    pub members: BTreeSet<String>,
    /// The release (`app@version`) the fleet put on (or found on) each member's app, keyed
    /// by [`dev_app`] (`DEVICE/APP`; older states keyed by the device alone are read as
    /// such).
    #[serde(default)]
    pub placed: BTreeMap<String, String>,
    /// Devices that stopped matching.
    #[serde(default)]
    pub left: BTreeMap<String, Left>,
}

/// Where one app of a fleet is.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AppProgress {
    /// The version the fleet holds its devices at now (moves to the placement's release at
    /// once, or when the fleet's rollout completes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout: Option<RolloutLink>,
    /// A rollout of this version aborted: the fleet stays at `current` until another release
    /// is placed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed: Option<Failed>,
    /// Why the fleet's rollout could not start (retried every pass).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RolloutLink {
    pub id: String,
    pub version: String,
    /// Started with `rollout start --fleet` while the fleet placed this version: on
    /// completion the rollout's release becomes the fleet's placement (unless the placement
    /// changed meanwhile).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manual_over: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Failed {
    pub version: String,
    pub reason: String,
}

/// A device that stopped matching a fleet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Left {
    /// What it was assigned when it left (`app@version`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub release: Option<String>,
    pub on_unmatch: OnUnmatch,
    pub since: i64,
}

/// A device's standing in a fleet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Standing {
    /// Runs the fleet's release.
    Converged,
    /// On its way (being assigned, installing, in a rollout).
    Converging,
    /// Will not get there without a change (conflict, incompatible, failed, drifted).
    Blocked,
    /// Stopped matching the fleet.
    Left,
}

impl Standing {
    /// The name used in the API and in metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Standing::Converged => "converged",
            Standing::Converging => "converging",
            Standing::Blocked => "blocked",
            Standing::Left => "left",
        }
    }
}

/// One device of a fleet's status (or diff).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeviceEntry {
    pub device: String,
    /// The app the entry is about (a device may hold several).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app: Option<String>,
    pub state: Standing,
    pub why: String,
    /// What the fleet wants it to run (`app@version`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub desired: Option<String>,
    /// What the server assigned it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub assigned: Option<String>,
    /// What the device reports it runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub running: Option<String>,
    /// The assignment the reconciler makes (or, in a diff, would make): `from → to`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub change: Option<String>,
}

/// Per app of a fleet's status.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AppStatus {
    pub app: String,
    /// The release the fleet file places.
    pub placed: String,
    /// The release devices are held at now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// `GET /api/v1/admin/fleets/{name}`, and the answer of an apply or a diff.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FleetStatus {
    pub name: String,
    pub origin: Origin,
    pub spec: FleetSpec,
    pub apps: Vec<AppStatus>,
    pub devices: Vec<DeviceEntry>,
    /// Devices per standing.
    pub counts: BTreeMap<Standing, usize>,
    /// A diff: what changes that is not per device (a new fleet, a rollout that would start).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
    #[serde(default)]
    pub dry_run: bool,
}

fn split_release(s: &str) -> Option<(&str, &str)> {
    s.split_once('@')
        .filter(|(a, v)| !a.is_empty() && !v.is_empty())
}

impl Placement {
    /// The version placed for `app` (`release` may be `VERSION` or `APP@VERSION`).
    pub fn version<'a>(&'a self, app: &str) -> Result<&'a str, String> {
        match split_release(&self.release) {
            Some((a, v)) if a == app => Ok(v),
            Some((a, _)) => Err(format!(
                "apps.{app}.release {:?} names app {a:?}: write the version only (or {app}@VERSION)",
                self.release
            )),
            None if self.release.contains('@') => Err(format!(
                "apps.{app}.release {:?} must be VERSION or {app}@VERSION",
                self.release
            )),
            None => Ok(&self.release),
        }
    }
}

impl FleetSpec {
    /// Checks everything a fleet file can get wrong, saying how to fix it. Needs no server.
    pub fn validate(&self) -> Result<(), String> {
        let n = &self.name;
        let name_ok = !n.is_empty()
            && n.len() <= 63
            && n.chars().all(|c| {
                c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '_' | '.')
            })
            && n.chars().next().is_some_and(|c| c.is_ascii_alphanumeric());
        if !name_ok {
            return Err(format!(
                "fleet name {n:?}: use 1-63 characters of [a-z0-9._-], starting with a letter or digit"
            ));
        }
        if self.selector.len() > 64 {
            return Err("selector: too many labels (max 64)".into());
        }
        for (k, v) in &self.selector {
            if v.is_empty() || !edgecd_api::protocol::valid_label(k, v) {
                return Err(format!(
                    "selector {k}={v:?}: use 1-63 characters of [A-Za-z0-9._-] (keys may contain /)"
                ));
            }
        }
        if self.apps.is_empty() {
            return Err(
                "apps is empty: place at least one app, e.g. apps: {detector: {release: 1.0.0}}"
                    .into(),
            );
        }
        for (app, p) in &self.apps {
            if !edgecd_api::protocol::valid_label(app, "") {
                return Err(format!(
                    "app name {app:?}: use 1-63 characters of [A-Za-z0-9._-]"
                ));
            }
            let v = p.version(app)?;
            if v.is_empty()
                || v.len() > 128
                || v.chars().any(|c| c.is_whitespace() || c.is_control())
            {
                return Err(format!("apps.{app}.release {v:?} is not a version"));
            }
            if p.rollout.is_some() {
                self.rollout_spec(app)?
                    .validate()
                    .map_err(|e| format!("apps.{app}.rollout: {e}"))?;
            }
        }
        Ok(())
    }

    /// The rollout spec that carries `app`'s placed release to the fleet (its policy with the
    /// fleet's release and selector).
    pub fn rollout_spec(&self, app: &str) -> Result<RolloutSpec, String> {
        let p = self
            .apps
            .get(app)
            .ok_or_else(|| format!("fleet {} places no app {app}", self.name))?;
        let mut m = p.rollout.clone().unwrap_or_default();
        for k in ["release", "selector"] {
            if m.contains_key(k) {
                return Err(format!(
                    "apps.{app}.rollout.{k}: the fleet sets it (remove it from the rollout policy)"
                ));
            }
        }
        m.insert(
            "release".into(),
            format!("{app}@{}", p.version(app)?).into(),
        );
        m.insert(
            "selector".into(),
            serde_json::to_value(&self.selector).map_err(|e| e.to_string())?,
        );
        serde_json::from_value(serde_json::Value::Object(m))
            .map_err(|e| format!("apps.{app}.rollout: {e}"))
    }
}

/// `true` when `labels` has every label of `selector`.
pub fn matches(selector: &BTreeMap<String, String>, labels: &BTreeMap<String, String>) -> bool {
    selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

/// A fleet as the planner sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct Fleet {
    pub spec: FleetSpec,
    pub origin: Origin,
    pub updated_ms: i64,
    pub state: FleetState,
}

impl Fleet {
    fn from_row(r: &FleetRow) -> Result<Self, ApiError> {
        let mut state: FleetState = json_col(&r.state)?;
        // States written before several apps per device keyed `placed` by the device.
        state.placed = std::mem::take(&mut state.placed)
            .into_iter()
            .map(|(k, rel)| match (k.contains('/'), rel.split_once('@')) {
                (false, Some((app, _))) => (dev_app(&k, app), rel),
                _ => (k, rel),
            })
            .collect();
        Ok(Fleet {
            spec: json_col(&r.spec)?,
            origin: match r.origin.as_str() {
                "deploy" => Origin::Deploy,
                "gitops" => Origin::Gitops,
                _ => Origin::Apply,
            },
            updated_ms: r.updated_ms,
            state,
        })
    }

    fn to_row(&self) -> Result<FleetRow, ApiError> {
        Ok(FleetRow {
            name: self.spec.name.clone(),
            spec: serde_json::to_string(&self.spec).map_err(ApiError::internal)?,
            origin: self.origin.as_str().into(),
            updated_ms: self.updated_ms,
            state: serde_json::to_string(&self.state).map_err(ApiError::internal)?,
        })
    }
}

/// What the planner knows about the world.
#[derive(Debug, Default)]
pub struct World {
    /// Non-revoked devices.
    pub devices: Vec<Device>,
    /// Each device's assignment per app: `(device, app)` → `app@version`.
    pub assigned: BTreeMap<(String, String), String>,
    /// What each device reports it runs, per app: `(device, app)` → `app@version`.
    pub running: BTreeMap<(String, String), String>,
    /// The release whose install last failed on the device, per app.
    pub failed: BTreeMap<(String, String), String>,
    /// What each device offers to several apps (from its inventory).
    pub budgets: BTreeMap<String, Budget>,
    /// Each published release's files and needs (`app@version`), for the budget.
    pub refs: BTreeMap<String, ReleaseRef>,
    /// What each published release (`app@version`) needs.
    pub releases: BTreeMap<String, Requirements>,
    /// Per app, its active rollout: id and cohort.
    pub rollouts: BTreeMap<String, (String, BTreeSet<String>)>,
    /// Unix seconds.
    pub now: i64,
}

/// The planner's answer for one fleet.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FleetPlan {
    pub entries: Vec<DeviceEntry>,
    /// Assignments to make: `(device, app)` → `app@version`.
    pub assign: BTreeMap<(String, String), String>,
    /// Apps to remove from devices that left (`on_unmatch: remove`): `(device, app)`.
    pub remove: BTreeSet<(String, String)>,
    /// The fleet's state after them.
    pub state: FleetState,
}

/// Who a matched device belongs to.
enum Claim<'a> {
    Owner,
    /// Given to another fleet.
    Other,
    /// Several applied fleets match it.
    Conflict(Vec<&'a str>),
}

fn claims<'a>(matching: &[&'a Fleet]) -> Vec<Claim<'a>> {
    let applied: Vec<&str> = matching
        .iter()
        .filter(|f| f.origin != Origin::Deploy)
        .map(|f| f.spec.name.as_str())
        .collect();
    if applied.len() > 1 {
        return matching
            .iter()
            .map(|f| match f.origin {
                Origin::Apply | Origin::Gitops => Claim::Conflict(applied.clone()),
                Origin::Deploy => Claim::Other,
            })
            .collect();
    }
    let winner = if applied.len() == 1 {
        applied[0]
    } else {
        matching
            .iter()
            .max_by(|a, b| (a.updated_ms, &a.spec.name).cmp(&(b.updated_ms, &b.spec.name)))
            .map_or("", |f| f.spec.name.as_str())
    };
    matching
        .iter()
        .map(|f| {
            if f.spec.name == winner {
                Claim::Owner
            } else {
                Claim::Other
            }
        })
        .collect()
}

/// The key of a device's app in a fleet's `placed` (and its legacy form, the device id).
pub fn dev_app(device: &str, app: &str) -> String {
    format!("{device}/{app}")
}

/// Decides, for every fleet, each device's standing per app and the assignments to make.
/// Several fleets may place different apps on one device; two applied fleets placing the
/// same app on it conflict (that app is blocked); an app that does not fit next to the
/// device's others (`placement`) is blocked with the reason. Pure.
pub fn plan(fleets: &[Fleet], w: &World) -> Vec<FleetPlan> {
    let mut out: Vec<FleetPlan> = fleets
        .iter()
        .map(|f| FleetPlan {
            entries: vec![],
            assign: BTreeMap::new(),
            remove: BTreeSet::new(),
            state: FleetState {
                apps: f.state.apps.clone(),
                ..Default::default()
            },
        })
        .collect();
    let mut owned_apps: BTreeSet<(&str, &str)> = BTreeSet::new();
    for d in &w.devices {
        let idx: Vec<usize> = (0..fleets.len())
            .filter(|&i| matches(&fleets[i].spec.selector, &d.labels))
            .collect();
        // What the device holds (and will hold) per app, for the budget of a new app.
        let mut holding: BTreeMap<String, String> = w
            .assigned
            .range((d.id.clone(), String::new())..)
            .take_while(|((dev, _), _)| dev == &d.id)
            .map(|((_, app), r)| (app.clone(), r.clone()))
            .collect();
        let apps: BTreeSet<&str> = idx
            .iter()
            .flat_map(|&i| fleets[i].spec.apps.keys().map(String::as_str))
            .collect();
        for app in apps {
            let placing: Vec<usize> = idx
                .iter()
                .copied()
                .filter(|&i| fleets[i].spec.apps.contains_key(app))
                .collect();
            let matching: Vec<&Fleet> = placing.iter().map(|&i| &fleets[i]).collect();
            for (&i, claim) in placing.iter().zip(claims(&matching)) {
                let f = &fleets[i];
                let p = &mut out[i];
                if !matches!(claim, Claim::Other) {
                    owned_apps.insert((&d.id, app));
                }
                match claim {
                    Claim::Other => {}
                    Claim::Conflict(names) => {
                        p.entries.push(entry(
                            d,
                            app,
                            w,
                            Standing::Blocked,
                            format!(
                                "matched by fleets {} that all place {app}: a device holds one assignment per app; make their selectors disjoint",
                                names.join(", ")
                            ),
                            None,
                        ));
                    }
                    Claim::Owner => {
                        p.state.members.insert(d.id.clone());
                        own(f, app, d, w, p, &mut holding);
                    }
                }
            }
        }
    }
    // Devices that stopped matching (or went to another fleet, or are gone).
    let present: BTreeSet<&str> = w.devices.iter().map(|d| d.id.as_str()).collect();
    for (f, p) in fleets.iter().zip(out.iter_mut()) {
        let mut left = f.state.left.clone();
        for m in &f.state.members {
            if !p.state.members.contains(m) {
                let held: Vec<String> = f
                    .spec
                    .apps
                    .keys()
                    .filter_map(|a| w.assigned.get(&(m.clone(), a.clone())).cloned())
                    .collect();
                left.insert(
                    m.clone(),
                    Left {
                        release: (!held.is_empty()).then(|| held.join(", ")),
                        on_unmatch: f.spec.on_unmatch,
                        since: w.now,
                    },
                );
            }
        }
        // Left: still enrolled, not a member, and none of this fleet's apps on it taken
        // over by another fleet (a device other fleets place other apps on has left this
        // one all the same).
        left.retain(|id, _| {
            present.contains(id.as_str())
                && !p.state.members.contains(id)
                && !f
                    .spec
                    .apps
                    .keys()
                    .any(|a| owned_apps.contains(&(id.as_str(), a.as_str())))
        });
        for (id, l) in &left {
            let Some(d) = w.devices.iter().find(|d| &d.id == id) else {
                continue;
            };
            let keeps = l.release.as_deref().unwrap_or("nothing");
            let removes = w.budgets.get(id).is_some_and(|b| b.removes);
            let why = match l.on_unmatch {
                OnUnmatch::Keep => {
                    format!(
                        "left the fleet (labels no longer match); on_unmatch keep: keeps {keeps}"
                    )
                }
                OnUnmatch::Remove if removes => {
                    // The fleet's apps the device still holds and no other fleet now places.
                    for app in f.spec.apps.keys() {
                        let key = (id.clone(), app.clone());
                        if w.assigned.contains_key(&key)
                            && !owned_apps.contains(&(id.as_str(), app.as_str()))
                        {
                            p.remove.insert(key);
                        }
                    }
                    format!(
                        "left the fleet (labels no longer match); on_unmatch remove: {keeps} removed from the device"
                    )
                }
                OnUnmatch::Remove => format!(
                    "left the fleet (labels no longer match); on_unmatch remove: no longer managed, the agent keeps running {keeps} (its agent, of protocol 1.1, cannot remove an app: upgrade it)"
                ),
            };
            let app = f.spec.apps.keys().next().map_or("", String::as_str);
            p.entries.push(entry(d, app, w, Standing::Left, why, None));
        }
        p.state.left = left;
    }
    out
}

fn entry(
    d: &Device,
    app: &str,
    w: &World,
    state: Standing,
    why: String,
    desired: Option<String>,
) -> DeviceEntry {
    let key = (d.id.clone(), app.to_string());
    DeviceEntry {
        device: d.id.clone(),
        app: (!app.is_empty()).then(|| app.to_string()),
        state,
        why,
        desired,
        assigned: w.assigned.get(&key).cloned(),
        running: w.running.get(&key).cloned(),
        change: None,
    }
}

/// App `app` of a device fleet `f` owns: what it should run, and whether to assign it.
/// `holding`: what the device holds per app (grows with each app assigned here).
fn own(
    f: &Fleet,
    app: &str,
    d: &Device,
    w: &World,
    p: &mut FleetPlan,
    holding: &mut BTreeMap<String, String>,
) {
    let key = (d.id.clone(), app.to_string());
    let slot = dev_app(&d.id, app);
    let progress = f.state.apps.get(app).cloned().unwrap_or_default();
    let Some(current) = progress.current.as_deref() else {
        let (state, why) = match (&progress.rollout, &progress.note) {
            (Some(r), _) => (
                Standing::Converging,
                format!(
                    "waits for rollout {} of {app}@{} (no earlier release to hold it at)",
                    r.id, r.version
                ),
            ),
            (None, Some(n)) => (Standing::Blocked, n.clone()),
            (None, None) => (
                Standing::Converging,
                "the controller places the release at its next pass".into(),
            ),
        };
        p.entries.push(entry(d, app, w, state, why, None));
        return;
    };
    let desired = format!("{app}@{current}");
    let mut e = entry(
        d,
        app,
        w,
        Standing::Converging,
        String::new(),
        Some(desired.clone()),
    );
    let assigned = w.assigned.get(&key);
    let running = w.running.get(&key);
    let Some(req) = w.releases.get(&desired) else {
        e.state = Standing::Blocked;
        e.why = format!("{desired} is not published: publish it (edgecd release publish)");
        p.entries.push(e);
        return;
    };
    if let Err(why) = req.check(d) {
        e.state = Standing::Blocked;
        e.why = format!("incompatible with {desired}: {why}");
        p.entries.push(e);
        return;
    }
    if assigned.is_none() && holding.keys().any(|a| a != app) {
        let others: Vec<&ReleaseRef> = holding
            .iter()
            .filter(|(a, _)| a.as_str() != app)
            .filter_map(|(_, r)| w.refs.get(r))
            .collect();
        let budget = w.budgets.get(&d.id).copied().unwrap_or(Budget::of(None));
        if let Some(new) = w.refs.get(&desired)
            && let Err(why) = fits(&d.id, budget, &others, new)
        {
            e.state = Standing::Blocked;
            e.why = format!("does not fit next to the device's other apps: {why}");
            p.entries.push(e);
            return;
        }
    }
    holding.insert(app.to_string(), desired.clone());
    if let Some((id, cohort)) = w.rollouts.get(app)
        && cohort.contains(&d.id)
    {
        if let Some(pl) = f.state.placed.get(&slot) {
            p.state.placed.insert(slot.clone(), pl.clone());
        }
        e.why = format!("in rollout {id}");
        p.entries.push(e);
        return;
    }
    let holding_note = progress
        .rollout
        .as_ref()
        .map(|r| {
            format!(
                " (held at the baseline while rollout {} of {app}@{} runs)",
                r.id, r.version
            )
        })
        .unwrap_or_default();
    if assigned == Some(&desired) {
        p.state.placed.insert(slot.clone(), desired.clone());
        if running == Some(&desired) {
            e.state = Standing::Converged;
            e.why = format!("runs {desired}{holding_note}");
        } else if w.failed.get(&key) == Some(&desired) {
            e.state = Standing::Blocked;
            e.why = format!(
                "the device could not install {desired} (its last outcome; see edgecd device show {})",
                d.id
            );
        } else {
            e.why = format!(
                "assigned {desired}, the device runs {}{holding_note}",
                running.map_or("nothing yet", String::as_str)
            );
        }
    } else if f.state.placed.get(&slot) == Some(&desired) {
        p.state.placed.insert(slot.clone(), desired.clone());
        e.state = Standing::Blocked;
        e.why = format!(
            "drifted: assigned {} by another path (a rollout, rollback or deploy) after the fleet placed {desired}; edgecd fleet apply places it again",
            assigned.map_or("nothing", String::as_str)
        );
    } else {
        p.state.placed.insert(slot.clone(), desired.clone());
        p.assign.insert(key, desired.clone());
        let from = assigned.map_or("nothing", String::as_str);
        e.why = format!("assigning {desired}{holding_note}");
        e.change = Some(format!("{from} → {desired}"));
    }
    p.entries.push(e);
}

/// The state a fleet would move to at once if `spec` were applied (without starting
/// rollouts): a placement without a rollout policy is taken at once; one with a policy
/// starts a rollout (described in the notes). Pure.
pub fn preview(old: Option<&Fleet>, spec: &FleetSpec) -> (FleetState, Vec<String>) {
    let mut state = old.map(|f| f.state.clone()).unwrap_or_default();
    // Applying syncs: every device is brought to the fleet's release again.
    state.placed.clear();
    state.apps.retain(|a, _| spec.apps.contains_key(a));
    let mut notes = vec![];
    for (app, p) in &spec.apps {
        let Ok(v) = p.version(app) else { continue };
        let pr = state.apps.entry(app.clone()).or_default();
        if let Some(r) = pr
            .rollout
            .as_ref()
            .filter(|r| r.manual_over.is_none() && r.version != v)
        {
            notes.push(format!(
                "rollout {} of {app}@{} is aborted (the fleet places {app}@{v} now): its devices go back to {}",
                r.id,
                r.version,
                pr.current.as_deref().map_or("their baseline".to_string(), |c| format!("{app}@{c}"))
            ));
        }
        if pr.current.as_deref() == Some(v) || pr.rollout.as_ref().is_some_and(|r| r.version == v) {
            continue;
        }
        if p.rollout.is_none() {
            pr.current = Some(v.to_string());
            pr.failed = None;
        } else {
            notes.push(format!(
                "a rollout of {app}@{v} starts over the fleet's devices; they stay on {} until it completes",
                pr.current.as_deref().map_or("nothing".to_string(), |c| format!("{app}@{c}"))
            ));
        }
    }
    (state, notes)
}

// ---------------------------------------------------------------------------------------
// I/O: the store, the controller pass, the API.

/// Serializes every change to fleets (and rollouts) across replicas.
pub async fn lock(st: &AppState) -> Result<crate::store::RolloutGuard, ApiError> {
    Ok(st.store.lock_rollouts().await?)
}

pub(crate) async fn load_all(st: &AppState) -> Result<Vec<Fleet>, ApiError> {
    let mut out = vec![];
    for r in st.store.fleets().await? {
        match Fleet::from_row(&r) {
            Ok(f) => out.push(f),
            Err(e) => tracing::warn!(fleet = %r.name, error = ?e, "unreadable fleet row; skipped"),
        }
    }
    Ok(out)
}

async fn world(st: &AppState) -> Result<(World, BTreeMap<String, ReleaseInfo>), ApiError> {
    world_of(st, &st.store.devices().await?).await
}

/// [`world`] from device rows already read (a reconcile pass reads them once).
async fn world_of(
    st: &AppState,
    rows: &[crate::store::DeviceRow],
) -> Result<(World, BTreeMap<String, ReleaseInfo>), ApiError> {
    let devices = crate::rollouts::fleet_of(rows, "", &BTreeMap::new())?;
    let assigned: BTreeMap<(String, String), String> = st
        .store
        .assigned_releases()
        .await?
        .into_iter()
        .map(|(d, app, v)| {
            let name = format!("{app}@{v}");
            ((d, app), name)
        })
        .collect();
    let (mut running, mut failed, mut budgets) =
        (BTreeMap::new(), BTreeMap::new(), BTreeMap::new());
    for d in rows.iter().filter(|d| !d.revoked) {
        let inv: Option<edgecd_api::protocol::Inventory> = d
            .inventory
            .as_deref()
            .and_then(|s| serde_json::from_str(s).ok());
        budgets.insert(d.id.clone(), Budget::of(inv.as_ref()));
        let status: Option<edgecd_api::protocol::DeviceStatus> = d
            .status
            .as_deref()
            .and_then(|s| serde_json::from_str(s).ok());
        for a in status.map(|s| s.app_states()).unwrap_or_default() {
            if let Some(r) = &a.running {
                running.insert(
                    (d.id.clone(), a.app.clone()),
                    format!("{}@{}", r.app, r.version),
                );
            }
            if let Some(r) = crate::rollouts::failed_release(&a) {
                failed.insert((d.id.clone(), a.app.clone()), r);
            }
        }
    }
    let mut infos = BTreeMap::new();
    let mut releases = BTreeMap::new();
    let mut refs = BTreeMap::new();
    for s in st.store.release_infos().await? {
        let info: ReleaseInfo = json_col(&s)?;
        let name = format!("{}@{}", info.release.app, info.release.version);
        releases.insert(
            name.clone(),
            Requirements {
                hardware: info.release.hardware.clone(),
                runtime: info.release.runtime.clone(),
            },
        );
        refs.insert(name.clone(), info.release.clone());
        infos.insert(name, info);
    }
    let mut rollouts = BTreeMap::new();
    for r in crate::rollouts::active(st).await? {
        if let Ok((app, _)) = r.spec.app_and_version() {
            rollouts.insert(app.to_string(), (r.id.clone(), r.state.cohort.clone()));
        }
    }
    Ok((
        World {
            devices,
            assigned,
            running,
            failed,
            budgets,
            refs,
            releases,
            rollouts,
            now: st.now() as i64,
        },
        infos,
    ))
}

/// Moves a fleet's apps along: takes a placement without a rollout policy at once, starts
/// the fleet's rollout for one with a policy, and follows that rollout to its end. `true`
/// when the fleet changed. Called with the lock held.
async fn progress(st: &AppState, f: &mut Fleet, devices: &[Device]) -> Result<bool, ApiError> {
    let before = f.clone();
    let apps: Vec<(String, Placement)> = f.spec.apps.clone().into_iter().collect();
    let single = apps.len() == 1;
    f.state.apps.retain(|a, _| f.spec.apps.contains_key(a));
    for (app, p) in apps {
        let Ok(version) = p.version(&app).map(str::to_string) else {
            continue;
        };
        let mut pr = f.state.apps.get(&app).cloned().unwrap_or_default();
        if let Some(link) = pr.rollout.clone() {
            let r: Option<edgecd_rollout::engine::Rollout> =
                match st.store.rollout_state(&link.id).await? {
                    Some(s) => Some(json_col(&s)?),
                    None => None,
                };
            match r {
                Some(r) if r.state.phase == Phase::Completed => {
                    pr.current = Some(link.version.clone());
                    pr.rollout = None;
                    pr.note = None;
                    // A rollout started with --fleet makes its release the fleet's, unless
                    // the fleet was given another release meanwhile.
                    if link.manual_over.as_deref() == Some(version.as_str())
                        && let Some(pl) = f.spec.apps.get_mut(&app)
                    {
                        pl.release = link.version.clone();
                    }
                }
                Some(r) if r.state.phase == Phase::Aborted => {
                    pr.failed = Some(Failed {
                        version: link.version.clone(),
                        reason: r.state.reason.clone().unwrap_or_else(|| "aborted".into()),
                    });
                    pr.rollout = None;
                }
                // The fleet's release changed while its own rollout ran (a `git revert`, or a
                // newer release): the rollout no longer carries the fleet where it should go.
                // It is aborted (its cohort goes back to the baseline, as `rollout abort`),
                // and the fleet moves on from its current release below.
                Some(_) if link.manual_over.is_none() && link.version != version => {
                    crate::rollouts::abort_locked(st, &link.id).await?;
                    tracing::info!(fleet = %f.spec.name, rollout = %link.id, placed = %version, "the fleet's release changed under its rollout: rollout aborted");
                    pr.rollout = None;
                    pr.note = None;
                }
                Some(_) => {
                    f.state.apps.insert(app, pr);
                    continue;
                }
                None => pr.rollout = None,
            }
        }
        let version = f.spec.apps.get(&app).map_or(version.clone(), |pl| {
            pl.version(&app).map_or(version.clone(), str::to_string)
        });
        if pr.current.as_deref() != Some(version.as_str()) && single {
            if p.rollout.is_none() {
                pr.current = Some(version);
                pr.failed = None;
                pr.note = None;
            } else if pr.failed.as_ref().is_none_or(|x| x.version != version) {
                start_fleet_rollout(st, &f.spec, &app, &version, &mut pr, devices).await?;
            }
        }
        f.state.apps.insert(app, pr);
    }
    Ok(*f != before)
}

async fn start_fleet_rollout(
    st: &AppState,
    spec: &FleetSpec,
    app: &str,
    version: &str,
    pr: &mut AppProgress,
    devices: &[Device],
) -> Result<(), ApiError> {
    let release = format!("{app}@{version}");
    let Some(info) = st.store.release(app, version).await? else {
        pr.note = Some(format!(
            "{release} is not published: publish it (edgecd release publish)"
        ));
        return Ok(());
    };
    let info: ReleaseInfo = json_col(&info)?;
    let req = Requirements {
        hardware: info.release.hardware.clone(),
        runtime: info.release.runtime.clone(),
    };
    let any = devices
        .iter()
        .any(|d| matches(&spec.selector, &d.labels) && req.check(d).is_ok());
    if !any {
        // Nothing to roll out to: devices that join get the release directly.
        pr.current = Some(version.to_string());
        pr.note = None;
        return Ok(());
    }
    let rspec = spec.rollout_spec(app).map_err(ApiError::unprocessable)?;
    let req = StartRollout {
        spec: rspec,
        baseline: pr.current.as_ref().map(|c| format!("{app}@{c}")),
        fleet: None,
    };
    match crate::rollouts::start_locked(st, req).await {
        Ok(r) => {
            tracing::info!(fleet = %spec.name, rollout = %r.id, release = %release, "fleet started a rollout");
            pr.rollout = Some(RolloutLink {
                id: r.id,
                version: version.to_string(),
                manual_over: None,
            });
            pr.note = None;
        }
        Err(e) => {
            let note = format!("rollout of {release} not started: {}", e.message);
            if pr.note.as_ref() != Some(&note) {
                tracing::warn!(fleet = %spec.name, reason = %note, "fleet rollout not started; retrying every pass");
            }
            pr.note = Some(note);
        }
    }
    Ok(())
}

/// One controller pass over every fleet (leader only; `fence`: its lease, checked before
/// anything changes): moves fleets' rollouts along, assigns devices that joined or whose
/// fleet's release changed, and records who left.
pub async fn reconcile(st: &AppState, fence: Option<&Fence>) -> Result<(), ApiError> {
    let _serialized = lock(st).await?;
    let mut fleets = load_all(st).await?;
    if fleets.is_empty() {
        return Ok(());
    }
    if let Some(f) = fence {
        let held = st.store.lease(crate::controller::LEASE).await?;
        if held.as_ref().map(|(h, e, _)| (h, *e)) != Some((&f.holder, f.epoch)) {
            return Err(ApiError::new(
                axum::http::StatusCode::CONFLICT,
                "the controller lease moved on: fleets not reconciled by this replica",
            ));
        }
    }
    // Every device is read once per pass: for the fleets' rollouts and for the plan.
    let rows = st.store.devices().await?;
    let devices = crate::rollouts::fleet_of(&rows, "", &BTreeMap::new())?;
    let mut changed = vec![false; fleets.len()];
    for (f, c) in fleets.iter_mut().zip(changed.iter_mut()) {
        *c = progress(st, f, &devices).await?;
    }
    let (w, infos) = world_of(st, &rows).await?;
    let plans = plan(&fleets, &w);
    for ((f, p), c) in fleets.iter_mut().zip(plans).zip(changed) {
        for ((device, _), release) in &p.assign {
            let Some(info) = infos.get(release) else {
                continue;
            };
            // One device that cannot take it (say its inventory changed since the plan)
            // never stops the pass for the others.
            if let Err(e) =
                assign::assign(st, device, &info.release, assign::Why::Fleet(&f.spec.name)).await
            {
                tracing::warn!(fleet = %f.spec.name, device = %device, release = %release, error = %e.message, "fleet could not assign");
                continue;
            }
            tracing::info!(fleet = %f.spec.name, device = %device, release = %release, "fleet assigned");
        }
        for (device, app) in &p.remove {
            match assign::remove(st, device, app, assign::Why::Fleet(&f.spec.name)).await {
                Ok(Some(_)) => {
                    tracing::info!(fleet = %f.spec.name, device = %device, %app, "fleet removed an app from a device that left it")
                }
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(fleet = %f.spec.name, device = %device, %app, error = %e.message, "fleet could not remove the app")
                }
            }
        }
        for (id, l) in &p.state.left {
            if !f.state.left.contains_key(id) {
                let detail = format!(
                    "left fleet {} (on_unmatch: {}), keeps {}",
                    f.spec.name,
                    serde_json::to_value(l.on_unmatch)
                        .ok()
                        .and_then(|v| v.as_str().map(str::to_string))
                        .unwrap_or_default(),
                    l.release.as_deref().unwrap_or("nothing")
                );
                st.store
                    .event(Some(id), w.now, "fleet-left", &detail)
                    .await?;
            }
        }
        if c || p.state != f.state {
            f.state = p.state;
            st.store.put_fleet(&f.to_row()?).await?;
        }
    }
    Ok(())
}

fn status_of(f: &Fleet, p: FleetPlan, notes: Vec<String>, dry_run: bool) -> FleetStatus {
    let mut counts = BTreeMap::new();
    for e in &p.entries {
        *counts.entry(e.state).or_default() += 1;
    }
    let mut devices = p.entries;
    devices.sort_by(|a, b| a.device.cmp(&b.device));
    FleetStatus {
        name: f.spec.name.clone(),
        origin: f.origin,
        apps: f
            .spec
            .apps
            .iter()
            .map(|(app, pl)| {
                let pr = f.state.apps.get(app);
                AppStatus {
                    app: app.clone(),
                    placed: format!("{app}@{}", pl.version(app).unwrap_or(&pl.release)),
                    current: pr.and_then(|x| x.current.as_ref()).map(|c| format!("{app}@{c}")),
                    rollout: pr.and_then(|x| x.rollout.as_ref()).map(|r| r.id.clone()),
                    note: pr.and_then(|x| {
                        x.note.clone().or_else(|| {
                            x.failed.as_ref().map(|fl| {
                                format!(
                                    "rollout of {app}@{} aborted ({}): the fleet stays on its release; place another one to try again",
                                    fl.version, fl.reason
                                )
                            })
                        })
                    }),
                }
            })
            .collect(),
        spec: f.spec.clone(),
        devices,
        counts,
        notes,
        dry_run,
    }
}

/// A fleet's status: per device converged / converging / blocked / left, with why.
pub async fn status(st: &AppState, name: &str) -> Result<FleetStatus, ApiError> {
    let fleets = load_all(st).await?;
    let i = fleets
        .iter()
        .position(|f| f.spec.name == name)
        .ok_or_else(|| not_found(name))?;
    let (w, _) = world(st).await?;
    let mut plans = plan(&fleets, &w);
    Ok(status_of(&fleets[i], plans.swap_remove(i), vec![], false))
}

fn not_found(name: &str) -> ApiError {
    ApiError::not_found(format!("no fleet {name} (edgecd fleet list shows them)"))
}

/// Every fleet's status.
pub async fn list(st: &AppState) -> Result<Vec<FleetStatus>, ApiError> {
    let fleets = load_all(st).await?;
    let (w, _) = world(st).await?;
    let plans = plan(&fleets, &w);
    Ok(fleets
        .iter()
        .zip(plans)
        .map(|(f, p)| status_of(f, p, vec![], false))
        .collect())
}

/// Checks what only the server knows: the releases are published, the rollout policies'
/// Prometheus gates and notification channels exist here.
pub(crate) async fn check_on_server(st: &AppState, spec: &FleetSpec) -> Result<(), ApiError> {
    spec.validate().map_err(ApiError::unprocessable)?;
    for (app, p) in &spec.apps {
        let v = p.version(app).map_err(ApiError::unprocessable)?;
        if st.store.release(app, v).await?.is_none() {
            return Err(ApiError::unprocessable(format!(
                "apps.{app}: {app}@{v} is not published: publish it first (edgecd release publish)"
            )));
        }
        if p.rollout.is_some() {
            let r = spec.rollout_spec(app).map_err(ApiError::unprocessable)?;
            if st.prometheus.is_none()
                && let Some(g) = r
                    .gates
                    .iter()
                    .find(|g| g.provider == edgecd_rollout::spec::Provider::Prometheus)
            {
                return Err(ApiError::unprocessable(format!(
                    "apps.{app}.rollout: gate {} queries Prometheus, but this server has none: start it with --prometheus-url",
                    g.label()
                )));
            }
            st.notifier
                .check_channels(&r.notify)
                .map_err(|e| ApiError::unprocessable(format!("apps.{app}.rollout: {e}")))?;
        }
    }
    Ok(())
}

/// `fleet apply` (`dry_run`: `fleet diff`): validates `spec` — nothing changes unless it is
/// valid — then stores it (replacing a fleet of that name) and answers what the fleet's
/// devices will do; a dry run answers the same without storing anything.
pub async fn apply(st: &AppState, spec: FleetSpec, dry_run: bool) -> Result<FleetStatus, ApiError> {
    if !dry_run {
        crate::gitops::refuse_cli_change(st, &spec.name).await?;
    }
    check_on_server(st, &spec).await?;
    let _serialized = lock(st).await?;
    let mut fleets = load_all(st).await?;
    let old = fleets.iter().position(|f| f.spec.name == spec.name);
    let (state, mut notes) = preview(old.map(|i| &fleets[i]), &spec);
    let f = Fleet {
        spec,
        origin: Origin::Apply,
        updated_ms: st.clock.now_ms(),
        state,
    };
    let i = match old {
        Some(i) => {
            fleets[i] = f.clone();
            i
        }
        None => {
            notes.insert(0, format!("creates fleet {}", f.spec.name));
            fleets.push(f.clone());
            fleets.len() - 1
        }
    };
    let (w, _) = world(st).await?;
    let mut plans = plan(&fleets, &w);
    let p = plans.swap_remove(i);
    if !dry_run {
        st.store.put_fleet(&f.to_row()?).await?;
        tracing::info!(fleet = %f.spec.name, assign = p.assign.len(), "fleet applied");
    }
    Ok(status_of(&f, p, notes, dry_run))
}

/// `fleet delete`: the desired state goes; devices keep what they were assigned.
pub async fn delete(st: &AppState, name: &str) -> Result<FleetStatus, ApiError> {
    crate::gitops::refuse_cli_change(st, name).await?;
    let status = status(st, name).await?;
    let _serialized = lock(st).await?;
    if !st.store.delete_fleet(name).await? {
        return Err(not_found(name));
    }
    tracing::info!(fleet = %name, "fleet deleted");
    Ok(status)
}

/// GitOps: stores `spec` as a fleet written from the repo (origin `gitops`), as `fleet apply`
/// would, with what the change does (the notes of a diff); `None` (nothing written) when the
/// stored fleet already is exactly that, so applying a commit again changes nothing. Call
/// with [`lock`] held.
pub(crate) async fn put_from_git(
    st: &AppState,
    spec: FleetSpec,
) -> Result<Option<Vec<String>>, ApiError> {
    let old = match st.store.fleet(&spec.name).await? {
        Some(r) => Some(Fleet::from_row(&r)?),
        None => None,
    };
    if let Some(o) = &old
        && o.origin == Origin::Gitops
        && o.spec == spec
    {
        return Ok(None);
    }
    let (state, notes) = preview(old.as_ref(), &spec);
    let f = Fleet {
        spec,
        origin: Origin::Gitops,
        updated_ms: st.clock.now_ms(),
        state,
    };
    st.store.put_fleet(&f.to_row()?).await?;
    tracing::info!(fleet = %f.spec.name, "fleet applied from git");
    Ok(Some(notes))
}

/// The selector a rollout of `release` (`app@version`) started with `--fleet name` uses:
/// the fleet's, when the fleet places that app.
pub(crate) async fn rollout_selector(
    st: &AppState,
    name: &str,
    release: &str,
) -> Result<BTreeMap<String, String>, ApiError> {
    crate::gitops::refuse_cli_change(st, name).await?;
    let row = st.store.fleet(name).await?.ok_or_else(|| not_found(name))?;
    let f = Fleet::from_row(&row)?;
    let app = split_release(release).map_or(release, |(a, _)| a);
    if !f.spec.apps.contains_key(app) {
        let placed: Vec<&str> = f.spec.apps.keys().map(String::as_str).collect();
        return Err(ApiError::unprocessable(format!(
            "fleet {name} places {}, not {app}: roll {app} out to a fleet that places it",
            placed.join(", ")
        )));
    }
    Ok(f.spec.selector)
}

/// Records that rollout `id` of `app@version` carries fleet `name` (started with `--fleet`):
/// the fleet holds its other devices at their release meanwhile and takes the release when
/// it completes. Called with the lock held.
pub(crate) async fn link_rollout(
    st: &AppState,
    name: &str,
    app: &str,
    version: &str,
    id: &str,
) -> Result<(), ApiError> {
    let row = st.store.fleet(name).await?.ok_or_else(|| not_found(name))?;
    let mut f = Fleet::from_row(&row)?;
    let placed = f
        .spec
        .apps
        .get(app)
        .and_then(|p| p.version(app).ok())
        .map(str::to_string);
    let pr = f.state.apps.entry(app.to_string()).or_default();
    pr.rollout = Some(RolloutLink {
        id: id.to_string(),
        version: version.to_string(),
        manual_over: placed,
    });
    pr.note = None;
    st.store
        .put_fleet(&f.to_row()?)
        .await
        .map_err(ApiError::from)
}

/// The name of the fleet `edgecd deploy APP@V --selector S` writes.
pub fn deploy_fleet_name(app: &str, selector: &BTreeMap<String, String>) -> String {
    if selector.is_empty() {
        format!("{DEPLOY_PREFIX}{app}")
    } else {
        let sel: Vec<String> = selector.iter().map(|(k, v)| format!("{k}={v}")).collect();
        format!("{DEPLOY_PREFIX}{app}:{}", sel.join(","))
    }
}

/// What `deploy` writes as desired state, after assigning `assigned` (device ids). A deploy
/// to a selector writes (or replaces) the fleet `deploy:APP[:SELECTOR]`, newest of the
/// deploy fleets; a rollback (`scope=app`) moves every deploy fleet of the app to the
/// version. Call with [`lock`] held (the deploy handler takes it before assigning).
pub async fn record_deploy(
    st: &AppState,
    app: &str,
    version: &str,
    selector: &BTreeMap<String, String>,
    only_app: bool,
    assigned: &[String],
) -> Result<(), ApiError> {
    let release = format!("{app}@{version}");
    let mut touched = vec![];
    if only_app {
        for mut f in load_all(st).await? {
            if f.origin == Origin::Deploy && f.spec.apps.contains_key(app) {
                touched.push({
                    if let Some(p) = f.spec.apps.get_mut(app) {
                        p.release = version.to_string();
                    }
                    f
                });
            }
        }
    } else {
        let name = deploy_fleet_name(app, selector);
        let old = match st.store.fleet(&name).await? {
            Some(r) => Some(Fleet::from_row(&r)?),
            None => None,
        };
        let mut state = old.map(|f| f.state).unwrap_or_default();
        state.apps.retain(|a, _| a == app);
        touched.push(Fleet {
            spec: FleetSpec {
                name,
                selector: selector.clone(),
                apps: [(
                    app.to_string(),
                    Placement {
                        release: version.to_string(),
                        rollout: None,
                    },
                )]
                .into(),
                on_unmatch: OnUnmatch::Keep,
            },
            origin: Origin::Deploy,
            updated_ms: st.clock.now_ms(),
            state,
        });
    }
    for mut f in touched {
        let pr = f.state.apps.entry(app.to_string()).or_default();
        pr.current = Some(version.to_string());
        pr.failed = None;
        pr.note = None;
        for d in assigned {
            f.state.placed.insert(dev_app(d, app), release.clone());
        }
        st.store.put_fleet(&f.to_row()?).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use edgecd_api::profile::{HardwareProfile, RuntimePin};

    fn dev(id: &str, labels: &[(&str, &str)]) -> Device {
        Device {
            id: id.into(),
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            board: Some("rpi5".into()),
            accelerator: None,
            runtimes: [("edgecd-infer".to_string(), "0.1.0".to_string())].into(),
            ram_mb: Some(4096),
            running: None,
            failed: None,
            blocked: None,
        }
    }

    fn k(d: &str, app: &str) -> (String, String) {
        (d.to_string(), app.to_string())
    }

    fn rref(name: &str) -> ReleaseRef {
        let (app, version) = name.split_once('@').unwrap();
        let blob = |size| edgecd_api::protocol::BlobRef {
            digest: format!("sha256:{name}"),
            size,
        };
        ReleaseRef {
            app: app.into(),
            version: version.into(),
            bundle_digest: format!("sha256:{name}"),
            manifest: blob(1000),
            manifest_sig: blob(1000),
            bundle: blob(10 << 20),
            bundle_sig: blob(1000),
            hardware: req().hardware,
            runtime: req().runtime,
        }
    }

    fn req() -> Requirements {
        Requirements {
            hardware: HardwareProfile {
                board: "rpi5".into(),
                accelerator: None,
                min_ram_mb: None,
            },
            runtime: RuntimePin {
                name: "edgecd-infer".into(),
                version: "0.1.0".into(),
            },
        }
    }

    fn spec(yaml: &str) -> FleetSpec {
        serde_yaml::from_str(yaml).unwrap()
    }

    fn fleet(yaml: &str, origin: Origin, updated_ms: i64) -> Fleet {
        let spec = spec(yaml);
        let (state, _) = preview(None, &spec);
        Fleet {
            spec,
            origin,
            updated_ms,
            state,
        }
    }

    fn world(devices: Vec<Device>) -> World {
        World {
            devices,
            releases: [
                ("det@1".to_string(), req()),
                ("det@2".to_string(), req()),
                ("cls@1".to_string(), req()),
            ]
            .into(),
            refs: ["det@1", "det@2", "cls@1"]
                .into_iter()
                .map(|n| (n.to_string(), rref(n)))
                .collect(),
            now: 100,
            ..Default::default()
        }
    }

    fn by_device(p: &FleetPlan) -> BTreeMap<String, (Standing, String)> {
        p.entries
            .iter()
            .map(|e| (e.device.clone(), (e.state, e.why.clone())))
            .collect()
    }

    #[test]
    fn yaml_is_validated_with_clear_errors() {
        let ok = spec("name: cams\nselector: {site: lab}\napps:\n  det:\n    release: 1.0.0\n");
        assert_eq!(ok.validate(), Ok(()));
        assert_eq!(ok.on_unmatch, OnUnmatch::Keep);
        for (yaml, want) in [
            ("name: Cams\napps: {det: {release: '1'}}", "fleet name"),
            ("name: a:b\napps: {det: {release: '1'}}", "fleet name"),
            ("name: cams\napps: {}", "apps is empty"),
            (
                "name: cams\napps: {det: {release: other@1}}",
                "names app \"other\"",
            ),
            (
                "name: cams\nselector: {site: ''}\napps: {det: {release: '1'}}",
                "selector site",
            ),
            (
                "name: cams\napps: {det: {release: '1', rollout: {steps: []}}}",
                "steps is empty",
            ),
            (
                "name: cams\napps: {det: {release: '1', rollout: {release: x@1, steps: [{canary: {percent: 100}}]}}}",
                "the fleet sets it",
            ),
            (
                "name: cams\napps: {det: {release: '1', rollout: {stepz: []}}}",
                "unknown field",
            ),
        ] {
            let s = spec(yaml);
            let e = s.validate().unwrap_err();
            assert!(e.contains(want), "{yaml}: {e}");
        }
        // Unknown top-level fields are a parse error (a typo never silently does nothing).
        assert!(serde_yaml::from_str::<FleetSpec>("name: a\napps: {}\nonunmatch: keep\n").is_err());
        // `APP@VERSION` is accepted as the release.
        assert_eq!(
            spec("name: a\napps: {det: {release: det@2}}").validate(),
            Ok(())
        );
    }

    #[test]
    fn rollout_policy_gets_the_fleets_release_and_selector() {
        let s = spec(
            "name: cams\nselector: {site: lab}\napps:\n  det:\n    release: '2'\n    rollout:\n      steps: [{canary: {devices: 1}}, {canary: {percent: 100}}]\n",
        );
        s.validate().unwrap();
        let r = s.rollout_spec("det").unwrap();
        assert_eq!(r.release, "det@2");
        assert_eq!(r.selector, [("site".to_string(), "lab".to_string())].into());
        assert_eq!(r.steps.len(), 2);
    }

    #[test]
    fn matching_devices_are_assigned_and_others_left_alone() {
        let f = fleet(
            "name: cams\nselector: {site: lab}\napps: {det: {release: '1'}}",
            Origin::Apply,
            1,
        );
        let mut w = world(vec![
            dev("a", &[("site", "lab")]),
            dev("b", &[("site", "home")]),
        ]);
        let p = &plan(std::slice::from_ref(&f), &w)[0];
        assert_eq!(p.assign, [(k("a", "det"), "det@1".to_string())].into());
        assert_eq!(p.entries.len(), 1);
        assert_eq!(p.entries[0].change.as_deref(), Some("nothing → det@1"));
        // Once assigned and running: converged, nothing more to do.
        let mut f2 = f.clone();
        f2.state = p.state.clone();
        w.assigned.insert(k("a", "det"), "det@1".into());
        w.running.insert(k("a", "det"), "det@1".into());
        let p = &plan(std::slice::from_ref(&f2), &w)[0];
        assert!(p.assign.is_empty());
        assert_eq!(by_device(p)["a"].0, Standing::Converged);
    }

    #[test]
    fn incompatible_devices_are_blocked_with_the_reason() {
        let f = fleet("name: cams\napps: {det: {release: '1'}}", Origin::Apply, 1);
        let mut d = dev("old", &[]);
        d.board = Some("rpi4".into());
        let p = &plan(&[f], &world(vec![d]))[0];
        assert!(p.assign.is_empty());
        let (s, why) = &by_device(p)["old"];
        assert_eq!(*s, Standing::Blocked);
        assert!(
            why.contains("incompatible with det@1") && why.contains("board rpi4"),
            "{why}"
        );
    }

    #[test]
    fn two_applied_fleets_placing_one_app_on_a_device_conflict() {
        let a = fleet(
            "name: a\nselector: {site: lab}\napps: {det: {release: '1'}}",
            Origin::Apply,
            1,
        );
        let b = fleet("name: b\napps: {det: {release: '2'}}", Origin::Apply, 2);
        let p = plan(
            &[a, b],
            &world(vec![dev("x", &[("site", "lab")]), dev("y", &[])]),
        );
        assert!(p[0].assign.is_empty());
        let why = &by_device(&p[0])["x"].1;
        assert!(
            why.contains("matched by fleets a, b that all place det"),
            "{why}"
        );
        assert_eq!(by_device(&p[1])["x"].0, Standing::Blocked);
        // y matches only b.
        assert_eq!(
            p[1].assign.get(&k("y", "det")).map(String::as_str),
            Some("det@2")
        );
    }

    #[test]
    fn several_apps_share_a_device_within_its_budget() {
        // Two fleets, one app each, on one device whose agent holds two apps.
        let a = fleet(
            "name: a\nselector: {site: lab}\napps: {det: {release: '1'}}",
            Origin::Apply,
            1,
        );
        let b = fleet("name: b\napps: {cls: {release: '1'}}", Origin::Apply, 2);
        let mut w = world(vec![dev("x", &[("site", "lab")])]);
        let two = Budget {
            max_apps: 2,
            ram_mb: 4096,
            storage_mb: Some(1024),
            removes: true,
        };
        w.budgets.insert("x".into(), two);
        let p = plan(&[a.clone(), b.clone()], &w);
        assert_eq!(p[0].assign, [(k("x", "det"), "det@1".to_string())].into());
        assert_eq!(p[1].assign, [(k("x", "cls"), "cls@1".to_string())].into());
        assert_eq!(p[0].state.placed[&dev_app("x", "det")], "det@1");

        // One fleet placing both apps: one entry per app.
        let m = fleet(
            "name: m\napps: {det: {release: '1'}, cls: {release: '1'}}",
            Origin::Apply,
            1,
        );
        let p = &plan(std::slice::from_ref(&m), &w)[0];
        assert_eq!(p.assign.len(), 2);
        assert_eq!(p.entries.len(), 2);
        assert!(p.entries.iter().all(|e| e.app.is_some()));

        // An agent that holds one app: the second app is blocked with the reason, the
        // first placed (apps in name order).
        w.budgets.insert("x".into(), Budget { max_apps: 1, ..two });
        let p = &plan(std::slice::from_ref(&m), &w)[0];
        assert_eq!(p.assign, [(k("x", "cls"), "cls@1".to_string())].into());
        let det = p
            .entries
            .iter()
            .find(|e| e.app.as_deref() == Some("det"))
            .unwrap();
        assert_eq!(det.state, Standing::Blocked);
        assert!(det.why.contains("holds one app"), "{}", det.why);

        // Storage: two slots of 10 MiB per app and a download: 51 MiB > 40 MiB.
        w.budgets.insert(
            "x".into(),
            Budget {
                storage_mb: Some(40),
                ..two
            },
        );
        let p = &plan(std::slice::from_ref(&m), &w)[0];
        let det = p
            .entries
            .iter()
            .find(|e| e.app.as_deref() == Some("det"))
            .unwrap();
        assert!(det.why.contains("MiB of storage"), "{}", det.why);
        // Once the device holds both, nothing is re-checked or re-assigned.
        w.budgets.insert("x".into(), Budget { max_apps: 1, ..two });
        w.assigned.insert(k("x", "det"), "det@1".into());
        w.assigned.insert(k("x", "cls"), "cls@1".into());
        w.running.insert(k("x", "det"), "det@1".into());
        let p = &plan(std::slice::from_ref(&m), &w)[0];
        assert!(p.assign.is_empty());
        let det = p
            .entries
            .iter()
            .find(|e| e.app.as_deref() == Some("det"))
            .unwrap();
        assert_eq!(det.state, Standing::Converged, "{}", det.why);
    }

    #[test]
    fn applied_fleets_win_over_deploys_and_the_newest_deploy_wins() {
        let all = fleet(
            "name: deploy:det\napps: {det: {release: '1'}}",
            Origin::Deploy,
            1,
        );
        let lab = fleet(
            "name: deploy:det:site=lab\nselector: {site: lab}\napps: {det: {release: '2'}}",
            Origin::Deploy,
            2,
        );
        let w = world(vec![dev("x", &[("site", "lab")]), dev("y", &[])]);
        let p = plan(&[all.clone(), lab.clone()], &w);
        assert_eq!(p[0].assign, [(k("y", "det"), "det@1".to_string())].into());
        assert_eq!(p[1].assign, [(k("x", "det"), "det@2".to_string())].into());
        let mine = fleet(
            "name: mine\nselector: {site: lab}\napps: {cls: {release: '1'}}",
            Origin::Apply,
            0,
        );
        let p = plan(&[all, lab, mine], &w);
        assert_eq!(p[2].assign, [(k("x", "cls"), "cls@1".to_string())].into());
        assert!(!p[1].assign.contains_key(&k("x", "det")));
    }

    #[test]
    fn a_device_that_stops_matching_is_left_per_on_unmatch() {
        for (mode, removes, want) in [
            (OnUnmatch::Keep, true, "on_unmatch keep: keeps det@1"),
            (OnUnmatch::Remove, false, "cannot remove an app: upgrade it"),
            (
                OnUnmatch::Remove,
                true,
                "on_unmatch remove: det@1 removed from the device",
            ),
        ] {
            let mut f = fleet(
                "name: cams\nselector: {site: lab}\napps: {det: {release: '1'}}",
                Origin::Apply,
                1,
            );
            f.spec.on_unmatch = mode;
            f.state.members.insert("a".into());
            f.state.placed.insert(dev_app("a", "det"), "det@1".into());
            let mut w = world(vec![dev("a", &[("site", "home")])]);
            w.assigned.insert(k("a", "det"), "det@1".into());
            w.budgets.insert(
                "a".into(),
                Budget {
                    removes,
                    ..Budget::of(None)
                },
            );
            let p = &plan(&[f], &w)[0];
            assert!(
                p.assign.is_empty(),
                "nothing assigned to a device that left"
            );
            let removed = mode == OnUnmatch::Remove && removes;
            assert_eq!(p.remove.contains(&k("a", "det")), removed, "{mode:?}");
            let (s, why) = &by_device(p)["a"];
            assert_eq!(*s, Standing::Left);
            assert!(why.contains(want), "{why}");
            assert_eq!(p.state.left["a"].release.as_deref(), Some("det@1"));
            assert!(!p.state.members.contains("a"));
        }
    }

    #[test]
    fn drift_is_reported_not_forced_back_and_rollout_cohorts_are_left_alone() {
        let mut f = fleet("name: cams\napps: {det: {release: '1'}}", Origin::Apply, 1);
        f.state.placed.insert(dev_app("a", "det"), "det@1".into());
        let mut w = world(vec![dev("a", &[]), dev("b", &[])]);
        w.assigned.insert(k("a", "det"), "det@2".into());
        w.rollouts
            .insert("det".into(), ("det-r1".into(), ["b".to_string()].into()));
        let p = &plan(&[f], &w)[0];
        assert!(p.assign.is_empty());
        let m = by_device(p);
        assert!(
            m["a"].1.starts_with("drifted: assigned det@2"),
            "{:?}",
            m["a"]
        );
        assert_eq!(m["b"], (Standing::Converging, "in rollout det-r1".into()));
    }

    #[test]
    fn a_policy_placement_holds_devices_until_its_rollout_completes() {
        let old = fleet("name: cams\napps: {det: {release: '1'}}", Origin::Apply, 1);
        let new = spec(
            "name: cams\napps: {det: {release: '2', rollout: {steps: [{canary: {percent: 100}}]}}}",
        );
        let (state, notes) = preview(Some(&old), &new);
        assert_eq!(
            state.apps["det"].current.as_deref(),
            Some("1"),
            "held at the baseline"
        );
        assert!(
            notes[0].contains("a rollout of det@2 starts") && notes[0].contains("stay on det@1"),
            "{notes:?}"
        );
        // Placing the baseline again while the fleet's rollout runs (a revert) aborts it.
        let mut running = old.clone();
        running.state = state.clone();
        running.state.apps.get_mut("det").unwrap().rollout = Some(RolloutLink {
            id: "det-r2".into(),
            version: "2".into(),
            manual_over: None,
        });
        let (_, notes) = preview(Some(&running), &old.spec);
        assert!(
            notes[0].contains("rollout det-r2 of det@2 is aborted")
                && notes[0].contains("go back to det@1"),
            "{notes:?}"
        );
        let plain = spec("name: cams\napps: {det: {release: '2'}}");
        let (state, notes) = preview(Some(&old), &plain);
        assert_eq!(state.apps["det"].current.as_deref(), Some("2"));
        assert!(notes.is_empty());
    }

    #[test]
    fn unpublished_releases_block() {
        let f = fleet("name: cams\napps: {det: {release: '9'}}", Origin::Apply, 1);
        let p = &plan(&[f], &world(vec![dev("a", &[])]))[0];
        assert!(by_device(p)["a"].1.contains("det@9 is not published"));
    }

    #[test]
    fn deploy_fleet_names() {
        assert_eq!(deploy_fleet_name("det", &BTreeMap::new()), "deploy:det");
        assert_eq!(
            deploy_fleet_name(
                "det",
                &[
                    ("site".to_string(), "a".to_string()),
                    ("b".to_string(), "c".to_string())
                ]
                .into()
            ),
            "deploy:det:b=c,site=a"
        );
    }
}

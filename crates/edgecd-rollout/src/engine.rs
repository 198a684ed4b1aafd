//! The rollout state machine. `Rollout::tick` takes an observation (fleet, cohort metrics,
//! external gate values, time) and returns effects plus audit records; `Rollout::command`
//! applies a person's promote/pause/resume/abort/approve. All state is serializable so the
//! server can persist it and resume after a restart without applying an effect twice
//! (effects are derived from state changes that are saved together with them).
use crate::cohort::{Device, Requirements, group_key, groups_in_order, grow, select_order};
use crate::gates::{ExternalValue, GateResult, Judgement, Verdict, evaluate};
use crate::spec::{
    AnalyzeStep, OnFailure, OnGroupFailure, OnMaxHold, RolloutSpec, SpecError, Step,
};
use crate::stats::alpha_for_look;
use edgecd_api::metrics::MetricsAggregate;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    Progressing,
    Paused,
    AwaitingApproval,
    Completed,
    Aborted,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct State {
    pub phase: Phase,
    /// Index into `spec.steps`.
    pub step: usize,
    pub step_started_at: i64,
    /// Every device that has been assigned the new release (only grows until an abort).
    pub cohort: BTreeSet<String>,
    pub consecutive_failures: u32,
    pub consecutive_errors: u32,
    pub last_evaluation_at: Option<i64>,
    pub last_gates: Vec<GateResult>,
    pub last_passed: bool,
    /// Why the rollout holds, is paused or was aborted.
    pub reason: Option<String>,
    /// Devices sent back to the baseline, and when.
    pub rolled_back: Vec<String>,
    pub started_at: i64,
    pub finished_at: Option<i64>,
    /// What stopped the rollout (abort, or pause on failure).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_cause: Option<StopCause>,
    /// Evaluations in the current step (each spends its share of the alpha).
    #[serde(default)]
    pub looks: u32,
    /// The current hold: one at a time, its reason in `reason`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hold: Option<Hold>,
    /// The kind and time of the last `Held` notification (deduplication, rate limit).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub held_notice: Option<(HoldKind, i64)>,
    /// Groups left out after a gate failed for them (`on_group_failure: exclude`).
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub excluded_groups: BTreeSet<String>,
    /// Groups with a device in the cohort (as of the last canary step).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub covered_groups: Vec<String>,
}

/// Why a step holds: one kind at a time; a change of kind is a change of state (audited,
/// notified), a new count or estimate inside one kind is not.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HoldKind {
    /// Outside the maintenance window.
    Window,
    /// Cohort devices have not installed and reported the release yet.
    Installing,
    /// A gate fails, fewer times in a row than `failure_limit`.
    Failing,
    /// A metrics provider errs.
    ProviderError,
    /// The analysis window ended without enough samples to decide.
    Undecided,
    /// A timed pause step.
    Pause,
}

impl HoldKind {
    /// Whether holding this long is a problem `max_hold` escalates.
    fn escalates(self) -> bool {
        matches!(
            self,
            HoldKind::Installing | HoldKind::Undecided | HoldKind::ProviderError
        )
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Hold {
    pub kind: HoldKind,
    pub since: i64,
    /// `max_hold` passed and it was escalated.
    #[serde(default)]
    pub escalated: bool,
}

/// The same kind of hold is notified again at most this often (seconds).
pub const HOLD_RENOTIFY_SECS: i64 = 3600;
/// Hold reasons are cut to this many characters.
pub const MAX_REASON_CHARS: usize = 480;

fn bounded(s: String) -> String {
    if s.chars().count() <= MAX_REASON_CHARS {
        return s;
    }
    let mut t: String = s.chars().take(MAX_REASON_CHARS - 1).collect();
    t.push('…');
    t
}

/// What stopped a rollout: a bounded set, for metrics and alerting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StopCause {
    /// Health gates failed `failure_limit` consecutive evaluations.
    Gates,
    /// `error_limit` consecutive evaluations had a metrics-provider error.
    ProviderErrors,
    /// More than `max_failed_installs` cohort devices failed to install.
    FailedInstalls,
    /// A person aborted it.
    Operator,
    /// A firing alert (Alertmanager receiver).
    Alert,
    /// A hold lasted longer than `max_hold` with `on_max_hold: rollback`.
    HoldTimeout,
}

impl StopCause {
    pub const ALL: [StopCause; 6] = [
        StopCause::Gates,
        StopCause::ProviderErrors,
        StopCause::FailedInstalls,
        StopCause::Operator,
        StopCause::Alert,
        StopCause::HoldTimeout,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            StopCause::Gates => "gates",
            StopCause::ProviderErrors => "provider_errors",
            StopCause::FailedInstalls => "failed_installs",
            StopCause::Operator => "operator",
            StopCause::Alert => "alert",
            StopCause::HoldTimeout => "hold_timeout",
        }
    }
}

/// A rollout: its spec, what the release needs, what to roll back to, and its state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Rollout {
    pub id: String,
    pub spec: RolloutSpec,
    pub requirements: Requirements,
    /// The release devices ran before (`app@version`); `None` for a first deployment.
    pub baseline: Option<String>,
    pub state: State,
}

/// What the engine sees on each tick.
pub struct Observation<'a> {
    pub now: i64,
    /// All devices (the engine applies the selector and compatibility itself).
    pub fleet: &'a [Device],
    /// Merged metrics since `Rollout::metrics_since()` of cohort devices running the release.
    pub canary: &'a MetricsAggregate,
    /// Merged metrics over the same period of selected devices running the baseline.
    pub baseline: &'a MetricsAggregate,
    /// Values of `provider: prometheus` gates, by gate index.
    pub external: &'a BTreeMap<usize, ExternalValue>,
    /// Per-device metrics over the same period (cohort devices: of the release; others: of
    /// the baseline), for per-group analysis; empty: the whole cohort only.
    pub devices: &'a BTreeMap<String, MetricsAggregate>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Command {
    Promote,
    Pause,
    Resume,
    Abort,
    Approve,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum RolloutEvent {
    Started {
        cohort_target: String,
    },
    StepPromoted {
        step: usize,
        description: String,
    },
    Held {
        reason: String,
    },
    /// A hold lasted longer than `max_hold` (`on_max_hold: incident`).
    Escalated {
        reason: String,
        held_secs: i64,
    },
    /// A gate failed for one group only; its devices went back to the baseline and it is
    /// left out of later steps (`on_group_failure: exclude`).
    GroupExcluded {
        group: String,
        reason: String,
    },
    ApprovalNeeded {
        step: usize,
    },
    Aborted {
        reason: String,
    },
    RolledBack {
        devices: usize,
        release: String,
    },
    Completed,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "effect", rename_all = "snake_case")]
pub enum Effect {
    /// Assign `release` to these devices.
    Assign {
        devices: Vec<String>,
        release: String,
    },
    /// Assign the baseline `release` back to these devices.
    Rollback {
        devices: Vec<String>,
        release: String,
    },
    Notify {
        event: RolloutEvent,
    },
}

/// One decision with the numbers behind it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AuditRecord {
    pub at: i64,
    pub step: usize,
    pub kind: String,
    pub message: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gates: Vec<GateResult>,
    pub cohort: usize,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Decision {
    pub effects: Vec<Effect>,
    pub audit: Vec<AuditRecord>,
}

/// A short description of a step for people.
pub fn describe(step: &Step) -> String {
    match step {
        Step::Canary(c) => {
            let size = match (c.devices, c.percent, c.groups) {
                (Some(n), _, _) => format!("{n} devices"),
                (_, Some(p), _) => format!("{p}%"),
                (_, _, Some(g)) => format!("{g} groups"),
                _ => "?".into(),
            };
            match &c.spread_by {
                Some(l) => format!("canary {size} spread by {l}"),
                None => format!("canary {size}"),
            }
        }
        Step::Analyze(a) => format!(
            "analyze {} every {}",
            humantime::format_duration(a.duration),
            humantime::format_duration(a.interval)
        ),
        Step::Approve(_) => "manual approval".into(),
        Step::Pause(p) => match p.duration {
            Some(d) => format!("pause {}", humantime::format_duration(d)),
            None => "pause until resumed".into(),
        },
    }
}

impl Rollout {
    /// Validates the spec and starts the rollout at `now`.
    pub fn start(
        id: &str,
        spec: RolloutSpec,
        requirements: Requirements,
        baseline: Option<String>,
        now: i64,
    ) -> Result<(Self, Decision), SpecError> {
        spec.validate()?;
        if baseline.as_deref() == Some(spec.release.as_str()) {
            return Err(SpecError::Invalid(format!(
                "{} is already the fleet's release",
                spec.release
            )));
        }
        if baseline.is_none() && spec.gates.iter().any(|g| g.against.is_some()) {
            return Err(SpecError::Invalid(format!(
                "gates compare with the baseline, but no selected device runs an earlier release of {}: deploy a baseline first or drop the `against: baseline` gates",
                spec.app_and_version().map(|(a, _)| a).unwrap_or("the app")
            )));
        }
        let target = describe(&spec.steps[0]);
        let r = Rollout {
            id: id.to_string(),
            spec,
            requirements,
            baseline,
            state: State {
                phase: Phase::Progressing,
                step: 0,
                step_started_at: now,
                cohort: BTreeSet::new(),
                consecutive_failures: 0,
                consecutive_errors: 0,
                last_evaluation_at: None,
                last_gates: vec![],
                last_passed: false,
                reason: None,
                rolled_back: vec![],
                started_at: now,
                finished_at: None,
                stop_cause: None,
                looks: 0,
                hold: None,
                held_notice: None,
                excluded_groups: BTreeSet::new(),
                covered_groups: vec![],
            },
        };
        let mut d = Decision::default();
        d.effects.push(Effect::Notify {
            event: RolloutEvent::Started {
                cohort_target: target.clone(),
            },
        });
        r.audit(
            &mut d,
            now,
            "started",
            format!(
                "rollout of {} started (baseline {}), first step: {target}",
                r.spec.release,
                r.baseline.as_deref().unwrap_or("none")
            ),
            vec![],
        );
        Ok((r, d))
    }

    /// Start of the period whose metrics the current step analyzes.
    pub fn metrics_since(&self) -> i64 {
        self.state.step_started_at
    }

    pub fn is_finished(&self) -> bool {
        matches!(self.state.phase, Phase::Completed | Phase::Aborted)
    }

    /// Devices that match the selector, split into (compatible, incompatible with reason).
    pub fn eligible<'a>(
        &self,
        fleet: &'a [Device],
    ) -> (Vec<&'a Device>, Vec<(&'a Device, String)>) {
        let mut ok = vec![];
        let mut bad = vec![];
        for d in fleet.iter().filter(|d| {
            self.spec
                .selector
                .iter()
                .all(|(k, v)| d.labels.get(k) == Some(v))
        }) {
            match self.requirements.check(d) {
                Ok(()) => ok.push(d),
                Err(why) => bad.push((d, why)),
            }
        }
        (ok, bad)
    }

    fn audit(
        &self,
        d: &mut Decision,
        at: i64,
        kind: &str,
        message: String,
        gates: Vec<GateResult>,
    ) {
        d.audit.push(AuditRecord {
            at,
            step: self.state.step,
            kind: kind.into(),
            message,
            gates,
            cohort: self.state.cohort.len(),
        });
    }

    /// Holds for `kind` with `reason` (bounded; replaces any earlier reason, never nests).
    /// Only a change of kind is audited and notified, and the same kind is notified again
    /// only after `HOLD_RENOTIFY_SECS`, so counts and estimates in the reason changing from
    /// tick to tick notify nobody.
    fn hold(&mut self, d: &mut Decision, now: i64, kind: HoldKind, reason: String) {
        let reason = bounded(reason);
        if self.state.hold.as_ref().is_none_or(|h| h.kind != kind) {
            self.state.hold = Some(Hold {
                kind,
                since: now,
                escalated: false,
            });
            self.audit(d, now, "hold", reason.clone(), vec![]);
            let recent = self
                .state
                .held_notice
                .is_some_and(|(k, at)| k == kind && now - at < HOLD_RENOTIFY_SECS);
            if !recent {
                self.state.held_notice = Some((kind, now));
                d.effects.push(Effect::Notify {
                    event: RolloutEvent::Held {
                        reason: reason.clone(),
                    },
                });
            }
        }
        self.state.reason = Some(reason);
    }

    fn unhold(&mut self) {
        self.state.hold = None;
        self.state.reason = None;
    }

    /// Escalates a hold that has lasted `max_hold`, once, per `on_max_hold`.
    fn escalate(&mut self, d: &mut Decision, now: i64) {
        let Some(h) = self.state.hold.clone() else {
            return;
        };
        let limit = self.spec.max_hold.as_secs() as i64;
        if h.escalated || !h.kind.escalates() || now - h.since < limit {
            return;
        }
        let reason = self.state.reason.clone().unwrap_or_default();
        let held = now - h.since;
        let why = bounded(format!(
            "held {} (max_hold {}): {reason}",
            humantime::format_duration(std::time::Duration::from_secs(held as u64)),
            humantime::format_duration(self.spec.max_hold)
        ));
        match self.spec.on_max_hold {
            OnMaxHold::Rollback => {
                self.abort(d, now, StopCause::HoldTimeout, why, true);
            }
            OnMaxHold::Incident => {
                if let Some(h) = &mut self.state.hold {
                    h.escalated = true;
                }
                self.audit(d, now, "escalate", why.clone(), vec![]);
                d.effects.push(Effect::Notify {
                    event: RolloutEvent::Escalated {
                        reason: why,
                        held_secs: held,
                    },
                });
            }
        }
    }

    fn advance(&mut self, d: &mut Decision, now: i64, how: &str) {
        let from = self.state.step;
        self.state.step += 1;
        self.state.step_started_at = now;
        self.state.last_passed = false;
        self.state.last_evaluation_at = None;
        self.state.consecutive_failures = 0;
        self.state.consecutive_errors = 0;
        self.state.looks = 0;
        self.unhold();
        if self.state.step >= self.spec.steps.len() {
            self.state.phase = Phase::Completed;
            self.state.finished_at = Some(now);
            self.audit(
                d,
                now,
                "completed",
                format!(
                    "step {} done ({how}); rollout complete with {} devices on {}",
                    from + 1,
                    self.state.cohort.len(),
                    self.spec.release
                ),
                vec![],
            );
            d.effects.push(Effect::Notify {
                event: RolloutEvent::Completed,
            });
        } else {
            let description = describe(&self.spec.steps[self.state.step]);
            self.audit(
                d,
                now,
                "promote",
                format!(
                    "step {} done ({how}); next: step {} {description}",
                    from + 1,
                    self.state.step + 1
                ),
                vec![],
            );
            d.effects.push(Effect::Notify {
                event: RolloutEvent::StepPromoted {
                    step: self.state.step,
                    description,
                },
            });
        }
    }

    /// Stops the rollout; with `rollback`, every device that got the release goes back to the baseline.
    fn abort(
        &mut self,
        d: &mut Decision,
        now: i64,
        cause: StopCause,
        reason: String,
        rollback: bool,
    ) {
        self.state.stop_cause = Some(cause);
        self.state.hold = None;
        if !rollback {
            self.state.phase = Phase::Paused;
            self.state.reason = Some(reason.clone());
            self.audit(
                d,
                now,
                "pause",
                format!("paused on failure: {reason}"),
                vec![],
            );
            d.effects.push(Effect::Notify {
                event: RolloutEvent::Held { reason },
            });
            return;
        }
        self.state.phase = Phase::Aborted;
        self.state.finished_at = Some(now);
        self.state.reason = Some(reason.clone());
        self.audit(d, now, "abort", reason.clone(), vec![]);
        d.effects.push(Effect::Notify {
            event: RolloutEvent::Aborted { reason },
        });
        let devices: Vec<String> = self.state.cohort.iter().cloned().collect();
        match &self.baseline {
            Some(base) if !devices.is_empty() => {
                self.state.rolled_back = devices.clone();
                self.audit(d, now, "rollback", format!("assigned baseline {base} to {} devices", devices.len()), vec![]);
                d.effects.push(Effect::Rollback { devices: devices.clone(), release: base.clone() });
                d.effects.push(Effect::Notify { event: RolloutEvent::RolledBack { devices: devices.len(), release: base.clone() } });
            }
            Some(_) => {}
            None => self.audit(d, now, "rollback", "no baseline release to roll back to (first deployment): devices keep what they run".into(), vec![]),
        }
    }

    fn failed_installs(&self, fleet: &[Device]) -> Vec<String> {
        fleet
            .iter()
            .filter(|d| {
                self.state.cohort.contains(&d.id)
                    && d.failed.as_deref() == Some(self.spec.release.as_str())
            })
            .map(|d| d.id.clone())
            .collect()
    }

    /// Drives the rollout one step of time forward.
    /// Whether a [`tick`](Self::tick) at `now` evaluates the gates: an active rollout in an
    /// analysis step whose interval has elapsed. The server runs its `provider: prometheus`
    /// queries only then; a gate evaluated without its value counts as a provider error.
    pub fn evaluation_due(&self, now: i64) -> bool {
        if self.is_finished()
            || self.state.phase == Phase::Paused
            || self.state.phase == Phase::AwaitingApproval
        {
            return false;
        }
        match &self.spec.steps[self.state.step] {
            Step::Analyze(a) => self
                .state
                .last_evaluation_at
                .is_none_or(|t| now - t >= a.interval.as_secs() as i64),
            _ => false,
        }
    }

    pub fn tick(&mut self, obs: &Observation<'_>) -> Decision {
        let mut d = Decision::default();
        let now = obs.now;
        if self.is_finished()
            || self.state.phase == Phase::Paused
            || self.state.phase == Phase::AwaitingApproval
        {
            return d;
        }
        // Failed installs abort in any step once the cohort has been assigned.
        let failed = self.failed_installs(obs.fleet);
        if failed.len() as u32 > self.spec.max_failed_installs {
            let reason = format!(
                "{} failed installs > max_failed_installs {}: {}",
                failed.len(),
                self.spec.max_failed_installs,
                failed.join(", ")
            );
            self.abort(
                &mut d,
                now,
                StopCause::FailedInstalls,
                reason,
                self.spec.on_failure == OnFailure::Rollback,
            );
            return d;
        }
        match self.spec.steps[self.state.step].clone() {
            Step::Canary(c) => {
                let (eligible, _) = self.eligible(obs.fleet);
                let eligible: Vec<&Device> = eligible
                    .into_iter()
                    .filter(|x| !self.state.excluded_groups.contains(&self.group_of(x)))
                    .collect();
                let mut target: BTreeSet<String> = match (c.devices, c.percent, c.groups) {
                    (Some(n), _, _) => grow(
                        &self.state.cohort,
                        &select_order(&eligible, &self.id, c.spread_by.as_deref()),
                        n as usize,
                    ),
                    (_, Some(p), _) => {
                        let n = ((p / 100.0) * eligible.len() as f64).ceil().max(1.0) as usize;
                        grow(
                            &self.state.cohort,
                            &select_order(&eligible, &self.id, c.spread_by.as_deref()),
                            n,
                        )
                    }
                    (_, _, Some(g)) => {
                        let label = c.spread_by.as_deref().unwrap_or_default();
                        let mut t = self.state.cohort.clone();
                        for (_, members) in groups_in_order(&eligible, &self.id, label)
                            .into_iter()
                            .take(g as usize)
                        {
                            t.extend(members);
                        }
                        t
                    }
                    _ => self.state.cohort.clone(),
                };
                self.stratify(&eligible, &mut target);
                let new: Vec<String> = target.difference(&self.state.cohort).cloned().collect();
                if !new.is_empty() {
                    if let Some(w) = &self.spec.window
                        && !w.contains(now)
                    {
                        let reason = format!(
                            "outside the maintenance window ({} {}–{} {})",
                            if w.days.is_empty() {
                                "daily".to_string()
                            } else {
                                w.days.join(",")
                            },
                            w.from,
                            w.to,
                            w.tz
                        );
                        self.hold(&mut d, now, HoldKind::Window, reason);
                        return d;
                    }
                    self.state.cohort.extend(new.iter().cloned());
                    self.unhold();
                    let covered = self.covered(&eligible);
                    let groups = if covered.len() > 1 {
                        format!("; groups covered: {}", covered.join(", "))
                    } else {
                        String::new()
                    };
                    self.state.covered_groups = covered;
                    self.audit(
                        &mut d,
                        now,
                        "assign",
                        format!(
                            "assigned {} to {} more devices: cohort {} of {} eligible{groups}",
                            self.spec.release,
                            new.len(),
                            self.state.cohort.len(),
                            eligible.len()
                        ),
                        vec![],
                    );
                    d.effects.push(Effect::Assign {
                        devices: new,
                        release: self.spec.release.clone(),
                    });
                    return d;
                }
                let excluded: BTreeSet<&String> = obs
                    .fleet
                    .iter()
                    .filter(|x| self.state.excluded_groups.contains(&self.group_of(x)))
                    .map(|x| &x.id)
                    .collect();
                let active: Vec<&String> = self
                    .state
                    .cohort
                    .iter()
                    .filter(|id| !excluded.contains(id))
                    .collect();
                let running = obs
                    .fleet
                    .iter()
                    .filter(|x| {
                        active.contains(&&x.id)
                            && x.running.as_deref() == Some(self.spec.release.as_str())
                    })
                    .count();
                let failed = self.failed_installs(obs.fleet).len();
                let pending = active.len() - running - failed.min(active.len() - running);
                if pending > 0 {
                    let reason = format!(
                        "waiting for {pending} of {} cohort devices to install and report {}",
                        active.len(),
                        self.spec.release
                    );
                    self.hold(&mut d, now, HoldKind::Installing, reason);
                    self.escalate(&mut d, now);
                    return d;
                }
                self.advance(
                    &mut d,
                    now,
                    &format!("{running} devices run {}", self.spec.release),
                );
            }
            Step::Analyze(a) => {
                let interval = a.interval.as_secs() as i64;
                let due = self
                    .state
                    .last_evaluation_at
                    .is_none_or(|t| now - t >= interval);
                if due {
                    self.evaluate(&mut d, obs, &a);
                    if self.is_finished() || self.state.phase == Phase::Paused {
                        return d;
                    }
                }
                let elapsed = now - self.state.step_started_at;
                if elapsed >= a.duration.as_secs() as i64 {
                    if self.state.last_passed {
                        self.advance(&mut d, now, "analysis passed");
                    } else if self
                        .state
                        .hold
                        .as_ref()
                        .is_none_or(|h| h.kind == HoldKind::Undecided)
                    {
                        let reason = self.undecided_reason(obs, elapsed);
                        self.hold(&mut d, now, HoldKind::Undecided, reason);
                        self.escalate(&mut d, now);
                    } else {
                        self.escalate(&mut d, now);
                    }
                }
            }
            Step::Approve(_) => {
                self.state.phase = Phase::AwaitingApproval;
                self.audit(
                    &mut d,
                    now,
                    "approval",
                    format!(
                        "step {} needs manual approval (edgecd rollout approve {})",
                        self.state.step + 1,
                        self.id
                    ),
                    vec![],
                );
                d.effects.push(Effect::Notify {
                    event: RolloutEvent::ApprovalNeeded {
                        step: self.state.step,
                    },
                });
            }
            Step::Pause(p) => match p.duration {
                Some(dur) if now - self.state.step_started_at >= dur.as_secs() as i64 => {
                    self.advance(&mut d, now, "pause elapsed")
                }
                Some(dur) => {
                    let until = self.state.step_started_at + dur.as_secs() as i64;
                    self.hold(
                        &mut d,
                        now,
                        HoldKind::Pause,
                        format!("pausing until {until} ({}s left)", until - now),
                    )
                }
                None => {
                    self.state.phase = Phase::Paused;
                    self.state.reason =
                        Some("paused by a pause step: resume with edgecd rollout resume".into());
                    self.audit(
                        &mut d,
                        now,
                        "pause",
                        "pause step: waiting for resume".into(),
                        vec![],
                    );
                }
            },
        }
        d
    }

    /// The group of a device (`group_by` values).
    pub fn group_of(&self, d: &Device) -> String {
        group_key(d, &self.spec.group_by, &self.requirements.runtime.name)
    }

    /// Groups of the eligible devices with a device in the cohort.
    fn covered(&self, eligible: &[&Device]) -> Vec<String> {
        let set: BTreeSet<String> = eligible
            .iter()
            .filter(|x| self.state.cohort.contains(&x.id))
            .map(|x| self.group_of(x))
            .collect();
        set.into_iter().collect()
    }

    /// Stratified canary: the first canary step takes one device of every group that has
    /// at least `min_group_size` eligible devices and none in `target` yet.
    fn stratify(&self, eligible: &[&Device], target: &mut BTreeSet<String>) {
        if !self.state.cohort.is_empty() || self.spec.group_by.is_empty() {
            return;
        }
        let order = select_order(eligible, &self.id, None);
        let by_id: BTreeMap<&str, &Device> = eligible.iter().map(|x| (x.id.as_str(), *x)).collect();
        let mut sizes: BTreeMap<String, usize> = BTreeMap::new();
        for x in eligible {
            *sizes.entry(self.group_of(x)).or_default() += 1;
        }
        let mut have: BTreeSet<String> = target
            .iter()
            .filter_map(|id| by_id.get(id.as_str()))
            .map(|x| self.group_of(x))
            .collect();
        for id in &order {
            let g = self.group_of(by_id[id.as_str()]);
            if sizes[&g] >= self.spec.min_group_size as usize && have.insert(g) {
                target.insert(id.clone());
            }
        }
    }

    /// Why the analysis window ended without a decision, and how long more traffic would take.
    fn undecided_reason(&self, obs: &Observation<'_>, elapsed: i64) -> String {
        let open: Vec<&GateResult> = self
            .state
            .last_gates
            .iter()
            .filter(|g| !g.verdict.is_pass())
            .collect();
        let needed = open.iter().filter_map(|g| g.needed).max();
        let rate = obs.canary.requests as f64 / elapsed.max(1) as f64;
        let eta = match needed {
            Some(n) if rate > 0.0 && n < u64::MAX / 2 => format!(
                "; at the current {:.1} requests/s, about {} more",
                rate,
                humantime::format_duration(std::time::Duration::from_secs(
                    (n as f64 / rate).ceil() as u64
                ))
            ),
            Some(_) => "; no traffic yet to estimate the time needed".into(),
            None => String::new(),
        };
        let first = open
            .first()
            .map(|g| match &g.verdict {
                Verdict::Inconclusive(w) | Verdict::Error(w) | Verdict::Fail(w) => {
                    format!("{}: {w}", g.name())
                }
                Verdict::Pass => String::new(),
            })
            .unwrap_or_else(|| "no evaluation yet".into());
        let more = if open.len() > 1 {
            let n = open.len() - 1;
            format!(" (and {n} more gate{})", if n == 1 { "" } else { "s" })
        } else {
            String::new()
        };
        format!("analysis window over without a decision, too little traffic: {first}{more}{eta}")
    }

    fn evaluate(&mut self, d: &mut Decision, obs: &Observation<'_>, a: &AnalyzeStep) {
        let now = obs.now;
        self.state.looks += 1;
        let planned = a
            .duration
            .as_secs()
            .div_ceil(a.interval.as_secs().max(1))
            .max(1) as u32;
        let holding = self
            .spec
            .max_hold
            .as_secs()
            .div_ceil(a.interval.as_secs().max(1))
            .max(1) as u32;
        let alpha = alpha_for_look(
            1.0 - self.spec.confidence,
            self.state.looks,
            planned,
            holding,
        );
        // The look's alpha is shared (Bonferroni) by every gate on the cohort and on each
        // group with canary data (when there is more than one group).
        let groups = self.group_metrics(obs);
        let tests = 1 + groups.len() as u32;
        let judge = |n_tests: u32| Judgement {
            confidence: self.spec.confidence,
            fail_alpha: alpha / (n_tests as f64 * self.spec.gates.len().max(1) as f64),
            pass_alpha: alpha,
            min_samples: self.spec.min_samples,
            resolution: self.spec.resolution,
        };
        let j = judge(tests);
        // Devices of excluded groups went back to the baseline: their samples leave the cohort's.
        let kept;
        let canary = if self.state.excluded_groups.is_empty() || obs.devices.is_empty() {
            obs.canary
        } else {
            let mut m = MetricsAggregate::default();
            for x in obs.fleet {
                if self.state.cohort.contains(&x.id)
                    && !self.state.excluded_groups.contains(&self.group_of(x))
                    && let Some(a) = obs.devices.get(&x.id)
                {
                    m.merge(a);
                }
            }
            kept = m;
            &kept
        };
        let mut results: Vec<GateResult> = self
            .spec
            .gates
            .iter()
            .enumerate()
            .map(|(i, g)| evaluate(g, canary, obs.baseline, &j, obs.external.get(&i)))
            .collect();
        let mut group_failures: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (name, (c, b)) in &groups {
            let base = if b.requests >= self.spec.min_samples {
                b
            } else {
                obs.baseline
            };
            for (i, g) in self.spec.gates.iter().enumerate() {
                if g.provider != crate::spec::Provider::Builtin {
                    continue;
                }
                let mut r = evaluate(g, c, base, &j, obs.external.get(&i));
                r.group = Some(name.clone());
                // A group counts when it fails, or when it has enough samples to decide.
                let counts =
                    matches!(r.verdict, Verdict::Fail(_)) || r.samples >= self.spec.min_samples;
                if !counts {
                    r.verdict = Verdict::Pass;
                    r.needed = None;
                }
                if let Verdict::Fail(w) = &r.verdict {
                    group_failures
                        .entry(name.clone())
                        .or_default()
                        .push(format!("{}: {w}", r.gate));
                }
                results.push(r);
            }
        }
        self.state.last_evaluation_at = Some(now);
        let cohort_failing = results
            .iter()
            .any(|r| r.group.is_none() && matches!(r.verdict, Verdict::Fail(_)));
        if !cohort_failing
            && self.spec.on_group_failure == OnGroupFailure::Exclude
            && !group_failures.is_empty()
        {
            for (group, why) in &group_failures {
                self.exclude_group(d, obs, now, group, why.join("; "));
            }
            results.retain(|r| {
                r.group
                    .as_ref()
                    .is_none_or(|g| !group_failures.contains_key(g))
            });
        }
        let failing: Vec<String> = results
            .iter()
            .filter_map(|r| match &r.verdict {
                Verdict::Fail(w) => Some(format!("{}: {w}", r.name())),
                _ => None,
            })
            .collect();
        let unsure: Vec<String> = results
            .iter()
            .filter_map(|r| match &r.verdict {
                Verdict::Inconclusive(w) | Verdict::Error(w) => Some(format!("{}: {w}", r.name())),
                _ => None,
            })
            .collect();
        let errors = results
            .iter()
            .any(|r| matches!(r.verdict, Verdict::Error(_)));
        self.state.last_gates = results.clone();
        if !failing.is_empty() {
            self.state.last_passed = false;
            self.state.consecutive_failures += 1;
            let msg = format!(
                "evaluation failed ({} of {} consecutive allowed): {}",
                self.state.consecutive_failures,
                self.spec.failure_limit,
                failing.join("; ")
            );
            self.audit(d, now, "evaluation", bounded(msg), results);
            if self.state.consecutive_failures >= self.spec.failure_limit {
                self.abort(
                    d,
                    now,
                    StopCause::Gates,
                    bounded(format!("health gates failed: {}", failing.join("; "))),
                    self.spec.on_failure == OnFailure::Rollback,
                );
            } else {
                self.hold(
                    d,
                    now,
                    HoldKind::Failing,
                    format!("gate failing: {}", failing.join("; ")),
                );
            }
            return;
        }
        self.state.consecutive_failures = 0;
        if !unsure.is_empty() {
            self.state.last_passed = false;
            self.state.consecutive_errors = if errors {
                self.state.consecutive_errors + 1
            } else {
                0
            };
            self.audit(
                d,
                now,
                "evaluation",
                bounded(format!("inconclusive: {}", unsure.join("; "))),
                results,
            );
            if errors && self.state.consecutive_errors >= self.spec.error_limit {
                self.abort(
                    d,
                    now,
                    StopCause::ProviderErrors,
                    bounded(format!(
                        "{} consecutive evaluations with provider errors: {}",
                        self.state.consecutive_errors,
                        unsure.join("; ")
                    )),
                    self.spec.on_failure == OnFailure::Rollback,
                );
            } else if errors {
                self.hold(
                    d,
                    now,
                    HoldKind::ProviderError,
                    format!("metrics provider error: {}", unsure.join("; ")),
                );
            } else {
                // Still collecting data: no hold (the window has not ended), nothing to notify.
                if self
                    .state
                    .hold
                    .as_ref()
                    .is_some_and(|h| h.kind != HoldKind::Undecided)
                {
                    self.state.hold = None;
                }
                self.state.reason =
                    Some(bounded(format!("collecting data: {}", unsure.join("; "))));
            }
            return;
        }
        self.state.consecutive_errors = 0;
        self.state.last_passed = true;
        self.unhold();
        self.audit(d, now, "evaluation", "all gates pass".into(), results);
    }

    /// Canary and baseline metrics per group, for groups with canary data; empty when the
    /// eligible devices form a single group or there are no per-device metrics.
    fn group_metrics(
        &self,
        obs: &Observation<'_>,
    ) -> BTreeMap<String, (MetricsAggregate, MetricsAggregate)> {
        let mut out: BTreeMap<String, (MetricsAggregate, MetricsAggregate)> = BTreeMap::new();
        if obs.devices.is_empty() || self.spec.group_by.is_empty() {
            return out;
        }
        let (eligible, _) = self.eligible(obs.fleet);
        let mut all = BTreeSet::new();
        for x in &eligible {
            let g = self.group_of(x);
            all.insert(g.clone());
            if self.state.excluded_groups.contains(&g) {
                continue;
            }
            let Some(m) = obs.devices.get(&x.id) else {
                continue;
            };
            let e = out.entry(g).or_default();
            if self.state.cohort.contains(&x.id) {
                e.0.merge(m);
            } else {
                e.1.merge(m);
            }
        }
        if all.len() < 2 {
            return BTreeMap::new();
        }
        out.retain(|_, (c, _)| c.requests > 0 || c.temp_samples > 0);
        out
    }

    /// Sends a group's cohort devices back to the baseline and leaves the group out.
    fn exclude_group(
        &mut self,
        d: &mut Decision,
        obs: &Observation<'_>,
        now: i64,
        group: &str,
        why: String,
    ) {
        self.state.excluded_groups.insert(group.to_string());
        let devices: Vec<String> = obs
            .fleet
            .iter()
            .filter(|x| self.state.cohort.contains(&x.id) && self.group_of(x) == group)
            .map(|x| x.id.clone())
            .collect();
        let reason = bounded(format!("group {group} excluded: {why}"));
        self.audit(d, now, "exclude", reason.clone(), vec![]);
        d.effects.push(Effect::Notify {
            event: RolloutEvent::GroupExcluded {
                group: group.to_string(),
                reason,
            },
        });
        if let Some(base) = &self.baseline
            && !devices.is_empty()
        {
            self.state.rolled_back.extend(devices.iter().cloned());
            d.effects.push(Effect::Rollback {
                devices,
                release: base.clone(),
            });
        }
    }

    /// Stops the rollout because an outside signal (a firing alert) says the release is
    /// unhealthy: like failing gates, it rolls the cohort back or pauses, per `on_failure`.
    /// Errs (and changes nothing) when the rollout is already finished, or already paused
    /// and `on_failure` is `pause`.
    pub fn fail(&mut self, reason: String, now: i64) -> Result<Decision, String> {
        let rollback = self.spec.on_failure == OnFailure::Rollback;
        if self.is_finished() {
            return Err(
                format!("rollout {} is already {:?}", self.id, self.state.phase).to_lowercase(),
            );
        }
        if !rollback && self.state.phase == Phase::Paused {
            return Err(format!("rollout {} is already paused", self.id));
        }
        let mut d = Decision::default();
        self.abort(&mut d, now, StopCause::Alert, reason, rollback);
        Ok(d)
    }

    /// A person sends the release's devices back to the baseline: an unfinished rollout is
    /// aborted (as [`Command::Abort`]); a completed one is reopened only to assign the
    /// baseline to every device that got the release (it ends `aborted`, cause operator).
    /// Refused without a baseline or once aborted (its devices went back then).
    pub fn rollback(&mut self, now: i64) -> Result<Decision, String> {
        if self.state.phase == Phase::Aborted {
            return Err(format!(
                "rollout {} is already aborted: its devices went back then",
                self.id
            ));
        }
        let Some(base) = &self.baseline else {
            return Err(format!(
                "rollout {} has no baseline release to roll back to (the app's first deployment)",
                self.id
            ));
        };
        let reason = if self.state.phase == Phase::Completed {
            format!("rolled back to {base} by an operator after completion")
        } else {
            format!("rolled back to {base} by an operator")
        };
        let mut d = Decision::default();
        self.abort(&mut d, now, StopCause::Operator, reason, true);
        Ok(d)
    }

    /// Applies a person's command.
    pub fn command(&mut self, cmd: Command, now: i64) -> Result<Decision, String> {
        let mut d = Decision::default();
        if self.is_finished() {
            return Err(
                format!("rollout {} is already {:?}", self.id, self.state.phase).to_lowercase(),
            );
        }
        match cmd {
            Command::Abort => self.abort(
                &mut d,
                now,
                StopCause::Operator,
                "aborted by an operator".into(),
                true,
            ),
            Command::Pause => {
                if self.state.phase == Phase::Paused {
                    return Err("already paused".into());
                }
                self.state.phase = Phase::Paused;
                self.state.reason = Some("paused by an operator".into());
                self.audit(
                    &mut d,
                    now,
                    "command",
                    "paused by an operator".into(),
                    vec![],
                );
            }
            Command::Resume => {
                if self.state.phase != Phase::Paused {
                    return Err(format!("not paused (phase {:?})", self.state.phase).to_lowercase());
                }
                self.state.phase = Phase::Progressing;
                self.unhold();
                self.state.consecutive_failures = 0;
                self.state.consecutive_errors = 0;
                if matches!(self.spec.steps[self.state.step], Step::Pause(_)) {
                    self.advance(&mut d, now, "resumed by an operator");
                } else {
                    self.audit(
                        &mut d,
                        now,
                        "command",
                        "resumed by an operator".into(),
                        vec![],
                    );
                }
            }
            Command::Approve => {
                if self.state.phase != Phase::AwaitingApproval {
                    return Err("the rollout is not waiting for approval".into());
                }
                self.state.phase = Phase::Progressing;
                self.advance(&mut d, now, "approved by an operator");
            }
            Command::Promote => {
                if self.state.phase == Phase::Paused {
                    return Err("the rollout is paused: resume it first".into());
                }
                self.state.phase = Phase::Progressing;
                self.advance(&mut d, now, "promoted by an operator");
            }
        }
        Ok(d)
    }
}

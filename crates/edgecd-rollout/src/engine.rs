//! The rollout state machine. `Rollout::tick` takes an observation (fleet, cohort metrics,
//! external gate values, time) and returns effects plus audit records; `Rollout::command`
//! applies a person's promote/pause/resume/abort/approve. All state is serializable so the
//! server can persist it and resume after a restart without applying an effect twice
//! (effects are derived from state changes that are saved together with them).
use crate::cohort::{Device, Requirements, groups_in_order, grow, select_order};
use crate::gates::{ExternalValue, GateResult, Verdict, evaluate};
use crate::spec::{OnFailure, RolloutSpec, SpecError, Step};
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
}

impl StopCause {
    pub const ALL: [StopCause; 5] = [
        StopCause::Gates,
        StopCause::ProviderErrors,
        StopCause::FailedInstalls,
        StopCause::Operator,
        StopCause::Alert,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            StopCause::Gates => "gates",
            StopCause::ProviderErrors => "provider_errors",
            StopCause::FailedInstalls => "failed_installs",
            StopCause::Operator => "operator",
            StopCause::Alert => "alert",
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
    Started { cohort_target: String },
    StepPromoted { step: usize, description: String },
    Held { reason: String },
    ApprovalNeeded { step: usize },
    Aborted { reason: String },
    RolledBack { devices: usize, release: String },
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

    fn hold(&mut self, d: &mut Decision, now: i64, reason: String) {
        if self.state.reason.as_deref() != Some(reason.as_str()) {
            d.effects.push(Effect::Notify {
                event: RolloutEvent::Held {
                    reason: reason.clone(),
                },
            });
            self.audit(d, now, "hold", reason.clone(), vec![]);
            self.state.reason = Some(reason);
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
        self.state.reason = None;
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
                let target: BTreeSet<String> = match (c.devices, c.percent, c.groups) {
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
                let new: Vec<String> = target.difference(&self.state.cohort).cloned().collect();
                if !new.is_empty() {
                    if let Some(w) = &self.spec.window
                        && !w.contains(now)
                    {
                        self.hold(
                            &mut d,
                            now,
                            format!(
                                "outside the maintenance window ({} {}–{} {})",
                                if w.days.is_empty() {
                                    "daily".to_string()
                                } else {
                                    w.days.join(",")
                                },
                                w.from,
                                w.to,
                                w.tz
                            ),
                        );
                        return d;
                    }
                    self.state.cohort.extend(new.iter().cloned());
                    self.state.reason = None;
                    self.audit(
                        &mut d,
                        now,
                        "assign",
                        format!(
                            "assigned {} to {} more devices: cohort {} of {} eligible",
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
                let running = obs
                    .fleet
                    .iter()
                    .filter(|x| {
                        self.state.cohort.contains(&x.id)
                            && x.running.as_deref() == Some(self.spec.release.as_str())
                    })
                    .count();
                let failed = self.failed_installs(obs.fleet).len();
                let pending = self.state.cohort.len()
                    - running
                    - failed.min(self.state.cohort.len() - running);
                if pending > 0 {
                    self.hold(
                        &mut d,
                        now,
                        format!(
                            "waiting for {pending} of {} cohort devices to install and report {}",
                            self.state.cohort.len(),
                            self.spec.release
                        ),
                    );
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
                    self.evaluate(&mut d, obs);
                    if self.is_finished() || self.state.phase == Phase::Paused {
                        return d;
                    }
                }
                if now - self.state.step_started_at >= a.duration.as_secs() as i64 {
                    if self.state.last_passed {
                        self.advance(&mut d, now, "analysis passed");
                    } else {
                        let why = self
                            .state
                            .reason
                            .clone()
                            .unwrap_or_else(|| "no passing evaluation yet".into());
                        self.hold(
                            &mut d,
                            now,
                            format!(
                                "analysis time is up but the last evaluation did not pass: {why}"
                            ),
                        );
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
                Some(dur) => self.hold(
                    &mut d,
                    now,
                    format!(
                        "pausing until {} ({}s left)",
                        self.state.step_started_at + dur.as_secs() as i64,
                        self.state.step_started_at + dur.as_secs() as i64 - now
                    ),
                ),
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

    fn evaluate(&mut self, d: &mut Decision, obs: &Observation<'_>) {
        let now = obs.now;
        let results: Vec<GateResult> = self
            .spec
            .gates
            .iter()
            .enumerate()
            .map(|(i, g)| {
                evaluate(
                    g,
                    obs.canary,
                    obs.baseline,
                    self.spec.min_samples,
                    obs.external.get(&i),
                )
            })
            .collect();
        self.state.last_evaluation_at = Some(now);
        let failing: Vec<String> = results
            .iter()
            .filter_map(|r| match &r.verdict {
                Verdict::Fail(w) => Some(format!("{}: {w}", r.gate)),
                _ => None,
            })
            .collect();
        let unsure: Vec<String> = results
            .iter()
            .filter_map(|r| match &r.verdict {
                Verdict::Inconclusive(w) | Verdict::Error(w) => Some(format!("{}: {w}", r.gate)),
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
            self.audit(d, now, "evaluation", msg, results);
            if self.state.consecutive_failures >= self.spec.failure_limit {
                self.abort(
                    d,
                    now,
                    StopCause::Gates,
                    format!("health gates failed: {}", failing.join("; ")),
                    self.spec.on_failure == OnFailure::Rollback,
                );
            } else {
                self.hold(d, now, format!("gate failing: {}", failing.join("; ")));
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
                format!("inconclusive: {}", unsure.join("; ")),
                results,
            );
            if errors && self.state.consecutive_errors >= self.spec.error_limit {
                self.abort(
                    d,
                    now,
                    StopCause::ProviderErrors,
                    format!(
                        "{} consecutive evaluations with provider errors: {}",
                        self.state.consecutive_errors,
                        unsure.join("; ")
                    ),
                    self.spec.on_failure == OnFailure::Rollback,
                );
            } else {
                self.hold(
                    d,
                    now,
                    format!("holding, gates inconclusive: {}", unsure.join("; ")),
                );
            }
            return;
        }
        self.state.consecutive_errors = 0;
        self.state.last_passed = true;
        self.state.reason = None;
        self.audit(d, now, "evaluation", "all gates pass".into(), results);
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
                self.state.reason = None;
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

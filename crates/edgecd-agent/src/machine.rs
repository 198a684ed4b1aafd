//! The install state machine (design §5) as a pure function: no IO, no clock.
//!
//! `Idle → Downloading → Verifying → Staged → Activating → Trial → Committed`, with
//! `RollingBack` from any step after the switch of `current`. The driver (`agent`) persists
//! the state returned by [`transition`] (atomically) *before* it performs the effects, so a
//! kill at any moment restarts into a state whose effects are idempotent to redo:
//! - `Downloading`/`Verifying`: resume the downloads, verify again, unpack again (into the
//!   inactive slot, never the one `current` points to).
//! - `Staged`/`Activating`/`Trial`: `current` may point to either slot; `Start` counts the
//!   start and either re-activates the target or, after `max_trial_starts` unconfirmed starts
//!   (crash loop), rolls back.
//! - `RollingBack`: switch `current` back to the previous slot and re-activate it.
//!
//! A newer assignment that arrives while a release is downloading or verifying supersedes
//! it there (`current` and both installed releases untouched): another release becomes the
//! target, the active release cancels the install. Once `current` is switched (activation,
//! trial) the install runs to its end and the newer assignment is applied right after.
//!
//! (The self-test vectors of a bundle need the inference runtime, so `SelfTest` is not a
//! separate phase here: the health check, run by the runtime's hook, covers it.)

use edgecd_api::protocol::{Outcome, OutcomeKind, Phase, ReleaseRef, RunningRelease};
use serde::{Deserialize, Serialize};

/// One of the two install slots.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Slot {
    A,
    B,
}

impl Slot {
    pub fn other(self) -> Self {
        match self {
            Slot::A => Slot::B,
            Slot::B => Slot::A,
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            Slot::A => "a",
            Slot::B => "b",
        }
    }
}

/// A release installed in a slot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Installed {
    pub app: String,
    pub version: String,
    pub bundle_digest: String,
    pub slot: Slot,
    /// The assignment version it was installed for.
    pub assignment_version: u64,
    /// The runtime image it runs in (podman mode; `None`: the native runtime). Image and
    /// model are one A/B unit: switching back to this slot brings this image back too.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
}

impl Installed {
    pub fn label(&self) -> String {
        format!("{}@{}", self.app, self.version)
    }
    pub fn running(&self) -> RunningRelease {
        RunningRelease {
            app: self.app.clone(),
            version: self.version.clone(),
            bundle_digest: self.bundle_digest.clone(),
            slot: self.slot.name().to_string(),
            image: self.image.clone(),
        }
    }
}

/// The install in flight.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Target {
    pub assignment_version: u64,
    pub release: ReleaseRef,
    pub slot: Slot,
    /// The runtime image pulled and verified with the release (set when it is unpacked).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
}

impl Target {
    pub fn label(&self) -> String {
        format!("{}@{}", self.release.app, self.release.version)
    }
    fn installed(&self) -> Installed {
        Installed {
            app: self.release.app.clone(),
            version: self.release.version.clone(),
            bundle_digest: self.release.bundle_digest.clone(),
            slot: self.slot,
            assignment_version: self.assignment_version,
            image: self.image.clone(),
        }
    }
}

/// Everything the agent persists in `state.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct State {
    pub phase: Phase,
    /// Highest assignment version accepted (rollback-attack protection).
    pub highest_version: u64,
    /// Assignment versions up to this one are finished (committed, refused or rolled back).
    pub done_version: u64,
    /// The committed release (what `current` points to outside an install).
    pub active: Option<Installed>,
    pub target: Option<Target>,
    /// Starts of the agent since the target was activated without being confirmed.
    pub trial_starts: u32,
    /// Why a rollback is in progress.
    pub rollback_reason: Option<String>,
    pub last_outcome: Option<Outcome>,
    /// The release committed before `active` (still in the other slot): where a crash loop
    /// after commit goes back to, image and model together.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous: Option<Installed>,
    /// The committed release a crash loop is rolling back from (for the outcome).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rolling_back_from: Option<Installed>,
}

impl Default for State {
    fn default() -> Self {
        Self {
            phase: Phase::Idle,
            highest_version: 0,
            done_version: 0,
            active: None,
            target: None,
            trial_starts: 0,
            rollback_reason: None,
            last_outcome: None,
            previous: None,
            rolling_back_from: None,
        }
    }
}

impl State {
    /// The phase to rest in when nothing is in flight.
    fn resting(&self) -> Phase {
        if self.active.is_some() {
            Phase::Committed
        } else {
            Phase::Idle
        }
    }
    /// The slot `current` should point to once at rest.
    pub fn resting_slot(&self) -> Option<Slot> {
        self.active.as_ref().map(|a| a.slot)
    }
}

/// What happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// The agent (re)started.
    Start,
    /// A verified assignment for a release that differs from the active one.
    Assigned {
        version: u64,
        release: Box<ReleaseRef>,
    },
    /// A verified assignment for the release that already runs: just record its version.
    AssignedSame { version: u64 },
    /// All blobs are downloaded and their digests and sizes match.
    Downloaded,
    /// The bundle verified and is unpacked (and synced) into the target slot; `image` is the
    /// runtime image pulled and verified with it (podman mode), `None` for the native runtime.
    Unpacked { image: Option<String> },
    /// The activation hook ran.
    Activated(Result<(), String>),
    /// The health check passed or failed within its deadline.
    Health(Result<(), String>),
    /// `current` points to the previous slot again and it was re-activated.
    RolledBack,
    /// Verification refused the assignment or its release (permanent for this version).
    Refused {
        version: u64,
        release: Option<String>,
        reason: String,
    },
    /// A transient failure (network, disk full): retried later.
    Failed(String),
    /// The committed release's runtime keeps crashing (container restarts or exits): go back
    /// to the previous release, image and model together.
    CrashLoop(String),
}

/// What the driver must do next (after persisting the new state).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// Resume or start the downloads of the target's blobs, then check them.
    Download,
    /// Verify the bundle and unpack it into the target's slot.
    Unpack,
    /// Point `current` at this slot (rename(2)).
    Switch(Slot),
    /// Run the activation hook for what `current` points to.
    Activate,
    /// Run the health check.
    HealthCheck,
    /// Point `current` back at the previous slot (or remove it when there is none).
    SwitchBack(Option<Slot>),
    /// Tell the server (check in now).
    Report,
}

/// Tunables of the machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Starts allowed in `Activating`/`Trial` before falling back (crash loop).
    pub max_trial_starts: u32,
}

/// An event that makes no sense in the current phase.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("event {event} is not valid in phase {phase}")]
pub struct InvalidTransition {
    pub phase: Phase,
    pub event: String,
}

fn outcome(
    kind: OutcomeKind,
    version: u64,
    release: Option<String>,
    reason: String,
    now: u64,
) -> Outcome {
    Outcome {
        kind,
        assignment_version: version,
        release,
        reason,
        at: now,
    }
}

/// The transition function. `now` (unix seconds) only stamps outcomes.
pub fn transition(
    s: &State,
    ev: Event,
    limits: Limits,
    now: u64,
) -> Result<(State, Vec<Effect>), InvalidTransition> {
    use Phase::*;
    let mut n = s.clone();
    let invalid = || InvalidTransition {
        phase: s.phase,
        event: format!("{ev:?}").chars().take(80).collect(),
    };
    let effects = match (&s.phase, &ev) {
        (_, Event::Start) => match s.phase {
            Idle | Committed => vec![],
            Downloading | Verifying => vec![Effect::Download],
            Staged => vec![
                Effect::Switch(target_slot(s).ok_or_else(invalid)?),
                Effect::Activate,
            ],
            SelfTest | Activating | Trial => {
                n.trial_starts += 1;
                if n.trial_starts > limits.max_trial_starts {
                    let reason = format!(
                        "crash loop: the release was not confirmed healthy within {} starts of the agent",
                        limits.max_trial_starts
                    );
                    n.phase = RollingBack;
                    n.rollback_reason = Some(reason);
                    vec![Effect::SwitchBack(s.resting_slot())]
                } else {
                    n.phase = Activating;
                    vec![
                        Effect::Switch(target_slot(s).ok_or_else(invalid)?),
                        Effect::Activate,
                    ]
                }
            }
            RollingBack => vec![Effect::SwitchBack(s.resting_slot())],
        },
        (Idle | Committed, Event::Assigned { version, release }) => {
            if *version < s.highest_version {
                return Err(invalid());
            }
            n.highest_version = *version;
            let slot = s.active.as_ref().map_or(Slot::A, |a| a.slot.other());
            n.target = Some(Target {
                assignment_version: *version,
                release: (**release).clone(),
                slot,
                image: None,
            });
            n.phase = Downloading;
            n.trial_starts = 0;
            n.rollback_reason = None;
            vec![Effect::Download]
        }
        (Idle | Committed, Event::AssignedSame { version }) => {
            n.highest_version = s.highest_version.max(*version);
            n.done_version = s.done_version.max(*version);
            vec![]
        }
        (Downloading | Verifying, Event::Assigned { version, release }) => {
            // A newer assignment supersedes the install in flight (nothing switched yet).
            let t = s.target.as_ref().ok_or_else(invalid)?;
            if *version < s.highest_version || *version < t.assignment_version {
                return Err(invalid());
            }
            n.highest_version = *version;
            n.done_version = s.done_version.max(t.assignment_version);
            n.target = Some(Target {
                assignment_version: *version,
                release: (**release).clone(),
                slot: t.slot,
                image: None,
            });
            n.phase = Downloading;
            vec![Effect::Download]
        }
        (Downloading | Verifying, Event::AssignedSame { version }) => {
            // Back to the release that runs (typically a rollback during the install): cancel.
            let t = s.target.as_ref().ok_or_else(invalid)?;
            if *version < s.highest_version || *version < t.assignment_version {
                return Err(invalid());
            }
            n.highest_version = *version;
            n.done_version = s.done_version.max(*version);
            n.target = None;
            n.phase = n.resting();
            vec![Effect::Report]
        }
        (Downloading | Verifying, Event::Downloaded) => {
            n.phase = Verifying;
            vec![Effect::Unpack]
        }
        (Verifying, Event::Unpacked { image }) => {
            // Staged, and immediately on to activation: persist Activating before the switch.
            if let Some(t) = n.target.as_mut() {
                t.image = image.clone();
            }
            n.phase = Activating;
            n.trial_starts = 0;
            vec![
                Effect::Switch(target_slot(s).ok_or_else(invalid)?),
                Effect::Activate,
            ]
        }
        (Activating, Event::Activated(Ok(()))) => {
            n.phase = Trial;
            vec![Effect::HealthCheck]
        }
        (Activating, Event::Activated(Err(e))) | (Trial, Event::Health(Err(e))) => {
            n.phase = RollingBack;
            let what = if s.phase == Activating {
                "activation failed"
            } else {
                "health check failed"
            };
            n.rollback_reason = Some(format!("{what}: {e}"));
            vec![Effect::SwitchBack(s.resting_slot())]
        }
        (Trial, Event::Health(Ok(()))) => {
            let t = s.target.as_ref().ok_or_else(invalid)?;
            n.previous = s.active.clone().filter(|a| a.slot != t.slot);
            n.active = Some(t.installed());
            n.done_version = s.done_version.max(t.assignment_version);
            n.last_outcome = Some(outcome(
                OutcomeKind::Committed,
                t.assignment_version,
                Some(t.label()),
                String::new(),
                now,
            ));
            n.target = None;
            n.phase = Committed;
            n.trial_starts = 0;
            vec![Effect::Report]
        }
        (Committed, Event::CrashLoop(reason)) => {
            let Some(prev) = s.previous.clone() else {
                // Nothing to go back to: the runtime restarts on its own; nothing switches.
                return Err(invalid());
            };
            n.rolling_back_from = s.active.clone();
            n.active = Some(prev.clone());
            n.previous = None;
            n.phase = RollingBack;
            n.rollback_reason = Some(format!("crash loop after commit: {reason}"));
            vec![Effect::SwitchBack(Some(prev.slot))]
        }
        (RollingBack, Event::RolledBack) => {
            let t = s.target.as_ref();
            let v = t.map_or(
                s.rolling_back_from
                    .as_ref()
                    .map_or(s.highest_version, |f| f.assignment_version),
                |t| t.assignment_version,
            );
            n.done_version = s.done_version.max(v);
            let reason = s
                .rollback_reason
                .clone()
                .unwrap_or_else(|| "rolled back".into());
            n.last_outcome = Some(outcome(
                OutcomeKind::RolledBack,
                v,
                t.map(Target::label)
                    .or_else(|| s.rolling_back_from.as_ref().map(Installed::label)),
                reason,
                now,
            ));
            n.target = None;
            n.rolling_back_from = None;
            n.rollback_reason = None;
            n.trial_starts = 0;
            n.phase = n.resting();
            vec![Effect::Report]
        }
        (
            Idle | Committed | Downloading | Verifying,
            Event::Refused {
                version,
                release,
                reason,
            },
        ) => {
            n.done_version = s.done_version.max(*version);
            n.last_outcome = Some(outcome(
                OutcomeKind::Refused,
                *version,
                release.clone(),
                reason.clone(),
                now,
            ));
            n.target = None;
            n.phase = n.resting();
            vec![Effect::Report]
        }
        (Downloading | Verifying, Event::Failed(reason))
        | (Idle | Committed, Event::Failed(reason)) => {
            let t = s.target.as_ref();
            let v = t.map_or(s.highest_version, |t| t.assignment_version);
            n.last_outcome = Some(outcome(
                OutcomeKind::Failed,
                v,
                t.map(Target::label),
                reason.clone(),
                now,
            ));
            n.target = None;
            n.phase = n.resting();
            vec![Effect::Report]
        }
        _ => return Err(invalid()),
    };
    Ok((n, effects))
}

fn target_slot(s: &State) -> Option<Slot> {
    s.target.as_ref().map(|t| t.slot)
}

#[cfg(test)]
mod tests {
    use super::*;
    use edgecd_api::profile::{HardwareProfile, RuntimePin};
    use edgecd_api::protocol::BlobRef;

    const L: Limits = Limits {
        max_trial_starts: 3,
    };

    fn rel(v: &str) -> ReleaseRef {
        let b = |c: char| BlobRef {
            digest: format!("sha256:{}", c.to_string().repeat(64)),
            size: 1,
        };
        ReleaseRef {
            app: "app".into(),
            version: v.into(),
            bundle_digest: b('d').digest,
            manifest: b('1'),
            manifest_sig: b('2'),
            bundle: b('3'),
            bundle_sig: b('4'),
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

    fn step(s: &State, e: Event) -> (State, Vec<Effect>) {
        transition(s, e, L, 100).expect("valid transition")
    }

    fn install(s: &State, version: u64, v: &str) -> State {
        let (s, e) = step(
            s,
            Event::Assigned {
                version,
                release: Box::new(rel(v)),
            },
        );
        assert_eq!(e, vec![Effect::Download]);
        let (s, e) = step(&s, Event::Downloaded);
        assert_eq!(e, vec![Effect::Unpack]);
        let (s, e) = step(&s, Event::Unpacked { image: None });
        assert_eq!(e[1], Effect::Activate);
        let (s, e) = step(&s, Event::Activated(Ok(())));
        assert_eq!(e, vec![Effect::HealthCheck]);
        let (s, e) = step(&s, Event::Health(Ok(())));
        assert_eq!(e, vec![Effect::Report]);
        s
    }

    fn install_with_image(s: &State, version: u64, v: &str, image: &str) -> State {
        let (s, _) = step(
            s,
            Event::Assigned {
                version,
                release: Box::new(rel(v)),
            },
        );
        let (s, _) = step(&s, Event::Downloaded);
        let (s, _) = step(
            &s,
            Event::Unpacked {
                image: Some(image.into()),
            },
        );
        let (s, _) = step(&s, Event::Activated(Ok(())));
        step(&s, Event::Health(Ok(()))).0
    }

    #[test]
    fn image_and_model_are_one_unit_across_commit_and_crash_loop() {
        let s = install_with_image(&State::default(), 1, "1.0.0", "reg/infer@sha256:1");
        let a = s.active.clone().expect("active");
        assert_eq!(a.image.as_deref(), Some("reg/infer@sha256:1"));
        assert_eq!(a.running().image.as_deref(), Some("reg/infer@sha256:1"));
        assert_eq!(s.previous, None);
        // A crash loop with nothing to go back to switches nothing.
        assert!(transition(&s, Event::CrashLoop("exited".into()), L, 1).is_err());
        let s = install_with_image(&s, 2, "2.0.0", "reg/infer@sha256:2");
        assert_eq!(s.previous.as_ref().map(|p| p.slot), Some(Slot::A));
        assert_eq!(
            s.active.as_ref().and_then(|a| a.image.as_deref()),
            Some("reg/infer@sha256:2")
        );
        // After commit, the runtime crash-loops: back to release 1 AND image 1.
        let (s, e) = step(&s, Event::CrashLoop("restarted 5 times".into()));
        assert_eq!(e, vec![Effect::SwitchBack(Some(Slot::A))]);
        assert_eq!(s.phase, Phase::RollingBack);
        let a = s.active.clone().expect("active");
        assert_eq!(
            (a.version.as_str(), a.image.as_deref()),
            ("1.0.0", Some("reg/infer@sha256:1"))
        );
        // A restart mid-rollback switches to the same slot again.
        let (s2, e) = step(&s, Event::Start);
        assert_eq!(e, vec![Effect::SwitchBack(Some(Slot::A))]);
        let (s, e) = step(&s2, Event::RolledBack);
        assert_eq!(e, vec![Effect::Report]);
        assert_eq!(s.phase, Phase::Committed);
        let o = s.last_outcome.clone().expect("outcome");
        assert_eq!(o.kind, OutcomeKind::RolledBack);
        assert_eq!(o.release.as_deref(), Some("app@2.0.0"));
        assert_eq!(o.assignment_version, 2);
        assert!(o.reason.contains("crash loop after commit"), "{}", o.reason);
        assert_eq!(s.previous, None);
        assert_eq!(s.rolling_back_from, None);
        // A failed health check during an install keeps the committed image.
        let (t, _) = step(
            &s,
            Event::Assigned {
                version: 3,
                release: Box::new(rel("3.0.0")),
            },
        );
        let (t, _) = step(&t, Event::Downloaded);
        let (t, _) = step(
            &t,
            Event::Unpacked {
                image: Some("reg/infer@sha256:3".into()),
            },
        );
        assert_eq!(
            t.target.as_ref().and_then(|t| t.image.as_deref()),
            Some("reg/infer@sha256:3")
        );
        let (t, _) = step(&t, Event::Activated(Ok(())));
        let (t, _) = step(&t, Event::Health(Err("selftest".into())));
        let (t, _) = step(&t, Event::RolledBack);
        assert_eq!(
            t.active.as_ref().and_then(|a| a.image.as_deref()),
            Some("reg/infer@sha256:1")
        );
    }

    #[test]
    fn happy_path_alternates_slots() {
        let s = install(&State::default(), 1, "1.0.0");
        assert_eq!(s.phase, Phase::Committed);
        assert_eq!(s.active.as_ref().map(|a| a.slot), Some(Slot::A));
        let s = install(&s, 2, "2.0.0");
        assert_eq!(
            s.active.as_ref().map(|a| (a.slot, a.version.as_str())),
            Some((Slot::B, "2.0.0"))
        );
        assert_eq!(s.done_version, 2);
        assert_eq!(
            s.last_outcome.as_ref().map(|o| o.kind),
            Some(OutcomeKind::Committed)
        );
    }

    #[test]
    fn failed_health_rolls_back_to_previous_slot() {
        let s = install(&State::default(), 1, "1.0.0");
        let (s, _) = step(
            &s,
            Event::Assigned {
                version: 2,
                release: Box::new(rel("2.0.0")),
            },
        );
        let (s, _) = step(&s, Event::Downloaded);
        let (s, e) = step(&s, Event::Unpacked { image: None });
        assert_eq!(e[0], Effect::Switch(Slot::B));
        let (s, _) = step(&s, Event::Activated(Ok(())));
        let (s, e) = step(&s, Event::Health(Err("HTTP 500".into())));
        assert_eq!(e, vec![Effect::SwitchBack(Some(Slot::A))]);
        assert_eq!(s.phase, Phase::RollingBack);
        let (s, e) = step(&s, Event::RolledBack);
        assert_eq!(e, vec![Effect::Report]);
        assert_eq!(s.phase, Phase::Committed);
        assert_eq!(s.active.as_ref().map(|a| a.version.as_str()), Some("1.0.0"));
        let o = s.last_outcome.expect("outcome");
        assert_eq!(o.kind, OutcomeKind::RolledBack);
        assert!(
            o.reason.contains("health check failed: HTTP 500"),
            "{}",
            o.reason
        );
        assert_eq!(s.done_version, 2);
    }

    #[test]
    fn crash_loop_falls_back_after_max_starts() {
        let s = install(&State::default(), 1, "1.0.0");
        let (s, _) = step(
            &s,
            Event::Assigned {
                version: 2,
                release: Box::new(rel("2.0.0")),
            },
        );
        let (s, _) = step(&s, Event::Downloaded);
        let (mut s, _) = step(&s, Event::Unpacked { image: None });
        for i in 1..=3 {
            let (n, e) = step(&s, Event::Start);
            assert_eq!(n.trial_starts, i);
            assert_eq!(e, vec![Effect::Switch(Slot::B), Effect::Activate]);
            s = n;
        }
        let (s, e) = step(&s, Event::Start);
        assert_eq!(e, vec![Effect::SwitchBack(Some(Slot::A))]);
        assert!(
            s.rollback_reason
                .as_deref()
                .unwrap_or("")
                .contains("crash loop")
        );
        let (s, _) = step(&s, Event::RolledBack);
        assert_eq!(s.active.as_ref().map(|a| a.slot), Some(Slot::A));
    }

    #[test]
    fn restart_mid_download_resumes() {
        let (s, _) = step(
            &State::default(),
            Event::Assigned {
                version: 1,
                release: Box::new(rel("1.0.0")),
            },
        );
        let (s2, e) = step(&s, Event::Start);
        assert_eq!(e, vec![Effect::Download]);
        assert_eq!(s2, s);
    }

    #[test]
    fn refusal_leaves_active_release_and_is_final_for_that_version() {
        let s = install(&State::default(), 1, "1.0.0");
        let (s, _) = step(
            &s,
            Event::Assigned {
                version: 2,
                release: Box::new(rel("2.0.0")),
            },
        );
        let (s, e) = step(
            &s,
            Event::Refused {
                version: 2,
                release: Some("app@2.0.0".into()),
                reason: "digest mismatch".into(),
            },
        );
        assert_eq!(e, vec![Effect::Report]);
        assert_eq!(s.phase, Phase::Committed);
        assert_eq!(s.done_version, 2);
        assert_eq!(s.active.as_ref().map(|a| a.version.as_str()), Some("1.0.0"));
        assert!(s.target.is_none());
    }

    #[test]
    fn transient_failure_is_retried() {
        let (s, _) = step(
            &State::default(),
            Event::Assigned {
                version: 1,
                release: Box::new(rel("1.0.0")),
            },
        );
        let (s, _) = step(&s, Event::Failed("disk full".into()));
        assert_eq!(s.phase, Phase::Idle);
        assert_eq!(s.done_version, 0);
        assert_eq!(
            s.last_outcome.as_ref().map(|o| o.kind),
            Some(OutcomeKind::Failed)
        );
        assert!(
            transition(
                &s,
                Event::Assigned {
                    version: 1,
                    release: Box::new(rel("1.0.0"))
                },
                L,
                1
            )
            .is_ok()
        );
    }

    #[test]
    fn lower_version_and_nonsense_events_are_rejected() {
        let s = install(&State::default(), 5, "1.0.0");
        assert!(
            transition(
                &s,
                Event::Assigned {
                    version: 4,
                    release: Box::new(rel("0.9.0"))
                },
                L,
                1
            )
            .is_err()
        );
        assert!(transition(&s, Event::Health(Ok(())), L, 1).is_err());
        assert!(transition(&State::default(), Event::Unpacked { image: None }, L, 1).is_err());
    }

    fn downloading(s: &State, version: u64, v: &str) -> State {
        step(
            s,
            Event::Assigned {
                version,
                release: Box::new(rel(v)),
            },
        )
        .0
    }

    #[test]
    fn a_newer_assignment_supersedes_a_download_in_the_same_inactive_slot() {
        let s = install(&State::default(), 1, "1.0.0");
        let s = downloading(&s, 2, "2.0.0");
        let (s, e) = step(
            &s,
            Event::Assigned {
                version: 3,
                release: Box::new(rel("3.0.0")),
            },
        );
        assert_eq!(e, vec![Effect::Download]);
        assert_eq!(s.phase, Phase::Downloading);
        let t = s.target.as_ref().expect("target");
        assert_eq!((t.assignment_version, t.slot), (3, Slot::B));
        assert_eq!(t.release.version, "3.0.0");
        assert_eq!((s.highest_version, s.done_version), (3, 2));
        assert_eq!(s.active.as_ref().map(|a| a.version.as_str()), Some("1.0.0"));
        // Verifying too; an older version cannot supersede.
        let (v, _) = step(&s, Event::Downloaded);
        assert!(
            transition(
                &v,
                Event::Assigned {
                    version: 2,
                    release: Box::new(rel("2.0.0"))
                },
                L,
                1
            )
            .is_err()
        );
        let (v, e) = step(
            &v,
            Event::Assigned {
                version: 4,
                release: Box::new(rel("4.0.0")),
            },
        );
        assert_eq!((v.phase, e), (Phase::Downloading, vec![Effect::Download]));
    }

    #[test]
    fn a_rollback_to_the_running_release_cancels_the_install() {
        let s = install(&State::default(), 1, "1.0.0");
        let s = downloading(&s, 2, "2.0.0");
        let (s, e) = step(&s, Event::AssignedSame { version: 3 });
        assert_eq!(e, vec![Effect::Report]);
        assert_eq!(s.phase, Phase::Committed);
        assert!(s.target.is_none());
        assert_eq!((s.highest_version, s.done_version), (3, 3));
        assert_eq!(s.active.as_ref().map(|a| a.version.as_str()), Some("1.0.0"));
    }

    #[test]
    fn after_the_switch_a_newer_assignment_waits_for_the_end() {
        let s = install(&State::default(), 1, "1.0.0");
        let s = downloading(&s, 2, "2.0.0");
        let (s, _) = step(&s, Event::Downloaded);
        let (s, _) = step(&s, Event::Unpacked { image: None });
        for ev in [
            Event::Assigned {
                version: 3,
                release: Box::new(rel("3.0.0")),
            },
            Event::AssignedSame { version: 3 },
        ] {
            assert!(transition(&s, ev, L, 1).is_err(), "activating");
        }
    }

    #[test]
    fn same_release_only_records_the_version() {
        let s = install(&State::default(), 1, "1.0.0");
        let (s, e) = step(&s, Event::AssignedSame { version: 7 });
        assert!(e.is_empty());
        assert_eq!((s.highest_version, s.done_version), (7, 7));
    }
}

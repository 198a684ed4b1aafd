//! The rollout engine (design §6), pure: no I/O, no clock, no async.
//!
//! Input: a rollout spec, the fleet (devices with inventory and what they run), merged
//! metrics for the canary and baseline cohorts, results of external gate queries, and the
//! time. Output: effects for the server to apply (assign, roll back, notify) and an audit
//! record with the numbers behind every decision.
//!
//! Modules: `spec` (the YAML strategy and its validation), `cohort` (deterministic, stable
//! selection with `spread_by` and hardware compatibility), `gates` (gate evaluation →
//! pass/fail/inconclusive/error from confidence bounds), `stats` (the intervals and the
//! alpha each look spends), `window` (maintenance windows in an IANA time zone), `engine`
//! (the state machine: per-group gates, stratified first canary, bounded holds).

pub mod cohort;
pub mod engine;
pub mod gates;
pub mod spec;
pub mod stats;
pub mod window;

pub use cohort::{Device, select_order};
pub use engine::{
    AuditRecord, Command, Effect, Observation, Phase, Rollout, RolloutEvent, StopCause,
};
pub use gates::{ExternalValue, GateResult, Judgement, Verdict};
pub use spec::{
    Gate, Metric, OnFailure, OnGroupFailure, OnMaxHold, Provider, RolloutSpec, SpecError, Step,
};

//! The fleet simulator.
//!
//! Owns: scenario files (`scenario`: per-release and per-label behaviour — latency
//! distribution, error rate, confidence distribution, temperature, install failures, crash on
//! activate) and the synthesis of mergeable metric aggregates from them (`synth`); the virtual
//! devices (`fleet`); and their Prometheus exporter (`exporter`), which serves what each
//! device's runtime would export.

pub mod exporter;
pub mod fleet;
pub mod scenario;
pub mod synth;

pub use fleet::{Fleet, SimConfig, SimError, parse_label_pattern};
pub use scenario::{Behavior, Resolved, Scenario};
pub use synth::{Rng, synthesize};

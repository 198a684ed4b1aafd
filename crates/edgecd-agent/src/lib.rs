//! The edgecd device agent (design §3–5): enrolls once, checks in with its inventory and
//! real state, verifies every assignment and release before installing it into the inactive
//! A/B slot, activates, health-checks, commits or rolls back, and survives being killed at
//! any point. Blocking IO only (ureq + rustls); no async runtime.
//!
//! Modules: `machine` (the pure install state machine), `verify` (pure checks), `client`
//! (HTTP: enroll, check-in, capped resumable downloads), `admin` (admin API client for the CLI and tests), `fsutil` (atomic writes, symlink
//! switch), `hooks` (activation and health), `inventory`, `install` (bundle unpacking behind
//! a trait), `agent` (the driver), `cli` (flags of the `edgecd-agent` binary), `metrics`
//! (reads the runtime's metrics for check-ins), `exporter` (the agent's own local Prometheus
//! endpoint, `--metrics-listen`), `runtime` (runtime images under podman: pull by digest,
//! run, health, crash-loop signs, pruning, the quadlet), `logbuf` (the agent's recent log
//! lines in a bounded ring) and `report` (answers to an operator's logs/diagnose request).

pub mod admin;
pub mod agent;
pub mod cli;
pub mod client;
pub mod exporter;
pub mod fsutil;
pub mod hooks;
pub mod install;
pub mod inventory;
pub mod logbuf;
pub mod machine;
pub mod metrics;
pub mod report;
pub mod runtime;
pub mod verify;

pub use agent::{Agent, AgentError, Config};

//! Engine scenarios and property tests, driven with a fake clock and synthetic metrics.
use edgecd_api::metrics::MetricsAggregate;
use edgecd_api::profile::{HardwareProfile, RuntimePin};
use edgecd_rollout::cohort::{Device, Requirements};
use edgecd_rollout::engine::{
    Command, Effect, Observation, Phase, Rollout, RolloutEvent, StopCause,
};
use edgecd_rollout::gates::ExternalValue;
use edgecd_rollout::spec::{RolloutSpec, Step};
use proptest::prelude::*;
use std::collections::{BTreeMap, BTreeSet};

const NEW: &str = "clf@2.0.0";
const OLD: &str = "clf@1.0.0";

fn fleet(n: usize, sites: usize) -> Vec<Device> {
    (0..n)
        .map(|i| Device {
            id: format!("dev-{i:04}"),
            labels: [
                ("site".to_string(), format!("store-{}", i % sites)),
                ("fleet".to_string(), "retail".to_string()),
            ]
            .into(),
            board: Some("rpi5".into()),
            accelerator: None,
            runtimes: [("edgecd-infer".to_string(), "0.1.0".to_string())].into(),
            ram_mb: Some(8192),
            running: Some(OLD.into()),
            failed: None,
        })
        .collect()
}

fn req() -> Requirements {
    Requirements {
        hardware: HardwareProfile {
            board: "rpi5".into(),
            accelerator: None,
            min_ram_mb: Some(1024),
        },
        runtime: RuntimePin {
            name: "edgecd-infer".into(),
            version: "0.1.0".into(),
        },
    }
}

fn spec(yaml: &str) -> RolloutSpec {
    serde_yaml::from_str(yaml).expect("spec parses")
}

const STANDARD: &str = r#"
release: clf@2.0.0
selector: {fleet: retail}
steps:
  - canary: {devices: 4, spread_by: site}
  - analyze: {duration: 30m, interval: 5m}
  - canary: {percent: 25}
  - analyze: {duration: 10m, interval: 5m}
  - canary: {percent: 100}
gates:
  - {metric: latency_p95_ms, max: 300}
  - {metric: error_rate, max: 0.03}
  - {metric: latency_p95_ms, max_ratio: 1.2, against: baseline}
min_samples: 200
"#;

fn traffic(n: u64, latency: f64, error_every: u64) -> MetricsAggregate {
    let mut m = MetricsAggregate::default();
    for i in 0..n {
        // Spread ±20% around `latency`, like real request latencies.
        let spread = 0.8 + 0.4 * ((i * 7919) % 1000) as f64 / 1000.0;
        m.record(
            latency * spread,
            error_every > 0 && i % error_every == 0,
            Some(0.9),
        );
    }
    m
}

/// A tiny simulation: assigned devices install at the next tick; metrics come from `canary_of`.
struct Sim {
    rollout: Rollout,
    fleet: Vec<Device>,
    now: i64,
    assigned: BTreeSet<String>,
    rolled_back: Option<Vec<String>>,
    events: Vec<RolloutEvent>,
    assign_times: Vec<i64>,
}

impl Sim {
    fn new(spec: RolloutSpec, fleet: Vec<Device>, now: i64) -> Self {
        let (rollout, d) =
            Rollout::start("r-1", spec, req(), Some(OLD.into()), now).expect("starts");
        let mut s = Sim {
            rollout,
            fleet,
            now,
            assigned: BTreeSet::new(),
            rolled_back: None,
            events: vec![],
            assign_times: vec![],
        };
        s.apply(d.effects);
        s
    }

    fn apply(&mut self, effects: Vec<Effect>) {
        for e in effects {
            match e {
                Effect::Assign { devices, release } => {
                    assert_eq!(release, NEW);
                    self.assign_times.push(self.now);
                    self.assigned.extend(devices);
                }
                Effect::Rollback { devices, release } => {
                    assert_eq!(release, OLD);
                    self.rolled_back = Some(devices);
                }
                Effect::Notify { event } => self.events.push(event),
            }
        }
    }

    fn step(&mut self, dt: i64, canary: &MetricsAggregate, baseline: &MetricsAggregate) {
        self.step_with(dt, canary, baseline, &BTreeMap::new());
    }

    fn step_with(
        &mut self,
        dt: i64,
        canary: &MetricsAggregate,
        baseline: &MetricsAggregate,
        external: &BTreeMap<usize, ExternalValue>,
    ) {
        self.now += dt;
        for d in &mut self.fleet {
            if self.assigned.contains(&d.id) && self.rolled_back.is_none() {
                d.running = Some(NEW.into());
            }
        }
        let obs = Observation {
            now: self.now,
            fleet: &self.fleet,
            canary,
            baseline,
            external,
        };
        let d = self.rollout.tick(&obs);
        self.apply(d.effects);
    }
}

#[test]
fn healthy_release_reaches_everyone() {
    let mut s = Sim::new(spec(STANDARD), fleet(40, 10), 1_800_000_000);
    let base = traffic(2000, 100.0, 0);
    for _ in 0..100 {
        s.step(60, &traffic(500, 105.0, 100), &base);
        if s.rollout.is_finished() {
            break;
        }
    }
    assert_eq!(
        s.rollout.state.phase,
        Phase::Completed,
        "{:?}",
        s.rollout.state.reason
    );
    assert_eq!(s.assigned.len(), 40);
    assert!(s.events.contains(&RolloutEvent::Completed));
}

#[test]
fn latency_regression_is_stopped_at_the_canary_and_rolled_back() {
    let mut s = Sim::new(spec(STANDARD), fleet(40, 10), 1_800_000_000);
    let base = traffic(2000, 100.0, 0);
    for _ in 0..100 {
        s.step(60, &traffic(500, 450.0, 0), &base);
        if s.rollout.is_finished() {
            break;
        }
    }
    assert_eq!(s.rollout.state.phase, Phase::Aborted);
    assert_eq!(s.rollout.state.stop_cause, Some(StopCause::Gates));
    assert_eq!(s.assigned.len(), 4, "nobody outside the canary got it");
    let sites: BTreeSet<String> = s
        .fleet
        .iter()
        .filter(|d| s.assigned.contains(&d.id))
        .map(|d| d.labels["site"].clone())
        .collect();
    assert_eq!(sites.len(), 4, "spread across 4 stores");
    assert_eq!(
        s.rolled_back
            .as_ref()
            .map(|v| v.iter().cloned().collect::<BTreeSet<_>>()),
        Some(s.assigned.clone())
    );
    assert!(
        s.rollout
            .state
            .reason
            .as_deref()
            .unwrap()
            .contains("latency_p95_ms")
    );
}

#[test]
fn too_few_samples_hold_and_never_promote() {
    let mut s = Sim::new(spec(STANDARD), fleet(40, 10), 1_800_000_000);
    let base = traffic(2000, 100.0, 0);
    for _ in 0..200 {
        s.step(60, &traffic(150, 100.0, 0), &base);
    }
    assert_eq!(s.rollout.state.step, 1, "still analyzing");
    assert_eq!(s.rollout.state.phase, Phase::Progressing);
    assert!(
        s.rollout
            .state
            .reason
            .as_deref()
            .unwrap()
            .contains("min_samples"),
        "{:?}",
        s.rollout.state.reason
    );
    assert_eq!(s.assigned.len(), 4);
}

#[test]
fn approval_and_manual_commands() {
    let y = r#"
release: clf@2.0.0
steps:
  - canary: {devices: 2}
  - approve: {}
  - canary: {percent: 100}
"#;
    let mut s = Sim::new(spec(y), fleet(10, 2), 1_800_000_000);
    let m = MetricsAggregate::default();
    for _ in 0..3 {
        s.step(60, &m, &m);
    }
    assert_eq!(s.rollout.state.phase, Phase::AwaitingApproval);
    assert!(
        s.events
            .iter()
            .any(|e| matches!(e, RolloutEvent::ApprovalNeeded { .. }))
    );
    assert!(s.rollout.command(Command::Resume, s.now).is_err());
    let d = s.rollout.command(Command::Approve, s.now).unwrap();
    s.apply(d.effects);
    for _ in 0..3 {
        s.step(60, &m, &m);
    }
    assert_eq!(s.rollout.state.phase, Phase::Completed);
    assert!(
        s.rollout.command(Command::Abort, s.now).is_err(),
        "finished rollouts take no commands"
    );
}

#[test]
fn incompatible_devices_are_never_selected() {
    let mut f = fleet(20, 4);
    for d in f.iter_mut().take(5) {
        d.board = Some("rpi4".into());
    }
    f[5].runtimes.insert("edgecd-infer".into(), "0.0.9".into());
    let y = "release: clf@2.0.0\nsteps:\n  - canary: {percent: 100}\n";
    let mut s = Sim::new(spec(y), f, 1_800_000_000);
    let m = MetricsAggregate::default();
    s.step(60, &m, &m);
    let (_, bad) = s.rollout.eligible(&s.fleet);
    assert_eq!(bad.len(), 6);
    assert_eq!(s.assigned.len(), 14);
    assert!(!s.assigned.contains("dev-0000") && !s.assigned.contains("dev-0005"));
}

#[test]
fn spec_errors_say_what_to_fix() {
    let bad = |y: &str| spec(y).validate().unwrap_err().to_string();
    assert!(bad("release: clf\nsteps: [{canary: {devices: 1}}]\n").contains("APP@VERSION"));
    assert!(
        bad("release: a@1\nsteps: [{analyze: {duration: 5m}}]\n").contains("gates")
            || bad("release: a@1\nsteps: [{analyze: {duration: 5m}}]\n").contains("first step")
    );
    assert!(
        bad("release: a@1\nsteps: [{canary: {devices: 1, percent: 5}}]\n").contains("exactly one")
    );
    assert!(bad("release: a@1\nsteps: [{canary: {devices: 1}}]\ngates: [{metric: latency_p95_ms, max_ratio: 1.2}]\n").contains("against: baseline"));
    assert!(
        serde_yaml::from_str::<RolloutSpec>("release: a@1\nsteps: [{analyze: {duration: soon}}]\n")
            .is_err()
    );
    assert!(matches!(spec(STANDARD).steps[1], Step::Analyze(_)));
    let one = "release: a@1\nsteps: [{canary: {devices: 1}}]\n";
    assert!(
        bad(&format!("{one}runbook_url: wiki/runbook\n"))
            .contains("runbook_url \"wiki/runbook\" must be an absolute http(s) URL")
    );
    assert!(bad(&format!("{one}runbook_url: \"https:// x\"\n")).contains("runbook_url"));
    assert!(
        bad(&format!("{one}notify: [ops, ops]\n")).contains("notify lists channel \"ops\" twice")
    );
    assert!(bad(&format!("{one}notify: [\"\"]\n")).contains("empty channel name"));
    let ok = spec(&format!(
        "{one}notify: [ops, audit]\nrunbook_url: https://wiki.example/rb\n"
    ));
    ok.validate().expect("valid");
    assert_eq!(ok.runbook_url.as_deref(), Some("https://wiki.example/rb"));
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, .. ProptestConfig::default() })]

    /// Never promotes past an analysis unless the last evaluation passed every gate; cohorts
    /// only grow until an abort; a rollback covers exactly the devices that got the release;
    /// nothing is assigned outside the window; the same inputs give the same decisions.
    #[test]
    fn engine_invariants(
        n in 5usize..80,
        sites in 1usize..12,
        start in 1_790_000_000i64..1_800_000_000,
        windowed in any::<bool>(),
        ticks in proptest::collection::vec((0u64..600, 50.0f64..500.0, 0u64..40, 30i64..900), 5..60),
    ) {
        let mut y = STANDARD.to_string();
        if windowed {
            y.push_str("window: {days: [mon, wed, fri], from: \"22:00\", to: \"06:00\", tz: Europe/Berlin}\n");
        }
        let run = || {
            let mut s = Sim::new(spec(&y), fleet(n, sites), start);
            let base = traffic(2000, 100.0, 0);
            let mut cohorts = vec![];
            for (samples, latency, err_every, dt) in &ticks {
                let before_step = s.rollout.state.step;
                let was_analyze = matches!(s.rollout.spec.steps.get(before_step), Some(Step::Analyze(_)));
                let prev = s.rollout.state.cohort.clone();
                s.step(*dt, &traffic(*samples, *latency, *err_every), &base);
                if s.rollout.state.phase != Phase::Aborted {
                    prop_assert!(prev.is_subset(&s.rollout.state.cohort), "cohort shrank");
                }
                if was_analyze && s.rollout.state.step > before_step {
                    prop_assert!(s.rollout.state.last_gates.iter().all(|g| g.verdict.is_pass()), "promoted with {:?}", s.rollout.state.last_gates);
                }
                cohorts.push(s.rollout.state.cohort.clone());
            }
            if let Some(rb) = &s.rolled_back {
                prop_assert_eq!(rb.iter().cloned().collect::<BTreeSet<_>>(), s.assigned.clone());
            }
            if windowed {
                let w = s.rollout.spec.window.clone().unwrap();
                for t in &s.assign_times {
                    prop_assert!(w.contains(*t), "assigned outside the window at {}", t);
                }
            }
            // First canary: spread across min(4, sites) stores.
            if let Some(first) = cohorts.iter().find(|c| !c.is_empty()) {
                let f = fleet(n, sites);
                let stores: BTreeSet<&String> = f.iter().filter(|d| first.contains(&d.id)).map(|d| &d.labels["site"]).collect();
                prop_assert_eq!(stores.len(), 4.min(sites).min(first.len()));
            }
            Ok((cohorts, s.events.clone()))
        };
        let a = run()?;
        let b = run()?;
        prop_assert_eq!(a, b, "same inputs, same decisions");
    }
}

const PROMQL: &str = r#"
release: clf@2.0.0
selector: {fleet: retail}
steps:
  - canary: {devices: 4}
  - analyze: {duration: 30m, interval: 5m}
  - canary: {percent: 100}
gates:
  - {name: p95, provider: prometheus, query: 'p95{release="{{release}}"}', max: 300}
error_limit: 4
"#;

/// `provider: prometheus` gates: a provider outage holds the rollout (past the end of the
/// analysis, never promoting), it resumes when answers come back, and too many consecutive
/// errors abort it. `evaluation_due` says exactly when the engine wants the values.
#[test]
fn prometheus_gates_hold_on_outage_resume_and_abort_at_the_error_limit() {
    let ext = |result: Result<Option<f64>, String>| -> BTreeMap<usize, ExternalValue> {
        [(
            0,
            ExternalValue {
                query: "p95{release=\"clf@2.0.0\"}".into(),
                result,
            },
        )]
        .into()
    };
    let none = MetricsAggregate::default();
    let mut sim = Sim::new(spec(PROMQL), fleet(20, 4), 1_000_000);
    assert!(
        !sim.rollout.evaluation_due(sim.now),
        "canary step: no queries"
    );
    sim.step(60, &none, &none); // the canary installs
    sim.step(60, &none, &none);
    assert_eq!(sim.rollout.state.step, 1, "{:?}", sim.rollout.state);
    assert!(sim.rollout.evaluation_due(sim.now));
    sim.step_with(1, &none, &none, &ext(Ok(Some(120.0))));
    assert!(
        !sim.rollout.evaluation_due(sim.now + 60),
        "interval not elapsed"
    );
    assert!(sim.rollout.evaluation_due(sim.now + 300));
    // Prometheus goes away: three failing queries (error_limit 4) across the end of the
    // analysis; the rollout holds and never promotes.
    for _ in 0..3 {
        sim.step_with(600, &none, &none, &ext(Err("connection refused".into())));
        assert_eq!(sim.rollout.state.step, 1, "held in analysis");
        assert_eq!(sim.rollout.state.phase, Phase::Progressing);
        let why = sim.rollout.state.reason.as_deref().unwrap_or_default();
        assert!(
            why.contains("Prometheus query failed: connection refused"),
            "{why}"
        );
    }
    let last = &sim.rollout.state.last_gates[0];
    assert_eq!(last.query.as_deref(), Some("p95{release=\"clf@2.0.0\"}"));
    // Back: the next evaluation passes and the analysis (long over) promotes.
    sim.step_with(600, &none, &none, &ext(Ok(Some(110.0))));
    assert_eq!(sim.rollout.state.step, 2, "{:?}", sim.rollout.state);

    // Same again, but the outage outlasts error_limit: aborted and rolled back.
    let mut sim = Sim::new(spec(PROMQL), fleet(20, 4), 1_000_000);
    sim.step(60, &none, &none);
    sim.step(60, &none, &none);
    for i in 1..=4 {
        sim.step_with(600, &none, &none, &ext(Err("timeout".into())));
        if i < 4 {
            assert_eq!(sim.rollout.state.phase, Phase::Progressing);
        }
    }
    assert_eq!(
        sim.rollout.state.phase,
        Phase::Aborted,
        "{:?}",
        sim.rollout.state
    );
    assert!(sim.rolled_back.is_some());
    assert_eq!(
        sim.rollout.state.stop_cause,
        Some(StopCause::ProviderErrors)
    );
    // Empty results are inconclusive, not errors: they hold without counting to the limit.
    let mut sim = Sim::new(spec(PROMQL), fleet(20, 4), 1_000_000);
    sim.step(60, &none, &none);
    sim.step(60, &none, &none);
    for _ in 0..8 {
        sim.step_with(600, &none, &none, &ext(Ok(None)));
    }
    assert_eq!(sim.rollout.state.phase, Phase::Progressing);
    assert_eq!(sim.rollout.state.step, 1, "{:?}", sim.rollout.state);
    let why = sim.rollout.state.reason.as_deref().unwrap_or_default();
    assert!(why.contains("returned no data"), "{why}");
}

/// An outside failure signal (a firing alert) rolls back or pauses per `on_failure`, once.
#[test]
fn fail_follows_on_failure_and_is_idempotent() {
    let none = MetricsAggregate::default();
    let mut sim = Sim::new(spec(STANDARD), fleet(20, 4), 1_000_000);
    sim.step(60, &none, &none);
    let d = sim
        .rollout
        .fail("alert EdgeInferenceErrors firing".into(), sim.now)
        .expect("fails");
    sim.apply(d.effects);
    assert_eq!(sim.rollout.state.phase, Phase::Aborted);
    assert_eq!(
        sim.rollout.state.reason.as_deref(),
        Some("alert EdgeInferenceErrors firing")
    );
    assert_eq!(sim.rolled_back.as_ref().map(Vec::len), Some(4));
    assert_eq!(sim.rollout.state.stop_cause, Some(StopCause::Alert));
    assert!(
        sim.events
            .iter()
            .any(|e| matches!(e, RolloutEvent::Aborted { .. }))
    );
    assert!(
        sim.rollout.fail("again".into(), sim.now).is_err(),
        "already aborted"
    );

    let mut sim = Sim::new(
        spec(&format!("{STANDARD}on_failure: pause\n")),
        fleet(20, 4),
        1_000_000,
    );
    sim.step(60, &none, &none);
    let d = sim.rollout.fail("alert".into(), sim.now).expect("pauses");
    sim.apply(d.effects);
    assert_eq!(sim.rollout.state.phase, Phase::Paused);
    assert!(sim.rolled_back.is_none(), "pause keeps the cohort");
    assert!(
        sim.rollout.fail("alert".into(), sim.now).is_err(),
        "already paused"
    );
}

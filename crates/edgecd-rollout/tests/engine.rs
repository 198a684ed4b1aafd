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
            blocked: Default::default(),
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
        self.step_devices(dt, canary, baseline, external, &BTreeMap::new());
    }

    fn step_devices(
        &mut self,
        dt: i64,
        canary: &MetricsAggregate,
        baseline: &MetricsAggregate,
        external: &BTreeMap<usize, ExternalValue>,
        devices: &BTreeMap<String, MetricsAggregate>,
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
            devices,
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
    // A completed rollout can still be rolled back: every device that got the release.
    let cohort: Vec<String> = s.rollout.state.cohort.iter().cloned().collect();
    assert_eq!(cohort.len(), 10);
    let d = s.rollout.rollback(s.now).unwrap();
    assert_eq!(s.rollout.state.phase, Phase::Aborted);
    assert_eq!(s.rollout.state.stop_cause, Some(StopCause::Operator));
    assert!(d.effects.iter().any(|e| matches!(e, Effect::Rollback { devices, release } if *devices == cohort && release == OLD)));
    assert!(
        s.rollout.rollback(s.now).is_err(),
        "once back, a second rollback is refused"
    );
    // Without a baseline there is nothing to go back to.
    let (mut first, _) = Rollout::start("r-2", spec(y), req(), None, s.now).expect("starts");
    assert!(first.rollback(s.now).unwrap_err().contains("no baseline"));
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

// ---- Statistics (issue 18) ----

use edgecd_rollout::gates::{Judgement, Verdict, evaluate};
use edgecd_rollout::spec::Gate;

/// A small deterministic PRNG (SplitMix64) for sampling in tests.
struct Prng(u64);

impl Prng {
    fn unit(&mut self) -> f64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        ((z ^ (z >> 31)) >> 11) as f64 / (1u64 << 53) as f64
    }

    /// `n` requests, each an error with probability `p`, latencies log-normal around
    /// `median` with p95 at `p95`.
    fn traffic(&mut self, n: u64, p: f64, median: f64, p95: f64) -> MetricsAggregate {
        let mut m = MetricsAggregate::default();
        let sigma = (p95 / median).ln() / 1.644_853_6;
        for _ in 0..n {
            let u1 = self.unit().max(1e-12);
            let u2 = self.unit();
            let z = (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos();
            let err = self.unit() < p;
            m.record(median * (sigma * z).exp(), err, Some(0.9));
        }
        m
    }
}

fn gate(yaml: &str) -> Gate {
    serde_yaml::from_str(yaml).expect("gate parses")
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, .. ProptestConfig::default() })]

    /// A fail verdict is never reached on data whose point value is within the threshold,
    /// at any confidence and any share of alpha: the bound a fail needs is past the estimate.
    #[test]
    fn data_within_the_threshold_never_fails(
        n in 1u64..3000,
        errors_per_mille in 0u64..1000,
        median in 5.0f64..400.0,
        spread in 1.05f64..4.0,
        confidence in 0.5f64..0.999,
        alpha_share in 0.001f64..1.0,
        seed in any::<u64>(),
    ) {
        let mut rng = Prng(seed);
        let p = errors_per_mille as f64 / 1000.0;
        let canary = rng.traffic(n, p, median, median * spread);
        let base = rng.traffic(2000, 0.01, median, median * 1.5);
        let j = Judgement {
            confidence,
            fail_alpha: (1.0 - confidence) * alpha_share,
            pass_alpha: 1.0 - confidence,
            min_samples: 200,
            resolution: 0.5,
        };
        let err = canary.error_rate().unwrap();
        let p95 = canary.latency_quantile_ms(0.95).unwrap();
        for (g, value) in [
            (format!("{{metric: error_rate, max: {}}}", err), err),
            (format!("{{metric: latency_p95_ms, max: {}}}", p95), p95),
        ] {
            let r = evaluate(&gate(&g), &canary, &base, &j, None);
            prop_assert!(!matches!(r.verdict, Verdict::Fail(_)), "{g} at {value}: {:?}", r);
            let [lo, hi] = r.interval.expect("an interval");
            prop_assert!(lo <= value + 1e-9 && value <= hi + 1e-9, "{lo} {value} {hi}");
        }
        let ratio = base.latency_quantile_ms(0.95).map(|b| p95 / b).unwrap();
        let g = gate(&format!("{{metric: latency_p95_ms, max_ratio: {ratio}, against: baseline}}"));
        let r = evaluate(&g, &canary, &base, &j, None);
        prop_assert!(!matches!(r.verdict, Verdict::Fail(_)), "ratio {ratio}: {:?}", r);
        let psi = edgecd_rollout::gates::psi(&canary, &base).unwrap();
        let g = gate(&format!("{{metric: confidence_psi, max: {psi}, against: baseline}}"));
        prop_assert!(!matches!(evaluate(&g, &canary, &base, &j, None).verdict, Verdict::Fail(_)));
    }
}

/// At the threshold itself, a gate fails in at most about `1 − confidence` of samples:
/// 400 seeded draws per case, error rate and p95 exactly at their maximum.
#[test]
fn false_fails_at_the_threshold_stay_within_alpha() {
    let j = Judgement::single(0.95, 200);
    let err = gate("{metric: error_rate, max: 0.03}");
    let p95 = gate("{metric: latency_p95_ms, max: 300}");
    for n in [200u64, 1000, 5000] {
        let mut rng = Prng(n);
        let base = MetricsAggregate::default();
        let (mut fails_err, mut fails_p95) = (0, 0);
        let draws = 400;
        for _ in 0..draws {
            let m = rng.traffic(n, 0.03, 100.0, 300.0);
            fails_err += usize::from(matches!(
                evaluate(&err, &m, &base, &j, None).verdict,
                Verdict::Fail(_)
            ));
            fails_p95 += usize::from(matches!(
                evaluate(&p95, &m, &base, &j, None).verdict,
                Verdict::Fail(_)
            ));
        }
        // 5% of 400 is 20; 3 standard deviations (~13) of slack for the sampling.
        assert!(
            fails_err <= 33,
            "n {n}: error-rate fails {fails_err}/{draws}"
        );
        assert!(fails_p95 <= 33, "n {n}: p95 fails {fails_p95}/{draws}");
        assert!(
            fails_err > 0 || n < 1000,
            "n {n}: a test that can fail at all"
        );
    }
    // And a clear regression (2x) fails almost always with a few hundred samples.
    let mut rng = Prng(99);
    let caught = (0..200)
        .filter(|_| {
            let m = rng.traffic(1000, 0.06, 100.0, 600.0);
            matches!(
                evaluate(&err, &m, &MetricsAggregate::default(), &j, None).verdict,
                Verdict::Fail(_)
            )
        })
        .count();
    assert!(caught >= 198, "caught {caught}/200");
}

/// The status text has the estimate, its interval and the samples still needed.
#[test]
fn inconclusive_gates_say_how_many_more_samples_decide() {
    let j = Judgement::single(0.95, 200);
    let mut m = MetricsAggregate::default();
    for i in 0..2000 {
        m.record(50.0, i % 34 == 0, Some(0.9));
    }
    let r = evaluate(
        &gate("{metric: error_rate, max: 0.03}"),
        &m,
        &MetricsAggregate::default(),
        &Judgement {
            resolution: 0.05,
            ..j
        },
        None,
    );
    let Verdict::Inconclusive(why) = &r.verdict else {
        panic!("{r:?}")
    };
    assert!(why.starts_with("2.95% ["), "{why}");
    assert!(
        why.contains("vs max 3.00%") && why.contains("more requests to decide"),
        "{why}"
    );
    let needed = r.needed.expect("needed");
    assert!(needed > 1000 && needed < 1_000_000, "{needed}");
    // With that many more at the same rate, it is decided.
    let mut more = MetricsAggregate::default();
    for i in 0..(2000 + needed * 2) {
        more.record(50.0, i % 34 == 0, Some(0.9));
    }
    let r2 = evaluate(
        &gate("{metric: error_rate, max: 0.03}"),
        &more,
        &MetricsAggregate::default(),
        &Judgement {
            resolution: 0.05,
            ..j
        },
        None,
    );
    assert!(r2.verdict.is_pass(), "{r2:?}");
}

fn grouped_fleet() -> Vec<Device> {
    let mut f = fleet(40, 4);
    for (i, d) in f.iter_mut().enumerate() {
        let hw = if i % 10 == 0 {
            "variant-b"
        } else {
            "variant-a"
        };
        d.labels.insert("hw".into(), hw.into());
    }
    f
}

const GROUPED: &str = r#"
release: clf@2.0.0
selector: {fleet: retail}
steps:
  - canary: {devices: 4}
  - analyze: {duration: 30m, interval: 5m}
  - canary: {percent: 100}
gates:
  - {metric: error_rate, max: 0.03}
group_by: [hw]
min_samples: 200
"#;

/// Per-device metrics for the Sim's cohort: variant-b devices with `bad_rate` errors.
fn per_device(
    s: &Sim,
    n: u64,
    bad_rate: f64,
    rng: &mut Prng,
) -> BTreeMap<String, MetricsAggregate> {
    s.fleet
        .iter()
        .map(|d| {
            let bad = d.labels["hw"] == "variant-b" && s.rollout.state.cohort.contains(&d.id);
            let p = if bad { bad_rate } else { 0.005 };
            (d.id.clone(), rng.traffic(n, p, 80.0, 140.0))
        })
        .collect()
}

fn totals(
    s: &Sim,
    devices: &BTreeMap<String, MetricsAggregate>,
) -> (MetricsAggregate, MetricsAggregate) {
    let (mut c, mut b) = (MetricsAggregate::default(), MetricsAggregate::default());
    for (id, m) in devices {
        if s.rollout.state.cohort.contains(id) {
            c.merge(m);
        } else {
            b.merge(m);
        }
    }
    (c, b)
}

/// A regression confined to a 10% hardware group: the first canary includes the group
/// (stratified), the whole cohort looks healthy, the group's gate fails and rolls back
/// (default) — or, with `on_group_failure: exclude`, only the group goes back and the
/// rollout continues without it.
#[test]
fn a_regression_in_one_group_fails_that_group() {
    for exclude in [false, true] {
        let y = if exclude {
            format!("{GROUPED}on_group_failure: exclude\n")
        } else {
            GROUPED.to_string()
        };
        let mut s = Sim::new(spec(&y), grouped_fleet(), 1_000_000);
        let none = MetricsAggregate::default();
        s.step(60, &none, &none);
        let groups = &s.rollout.state.covered_groups;
        assert_eq!(
            groups,
            &["variant-a".to_string(), "variant-b".to_string()],
            "stratified first canary"
        );
        let mut rng = Prng(5);
        for _ in 0..40 {
            let devices = per_device(&s, 400, 0.12, &mut rng);
            let (c, b) = totals(&s, &devices);
            s.step_devices(60, &c, &b, &BTreeMap::new(), &devices);
            if s.rollout.is_finished() || s.rollout.state.step >= 2 {
                break;
            }
        }
        if exclude {
            assert!(
                s.rollout.state.excluded_groups.contains("variant-b"),
                "{:?}",
                s.rollout.state
            );
            assert!(
                s.events
                    .iter()
                    .any(|e| matches!(e, RolloutEvent::GroupExcluded { .. }))
            );
            assert_ne!(s.rollout.state.phase, Phase::Aborted);
        } else {
            assert_eq!(
                s.rollout.state.phase,
                Phase::Aborted,
                "{:?}",
                s.rollout.state
            );
            assert!(
                s.rollout
                    .state
                    .reason
                    .as_deref()
                    .unwrap_or_default()
                    .contains("[variant-b]"),
                "{:?}",
                s.rollout.state.reason
            );
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, .. ProptestConfig::default() })]

    /// Per-group verdicts combine: with every group and the cohort healthy (well inside the
    /// threshold) nothing fails; a group whose own data fails makes the evaluation fail
    /// (default policy) even when the whole cohort passes; the cohort's result is always there.
    #[test]
    fn group_verdicts_combine(seed in any::<u64>(), bad in any::<bool>()) {
        let mut s = Sim::new(spec(GROUPED), grouped_fleet(), 1_000_000);
        let none = MetricsAggregate::default();
        s.step(60, &none, &none);
        s.step(60, &none, &none);
        prop_assert_eq!(s.rollout.state.step, 1, "analyzing");
        let mut rng = Prng(seed);
        let devices = per_device(&s, 3000, if bad { 0.2 } else { 0.005 }, &mut rng);
        let (c, b) = totals(&s, &devices);
        s.step_devices(60, &c, &b, &BTreeMap::new(), &devices);
        let gates = &s.rollout.state.last_gates;
        prop_assert!(gates.iter().any(|g| g.group.is_none()), "{:?}", gates);
        let group_failed = gates.iter().any(|g| g.group.is_some() && matches!(g.verdict, Verdict::Fail(_)));
        prop_assert_eq!(group_failed, bad, "{:?}", gates);
        prop_assert_eq!(s.rollout.state.phase == Phase::Aborted, bad);
    }
}

/// Only the window's samples count and a thin window never promotes: the step holds once
/// (one notification) with an estimate of the time needed, escalates once after
/// `max_hold`, and promotes only when the step's own samples decide.
#[test]
fn thin_traffic_holds_once_escalates_once_and_never_promotes_on_too_little() {
    let y = format!("{GROUPED}max_hold: 30m\n");
    let mut s = Sim::new(spec(&y), grouped_fleet(), 1_000_000);
    let none = MetricsAggregate::default();
    s.step(60, &none, &none);
    s.step(60, &none, &none);
    assert_eq!(s.rollout.state.step, 1);
    let mut rng = Prng(1);
    // 3 requests a minute: 200 samples take ~67 minutes.
    let mut window = MetricsAggregate::default();
    let mut reasons = BTreeSet::new();
    for minute in 0..150 {
        window.merge(&rng.traffic(3, 0.005, 80.0, 140.0));
        s.step(60, &window, &traffic(5000, 80.0, 200));
        if let Some(r) = &s.rollout.state.reason {
            assert!(
                r.chars().count() <= edgecd_rollout::engine::MAX_REASON_CHARS,
                "{r}"
            );
            assert!(
                !r.contains(
                    "analysis window over without a decision, too little traffic: analysis"
                ),
                "nested: {r}"
            );
            reasons.insert(r.clone());
        }
        if s.rollout.state.step >= 2 {
            assert!(
                window.requests >= 200,
                "promoted at minute {minute} on {} samples",
                window.requests
            );
            break;
        }
    }
    let held: Vec<&RolloutEvent> = s
        .events
        .iter()
        .filter(|e| matches!(e, RolloutEvent::Held { .. }))
        .collect();
    assert_eq!(held.len(), 1, "one hold notification: {:?}", s.events);
    let RolloutEvent::Held { reason } = held[0] else {
        unreachable!()
    };
    assert!(
        reason.contains("too little traffic") && reason.contains("requests/s, about"),
        "{reason}"
    );
    let escalated = s
        .events
        .iter()
        .filter(|e| matches!(e, RolloutEvent::Escalated { .. }))
        .count();
    assert_eq!(escalated, 1, "{:?}", s.events);
    assert!(
        s.rollout.state.step >= 2,
        "decided once the step's samples sufficed: {:?}",
        s.rollout.state
    );

    // With `on_max_hold: rollback`, the hold ends in a rollback instead.
    let y = format!("{GROUPED}max_hold: 30m\non_max_hold: rollback\n");
    let mut s = Sim::new(spec(&y), grouped_fleet(), 1_000_000);
    s.step(60, &none, &none);
    s.step(60, &none, &none);
    for _ in 0..70 {
        s.step(60, &traffic(10, 80.0, 0), &traffic(5000, 80.0, 200));
    }
    assert_eq!(s.rollout.state.phase, Phase::Aborted);
    assert_eq!(s.rollout.state.stop_cause, Some(StopCause::HoldTimeout));
    assert!(s.rolled_back.is_some());
}

/// "waiting for N of M devices" changes count without notifying again.
#[test]
fn waiting_for_devices_notifies_once() {
    let mut s = Sim::new(spec(STANDARD), fleet(40, 10), 1_000_000);
    let none = MetricsAggregate::default();
    s.step(60, &none, &none);
    // Devices install one per tick: stop the Sim's instant install by failing to run.
    let cohort: Vec<String> = s.rollout.state.cohort.iter().cloned().collect();
    s.assigned.clear();
    for (i, _) in cohort.iter().enumerate() {
        s.assigned.extend(cohort[..i].iter().cloned());
        s.step(60, &none, &none);
    }
    let held = s
        .events
        .iter()
        .filter(|e| matches!(e, RolloutEvent::Held { .. }))
        .count();
    assert_eq!(held, 1, "{:?}", s.events);
    assert!(
        s.rollout
            .state
            .reason
            .as_deref()
            .unwrap_or_default()
            .contains("waiting for 1 of 4")
    );
}

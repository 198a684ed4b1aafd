//! Gate statistics bench (`scripts/bench-gates`): randomized rollouts driven through the pure
//! `edgecd-rollout` engine in-process with a fake clock (no HTTP, no server), each device's
//! metrics synthesized per minute by `edgecd_sim::synth`. For every scenario and seed it
//! runs one rollout to its decision and prints: the scenario, its true effect, the
//! false-abort rate (healthy scenarios), the miss rate (regressions that got past the first
//! canary), the median time from the start of the first analysis to the decision, and the
//! devices outside the first canary that were assigned a bad release.
//!
//! Usage: `bench_gates [SEEDS]` (default 100).
use edgecd_api::metrics::MetricsAggregate;
use edgecd_api::profile::{HardwareProfile, RuntimePin};
use edgecd_rollout::cohort::{Device, Requirements};
use edgecd_rollout::engine::{Effect, Observation, Phase, Rollout, RolloutEvent};
use edgecd_rollout::spec::RolloutSpec;
use edgecd_sim::scenario::{LatencyDist, Normal, Resolved};
use edgecd_sim::synth::{Rng, synthesize};
use std::collections::{BTreeMap, BTreeSet};

const NEW: &str = "clf@2.0.0";
const OLD: &str = "clf@1.0.0";
const DEVICES: usize = 200;
/// Devices with `hw=variant-b`: 10% of the fleet.
const MINORITY: usize = 20;
const ERR_MAX: f64 = 0.03;
const P95_MAX: f64 = 300.0;
const RATIO_MAX: f64 = 1.2;
const PSI_MAX: f64 = 0.2;
const BASE_P50: f64 = 80.0;
const BASE_P95: f64 = 140.0;
const BASE_ERR: f64 = 0.005;
/// Simulated time limit per rollout.
const HORIZON_MIN: i64 = 8 * 60;

const SPEC: &str = r#"
release: clf@2.0.0
steps:
  - canary: {percent: 5}
  - analyze: {duration: 30m, interval: 5m}
  - canary: {percent: 25}
  - analyze: {duration: 30m, interval: 5m}
  - canary: {percent: 100}
gates:
  - {metric: error_rate, max: 0.03}
  - {metric: latency_p95_ms, max: 300}
  - {metric: latency_p95_ms, max_ratio: 1.2, against: baseline}
  - {metric: confidence_psi, max: 0.2, against: baseline}
group_by: [hw]
min_samples: 200
confidence: 0.95
max_hold: 1h
"#;

/// How the new release behaves on one kind of device.
#[derive(Clone, Copy)]
struct Effectt {
    err: f64,
    p95: f64,
    /// Shift of the confidence mean (drives PSI).
    conf_shift: f64,
}

const HEALTHY: Effectt = Effectt {
    err: BASE_ERR,
    p95: BASE_P95,
    conf_shift: 0.0,
};

struct Scenario {
    name: &'static str,
    effect: String,
    bad: bool,
    /// The new release on the majority / on the 10% group.
    major: Effectt,
    minor: Effectt,
    /// Requests per device per minute.
    rate: f64,
    /// Per-device and per-minute variation (noisy traffic).
    noisy: bool,
}

fn behaviour(e: Effectt, base_conf: f64) -> Resolved {
    let mut r = Resolved {
        latency_ms: LatencyDist {
            p50: BASE_P50 * e.p95 / BASE_P95,
            p95: e.p95,
        },
        error_rate: e.err,
        ..Resolved::default()
    };
    r.confidence = Normal {
        mean: base_conf + e.conf_shift,
        sd: 0.05,
    };
    r
}

/// The confidence-mean shift whose PSI against the baseline is `target` (bisection on
/// large samples).
fn shift_for_psi(target: f64) -> f64 {
    let base = synthesize(&behaviour(HEALTHY, 0.8), &mut Rng::new(1), Some(200_000));
    let psi = |s: f64| {
        let m = synthesize(
            &behaviour(
                Effectt {
                    conf_shift: -s,
                    ..HEALTHY
                },
                0.8,
            ),
            &mut Rng::new(2),
            Some(200_000),
        );
        m.confidence_psi(&base).unwrap_or(0.0)
    };
    let (mut lo, mut hi) = (0.0, 0.2);
    for _ in 0..30 {
        let mid = (lo + hi) / 2.0;
        if psi(mid) < target {
            lo = mid
        } else {
            hi = mid
        }
    }
    -(lo + hi) / 2.0
}

fn fleet() -> Vec<Device> {
    (0..DEVICES)
        .map(|i| Device {
            blocked: Default::default(),
            id: format!("dev-{i:04}"),
            labels: [(
                "hw".to_string(),
                if i % (DEVICES / MINORITY) == 0 {
                    "variant-b"
                } else {
                    "variant-a"
                }
                .to_string(),
            )]
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

fn requirements() -> Requirements {
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

#[derive(Default)]
struct Outcome {
    aborted: bool,
    promoted: bool,
    escalated: bool,
    decided_after_min: Option<i64>,
    outside_bad: usize,
    held_notifications: usize,
}

fn run(sc: &Scenario, spec: &RolloutSpec, seed: u64) -> Outcome {
    let mut rng = Rng::new(seed.wrapping_mul(0x9E37_79B9) ^ 0xB5);
    let mut devices = fleet();
    let minority: BTreeSet<String> = devices
        .iter()
        .filter(|d| d.labels["hw"] == "variant-b")
        .map(|d| d.id.clone())
        .collect();
    // Noisy traffic: each device its own traffic level and error-rate factor.
    let device_factor: BTreeMap<String, (f64, f64)> = devices
        .iter()
        .map(|d| {
            let f = if sc.noisy {
                ((0.5 * rng.normal()).exp(), 1.0)
            } else {
                (1.0, 1.0)
            };
            (d.id.clone(), f)
        })
        .collect();
    let mut now = 1_800_000_000i64;
    let id = format!("bench-{seed}");
    let (mut r, d) = Rollout::start(&id, spec.clone(), requirements(), Some(OLD.into()), now)
        .expect("spec starts");
    let mut out = Outcome::default();
    let mut first_canary: Option<usize> = None;
    let mut analysis_started: Option<i64> = None;
    let mut window_start = r.metrics_since();
    let mut per_device: BTreeMap<String, MetricsAggregate> = BTreeMap::new();
    let mut assigned: BTreeSet<String> = BTreeSet::new();
    let handle = |effects: Vec<Effect>, assigned: &mut BTreeSet<String>, out: &mut Outcome| {
        for e in effects {
            match e {
                Effect::Assign { devices, .. } => assigned.extend(devices),
                Effect::Rollback { devices, .. } => {
                    for x in devices {
                        assigned.remove(&x);
                    }
                }
                Effect::Notify { event } => match event {
                    RolloutEvent::Escalated { .. } => out.escalated = true,
                    RolloutEvent::Held { .. } => out.held_notifications += 1,
                    _ => {}
                },
            }
        }
    };
    handle(d.effects, &mut assigned, &mut out);
    let base_old = behaviour(HEALTHY, 0.8);
    let new_major = behaviour(sc.major, 0.8);
    let new_minor = behaviour(sc.minor, 0.8);
    for _ in 0..HORIZON_MIN {
        now += 60;
        // Devices assigned at the previous tick run the release now.
        for x in &mut devices {
            x.running = Some(if assigned.contains(&x.id) { NEW } else { OLD }.into());
        }
        if r.metrics_since() != window_start {
            window_start = r.metrics_since();
            per_device.clear();
        }
        // One minute of traffic: the cohort per device; the baseline per group, credited to
        // one device of the group.
        let mut base_a = 0u64;
        let mut base_b = 0u64;
        for x in &devices {
            let (traffic, err_factor) = device_factor[&x.id];
            let burst = if sc.noisy {
                (0.6 * rng.normal()).exp()
            } else {
                1.0
            };
            let expected = sc.rate * traffic * burst;
            // Poisson-ish: the integer part plus a chance of one more.
            let n = expected.floor() as u64 + u64::from(rng.chance(expected.fract()));
            if r.state.cohort.contains(&x.id) && assigned.contains(&x.id) {
                let mut b = if minority.contains(&x.id) {
                    new_minor.clone()
                } else {
                    new_major.clone()
                };
                b.error_rate = (b.error_rate * err_factor).min(1.0);
                let mut m = synthesize(&b, &mut rng, Some(n));
                m.temp_samples = 0;
                m.temp_c_sum = 0.0;
                m.temp_c_max = None;
                per_device.entry(x.id.clone()).or_default().merge(&m);
            } else if minority.contains(&x.id) {
                base_b += n;
            } else {
                base_a += n;
            }
        }
        for (n, group) in [(base_a, "variant-a"), (base_b, "variant-b")] {
            let holder = devices
                .iter()
                .find(|x| x.labels["hw"] == group && !r.state.cohort.contains(&x.id));
            if let Some(h) = holder {
                let m = synthesize(&base_old, &mut rng, Some(n));
                per_device.entry(h.id.clone()).or_default().merge(&m);
            }
        }
        let mut canary = MetricsAggregate::default();
        let mut baseline = MetricsAggregate::default();
        for (dev, m) in &per_device {
            if r.state.cohort.contains(dev) {
                canary.merge(m);
            } else {
                baseline.merge(m);
            }
        }
        let step_before = r.state.step;
        let d = r.tick(&Observation {
            now,
            fleet: &devices,
            canary: &canary,
            baseline: &baseline,
            external: &BTreeMap::new(),
            devices: &per_device,
        });
        handle(d.effects, &mut assigned, &mut out);
        if step_before == 0 && r.state.step >= 1 && first_canary.is_none() {
            first_canary = Some(r.state.cohort.len());
        }
        if r.state.step == 1 && analysis_started.is_none() {
            analysis_started = Some(now);
        }
        if r.state.phase == Phase::Aborted {
            out.aborted = true;
            if std::env::var_os("BENCH_VERBOSE").is_some() {
                eprintln!("{} seed {seed}: {:?}", sc.name, r.state.reason);
            }
        } else if r.state.step >= 2 {
            out.promoted = true;
        }
        if out.aborted || out.promoted {
            out.decided_after_min = analysis_started.map(|t| (now - t) / 60);
            break;
        }
    }
    // A promoted bad release: one more tick lets the next canary step assign it; count
    // the devices outside the first canary that got it.
    if sc.bad && out.promoted {
        now += 60;
        let d = r.tick(&Observation {
            now,
            fleet: &devices,
            canary: &MetricsAggregate::default(),
            baseline: &MetricsAggregate::default(),
            external: &BTreeMap::new(),
            devices: &BTreeMap::new(),
        });
        handle(d.effects, &mut assigned, &mut out);
        let canary_size = first_canary.unwrap_or(0);
        out.outside_bad = r.state.cohort.len().saturating_sub(canary_size);
    }
    out
}

fn pct(n: usize, of: usize) -> String {
    format!("{:.1}%", 100.0 * n as f64 / of.max(1) as f64)
}

fn main() {
    let seeds: u64 = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(100);
    let spec: RolloutSpec = serde_yaml::from_str(SPEC).expect("bench spec parses");
    spec.validate().expect("bench spec is valid");
    let under_psi = shift_for_psi(0.97 * PSI_MAX);
    let over_psi = shift_for_psi(2.0 * PSI_MAX);
    let under = 0.97;
    let e = |err: f64, p95: f64, conf_shift: f64| Effectt {
        err,
        p95,
        conf_shift,
    };
    let ratio_p95 = |ratio: f64| BASE_P95 * ratio;
    let normal_rate = 20.0;
    let sc =
        |name: &'static str, effect: String, bad: bool, major: Effectt, minor: Effectt| Scenario {
            name,
            effect,
            bad,
            major,
            minor,
            rate: normal_rate,
            noisy: false,
        };
    let all_under = e(under * ERR_MAX, under * RATIO_MAX * BASE_P95, under_psi);
    let mut scenarios = vec![
        sc(
            "healthy",
            format!(
                "err {:.1}%, p95 {BASE_P95} ms, ratio 1.0, psi 0",
                BASE_ERR * 100.0
            ),
            false,
            HEALTHY,
            HEALTHY,
        ),
        sc(
            "under: error rate",
            format!("err {:.2}% (97% of max 3%)", under * ERR_MAX * 100.0),
            false,
            e(under * ERR_MAX, BASE_P95, 0.0),
            e(under * ERR_MAX, BASE_P95, 0.0),
        ),
        sc(
            "under: p95 ratio",
            format!("p95 {:.2}x baseline (97% of 1.2x)", under * RATIO_MAX),
            false,
            e(BASE_ERR, ratio_p95(under * RATIO_MAX), 0.0),
            e(BASE_ERR, ratio_p95(under * RATIO_MAX), 0.0),
        ),
        sc(
            "under: psi",
            format!("psi {:.3} (97% of 0.2)", under * PSI_MAX),
            false,
            e(BASE_ERR, BASE_P95, under_psi),
            e(BASE_ERR, BASE_P95, under_psi),
        ),
        sc(
            "under: all gates",
            "all three at 97% together".into(),
            false,
            all_under,
            all_under,
        ),
        sc(
            "regression: error rate",
            "err 6% (2x max)".into(),
            true,
            e(2.0 * ERR_MAX, BASE_P95, 0.0),
            e(2.0 * ERR_MAX, BASE_P95, 0.0),
        ),
        sc(
            "regression: p95",
            "p95 600 ms (2x max 300)".into(),
            true,
            e(BASE_ERR, 2.0 * P95_MAX, 0.0),
            e(BASE_ERR, 2.0 * P95_MAX, 0.0),
        ),
        sc(
            "regression: p95 ratio",
            "p95 2.4x baseline (2x of 1.2x)".into(),
            true,
            e(BASE_ERR, ratio_p95(2.0 * RATIO_MAX), 0.0),
            e(BASE_ERR, ratio_p95(2.0 * RATIO_MAX), 0.0),
        ),
        sc(
            "regression: p95 ratio 1.4x",
            "p95 1.4x baseline (2x the 20% allowed)".into(),
            true,
            e(BASE_ERR, ratio_p95(1.4), 0.0),
            e(BASE_ERR, ratio_p95(1.4), 0.0),
        ),
        sc(
            "regression: psi",
            "psi 0.4 (2x max)".into(),
            true,
            e(BASE_ERR, BASE_P95, over_psi),
            e(BASE_ERR, BASE_P95, over_psi),
        ),
        sc(
            "group-only: error rate",
            "err 6% on the 10% hw group only".into(),
            true,
            HEALTHY,
            e(2.0 * ERR_MAX, BASE_P95, 0.0),
        ),
        sc(
            "group-only: p95",
            "p95 600 ms on the 10% hw group only".into(),
            true,
            HEALTHY,
            e(BASE_ERR, 2.0 * P95_MAX, 0.0),
        ),
    ];
    scenarios.push(Scenario {
        rate: 0.3,
        ..sc(
            "thin traffic: healthy",
            "0.3 req/min per device".into(),
            false,
            HEALTHY,
            HEALTHY,
        )
    });
    scenarios.push(Scenario {
        rate: 0.3,
        ..sc(
            "thin traffic: error 2x",
            "err 6%, 0.3 req/min per device".into(),
            true,
            e(2.0 * ERR_MAX, BASE_P95, 0.0),
            e(2.0 * ERR_MAX, BASE_P95, 0.0),
        )
    });
    scenarios.push(Scenario {
        noisy: true,
        ..sc(
            "noisy traffic: healthy",
            "bursty, per-device volumes lognormal(0.5)".into(),
            false,
            HEALTHY,
            HEALTHY,
        )
    });
    scenarios.push(Scenario {
        noisy: true,
        ..sc(
            "noisy traffic: under all",
            "bursty + all three at 97%".into(),
            false,
            all_under,
            all_under,
        )
    });
    println!(
        "gate bench: {seeds} seeds per scenario; fleet {DEVICES} devices ({MINORITY} in hw group variant-b), first canary 5%, analyses 30m every 5m, confidence 0.95; engine driven in-process with a fake clock and edgecd-sim synth metrics"
    );
    println!(
        "{:<28} {:<42} {:>11} {:>9} {:>10} {:>11} {:>10} {:>12}",
        "scenario",
        "true effect",
        "false abort",
        "miss",
        "undecided",
        "median min",
        "escalated",
        "bad outside"
    );
    for s in &scenarios {
        let outcomes: Vec<Outcome> = (0..seeds).map(|seed| run(s, &spec, seed)).collect();
        let n = outcomes.len();
        let aborted = outcomes.iter().filter(|o| o.aborted).count();
        let promoted = outcomes.iter().filter(|o| o.promoted).count();
        let undecided = n - aborted - promoted;
        let mut times: Vec<i64> = outcomes
            .iter()
            .filter_map(|o| o.decided_after_min)
            .collect();
        times.sort_unstable();
        let median = times
            .get(times.len() / 2)
            .map_or("-".to_string(), |t| t.to_string());
        let escalated = outcomes.iter().filter(|o| o.escalated).count();
        let outside: usize = outcomes.iter().map(|o| o.outside_bad).sum();
        let (fa, miss) = if s.bad {
            ("-".to_string(), pct(promoted, n))
        } else {
            (pct(aborted, n), "-".to_string())
        };
        println!(
            "{:<28} {:<42} {:>11} {:>9} {:>10} {:>11} {:>10} {:>12}",
            s.name,
            s.effect,
            fa,
            miss,
            pct(undecided, n),
            median,
            pct(escalated, n),
            outside
        );
    }
}

//! The thermal governor: a pure state machine from SoC temperature to how hard the runtime may
//! work. Below the soft limit it runs `max_threads`; from the soft limit on it runs
//! `throttled_threads`; from the hard limit on it sheds load (HTTP 429). It steps back down only
//! once the temperature is `hysteresis_c` below the limit it crossed, so it does not flap.
//! IO (reading the sensor, logging, metrics) lives in `thermal`.

use serde::Serialize;

/// Limits in degrees Celsius and thread counts per state.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GovernorConfig {
    pub soft_limit_c: f64,
    pub hard_limit_c: f64,
    pub hysteresis_c: f64,
    pub max_threads: usize,
    pub throttled_threads: usize,
}

impl GovernorConfig {
    /// Raspberry Pi 5 defaults (firmware throttles at 80–85 °C): soft 75, hard 85, hysteresis 5;
    /// throttled runs half the threads.
    pub fn for_threads(max_threads: usize) -> Self {
        let max_threads = max_threads.max(1);
        GovernorConfig {
            soft_limit_c: 75.0,
            hard_limit_c: 85.0,
            hysteresis_c: 5.0,
            max_threads,
            throttled_threads: (max_threads / 2).max(1),
        }
    }
}

/// What the governor currently allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum GovernorState {
    /// Full speed.
    Normal,
    /// Above the soft limit: fewer threads.
    Throttled,
    /// Above the hard limit: new inference requests get 429.
    Shedding,
}

impl GovernorState {
    /// The value of the `edgecd_infer_governor_state` gauge.
    pub fn code(self) -> u8 {
        match self {
            GovernorState::Normal => 0,
            GovernorState::Throttled => 1,
            GovernorState::Shedding => 2,
        }
    }

    pub fn from_code(c: u8) -> GovernorState {
        match c {
            0 => GovernorState::Normal,
            1 => GovernorState::Throttled,
            _ => GovernorState::Shedding,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            GovernorState::Normal => "normal",
            GovernorState::Throttled => "throttled",
            GovernorState::Shedding => "shedding",
        }
    }
}

/// The next state given the current one and a temperature reading. `None` (the sensor could not
/// be read) keeps the current state.
pub fn next_state(
    cfg: &GovernorConfig,
    state: GovernorState,
    temp_c: Option<f64>,
) -> GovernorState {
    let Some(t) = temp_c.filter(|t| t.is_finite()) else {
        return state;
    };
    use GovernorState::*;
    // Going up is immediate; going down needs the temperature under (limit - hysteresis).
    if t >= cfg.hard_limit_c {
        return Shedding;
    }
    match state {
        Shedding if t >= cfg.hard_limit_c - cfg.hysteresis_c => Shedding,
        Shedding | Throttled if t >= cfg.soft_limit_c - cfg.hysteresis_c => Throttled,
        Normal if t >= cfg.soft_limit_c => Throttled,
        _ => Normal,
    }
}

/// A state change, for the log and the transitions counter.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Transition {
    pub from: GovernorState,
    pub to: GovernorState,
    pub temp_c: f64,
}

/// The governor: its configuration and current state.
#[derive(Debug, Clone)]
pub struct Governor {
    pub cfg: GovernorConfig,
    state: GovernorState,
}

impl Governor {
    pub fn new(cfg: GovernorConfig) -> Self {
        Governor {
            cfg,
            state: GovernorState::Normal,
        }
    }

    pub fn state(&self) -> GovernorState {
        self.state
    }

    /// Threads the runtime may use in the current state.
    pub fn threads(&self) -> usize {
        match self.state {
            GovernorState::Normal => self.cfg.max_threads,
            GovernorState::Throttled | GovernorState::Shedding => {
                self.cfg.throttled_threads.min(self.cfg.max_threads)
            }
        }
    }

    /// Whether new inference requests are refused.
    pub fn shedding(&self) -> bool {
        self.state == GovernorState::Shedding
    }

    /// Feeds one reading; returns the transition if the state changed.
    pub fn observe(&mut self, temp_c: Option<f64>) -> Option<Transition> {
        let next = next_state(&self.cfg, self.state, temp_c);
        if next == self.state {
            return None;
        }
        let t = Transition {
            from: self.state,
            to: next,
            temp_c: temp_c.unwrap_or(f64::NAN),
        };
        self.state = next;
        Some(t)
    }
}

#[cfg(test)]
mod tests {
    use super::GovernorState::*;
    use super::*;

    fn cfg() -> GovernorConfig {
        GovernorConfig {
            soft_limit_c: 70.0,
            hard_limit_c: 80.0,
            hysteresis_c: 5.0,
            max_threads: 4,
            throttled_threads: 2,
        }
    }

    #[test]
    fn fake_temperature_sequence() {
        let mut g = Governor::new(cfg());
        let seq: &[(Option<f64>, GovernorState, usize)] = &[
            (Some(50.0), Normal, 4),
            (Some(69.9), Normal, 4),
            (Some(70.0), Throttled, 2),
            (Some(68.0), Throttled, 2), // inside the hysteresis band: stays throttled
            (None, Throttled, 2),       // sensor error keeps the state
            (Some(79.0), Throttled, 2),
            (Some(80.0), Shedding, 2),
            (Some(76.0), Shedding, 2), // hysteresis below the hard limit
            (Some(74.9), Throttled, 2),
            (Some(85.0), Shedding, 2),
            (Some(60.0), Normal, 4), // far below both: straight back to normal
            (Some(66.0), Normal, 4),
            (Some(f64::NAN), Normal, 4),
            (Some(90.0), Shedding, 2), // a jump skips Throttled
            (Some(64.9), Normal, 4),
        ];
        let mut transitions = 0;
        for (i, (t, want, threads)) in seq.iter().enumerate() {
            let before = g.state();
            let tr = g.observe(*t);
            assert_eq!(g.state(), *want, "step {i} temp {t:?}");
            assert_eq!(g.threads(), *threads, "step {i}");
            assert_eq!(g.shedding(), *want == Shedding);
            assert_eq!(
                tr.is_some(),
                before != *want,
                "step {i}: a transition iff the state changed"
            );
            transitions += usize::from(tr.is_some());
        }
        assert_eq!(transitions, 7);
    }

    #[test]
    fn defaults_and_codes() {
        let c = GovernorConfig::for_threads(4);
        assert_eq!((c.max_threads, c.throttled_threads), (4, 2));
        assert_eq!(GovernorConfig::for_threads(1).throttled_threads, 1);
        for s in [Normal, Throttled, Shedding] {
            assert_eq!(GovernorState::from_code(s.code()), s);
        }
    }
}

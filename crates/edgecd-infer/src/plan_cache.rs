//! The per-shape plan cache of a model with symbolic input dimensions, bounded by memory: each
//! plan comes with an estimate of the bytes it keeps alive, and the least recently used plans
//! are dropped once the cache would hold more than its byte budget. Pure bookkeeping: the
//! estimate is made by the caller (`model::plan_bytes`), and time is a use counter.

use std::sync::atomic::{AtomicU64, Ordering};

/// The default byte budget of one model's plan cache (`edgecd-infer --plan-cache-bytes`).
pub const DEFAULT_BUDGET_BYTES: u64 = 256 << 20;

/// Counters shared by every model a backend loads, so they only grow over the process's life
/// (a reload starts a new cache, not new counters).
#[derive(Debug, Default)]
pub struct PlanCounters {
    /// Plans built (each a compilation of the graph for one set of input shapes).
    pub built: AtomicU64,
    /// Plans dropped to stay within the budget (a plan bigger than the whole budget counts as
    /// dropped at once).
    pub evictions: AtomicU64,
}

/// What the cache holds now, for `/metrics`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PlanCacheStats {
    pub budget_bytes: u64,
    /// Estimated bytes of the cached plans.
    pub bytes: u64,
    pub plans: u64,
    pub built_total: u64,
    pub evictions_total: u64,
}

struct Entry<K, P> {
    key: K,
    plan: P,
    bytes: u64,
    last_used: u64,
}

/// Plans by key (the input shapes), least recently used evicted past `budget` bytes.
pub struct PlanCache<K, P> {
    budget: u64,
    entries: Vec<Entry<K, P>>,
    bytes: u64,
    clock: u64,
}

impl<K: PartialEq, P: Clone> PlanCache<K, P> {
    pub fn new(budget_bytes: u64) -> Self {
        PlanCache {
            budget: budget_bytes,
            entries: Vec::new(),
            bytes: 0,
            clock: 0,
        }
    }

    /// The plan for `key`, marked as just used.
    pub fn get(&mut self, key: &K) -> Option<P> {
        self.clock += 1;
        let now = self.clock;
        let e = self.entries.iter_mut().find(|e| e.key == *key)?;
        e.last_used = now;
        Some(e.plan.clone())
    }

    /// Keeps `plan` (estimated at `bytes`) for `key`, evicting the least recently used plans
    /// until everything fits the budget. A plan that alone exceeds the budget is not kept.
    /// Returns how many plans were dropped (counting a plan not kept).
    pub fn insert(&mut self, key: K, plan: P, bytes: u64) -> u64 {
        self.clock += 1;
        if let Some(ix) = self.entries.iter().position(|e| e.key == key) {
            // Built twice at once by two requests: keep one.
            let old = self.entries.swap_remove(ix);
            self.bytes -= old.bytes;
        }
        if bytes > self.budget {
            return 1;
        }
        let mut evicted = 0;
        while self.bytes + bytes > self.budget {
            let Some(lru) = self
                .entries
                .iter()
                .enumerate()
                .min_by_key(|(_, e)| e.last_used)
                .map(|(ix, _)| ix)
            else {
                break;
            };
            let e = self.entries.swap_remove(lru);
            self.bytes -= e.bytes;
            evicted += 1;
        }
        self.bytes += bytes;
        self.entries.push(Entry {
            key,
            plan,
            bytes,
            last_used: self.clock,
        });
        evicted
    }

    pub fn budget(&self) -> u64 {
        self.budget
    }

    /// Estimated bytes held.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Snapshot for `/metrics`, with the backend's counters.
    pub fn stats(&self, counters: &PlanCounters) -> PlanCacheStats {
        PlanCacheStats {
            budget_bytes: self.budget,
            bytes: self.bytes,
            plans: self.entries.len() as u64,
            built_total: counters.built.load(Ordering::Relaxed),
            evictions_total: counters.evictions.load(Ordering::Relaxed),
        }
    }
}

/// Parses a byte size: a number with an optional unit `K`/`KiB`, `M`/`MiB`, `G`/`GiB`
/// (powers of 1024; `KB`/`MB`/`GB` too) or `B` (`--plan-cache-bytes 512M`).
pub fn parse_bytes(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '_'))
        .unwrap_or(t.len());
    let (digits, unit) = t.split_at(split);
    let n: u64 = digits.replace('_', "").parse().map_err(|_| {
        format!("{text:?} is not a byte size: give a number with an optional unit, e.g. 268435456, 256M or 1G")
    })?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        other => {
            return Err(format!(
                "{text:?}: unknown unit {other:?} (use K, M or G, powers of 1024)"
            ));
        }
    };
    n.checked_mul(mult)
        .ok_or_else(|| format!("{text:?} is too large"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn evicts_least_recently_used_past_the_byte_budget() {
        let mut c: PlanCache<u32, &str> = PlanCache::new(100);
        assert_eq!(c.insert(1, "a", 40), 0);
        assert_eq!(c.insert(2, "b", 40), 0);
        assert_eq!(c.bytes(), 80);
        // 1 is used again, so 2 is the least recently used when 3 needs room.
        assert_eq!(c.get(&1), Some("a"));
        assert_eq!(c.insert(3, "c", 40), 1);
        assert_eq!(c.get(&2), None);
        assert_eq!(c.get(&1), Some("a"));
        assert_eq!(c.get(&3), Some("c"));
        assert_eq!(c.bytes(), 80);
        // A big plan pushes out as many as it needs, oldest first.
        assert_eq!(c.insert(4, "d", 90), 2);
        assert_eq!((c.len(), c.bytes()), (1, 90));
        // Many small plans fit where a count limit of 8 would have stopped.
        let mut small: PlanCache<u32, u32> = PlanCache::new(100);
        for k in 0..20 {
            assert_eq!(small.insert(k, k, 5), 0);
        }
        assert_eq!((small.len(), small.bytes()), (20, 100));
        assert_eq!(small.insert(20, 20, 5), 1);
        assert_eq!(small.get(&0), None, "the oldest went first");
    }

    #[test]
    fn a_plan_bigger_than_the_budget_is_not_kept() {
        let mut c: PlanCache<u32, &str> = PlanCache::new(100);
        c.insert(1, "a", 60);
        assert_eq!(c.insert(2, "huge", 101), 1);
        assert_eq!(c.get(&2), None);
        assert_eq!(c.get(&1), Some("a"), "the others stay");
        assert_eq!(c.bytes(), 60);
    }

    #[test]
    fn the_same_key_twice_is_kept_once() {
        let mut c: PlanCache<u32, &str> = PlanCache::new(100);
        c.insert(1, "a", 30);
        c.insert(1, "a2", 30);
        assert_eq!((c.len(), c.bytes()), (1, 30));
        assert_eq!(c.get(&1), Some("a2"));
    }

    #[test]
    fn byte_sizes() {
        assert_eq!(parse_bytes("1024"), Ok(1024));
        assert_eq!(parse_bytes("256M"), Ok(256 << 20));
        assert_eq!(parse_bytes("1GiB"), Ok(1 << 30));
        assert_eq!(parse_bytes("64 KiB"), Ok(64 << 10));
        assert_eq!(parse_bytes("0"), Ok(0));
        assert!(parse_bytes("lots").unwrap_err().contains("not a byte size"));
        assert!(parse_bytes("5T").unwrap_err().contains("unknown unit"));
        assert!(parse_bytes("99999999999999G").is_err());
    }
}

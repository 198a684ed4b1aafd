//! The controller: the one background service of a server that changes state on its own — it
//! drives active rollouts (the pure engine of `edgecd-rollout`, applied by [`crate::rollouts`]),
//! reconciles fleets (desired state, [`crate::fleets`]), applies the GitOps repo's commits
//! ([`crate::gitops`], in a task beside the passes: a slow fetch holds nothing back), sweeps the notification outbox
//! ([`crate::notify::Notify::sweep_outbox`]) and unreferenced blobs. Its clock, lease and
//! notifier are injected ([`Clock`], the store's lease, `Config::notifier`), so tests drive it
//! with a fake clock and see what it sends. A panic in a pass restarts it with backoff.
//!
//! **One controller among replicas.** Several servers may share one PostgreSQL database; only
//! the one holding the `controller` lease (a row with holder, epoch and expiry, renewed every
//! pass) runs a pass. Every rollout state it saves is fenced by that epoch inside the saving
//! transaction, so a replica that lost the lease (paused, partitioned, presumed dead) can no
//! longer save a state or queue a notification, and the effects it may still apply are
//! idempotent (a device already assigned the release is skipped). A replica that dies holding
//! the lease is replaced once the lease expires (`controller_lease_ms`).
//!
//! **Supervised.** A pass that panics restarts the service with backoff (1 s doubling to
//! 30 s); the service's health (leader or standby, restarts, last good pass) is in `/readyz`
//! and `/metrics`.

use crate::AppState;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

/// The lease that elects the controller.
pub const LEASE: &str = "controller";

/// Where time comes from (injected: tests use [`FakeClock`]).
pub trait Clock: Send + Sync + std::fmt::Debug + 'static {
    /// Unix milliseconds.
    fn now_ms(&self) -> i64;
    /// Unix seconds.
    fn now(&self) -> i64 {
        self.now_ms().div_euclid(1000)
    }
}

/// The system's wall clock.
#[derive(Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> i64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0)
    }
}

/// A clock that moves only when told to.
#[derive(Debug)]
pub struct FakeClock(AtomicI64);

impl FakeClock {
    pub fn at(unix_ms: i64) -> Self {
        Self(AtomicI64::new(unix_ms))
    }
    pub fn advance(&self, by: Duration) {
        self.0.fetch_add(by.as_millis() as i64, Ordering::SeqCst);
    }
}

impl Clock for FakeClock {
    fn now_ms(&self) -> i64 {
        self.0.load(Ordering::SeqCst)
    }
}

/// Proof that the controller holds the lease: saves are fenced by it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fence {
    pub holder: String,
    pub epoch: i64,
}

/// The controller's health, read by `/readyz` and `/metrics`.
#[derive(Debug, Default)]
pub struct Health {
    /// This replica holds the lease and runs passes.
    pub leader: AtomicBool,
    /// The lease's epoch while leader.
    pub epoch: AtomicI64,
    /// Restarts after a panic.
    pub restarts: AtomicU64,
    pub passes_ok: AtomicU64,
    pub passes_failed: AtomicU64,
    /// Unix ms of the last pass that succeeded (0: none yet).
    pub last_ok_ms: AtomicI64,
    /// The service is running (false while it waits to be restarted).
    pub running: AtomicBool,
}

impl Health {
    /// `None` when healthy; otherwise why not.
    pub fn problem(&self) -> Option<String> {
        if !self.running.load(Ordering::Relaxed) {
            return Some(format!(
                "the controller is restarting after a crash ({} restarts)",
                self.restarts.load(Ordering::Relaxed)
            ));
        }
        None
    }
}

/// Runs the controller on the current runtime until the returned handle is aborted.
pub fn spawn(st: AppState) -> tokio::task::JoinHandle<()> {
    let health = st.controller.clone();
    tokio::spawn(supervise(health, move || run(st.clone())))
}

/// Runs `service` and starts it again whenever it panics, after a backoff that doubles from 1 s
/// to 30 s (reset once a run lasted a minute). Aborting the supervisor stops the service too.
pub async fn supervise<F, Fut>(health: Arc<Health>, service: F)
where
    F: Fn() -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let mut backoff = Duration::from_secs(1);
    loop {
        health.running.store(true, Ordering::Relaxed);
        let started = tokio::time::Instant::now();
        let mut task = AbortOnDrop(tokio::spawn(service()));
        let ended = (&mut task.0).await;
        health.running.store(false, Ordering::Relaxed);
        health.leader.store(false, Ordering::Relaxed);
        match ended {
            Err(e) if e.is_panic() => {
                health.restarts.fetch_add(1, Ordering::Relaxed);
                if started.elapsed() >= Duration::from_secs(60) {
                    backoff = Duration::from_secs(1);
                }
                tracing::error!(restart_in = ?backoff, "the controller crashed (panic); restarting it");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(30));
            }
            _ => return,
        }
    }
}

/// Aborts a task when dropped (the supervisor's own abort reaches the service).
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The service: every tick, take or renew the lease; while holding it, drive the rollouts,
/// reconcile the fleets and (every `blob_gc_every_secs`) sweep blobs.
async fn run(st: AppState) {
    let every = Duration::from_millis(st.config.controller_tick_ms.max(10));
    let sweep_every = Duration::from_secs(st.config.blob_gc_every_secs.max(1));
    let mut last_sweep: Option<tokio::time::Instant> = None;
    let mut next_reconcile = tokio::time::Instant::now();
    let mut gitops: Option<AbortOnDrop> = None;
    let mut t = tokio::time::interval(every);
    t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let health = st.controller.clone();
    loop {
        t.tick().await;
        let lease = st
            .store
            .acquire_lease(
                LEASE,
                &st.replica_id,
                st.config.controller_lease_ms as i64,
                st.clock.now_ms(),
            )
            .await;
        let fence = match lease {
            Ok(Some(epoch)) => Fence {
                holder: st.replica_id.clone(),
                epoch,
            },
            Ok(None) => {
                if health.leader.swap(false, Ordering::Relaxed) {
                    tracing::warn!(replica = %st.replica_id, "lost the controller lease: another replica runs the controller");
                }
                st.notifier.sweep_outbox().await;
                continue;
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot take or renew the controller lease; retrying next tick");
                continue;
            }
        };
        if !health.leader.swap(true, Ordering::Relaxed)
            || health.epoch.load(Ordering::Relaxed) != fence.epoch
        {
            tracing::info!(replica = %st.replica_id, epoch = fence.epoch, "this replica runs the controller");
        }
        health.epoch.store(fence.epoch, Ordering::Relaxed);
        match crate::rollouts::tick_all(&st, Some(&fence)).await {
            Ok(()) => {
                health.passes_ok.fetch_add(1, Ordering::Relaxed);
                health
                    .last_ok_ms
                    .store(st.clock.now_ms(), Ordering::Relaxed);
            }
            Err(e) => {
                health.passes_failed.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(error = ?e, "rollout controller pass failed; retrying next tick");
            }
        }
        if tokio::time::Instant::now() >= next_reconcile {
            let started = tokio::time::Instant::now();
            if let Err(e) = crate::fleets::reconcile(&st, Some(&fence)).await {
                health.passes_failed.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(error = ?e, "fleet reconcile pass failed; retrying next tick");
            }
            // On a big fleet a pass reads every device: keep it to a tenth of the time.
            next_reconcile = tokio::time::Instant::now() + started.elapsed() * 9;
        }
        // GitOps: fetch when due, apply or refuse a new commit. It runs beside the passes (one
        // at a time): a slow or hanging fetch never holds rollouts back. Its saves are fenced
        // by the lease like the others.
        if gitops.as_ref().is_none_or(|t| t.0.is_finished()) {
            let (st, fence, health) = (st.clone(), fence.clone(), health.clone());
            gitops = Some(AbortOnDrop(tokio::spawn(async move {
                if let Err(e) = crate::gitops::pass(&st, Some(&fence)).await {
                    health.passes_failed.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(error = ?e, "GitOps pass failed; retrying next tick");
                }
            })));
        }
        // Notifications the passes saved are queued as they are saved; the sweep queues
        // what a full queue, a restart or a failover left pending.
        st.notifier.sweep_outbox().await;
        if last_sweep.is_none_or(|l| l.elapsed() >= sweep_every) {
            last_sweep = Some(tokio::time::Instant::now());
            let grace = Duration::from_secs(st.config.blob_gc_grace_secs);
            if let Err(e) = crate::blobs::sweep_unreferenced(&st, grace).await {
                tracing::warn!(error = ?e, "blob sweep failed; retrying later");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A service that panics is started again, with the restarts counted; aborting the
    /// supervisor stops the service.
    #[tokio::test(start_paused = true)]
    async fn a_panicking_service_is_restarted_with_backoff() {
        let health = Arc::new(Health::default());
        let runs = Arc::new(AtomicU64::new(0));
        let r = runs.clone();
        let sup = tokio::spawn(supervise(health.clone(), move || {
            let r = r.clone();
            async move {
                if r.fetch_add(1, Ordering::SeqCst) < 2 {
                    panic!("injected controller failure");
                }
                std::future::pending::<()>().await;
            }
        }));
        // 1 s, then 2 s of backoff: a third run starts and keeps running.
        tokio::time::sleep(Duration::from_millis(3500)).await;
        assert_eq!(runs.load(Ordering::SeqCst), 3);
        assert_eq!(health.restarts.load(Ordering::SeqCst), 2);
        assert!(health.running.load(Ordering::SeqCst));
        assert_eq!(health.problem(), None);
        sup.abort();
        let _ = sup.await;
    }

    /// While it waits to restart, the health says so.
    #[tokio::test(start_paused = true)]
    async fn health_reports_a_crashed_controller() {
        let health = Arc::new(Health::default());
        let sup = tokio::spawn(supervise(health.clone(), || async {
            panic!("injected controller failure")
        }));
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(
            health
                .problem()
                .is_some_and(|p| p.contains("restarting after a crash")),
            "{:?}",
            health.problem()
        );
        sup.abort();
        let _ = sup.await;
    }

    #[test]
    fn the_fake_clock_moves_only_when_told() {
        let c = FakeClock::at(1_000_500);
        assert_eq!(c.now(), 1000);
        c.advance(Duration::from_secs(90));
        assert_eq!(c.now_ms(), 1_090_500);
    }
}

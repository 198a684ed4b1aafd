//! The threads of one inference: the thread that runs the plan and the pool threads that help
//! it, kept awake between its parallel loops. No tract, no I/O.
//!
//! Why: each parallel operator used to hand its second share to the rayon pool, whose idle
//! thread is asleep by then (rayon sleeps after a few dozen yields). Traced on squeezenet, two
//! threads: the plan's thread spent ~10 µs waking the other (a futex call) and the other began
//! 20–30 µs after it, in each of the ~26 operators, each of ~50–400 µs. A [`Crew`] is made
//! for one run of a plan ([`crate::model::on_pool`]): its helpers are pool jobs that spin
//! between the operators, take each parallel loop as soon as the plan's thread posts it (one
//! atomic store), and leave when the run ends, or after [`IDLE`] with nothing to do (a long
//! serial operator) so that a core does not spin for nothing. While they spin they also run
//! the pool's other jobs (`rayon::yield_now`), such as tract's own parallel products.

use std::cell::RefCell;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// How long a helper spins with no loop to take before it leaves the crew.
pub const IDLE: Duration = Duration::from_millis(2);

/// `state`: the loop's number (high 32 bits), whether it is open to helpers, and how many
/// helpers are running it (low 16 bits).
const OPEN: u64 = 1 << 16;
const RUNNING: u64 = OPEN - 1;
const NUMBER: u64 = 1 << 32;

/// One parallel loop: called with the caller's place in the crew (0 for the plan's thread).
type Job<'a> = &'a (dyn Fn(usize) + Sync);

/// The plan's thread and its helpers, for one run of a plan.
pub struct Crew {
    state: AtomicU64,
    /// The open loop: a pointer to a [`Job`] on the plan thread's stack.
    job: AtomicPtr<()>,
    /// Set when the run is over: helpers leave.
    over: AtomicBool,
    /// Helpers in the crew now, helper jobs spawned that have not started yet, and places
    /// handed out so far.
    helpers: AtomicUsize,
    pending: AtomicUsize,
    places: AtomicUsize,
    /// A helper's share of a loop panicked: the plan's thread panics in turn.
    panicked: AtomicBool,
    /// The pool thread that runs the plan (a helper job it picks up itself leaves at once).
    owner: Option<usize>,
    /// How long a helper spins with no loop to take before it leaves.
    idle: Duration,
}

thread_local! {
    static CURRENT: RefCell<Option<Arc<Crew>>> = const { RefCell::new(None) };
}

impl Crew {
    /// A crew for the plan run on the current thread; `helpers` pool jobs to join it are
    /// spawned on `pool`.
    pub fn start(pool: &rayon::ThreadPool, helpers: usize) -> Arc<Crew> {
        Crew::start_idle(pool, helpers, IDLE)
    }

    /// [`Crew::start`], helpers leaving after `idle` with nothing to do.
    fn start_idle(pool: &rayon::ThreadPool, helpers: usize, idle: Duration) -> Arc<Crew> {
        let crew = Arc::new(Crew {
            state: AtomicU64::new(0),
            job: AtomicPtr::new(std::ptr::null_mut()),
            over: AtomicBool::new(false),
            helpers: AtomicUsize::new(0),
            pending: AtomicUsize::new(0),
            places: AtomicUsize::new(0),
            panicked: AtomicBool::new(false),
            owner: rayon::current_thread_index(),
            idle,
        });
        crew.spawn_helpers(pool, helpers);
        crew
    }

    fn spawn_helpers(self: &Arc<Crew>, pool: &rayon::ThreadPool, helpers: usize) {
        self.pending.fetch_add(helpers, Ordering::AcqRel);
        for _ in 0..helpers {
            let crew = self.clone();
            pool.spawn(move || crew.help());
        }
    }

    /// Whether helpers are in the crew now (a loop given to [`Crew::parallel`] is shared).
    pub fn has_helpers(&self) -> bool {
        self.helpers.load(Ordering::Acquire) > 0
    }

    /// When the helpers have all left (idle through a long serial operator) and none is on
    /// its way, sends new ones (`pool`'s other threads), for the loops after this one.
    pub fn recruit(self: &Arc<Crew>, pool: &rayon::ThreadPool) {
        if self.helpers.load(Ordering::Acquire) == 0
            && self.pending.load(Ordering::Acquire) == 0
            && !self.over.load(Ordering::Acquire)
        {
            self.spawn_helpers(pool, pool.current_num_threads().saturating_sub(1));
        }
    }

    /// Runs `f` with this crew as the current thread's, then sends the helpers away.
    pub fn run<R>(self: &Arc<Crew>, f: impl FnOnce() -> R) -> R {
        struct Restore(Option<Arc<Crew>>, Arc<Crew>);
        impl Drop for Restore {
            fn drop(&mut self) {
                self.1.over.store(true, Ordering::Release);
                let before = self.0.take();
                CURRENT.with_borrow_mut(|c| *c = before);
            }
        }
        let before = CURRENT.with_borrow_mut(|c| c.replace(self.clone()));
        let _restore = Restore(before, self.clone());
        f()
    }

    /// The crew of the plan run on this thread.
    pub fn current() -> Option<Arc<Crew>> {
        CURRENT.with_borrow(|c| c.clone())
    }

    /// Runs `job` on this thread (place 0) and on every helper that takes it while it runs;
    /// returns when every one of them is done with it. `job` must do all the work whoever
    /// takes it (helpers may take it late, or not at all). A loop opened from inside another
    /// (by the plan's thread, the only one this crew is current on) runs on this thread alone.
    pub fn parallel(&self, job: &(dyn Fn(usize) + Sync)) {
        if self.state.load(Ordering::Acquire) & OPEN != 0 {
            return job(0);
        }
        /// Closes the loop and waits for the helpers in it, also when `job` panics here (they
        /// read the caller's stack).
        struct Close<'a>(&'a Crew);
        impl Drop for Close<'_> {
            fn drop(&mut self) {
                self.0.state.fetch_and(!OPEN, Ordering::AcqRel);
                while self.0.state.load(Ordering::Acquire) & RUNNING != 0 {
                    std::hint::spin_loop();
                }
            }
        }
        let job: Job = job;
        self.job
            .store((&raw const job).cast_mut().cast(), Ordering::Relaxed);
        // Closed, with nobody in it (`Close` waited): the next number, open.
        self.state.fetch_add(NUMBER | OPEN, Ordering::Release);
        {
            let _close = Close(self);
            job(0);
        }
        if self.panicked.swap(false, Ordering::AcqRel) {
            panic!("a helper thread panicked in a parallel loop");
        }
    }

    /// A helper: takes each loop the plan's thread opens, until the run is over or nothing
    /// came for [`IDLE`].
    fn help(&self) {
        if self.over.load(Ordering::Acquire) || rayon::current_thread_index() == self.owner {
            self.pending.fetch_sub(1, Ordering::AcqRel);
            return;
        }
        let place = self.places.fetch_add(1, Ordering::Relaxed) + 1;
        // Counted in the crew before it stops being counted as on its way, so that `recruit`
        // never finds it in neither count.
        self.helpers.fetch_add(1, Ordering::AcqRel);
        self.pending.fetch_sub(1, Ordering::AcqRel);
        let mut last = u64::MAX;
        let mut since = Instant::now();
        let mut spins = 0u32;
        loop {
            let state = self.state.load(Ordering::Acquire);
            if state & OPEN != 0 && state / NUMBER != last {
                if self
                    .state
                    .compare_exchange_weak(state, state + 1, Ordering::AcqRel, Ordering::Relaxed)
                    .is_ok()
                {
                    last = state / NUMBER;
                    // SAFETY: the loop is open and counts this helper as running it, so the
                    // plan's thread is inside `parallel`, which stored `job` (a `Job` on its
                    // stack) before opening it and does not return before this helper is done
                    // with it (the decrement below).
                    #[allow(unsafe_code)]
                    let job = unsafe { *self.job.load(Ordering::Relaxed).cast::<Job>() };
                    if catch_unwind(AssertUnwindSafe(|| job(place))).is_err() {
                        self.panicked.store(true, Ordering::Release);
                    }
                    self.state.fetch_sub(1, Ordering::Release);
                    since = Instant::now();
                }
                continue;
            }
            if self.over.load(Ordering::Acquire) {
                break;
            }
            spins = spins.wrapping_add(1);
            if spins & 31 == 0 {
                if rayon::yield_now() == Some(rayon::Yield::Executed) {
                    since = Instant::now();
                } else if since.elapsed() > self.idle {
                    break;
                }
            }
            std::hint::spin_loop();
        }
        self.helpers.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    fn pool(threads: usize) -> rayon::ThreadPool {
        rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap()
    }

    /// Runs `f` (given the pool and the crew) in a run under a crew of `helpers` (leaving after
    /// `idle`) on a pool of `threads`; returns the crew too.
    fn with_crew<R>(
        threads: usize,
        helpers: usize,
        idle: Duration,
        f: impl FnOnce(&rayon::ThreadPool, &Arc<Crew>) -> R + Send,
    ) -> (Arc<Crew>, R)
    where
        R: Send,
    {
        let pool = pool(threads);
        pool.install(|| {
            let crew = Crew::start_idle(&pool, helpers, idle);
            let result = crew.run(|| f(&pool, &crew));
            (crew, result)
        })
    }

    /// Runs `loops` loops of `n` items, each taking `item_time`, by
    /// [`crate::ops::for_each_share`] in a run under a crew of `helpers` on a pool of
    /// `threads`: how many times each item ran, and which pool threads ran items.
    fn run_loops(
        threads: usize,
        helpers: usize,
        loops: usize,
        n: usize,
        item_time: Duration,
    ) -> (Vec<Vec<usize>>, Vec<Option<usize>>) {
        let (_, result) = with_crew(threads, helpers, IDLE, |pool, _| {
            let mut counts = vec![];
            let ran_on = Mutex::new(vec![]);
            for _ in 0..loops {
                let count: Vec<AtomicUsize> = (0..n).map(|_| AtomicUsize::new(0)).collect();
                crate::ops::for_each_share(Some(pool), n, |i| {
                    std::thread::sleep(item_time);
                    count[i].fetch_add(1, Ordering::Relaxed);
                    let mut ran_on = ran_on.lock().unwrap();
                    let me = rayon::current_thread_index();
                    if !ran_on.contains(&me) {
                        ran_on.push(me);
                    }
                });
                counts.push(count.iter().map(|c| c.load(Ordering::Relaxed)).collect());
            }
            (counts, ran_on.into_inner().unwrap())
        });
        result
    }

    #[test]
    fn every_item_runs_once_and_helpers_take_part() {
        let (counts, ran_on) = run_loops(3, 2, 40, 12, Duration::from_micros(200));
        for (l, count) in counts.iter().enumerate() {
            assert!(count.iter().all(|c| *c == 1), "loop {l}: {count:?}");
        }
        // 40 loops of 12 items of 200 µs each (about 100 ms): every thread takes part.
        assert_eq!(ran_on.len(), 3, "{ran_on:?}");
        // Loops of nothing, with the helpers gone idle in between: still every item once.
        let (counts, _) = run_loops(2, 1, 200, 3, Duration::ZERO);
        assert!(counts.iter().all(|c| c.iter().all(|c| *c == 1)));
    }

    #[test]
    fn a_loop_inside_a_loop_runs_on_the_plan_thread() {
        with_crew(2, 1, Duration::from_secs(60), |_, crew| {
            wait_for_a_helper(crew);
            let inner = Mutex::new(vec![]);
            crew.parallel(&|place| {
                if place == 0 {
                    crew.parallel(&|inner_place| inner.lock().unwrap().push(inner_place));
                }
            });
            assert_eq!(inner.into_inner().unwrap(), [0]);
            // Closed, nobody in it, nothing else left in the state.
            assert_eq!(crew.state.load(Ordering::Acquire) % NUMBER, 0);
            // The crew still shares the loops after it.
            wait_for_a_helper(crew);
        });
    }

    #[test]
    fn without_helpers_the_plan_thread_does_it_all() {
        with_crew(2, 0, IDLE, |_, crew| {
            let ran = Mutex::new(vec![]);
            crew.parallel(&|place| ran.lock().unwrap().push(place));
            assert_eq!(ran.into_inner().unwrap(), [0]);
        });
    }

    /// Posts loops until a helper has taken one.
    fn wait_for_a_helper(crew: &Crew) {
        let start = Instant::now();
        let taken = AtomicBool::new(false);
        while !taken.load(Ordering::Acquire) {
            assert!(start.elapsed() < Duration::from_secs(10), "no helper");
            // The loop stays open for a millisecond or until a helper takes it.
            crew.parallel(&|place| {
                if place > 0 {
                    taken.store(true, Ordering::Release);
                }
                let open = Instant::now();
                while !taken.load(Ordering::Acquire) && open.elapsed() < Duration::from_millis(1) {
                    std::hint::spin_loop();
                }
            });
        }
    }

    fn wait_for_no_helpers(crew: &Crew, what: &str) {
        let start = Instant::now();
        while crew.helpers.load(Ordering::Acquire) > 0 {
            assert!(start.elapsed() < Duration::from_secs(10), "{what}");
            std::thread::yield_now();
        }
    }

    #[test]
    fn helpers_leave_when_the_run_is_over() {
        // Helpers that would otherwise spin for a minute.
        let (crew, ()) = with_crew(2, 1, Duration::from_secs(60), |_, crew| {
            wait_for_a_helper(crew)
        });
        wait_for_no_helpers(&crew, "the helper stayed after the run");
        assert!(
            CURRENT.with_borrow(|c| c.is_none()),
            "the crew is left current"
        );
    }

    #[test]
    fn idle_helpers_leave_and_the_plan_thread_goes_on_alone() {
        with_crew(2, 1, Duration::from_millis(1), |_, crew| {
            wait_for_a_helper(crew);
            wait_for_no_helpers(crew, "the idle helper stayed");
            assert!(!crew.has_helpers(), "a crew without helpers");
            let ran = AtomicUsize::new(0);
            crew.parallel(&|place| {
                assert_eq!(place, 0);
                ran.fetch_add(1, Ordering::Relaxed);
            });
            assert_eq!(ran.into_inner(), 1);
        });
    }

    #[test]
    fn a_panic_in_a_helper_reaches_the_plan_thread() {
        let (_, result) = with_crew(2, 1, Duration::from_secs(60), |_, crew| {
            wait_for_a_helper(crew);
            std::panic::catch_unwind(AssertUnwindSafe(|| {
                // Place 0 waits until a helper has taken the loop (and panicked).
                let taken = AtomicBool::new(false);
                crew.parallel(&|place| {
                    if place > 0 {
                        taken.store(true, Ordering::Release);
                        panic!("helper");
                    }
                    let start = Instant::now();
                    while !taken.load(Ordering::Acquire) {
                        assert!(start.elapsed() < Duration::from_secs(10), "not taken");
                        std::hint::spin_loop();
                    }
                })
            }))
        });
        assert!(result.is_err(), "the helper's panic was lost");
    }
}

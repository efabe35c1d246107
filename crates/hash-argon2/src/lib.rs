//! The password-hasher port on argon2id.
//!
//! Hashing costs tens of milliseconds of CPU and megabytes of memory, so it
//! runs on a few dedicated threads (one per core by default), never on the
//! async workers. Long-lived threads keep the allocator reusing the same
//! blocks instead of growing a new arena per short-lived thread. A bounded
//! queue in front of them turns overload into a quick "unavailable" instead
//! of unbounded memory. Beyond the threads that hold a core for hashing
//! (`hashing.min_share`), the threads run only on cores that nothing else
//! wants (see [`Argon2Hasher::reserving`]). Each thread keeps its argon2
//! working memory and reuses it: a fresh 19 MiB per hash is what the
//! allocator would otherwise hand out, and keep.
//!
//! Hashes imported from Django ([`django`]) are checked on the same threads,
//! behind the same queue limit. A check that needs more memory than ours
//! (Django's argon2 takes 100 MiB) borrows it from a pool-wide budget for
//! the length of the check, waiting while other checks hold it.

pub mod django;

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use argon2::password_hash::phc::{Output, ParamsString, PasswordHash as PhcHash, Salt};
use argon2::password_hash::try_generate_salt;
use argon2::{Algorithm, Argon2, Block, Params, Version};
use async_trait::async_trait;
use gatehouse_domain::error::Overloaded;
use gatehouse_domain::ports::{PasswordCheck, PasswordHasher};
use gatehouse_domain::{PasswordHash, PlainPassword, PortError};
use tokio::sync::oneshot;

use crate::django::DjangoHash;

/// argon2id cost parameters; the defaults are OWASP's (m=19456 KiB, t=2, p=1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HashParams {
    pub memory_kib: u32,
    pub iterations: u32,
    pub parallelism: u32,
}

impl Default for HashParams {
    fn default() -> Self {
        Self {
            memory_kib: Params::DEFAULT_M_COST,
            iterations: Params::DEFAULT_T_COST,
            parallelism: Params::DEFAULT_P_COST,
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("invalid argon2 parameters: {0}")]
pub struct InvalidParams(String);

#[derive(Debug, thiserror::Error)]
#[error("the hashing threads are gone")]
struct PoolGone;

type Job = Box<dyn FnOnce(&mut Worker) + Send>;

/// The request being served, as the server reports it.
struct Request {
    arrived: Instant,
    /// One of its hashes has been queued already: the next is a follow-up.
    hashed: std::cell::Cell<bool>,
    /// When a thread took its first hash, and the pool to tell how long the
    /// request took from then on.
    first_hash_started: std::cell::RefCell<Option<(Instant, Arc<FinishAllowance>)>>,
}

/// How long requests have needed from the start of their first hash (the
/// hash, their database work, a follow-up hash, the answer): the longest of
/// the last two to four seconds. A first hash must start that long before
/// the queue deadline, so that its request is answered within the deadline.
/// In a storm, both parts stretch: a hash on the thread that yields to
/// requests takes longer whenever they run, and the database work after the
/// hashes comes in bursts (clients refused together come back together) and
/// takes tens of milliseconds; a window that spans a few bursts keeps their longest.
#[derive(Debug)]
struct FinishAllowance {
    recent: Mutex<RecentFinishes>,
}

#[derive(Debug)]
struct RecentFinishes {
    /// When the current window opened.
    opened: Instant,
    longest_now: Duration,
    longest_before: Duration,
}

/// The length of each of the two windows that [`FinishAllowance`] keeps.
const FINISH_WINDOW: Duration = Duration::from_secs(2);

impl Default for FinishAllowance {
    fn default() -> Self {
        let recent =
            RecentFinishes { opened: Instant::now(), longest_now: Duration::ZERO, longest_before: Duration::ZERO };
        Self { recent: Mutex::new(recent) }
    }
}

impl RecentFinishes {
    /// Moves on to the window that `now` falls in.
    fn roll(&mut self, now: Instant) {
        let age = now.duration_since(self.opened);
        if age >= FINISH_WINDOW {
            self.longest_before = if age < 2 * FINISH_WINDOW { self.longest_now } else { Duration::ZERO };
            self.longest_now = Duration::ZERO;
            self.opened = now;
        }
    }
}

impl FinishAllowance {
    fn observe(&self, took: Duration) {
        if let Ok(mut recent) = self.recent.lock() {
            recent.roll(Instant::now());
            recent.longest_now = recent.longest_now.max(took);
        }
    }

    /// The allowance, at most half of `deadline`: a freak sample does not refuse everyone.
    fn within(&self, deadline: Duration) -> Duration {
        let Ok(mut recent) = self.recent.lock() else { return Duration::ZERO };
        recent.roll(Instant::now());
        recent.longest_now.max(recent.longest_before).min(deadline / 2)
    }
}

tokio::task_local! {
    static REQUEST: Request;
}

/// When a request's first hash must start at the latest: its queue deadline
/// less the finish allowance, as the allowance stands each time it is asked.
#[derive(Debug, Clone)]
struct StartBy {
    due: Instant,
    deadline: Duration,
    finish: Arc<FinishAllowance>,
}

impl StartBy {
    fn at(&self) -> Instant {
        self.due - self.finish.within(self.deadline)
    }

    /// The earliest it can be: the allowance is at most half the deadline.
    fn soonest(&self) -> Instant {
        self.due - self.deadline / 2
    }
}

/// Runs `request` as one that arrived at `arrived`: the queue deadline of its
/// first hash counts from then, so that what it waited before asking (a
/// database connection, say) counts too. Its later hashes (a login's upgrade
/// of the stored hash, a password change's new hash) finish work it was
/// already admitted for: they go to the front of the queue and are never
/// refused at the deadline. A follow-up waits at most for a thread to free.
pub async fn arrived_at<F: std::future::Future>(arrived: Instant, request: F) -> F::Output {
    let scope = Request { arrived, hashed: std::cell::Cell::new(false), first_hash_started: Default::default() };
    REQUEST
        .scope(scope, async {
            let answer = request.await;
            if let Ok(Some((started, allowance))) = REQUEST.try_with(|request| request.first_hash_started.take()) {
                allowance.observe(started.elapsed());
            }
            answer
        })
        .await
}

/// How long a hash may wait for a thread by default (`hashing.queue_deadline_ms`).
pub const DEFAULT_QUEUE_DEADLINE: Duration = Duration::from_millis(2000);

/// Memory that checks costlier than our own hash may borrow at once, by
/// default: two of Django's argon2 checks (100 MiB each) and some room.
pub const DEFAULT_OVERSIZED_MEMORY_KIB: usize = 256 * 1024;

/// The memory, in KiB, that checks needing more than a thread's own working
/// memory hold right now, against its limit.
#[derive(Debug)]
struct MemoryBudget {
    limit_kib: AtomicUsize,
    held_kib: Mutex<usize>,
    returned: Condvar,
}

/// Memory borrowed from the budget; given back when dropped.
struct Borrowed<'b> {
    budget: &'b MemoryBudget,
    kib: usize,
}

impl MemoryBudget {
    fn new(limit_kib: usize) -> Self {
        Self { limit_kib: AtomicUsize::new(limit_kib), held_kib: Mutex::new(0), returned: Condvar::new() }
    }

    /// Waits until `kib` fits beside what others hold; a check that could
    /// never fit is refused.
    fn borrow(&self, kib: usize) -> Result<Borrowed<'_>, PortError> {
        let limit = self.limit_kib.load(Ordering::Relaxed);
        if kib > limit {
            return Err(PortError::unexpected(OverBudget { kib, limit }));
        }
        let mut held = self.held_kib.lock().map_err(|_| PortError::unexpected(PoolGone))?;
        while *held + kib > limit {
            held = self.returned.wait(held).map_err(|_| PortError::unexpected(PoolGone))?;
        }
        *held += kib;
        Ok(Borrowed { budget: self, kib })
    }
}

impl Drop for Borrowed<'_> {
    fn drop(&mut self) {
        if let Ok(mut held) = self.budget.held_kib.lock() {
            *held -= self.kib;
        }
        self.budget.returned.notify_all();
    }
}

#[derive(Debug, thiserror::Error)]
#[error("a password check needs {kib} KiB, over the hashing memory limit of {limit} KiB")]
struct OverBudget {
    kib: usize,
    limit: usize,
}

/// What a hashing thread owns: the configured parameters and its argon2
/// working memory, grown to the configured cost and then reused.
struct Worker {
    params: Params,
    memory: Vec<Block>,
    budget: Arc<MemoryBudget>,
}

impl Worker {
    fn new(params: Params, budget: Arc<MemoryBudget>) -> Self {
        Self { params, memory: Vec::new(), budget }
    }

    /// A new PHC string for `password` with the configured parameters and a
    /// fresh salt from the OS.
    fn hash(&mut self, password: &[u8]) -> Result<String, PortError> {
        let salt = try_generate_salt().map_err(PortError::unexpected)?;
        let params = self.params.clone();
        let output = self.compute(password, &salt, Algorithm::Argon2id, Version::V0x13, params)?;
        let hash = PhcHash {
            algorithm: Algorithm::Argon2id.ident(),
            version: Some(Version::V0x13.into()),
            params: ParamsString::try_from(&self.params).map_err(PortError::unexpected)?,
            salt: Some(Salt::new(&salt).map_err(PortError::unexpected)?),
            hash: Some(output),
        };
        Ok(hash.to_string())
    }

    /// Checks `password` against a stored hash: our PHC string, or one of
    /// Django's formats (which always asks for a rehash).
    fn verify(&mut self, password: &[u8], stored: &str) -> Result<PasswordCheck, PortError> {
        if !django::is_django(stored) {
            let hash = PhcHash::new(stored).map_err(PortError::unexpected)?;
            let matches = self.verify_phc(password, &hash, None)?;
            return Ok(match matches {
                true => PasswordCheck::Match { needs_rehash: is_outdated(&hash, &self.params) },
                false => PasswordCheck::Mismatch,
            });
        }
        let hash = DjangoHash::parse(stored).map_err(PortError::unexpected)?;
        let matches = hash.matches(password, |password, phc, params| self.verify_phc(password, phc, Some(params)))?;
        Ok(if matches { PasswordCheck::Match { needs_rehash: true } } else { PasswordCheck::Mismatch })
    }

    /// Checks `password` against an argon2 PHC string with the algorithm,
    /// version and costs it names; outputs compare in constant time.
    fn verify_phc(&mut self, password: &[u8], hash: &PhcHash, params: Option<Params>) -> Result<bool, PortError> {
        let (Some(salt), Some(expected)) = (&hash.salt, &hash.hash) else {
            return Err(PortError::unexpected("the stored hash has no salt or output"));
        };
        let algorithm = Algorithm::try_from(hash.algorithm.as_str()).map_err(PortError::unexpected)?;
        let version = hash.version.map(Version::try_from).transpose().map_err(PortError::unexpected)?;
        let params = match params {
            Some(params) => params,
            None => Params::try_from(hash).map_err(PortError::unexpected)?,
        };
        let computed = self.compute(password, salt.as_ref(), algorithm, version.unwrap_or_default(), params)?;
        Ok(computed == *expected)
    }

    fn compute(
        &mut self,
        password: &[u8],
        salt: &[u8],
        algorithm: Algorithm,
        version: Version,
        params: Params,
    ) -> Result<Output, PortError> {
        let blocks = params.block_count();
        let own = self.params.block_count();
        // A costlier check than ours borrows its memory for its own length.
        let (_borrowed, mut oversized);
        let memory = if blocks <= own {
            if self.memory.len() < own {
                self.memory.resize(own, Block::default());
            }
            &mut self.memory
        } else {
            _borrowed = self.budget.borrow(blocks)?;
            oversized = vec![Block::default(); blocks];
            &mut oversized
        };
        let length = params.output_len().unwrap_or(Params::DEFAULT_OUTPUT_LEN);
        let mut buffer = [0u8; Output::MAX_LENGTH];
        let out = buffer.get_mut(..length).ok_or_else(|| PortError::unexpected("argon2 output too long"))?;
        Argon2::new(algorithm, version, params)
            .hash_password_into_with_memory(password, salt, out, memory)
            .map_err(PortError::unexpected)?;
        Output::new(out).map_err(PortError::unexpected)
    }
}

/// Jobs waiting for a hashing thread. A locked queue and not a channel: a
/// channel hands each job to one sleeping receiver, which may be a thread
/// the scheduler keeps off the CPU (an idle-class thread under load) while a
/// reserved thread is free. Here a job stays in the queue until the first
/// thread that runs takes it, and each new job wakes a reserved thread and
/// one other, whichever gets a core first. A request's follow-up hash goes
/// first, past the limit (see [`arrived_at`]).
#[derive(Debug)]
struct Queue {
    waiting: Mutex<Waiting>,
    reserved_wake: Condvar,
    others_wake: Condvar,
    /// Jobs that may wait at once; beyond that, callers are refused.
    limit: usize,
}

#[derive(Default)]
struct Waiting {
    jobs: VecDeque<Job>,
    /// Every handle is gone: the threads finish what is queued and stop.
    closed: bool,
}

impl std::fmt::Debug for Waiting {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Waiting").field("jobs", &self.jobs.len()).field("closed", &self.closed).finish()
    }
}

/// Why a job was not queued.
enum Refused {
    Full,
    Closed,
}

impl Queue {
    fn push(&self, job: Job, follow_up: bool) -> Result<(), Refused> {
        let mut waiting = self.waiting.lock().map_err(|_| Refused::Closed)?;
        if waiting.closed {
            return Err(Refused::Closed);
        }
        if follow_up {
            waiting.jobs.push_front(job);
        } else if waiting.jobs.len() >= self.limit {
            return Err(Refused::Full);
        } else {
            waiting.jobs.push_back(job);
        }
        drop(waiting);
        self.reserved_wake.notify_one();
        self.others_wake.notify_one();
        Ok(())
    }

    /// The next job, waiting for one; `None` once the queue is closed and empty.
    fn next(&self, reserved: bool) -> Option<Job> {
        let wake = if reserved { &self.reserved_wake } else { &self.others_wake };
        let mut waiting = self.waiting.lock().ok()?;
        loop {
            if let Some(job) = waiting.jobs.pop_front() {
                return Some(job);
            }
            if waiting.closed {
                return None;
            }
            waiting = wake.wait(waiting).ok()?;
        }
    }

    fn close(&self) {
        if let Ok(mut waiting) = self.waiting.lock() {
            waiting.closed = true;
        }
        self.reserved_wake.notify_all();
        self.others_wake.notify_all();
    }
}

/// The handles' side of the queue: when the last handle goes, the threads stop.
#[derive(Debug)]
struct Submitter(Arc<Queue>);

impl Drop for Submitter {
    fn drop(&mut self) {
        self.0.close();
    }
}

/// Hashes not done, by reason, since the start (for metrics).
#[derive(Debug, Default)]
struct Refusals {
    /// The queue was full.
    queue_full: AtomicU64,
    /// The hash waited past the queue deadline.
    late: AtomicU64,
    /// The caller went away (its client hung up) before a thread was free.
    abandoned: AtomicU64,
}

/// What the hashing threads have done since the start (for metrics): the
/// hashes and checks they ran, and the CPU time those took on their
/// threads, without the time a thread waited for a core. Their CPU time's
/// rate over the core count is the share of the machine that hashing got.
#[derive(Debug, Default)]
struct Spent {
    hashes: AtomicU64,
    cpu_nanos: AtomicU64,
}

impl Spent {
    fn record(&self, cpu: Duration) {
        self.hashes.fetch_add(1, Ordering::Relaxed);
        self.cpu_nanos.fetch_add(u64::try_from(cpu.as_nanos()).unwrap_or(u64::MAX), Ordering::Relaxed);
    }
}

/// Where a queued job stands: whoever moves it out of `QUEUED` first decides
/// between hashing it and refusing it, so a hash never starts for a caller
/// that has been told no.
const QUEUED: u8 = 0;
const STARTED: u8 = 1;
const GIVEN_UP: u8 = 2;

/// The argon2id hasher with its dedicated threads.
#[derive(Debug, Clone)]
pub struct Argon2Hasher {
    jobs: Arc<Submitter>,
    /// Jobs accepted and not yet finished (queued or running).
    in_flight: Arc<AtomicUsize>,
    /// How long a job may wait for a thread, in milliseconds; 0 for ever.
    queue_deadline_ms: Arc<AtomicU64>,
    /// Taken off the deadline of a request's first hash.
    finish: Arc<FinishAllowance>,
    refusals: Arc<Refusals>,
    spent: Arc<Spent>,
    concurrency: usize,
    budget: Arc<MemoryBudget>,
    /// The argon2 blocks of our own hash: what a thread holds anyway.
    own_blocks: usize,
    dummy: Arc<String>,
}

impl Argon2Hasher {
    /// `concurrency` threads hash at once (use the core count); up to
    /// `queue_limit` more jobs wait, and beyond that callers get `Unavailable`.
    pub fn new(params: HashParams, concurrency: usize, queue_limit: usize) -> Result<Self, InvalidParams> {
        Self::reserving(params, concurrency, queue_limit, 0)
    }

    /// The same pool, with `reserved` of its threads holding a core's worth
    /// each however busy the request workers are (`hashing.min_share`).
    ///
    /// A reserved thread runs above normal priority (nice -10, which takes
    /// CAP_SYS_NICE; without it, normal priority), so the scheduler keeps it
    /// on a core of its own while it has a hash to do, and the request
    /// workers and the database share the rest. The other threads run in
    /// Linux's idle class (SCHED_IDLE; elsewhere, or where refused, at nice
    /// 19): they get a core only while no other thread wants it, a request
    /// worker that wakes takes their core at once, and the scheduler places
    /// waking threads on such a core as on an idle one. A login storm alone
    /// still hashes on every core, and token checks beside it wait for no
    /// hash. An idle thread of either kind sleeps, so requests get every
    /// core when nobody logs in.
    pub fn reserving(
        params: HashParams,
        concurrency: usize,
        queue_limit: usize,
        reserved: usize,
    ) -> Result<Self, InvalidParams> {
        let params = Params::new(params.memory_kib, params.iterations, params.parallelism, None)
            .map_err(|e| InvalidParams(e.to_string()))?;
        let budget = Arc::new(MemoryBudget::new(DEFAULT_OVERSIZED_MEMORY_KIB));
        let dummy = Worker::new(params.clone(), budget.clone())
            .hash(b"gatehouse dummy password")
            .map_err(|e| InvalidParams(e.to_string()))?;
        let concurrency = concurrency.max(1);
        let queue = Arc::new(Queue {
            waiting: Mutex::default(),
            reserved_wake: Condvar::new(),
            others_wake: Condvar::new(),
            limit: queue_limit.max(1),
        });
        for n in 0..concurrency {
            let (queue, params, budget) = (queue.clone(), params.clone(), budget.clone());
            let holds_a_core = n < reserved;
            std::thread::Builder::new()
                .name(format!("argon2-{n}"))
                .spawn(move || {
                    if holds_a_core {
                        hold_a_core();
                    } else {
                        yield_to_requests();
                    }
                    let mut worker = Worker::new(params, budget);
                    while let Some(job) = queue.next(holds_a_core) {
                        job(&mut worker);
                    }
                })
                .map_err(|e| InvalidParams(format!("cannot start a hashing thread: {e}")))?;
        }
        Ok(Self {
            jobs: Arc::new(Submitter(queue)),
            in_flight: Arc::new(AtomicUsize::new(0)),
            queue_deadline_ms: Arc::new(AtomicU64::new(DEFAULT_QUEUE_DEADLINE.as_millis().try_into().unwrap_or(0))),
            finish: Arc::default(),
            refusals: Arc::default(),
            spent: Arc::default(),
            concurrency,
            budget,
            own_blocks: params.block_count(),
            dummy: Arc::new(dummy),
        })
    }

    /// Bounds the memory that checks costlier than our own hash (imported
    /// ones) hold at once, in KiB; a check needing more than this is refused.
    pub fn limit_oversized_memory(&self, kib: usize) {
        self.budget.limit_kib.store(kib, Ordering::Relaxed);
        self.budget.returned.notify_all();
    }

    /// Hashes waiting for a free thread right now (for metrics).
    pub fn queue_len(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed).saturating_sub(self.concurrency)
    }

    /// A hash that has waited this long for a thread is not started: its
    /// caller is answered "unavailable" at once, and the thread goes to a
    /// request that may still be answered in time. For a request's first
    /// hash, counted from its arrival ([`arrived_at`]), the wait ends earlier
    /// by what requests have recently needed from the start of their hash,
    /// so that the request is answered within the deadline. Zero waits for ever.
    pub fn set_queue_deadline(&self, deadline: Duration) {
        self.queue_deadline_ms.store(deadline.as_millis().try_into().unwrap_or(u64::MAX), Ordering::Relaxed);
    }

    /// What a request's first hash keeps before the queue deadline for
    /// itself and the request's work after it (for metrics).
    pub fn finish_allowance(&self) -> Duration {
        self.finish.within(Duration::from_millis(self.queue_deadline_ms.load(Ordering::Relaxed)))
    }

    /// Hashes not done since the start, by reason: `queue_full`, `deadline`
    /// (waited past the queue deadline) and `client_gone`.
    pub fn refusals(&self) -> [(&'static str, u64); 3] {
        let count = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        [
            ("queue_full", count(&self.refusals.queue_full)),
            ("deadline", count(&self.refusals.late)),
            ("client_gone", count(&self.refusals.abandoned)),
        ]
    }

    /// Hashes and checks run since the start, and the CPU time they took on
    /// the hashing threads: how much of the machine hashing gets, and what
    /// one hash costs it now (for metrics).
    pub fn hashing_done(&self) -> (u64, Duration) {
        (self.spent.hashes.load(Ordering::Relaxed), Duration::from_nanos(self.spent.cpu_nanos.load(Ordering::Relaxed)))
    }

    /// "Unavailable", with the retry hint of a queue that drains within its deadline.
    fn overloaded(&self, what: &'static str) -> PortError {
        let deadline_ms = self.queue_deadline_ms.load(Ordering::Relaxed);
        PortError::unavailable(Overloaded { what, retry_after: deadline_ms.div_ceil(1000).max(1) })
    }

    /// Runs `work` on a hashing thread and waits for its result, at most
    /// the queue deadline for a thread to take it (a request's follow-up:
    /// first in line, without a deadline). A caller dropped while it waits
    /// (its client hung up) leaves a job that no thread hashes.
    async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce(&mut Worker) -> T + Send + 'static,
    ) -> Result<T, PortError> {
        let (since, follow_up) = REQUEST
            .try_with(|request| (request.arrived, request.hashed.replace(true)))
            .unwrap_or((Instant::now(), false));
        let deadline = Duration::from_millis(self.queue_deadline_ms.load(Ordering::Relaxed));
        let start_by = (!deadline.is_zero() && !follow_up).then(|| StartBy {
            due: since + deadline,
            deadline,
            finish: self.finish.clone(),
        });
        let (done, mut result) = oneshot::channel();
        let state = Arc::new(AtomicU8::new(QUEUED));
        let (in_flight, refusals, claim) = (self.in_flight.clone(), self.refusals.clone(), state.clone());
        let (spent, limit) = (self.spent.clone(), start_by.clone());
        let job: Job = Box::new(move |worker| {
            let gone = done.is_closed();
            // Held to the allowance as it is now, which a storm that began
            // while the job waited has raised.
            let late = !gone && limit.is_some_and(|limit| Instant::now() > limit.at());
            let next = if late { GIVEN_UP } else { STARTED };
            let claimed = claim.compare_exchange(QUEUED, next, Ordering::AcqRel, Ordering::Acquire).is_ok();
            match (claimed, gone, late) {
                (true, false, false) => {
                    let (started, cpu) = (Instant::now(), thread_cpu_time());
                    let hashed = work(worker);
                    spent.record(thread_cpu_time().saturating_sub(cpu));
                    let _ = done.send((started, hashed));
                }
                (true, true, _) => {
                    refusals.abandoned.fetch_add(1, Ordering::Relaxed);
                }
                // Dropping `done` unanswered tells the waiter, at once.
                (true, false, true) => {
                    refusals.late.fetch_add(1, Ordering::Relaxed);
                }
                // Given up at the deadline, and counted there.
                (false, ..) => {}
            }
            in_flight.fetch_sub(1, Ordering::AcqRel);
        });
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        if let Err(refused) = self.jobs.0.push(job, follow_up) {
            self.in_flight.fetch_sub(1, Ordering::AcqRel);
            return Err(match refused {
                Refused::Full => {
                    self.refusals.queue_full.fetch_add(1, Ordering::Relaxed);
                    self.overloaded("too many password hashes queued")
                }
                Refused::Closed => PortError::unexpected(PoolGone),
            });
        }
        let refused_late = || self.overloaded("a password hash waited past the queue deadline");
        if let Some(start_by) = start_by {
            // First woken when the wait could be over at the soonest, then at
            // the start-by of that moment's allowance: a storm that begins
            // meanwhile brings its refusals forward.
            let mut wake = start_by.soonest();
            let outcome = loop {
                match tokio::time::timeout_at(wake.into(), &mut result).await {
                    Ok(outcome) => break outcome,
                    Err(_) if Instant::now() < start_by.at() => wake = start_by.at(),
                    Err(_) if state.compare_exchange(QUEUED, GIVEN_UP, Ordering::AcqRel, Ordering::Acquire).is_ok() => {
                        self.refusals.late.fetch_add(1, Ordering::Relaxed);
                        return Err(refused_late());
                    }
                    // A thread took it in time: its answer is on the way.
                    Err(_) => break (&mut result).await,
                }
            };
            let (started, hashed) = match outcome {
                Ok(answer) => answer,
                Err(_) if state.load(Ordering::Acquire) == GIVEN_UP => return Err(refused_late()),
                Err(_) => return Err(PortError::unexpected(PoolGone)),
            };
            let finish = self.finish.clone();
            let _ = REQUEST.try_with(|request| request.first_hash_started.replace(Some((started, finish))));
            return Ok(hashed);
        }
        result.await.map(|(_, hashed)| hashed).map_err(|_| PortError::unexpected(PoolGone))
    }
}

/// Moves the calling hashing thread (policies are per thread on Linux) to
/// the idle class, so it hashes only on a core nothing else wants (see
/// [`Argon2Hasher::reserving`]). Moving down needs no privilege. Elsewhere,
/// or if it is refused, the lowest priority (nice 19) comes closest; where
/// even that fails, hashing runs at normal priority.
fn yield_to_requests() {
    #[cfg(target_os = "linux")]
    if enter_idle_class().is_ok() {
        return;
    }
    #[cfg(unix)]
    let _ = rustix::process::nice(19);
}

/// `sched_setscheduler(0, SCHED_IDLE)`: no safe wrapper offers this call.
#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
fn enter_idle_class() -> std::io::Result<()> {
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: `param` is a valid `sched_param` that outlives the call, and pid 0 names the calling thread.
    match unsafe { libc::sched_setscheduler(0, libc::SCHED_IDLE, &param) } {
        0 => Ok(()),
        _ => Err(std::io::Error::last_os_error()),
    }
}

/// Raises the calling reserved hashing thread above normal priority (see
/// [`Argon2Hasher::reserving`]); refused without the privilege, it stays normal.
fn hold_a_core() {
    #[cfg(unix)]
    let _ = rustix::process::nice(-10);
}

/// The calling thread's CPU time so far. Where no such clock is known, the
/// time since the process first asked (wall time, waits included).
fn thread_cpu_time() -> Duration {
    #[cfg(unix)]
    {
        let now = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
        Duration::new(now.tv_sec.try_into().unwrap_or(0), now.tv_nsec.try_into().unwrap_or(0))
    }
    #[cfg(not(unix))]
    {
        static START: std::sync::LazyLock<Instant> = std::sync::LazyLock::new(Instant::now);
        START.elapsed()
    }
}

/// Whether a stored hash was made with other parameters (or another algorithm).
fn is_outdated(hash: &PhcHash, params: &Params) -> bool {
    let algorithm_differs = hash.algorithm.as_str() != Algorithm::Argon2id.ident().as_str();
    let params_differ = Params::try_from(hash).map_or(true, |stored| {
        stored.m_cost() != params.m_cost() || stored.t_cost() != params.t_cost() || stored.p_cost() != params.p_cost()
    });
    algorithm_differs || params_differ || hash.version != Some(Version::V0x13.into())
}

#[async_trait]
impl PasswordHasher for Argon2Hasher {
    async fn hash(&self, password: &PlainPassword) -> Result<PasswordHash, PortError> {
        let password = password.clone();
        self.run(move |worker| worker.hash(password.expose().as_bytes()).map(PasswordHash::new)).await?
    }

    async fn verify(&self, password: &PlainPassword, hash: &PasswordHash) -> Result<PasswordCheck, PortError> {
        if matches!(DjangoHash::parse(hash.expose()), Ok(DjangoHash::Unusable)) {
            // No password matches; it costs what an unknown address costs.
            self.verify_dummy(password).await?;
            return Ok(PasswordCheck::Mismatch);
        }
        let (password, hash) = (password.clone(), hash.clone());
        self.run(move |worker| worker.verify(password.expose().as_bytes(), hash.expose())).await?
    }

    fn check_format(&self, hash: &PasswordHash) -> Result<(), String> {
        let stored = hash.expose();
        let params = if django::is_django(stored) {
            match DjangoHash::parse(stored).map_err(|e| e.to_string())? {
                DjangoHash::Argon2 { params, .. } => params,
                _ => return Ok(()),
            }
        } else {
            let phc = PhcHash::new(stored).map_err(|e| format!("not a PHC string: {e}"))?;
            Params::try_from(&phc).map_err(|e| format!("bad argon2 parameters: {e}"))?
        };
        let limit = self.budget.limit_kib.load(Ordering::Relaxed);
        if params.block_count() > self.own_blocks && params.block_count() > limit {
            return Err(format!(
                "the argon2 check needs {} KiB, over the hashing memory limit of {limit} KiB",
                params.block_count()
            ));
        }
        Ok(())
    }

    async fn verify_dummy(&self, password: &PlainPassword) -> Result<(), PortError> {
        let (password, dummy) = (password.clone(), self.dummy.clone());
        self.run(move |worker| worker.verify(password.expose().as_bytes(), &dummy).map(|_| ())).await?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Cheap parameters keep the tests fast; the logic does not depend on them.
    fn hasher() -> Argon2Hasher {
        Argon2Hasher::new(HashParams { memory_kib: 1024, iterations: 1, parallelism: 1 }, 2, 16).unwrap()
    }

    fn plain(raw: &str) -> PlainPassword {
        PlainPassword::parse(raw).unwrap()
    }

    #[tokio::test]
    async fn hashes_are_argon2id_phc_strings_that_verify() {
        let hasher = hasher();
        let hash = hasher.hash(&plain("correct horse")).await.unwrap();
        assert!(hash.expose().starts_with("$argon2id$v=19$m=1024,t=1,p=1$"));
        let check = hasher.verify(&plain("correct horse"), &hash).await.unwrap();
        assert_eq!(check, PasswordCheck::Match { needs_rehash: false });
        assert_eq!(hasher.verify(&plain("wrong horse"), &hash).await.unwrap(), PasswordCheck::Mismatch);
    }

    /// The calling thread's scheduling policy and nice value, as the kernel reports them.
    #[cfg(target_os = "linux")]
    fn scheduling() -> (u32, i32) {
        let stat = std::fs::read_to_string("/proc/thread-self/stat").unwrap();
        // The fields after the command name, from the third (the state) on.
        let fields: Vec<&str> = stat.rsplit_once(')').unwrap().1.split_whitespace().collect();
        (fields[41 - 3].parse().unwrap(), rustix::process::getpriority_process(None).unwrap())
    }

    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn threads_beyond_the_reserved_ones_run_in_the_idle_class() {
        let (policy, _) = hasher().run(|_| scheduling()).await.unwrap();
        assert_eq!(policy, 5, "SCHED_IDLE");
    }

    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn a_reserved_thread_runs_at_normal_priority_or_above() {
        let params = HashParams { memory_kib: 1024, iterations: 1, parallelism: 1 };
        let reserved = Argon2Hasher::reserving(params, 1, 4, 1).unwrap();
        let (policy, nice) = reserved.run(|_| scheduling()).await.unwrap();
        assert_eq!(policy, 0, "SCHED_OTHER");
        assert!(nice <= 0, "nice {nice}");
    }

    /// A woken idle-class thread may not get a core for a long while: a job
    /// must not wait for it while a reserved thread is free.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn jobs_flow_through_the_reserved_thread_while_the_others_are_starved() {
        let params = HashParams { memory_kib: 1024, iterations: 1, parallelism: 1 };
        let cores = std::thread::available_parallelism().map_or(2, usize::from);
        let hasher = Argon2Hasher::reserving(params, cores.max(2), 64, 1).unwrap();
        hasher.set_queue_deadline(Duration::ZERO);
        // Normal-priority spinners on every core leave the idle class next to nothing.
        let spinning = Arc::new(std::sync::atomic::AtomicBool::new(true));
        let spun = Arc::new(AtomicUsize::new(0));
        let spinners: Vec<_> = (0..cores)
            .map(|_| {
                let (spinning, spun) = (spinning.clone(), spun.clone());
                std::thread::spawn(move || {
                    spun.fetch_add(1, Ordering::Relaxed);
                    while spinning.load(Ordering::Relaxed) {
                        std::hint::spin_loop();
                    }
                })
            })
            .collect();
        while spun.load(Ordering::Relaxed) < cores {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        let started = Instant::now();
        for _ in 0..20 {
            hasher.hash(&plain("correct horse")).await.unwrap();
        }
        let took = started.elapsed();
        spinning.store(false, Ordering::Relaxed);
        spinners.into_iter().for_each(|spinner| spinner.join().unwrap());
        assert!(took < Duration::from_secs(2), "20 hashes one after another took {took:?}");
    }

    #[tokio::test]
    async fn hashes_agree_with_the_argon2_crates_own_encoder_and_verifier() {
        use argon2::{PasswordHasher as _, PasswordVerifier as _};
        let hasher = hasher();
        // Another algorithm, version and cost than ours, made by the crate itself.
        let theirs = Argon2::new(Algorithm::Argon2i, Version::V0x10, Params::new(2048, 2, 1, None).unwrap())
            .hash_password(b"correct horse")
            .unwrap()
            .to_string();
        let check = hasher.verify(&plain("correct horse"), &PasswordHash::new(theirs.clone())).await.unwrap();
        assert_eq!(check, PasswordCheck::Match { needs_rehash: true });
        let wrong = hasher.verify(&plain("wrong horse"), &PasswordHash::new(theirs)).await.unwrap();
        assert_eq!(wrong, PasswordCheck::Mismatch);
        let ours = hasher.hash(&plain("correct horse")).await.unwrap();
        let parsed = PhcHash::new(ours.expose()).unwrap();
        Argon2::default().verify_password(b"correct horse", &parsed).expect("the crate verifies our hash");
    }

    /// Every user of the Django fixtures that has a password: its hasher,
    /// its plain password and its hash as Django stored it.
    fn django_fixture_hashes() -> Vec<(String, String, String)> {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/fixtures/django");
        let mut hashes = Vec::new();
        for fixture in ["django_default", "seed_accounts", "seed_profiles"] {
            let text = std::fs::read_to_string(root.join(fixture).join("expected.json")).unwrap();
            let expected: serde_json::Value = serde_json::from_str(&text).unwrap();
            for user in expected["users"].as_array().unwrap() {
                let field = |name: &str, absent: &str| user[name].as_str().unwrap_or(absent).to_owned();
                // An unusable password has no hasher and no plain password.
                hashes.push((
                    field("hasher", "unusable"),
                    field("password", "any password"),
                    field("password_hash", ""),
                ));
            }
        }
        hashes
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn every_django_fixture_hash_matches_its_password_and_no_other() {
        let hasher = Argon2Hasher::new(HashParams { memory_kib: 1024, iterations: 1, parallelism: 1 }, 2, 64).unwrap();
        // Every check is queued at once, some of them 100 ms each: none may be refused for waiting.
        hasher.set_queue_deadline(Duration::ZERO);
        let hashes = django_fixture_hashes();
        let seen: std::collections::HashSet<&str> = hashes.iter().map(|(hasher, ..)| hasher.as_str()).collect();
        for expected in ["pbkdf2_sha256", "pbkdf2_sha1", "argon2", "bcrypt_sha256", "bcrypt", "unusable"] {
            assert!(seen.contains(expected), "the fixtures hold a {expected} hash");
        }
        let checks = hashes.into_iter().map(|(name, password, hash)| {
            let hasher = hasher.clone();
            async move {
                let hash = PasswordHash::new(hash);
                let right = hasher.verify(&plain(&password), &hash).await.unwrap();
                let wrong = hasher.verify(&plain(&format!("{password}!")), &hash).await.unwrap();
                (name, right, wrong)
            }
        });
        for (name, right, wrong) in futures_util::future::join_all(checks).await {
            let expected =
                if name == "unusable" { PasswordCheck::Mismatch } else { PasswordCheck::Match { needs_rehash: true } };
            assert_eq!(right, expected, "{name} with its own password");
            assert_eq!(wrong, PasswordCheck::Mismatch, "{name} with another password");
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn costly_imported_checks_share_a_memory_budget() {
        let hasher = hasher();
        let argon2 =
            django_fixture_hashes().into_iter().filter(|(name, ..)| name == "argon2").take(2).collect::<Vec<_>>();
        let [(_, password, hash), (_, other_password, other_hash)] = &argon2[..] else { panic!("two argon2 hashes") };
        // Django's 100 MiB each: with room for one at a time, both still pass, one after the other.
        hasher.limit_oversized_memory(150 * 1024);
        let (password, hash) = (plain(password), PasswordHash::new(hash.clone()));
        let (other_password, other_hash) = (plain(other_password), PasswordHash::new(other_hash.clone()));
        let (one, two) = tokio::join!(hasher.verify(&password, &hash), hasher.verify(&other_password, &other_hash));
        assert_eq!(
            (one.unwrap(), two.unwrap()),
            (PasswordCheck::Match { needs_rehash: true }, PasswordCheck::Match { needs_rehash: true })
        );
        assert_eq!(*hasher.budget.held_kib.lock().unwrap(), 0, "every borrowed KiB came back");
        // A check that could never fit is refused, not waited for.
        hasher.limit_oversized_memory(64 * 1024);
        let refused = hasher.verify(&password, &hash).await;
        assert!(matches!(refused, Err(PortError::Unexpected(_))), "{refused:?}");
    }

    #[tokio::test]
    async fn salts_differ_between_hashes() {
        let hasher = hasher();
        let a = hasher.hash(&plain("same password")).await.unwrap();
        let b = hasher.hash(&plain("same password")).await.unwrap();
        assert_ne!(a.expose(), b.expose());
    }

    #[tokio::test]
    async fn a_hash_with_old_parameters_asks_for_a_rehash() {
        let old = Argon2Hasher::new(HashParams { memory_kib: 512, iterations: 1, parallelism: 1 }, 1, 1).unwrap();
        let hash = old.hash(&plain("correct horse")).await.unwrap();
        let check = hasher().verify(&plain("correct horse"), &hash).await.unwrap();
        assert_eq!(check, PasswordCheck::Match { needs_rehash: true });
    }

    #[tokio::test]
    async fn the_dummy_verification_succeeds_quietly() {
        hasher().verify_dummy(&plain("anything at all")).await.unwrap();
    }

    #[tokio::test]
    async fn a_corrupt_stored_hash_is_an_error_not_a_match() {
        let result = hasher().verify(&plain("x"), &PasswordHash::new("not a phc string")).await;
        assert!(matches!(result, Err(PortError::Unexpected(_))));
    }

    #[test]
    fn invalid_parameters_are_refused() {
        assert!(Argon2Hasher::new(HashParams { memory_kib: 1, iterations: 0, parallelism: 1 }, 1, 1).is_err());
    }

    #[tokio::test]
    async fn a_full_queue_answers_unavailable() {
        // One thread and room for one waiting job: of three at once, at least one is turned away.
        let hasher = Argon2Hasher::new(HashParams::default(), 1, 1).unwrap();
        let attempts: Vec<_> = (0..3)
            .map(|_| {
                let hasher = hasher.clone();
                tokio::spawn(async move { hasher.hash(&plain("correct horse")).await })
            })
            .collect();
        let mut outcomes = Vec::new();
        for attempt in attempts {
            outcomes.push(attempt.await.unwrap());
        }
        assert!(outcomes.iter().any(|o| matches!(o, Err(PortError::Unavailable(_)))));
        assert!(outcomes.iter().any(Result::is_ok));
    }

    /// A hasher of one thread, held by a job until the sender is dropped or sent to.
    async fn held_hasher(deadline: Duration) -> (Argon2Hasher, std::sync::mpsc::Sender<()>) {
        let hasher = Argon2Hasher::new(HashParams { memory_kib: 1024, iterations: 1, parallelism: 1 }, 1, 16).unwrap();
        hasher.set_queue_deadline(deadline);
        let (release, hold) = std::sync::mpsc::channel::<()>();
        let blocker = hasher.clone();
        tokio::spawn(async move { blocker.run(move |_| hold.recv()).await });
        while hasher.in_flight.load(Ordering::Relaxed) == 0 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        (hasher, release)
    }

    /// A job that records whether it ran.
    fn recorded() -> (Arc<std::sync::atomic::AtomicBool>, impl FnOnce(&mut Worker) + Send + 'static) {
        let ran = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = ran.clone();
        (ran, move |_: &mut Worker| flag.store(true, Ordering::SeqCst))
    }

    #[tokio::test]
    async fn a_first_hash_must_start_early_enough_for_what_requests_need_after_it() {
        let hasher = Argon2Hasher::new(HashParams { memory_kib: 1024, iterations: 1, parallelism: 1 }, 1, 16).unwrap();
        hasher.set_queue_deadline(Duration::from_millis(600));
        // A request that needed 250 ms after its hash.
        arrived_at(Instant::now(), async {
            hasher.run(|_| ()).await.unwrap();
            tokio::time::sleep(Duration::from_millis(250)).await;
        })
        .await;
        refused_with_the_thread_busy_480_ms_of_600(&hasher).await;
    }

    #[tokio::test]
    async fn a_first_hash_must_start_early_enough_for_a_hash_as_slow_as_recent_ones() {
        let hasher = Argon2Hasher::new(HashParams { memory_kib: 1024, iterations: 1, parallelism: 1 }, 1, 16).unwrap();
        hasher.set_queue_deadline(Duration::from_millis(600));
        // A request whose hash took 250 ms (its thread yielding to others), and nothing after.
        arrived_at(Instant::now(), hasher.run(|_| std::thread::sleep(Duration::from_millis(250)))).await.unwrap();
        refused_with_the_thread_busy_480_ms_of_600(&hasher).await;
    }

    /// A request's first hash, queued behind the held thread: whether it
    /// ran, when its request arrived, and its outcome to come.
    async fn queued_first_hash(
        hasher: &Argon2Hasher,
    ) -> (Arc<std::sync::atomic::AtomicBool>, Instant, tokio::task::JoinHandle<Result<(), PortError>>) {
        let (ran, job) = recorded();
        let asked = Instant::now();
        let waiting = hasher.clone();
        let waiting = tokio::spawn(arrived_at(asked, async move { waiting.run(job).await }));
        while hasher.in_flight.load(Ordering::Relaxed) < 2 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        (ran, asked, waiting)
    }

    #[tokio::test]
    async fn a_first_hash_queued_before_the_allowance_grew_is_held_to_the_grown_one() {
        let (hasher, release) = held_hasher(Duration::from_millis(600)).await;
        let (ran, asked, waiting) = queued_first_hash(&hasher).await;
        // A storm begins: requests now need 250 ms after their first hash,
        // so a first hash must start 350 ms after its request's arrival.
        hasher.finish.observe(Duration::from_millis(250));
        tokio::time::sleep(Duration::from_millis(400).saturating_sub(asked.elapsed())).await;
        release.send(()).unwrap();
        let refused = waiting.await.unwrap().unwrap_err();
        let answered = asked.elapsed();
        assert!(refused.retry_after().is_some(), "refused as overloaded: {refused:?}");
        assert!(answered < Duration::from_millis(590), "when the thread came to it, not at 600 ms: {answered:?}");
        hasher.run(|_| ()).await.unwrap();
        assert!(!ran.load(Ordering::SeqCst), "never started");
        assert_eq!(hasher.refusals(), [("queue_full", 0), ("deadline", 1), ("client_gone", 0)]);
    }

    #[tokio::test]
    async fn a_first_hash_is_refused_by_the_allowance_that_grew_while_it_waited() {
        let (hasher, release) = held_hasher(Duration::from_millis(600)).await;
        let (ran, asked, waiting) = queued_first_hash(&hasher).await;
        tokio::time::sleep(Duration::from_millis(100).saturating_sub(asked.elapsed())).await;
        hasher.finish.observe(Duration::from_millis(250));
        let refused = waiting.await.unwrap().unwrap_err();
        let answered = asked.elapsed();
        assert!(refused.retry_after().is_some(), "refused as overloaded: {refused:?}");
        let (start_by, old_start_by) = (Duration::from_millis(350), Duration::from_millis(600));
        assert!(answered >= start_by && answered < old_start_by - Duration::from_millis(100), "{answered:?}");
        release.send(()).unwrap();
        hasher.run(|_| ()).await.unwrap();
        assert!(!ran.load(Ordering::SeqCst), "never started");
    }

    /// With the thread busy for 480 ms, a new request's first hash would
    /// start within the 600 ms deadline, but not with 250 ms kept for the rest.
    async fn refused_with_the_thread_busy_480_ms_of_600(hasher: &Argon2Hasher) {
        let (release, hold) = std::sync::mpsc::channel::<()>();
        let (taken, busy) = std::sync::mpsc::channel::<()>();
        let blocker = hasher.clone();
        tokio::spawn(async move {
            blocker
                .run(move |_| {
                    let _ = taken.send(());
                    hold.recv()
                })
                .await
        });
        while busy.try_recv().is_err() {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(480)).await;
            release.send(()).unwrap();
        });
        let (ran, job) = recorded();
        let refused = arrived_at(Instant::now(), hasher.run(job)).await.unwrap_err();
        assert!(refused.retry_after().is_some(), "refused as overloaded: {refused:?}");
        tokio::time::sleep(Duration::from_millis(250)).await;
        assert!(!ran.load(Ordering::SeqCst), "never started");
    }

    #[tokio::test]
    async fn a_hash_that_waits_past_the_deadline_is_refused_and_never_started() {
        let (hasher, release) = held_hasher(Duration::from_millis(50)).await;
        let (ran, job) = recorded();
        let asked = Instant::now();
        let refused = hasher.run(job).await.unwrap_err();
        let waited = asked.elapsed();
        assert!(waited >= Duration::from_millis(50) && waited < Duration::from_millis(1000), "{waited:?}");
        assert!(matches!(refused, PortError::Unavailable(_)));
        assert_eq!(refused.retry_after(), Some(1), "a deadline of 50 ms: retry in a second");
        release.send(()).unwrap();
        hasher.run(|_| ()).await.unwrap();
        assert!(!ran.load(Ordering::SeqCst), "the thread passed over the refused job");
        assert_eq!(hasher.refusals(), [("queue_full", 0), ("deadline", 1), ("client_gone", 0)]);
    }

    #[tokio::test]
    async fn the_deadline_counts_from_the_requests_arrival() {
        let (hasher, release) = held_hasher(Duration::from_millis(200)).await;
        let arrived = Instant::now() - Duration::from_millis(150);
        let asked = Instant::now();
        let refused = arrived_at(arrived, hasher.run(|_| ())).await.unwrap_err();
        assert!(asked.elapsed() < Duration::from_millis(150), "50 ms were left: {:?}", asked.elapsed());
        assert!(refused.retry_after().is_some());
        release.send(()).unwrap();
    }

    #[tokio::test]
    async fn a_requests_follow_up_hash_goes_first_and_is_never_refused() {
        let hasher = Argon2Hasher::new(HashParams { memory_kib: 1024, iterations: 1, parallelism: 1 }, 1, 16).unwrap();
        hasher.set_queue_deadline(Duration::from_millis(300));
        let order = Arc::new(Mutex::new(Vec::new()));
        let record = |name: &'static str| {
            let order = order.clone();
            move |_: &mut Worker| order.lock().unwrap().push(name)
        };
        let in_flight = |n: usize| {
            let hasher = hasher.clone();
            async move {
                while hasher.in_flight.load(Ordering::Relaxed) < n {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            }
        };
        let (release, hold) = std::sync::mpsc::channel::<()>();
        let (blocker, other) = (hasher.clone(), hasher.clone());
        let (follow_up, other_request) = arrived_at(Instant::now(), async {
            hasher.run(record("first")).await.unwrap();
            // Past the request's deadline, with the thread busy and another request waiting.
            tokio::time::sleep(Duration::from_millis(350)).await;
            tokio::spawn(async move { blocker.run(move |_| hold.recv()).await });
            in_flight(1).await;
            let other_request = tokio::spawn({
                let job = record("other request");
                async move { other.run(job).await }
            });
            in_flight(2).await;
            let (follow_up, ()) = tokio::join!(hasher.run(record("follow-up")), async {
                in_flight(3).await;
                release.send(()).unwrap();
            });
            (follow_up, other_request.await.unwrap())
        })
        .await;
        assert!(follow_up.is_ok(), "{follow_up:?}");
        assert!(other_request.is_ok(), "{other_request:?}");
        assert_eq!(*order.lock().unwrap(), ["first", "follow-up", "other request"]);
        assert_eq!(hasher.refusals(), [("queue_full", 0), ("deadline", 0), ("client_gone", 0)]);
    }

    #[tokio::test]
    async fn a_caller_that_went_away_is_not_hashed_for() {
        let (hasher, release) = held_hasher(Duration::ZERO).await;
        let (ran, job) = recorded();
        let waiting = hasher.clone();
        let waiting = tokio::spawn(async move { waiting.run(job).await });
        while hasher.in_flight.load(Ordering::Relaxed) < 2 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        waiting.abort();
        assert!(waiting.await.unwrap_err().is_cancelled());
        release.send(()).unwrap();
        hasher.run(|_| ()).await.unwrap();
        assert!(!ran.load(Ordering::SeqCst), "nobody waits for it: not hashed");
        assert_eq!(hasher.refusals(), [("queue_full", 0), ("deadline", 0), ("client_gone", 1)]);
        assert_eq!(hasher.hashing_done().0, 2, "the blocker and the last job ran; the abandoned one did not");
    }

    #[tokio::test]
    async fn the_hashes_done_count_their_cpu_time_and_not_their_waits() {
        let hasher = Argon2Hasher::new(HashParams::default(), 1, 4).unwrap();
        let hash = hasher.hash(&plain("correct horse battery staple")).await.unwrap();
        let (hashes, cpu) = hasher.hashing_done();
        assert_eq!(hashes, 1);
        assert!(cpu > Duration::from_millis(2), "argon2id at the defaults costs milliseconds of CPU, not {cpu:?}");
        let check = hasher.verify(&plain("correct horse battery staple"), &hash).await.unwrap();
        assert!(matches!(check, PasswordCheck::Match { .. }));
        // A job that sleeps holds its thread for 300 ms and spends next to no CPU.
        hasher.run(|_| std::thread::sleep(Duration::from_millis(300))).await.unwrap();
        let (hashes, total) = hasher.hashing_done();
        assert_eq!(hashes, 3);
        let check_and_sleep = total - cpu;
        assert!(check_and_sleep > Duration::from_millis(1), "the check's CPU counts: {check_and_sleep:?}");
        assert!(check_and_sleep < cpu * 2 + Duration::from_millis(100), "the sleep does not: {check_and_sleep:?}");
    }

    #[tokio::test]
    async fn concurrent_hashes_all_complete() {
        let hasher = hasher();
        let hashes: Vec<_> = (0..16)
            .map(|_| {
                let hasher = hasher.clone();
                tokio::spawn(async move { hasher.hash(&plain("correct horse")).await })
            })
            .collect();
        for hash in hashes {
            assert!(hash.await.unwrap().is_ok());
        }
        assert_eq!(hasher.queue_len(), 0);
    }
}

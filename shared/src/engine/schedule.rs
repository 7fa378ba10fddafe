//! The scheduled work of a gateway and when it is due, decided here so that every runtime
//! runs the same jobs with the same budgets (quinn-proto's manner: the runtime passes time in
//! and only moves bytes and sleeps).
//!
//! - The server keeps a timer: it starts [`Engine::take_due_jobs`] with [`Engine::run_job`]
//!   and sleeps until [`Engine::next_deadline`].
//! - The Worker's cron and the Lambda's scheduled function are woken by their platform: they
//!   call [`Engine::run_scheduled`], which runs every job once within their budget (a drain or
//!   rebalance started through the admin API thus goes on in bounded steps).

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use super::Engine;
use crate::config::Config;
use crate::health::HealthSnapshot;
use crate::http::HttpClient;
use crate::store::MetadataStore;

/// How often recorded older copies are settled (server).
pub const STALE_COPY_PERIOD: Duration = Duration::from_secs(10);
/// How often health, usage and operation counts are re-read from the store and pending
/// counts written to it (server).
pub const REFRESH_PERIOD: Duration = Duration::from_secs(2);
/// How often a step of a drain or rebalance in progress runs (server).
pub const MOVE_PERIOD: Duration = Duration::from_secs(5);
/// A zero period would spin: a second is the floor.
const MIN_PERIOD: Duration = Duration::from_secs(1);

/// One kind of scheduled work.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Job {
    /// Pending operation and usage counts written to the store; health, usage and counts
    /// read back from it ([`Engine::refresh`]).
    Refresh,
    /// Every backend probed, the health snapshot stored ([`Engine::check_health`]).
    HealthCheck,
    /// Older copies a write could not remove, settled ([`Engine::remove_stale_copies`]).
    SettleStaleCopies,
    /// Backend usage recounted from listings ([`Engine::scan_usage`]).
    UsageScan,
    /// A step of the drain or rebalance in progress, if any ([`Engine::continue_move_run`]).
    Moves,
}

impl Job {
    pub const ALL: [Job; 5] = [
        Job::Refresh,
        Job::HealthCheck,
        Job::SettleStaleCopies,
        Job::UsageScan,
        Job::Moves,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Job::Refresh => "state refresh",
            Job::HealthCheck => "health check",
            Job::SettleStaleCopies => "stale-copy removal",
            Job::UsageScan => "usage scan",
            Job::Moves => "drain/rebalance step",
        }
    }

    /// How long after its last run ended the job is due again (periods from the config are
    /// re-read each time: a hot switch changes them).
    pub fn period(self, config: &Config) -> Duration {
        let period = match self {
            Job::Refresh => REFRESH_PERIOD,
            Job::HealthCheck => config.balancer.health_check_period,
            Job::SettleStaleCopies => STALE_COPY_PERIOD,
            Job::UsageScan => config.balancer.update_stats_period,
            Job::Moves => MOVE_PERIOD,
        };
        period.max(MIN_PERIOD)
    }
}

/// What a scheduled job may spend, in backend requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    /// Recorded older copies settled per run (each costs a HEAD per backend of its pool plus
    /// a DELETE).
    pub stale_copies: usize,
    /// Listing pages the usage scan may fetch per run; the next run resumes where it stopped.
    pub scan_requests: usize,
    /// Objects a step of a drain or rebalance looks at (each move costs about five
    /// requests).
    pub move_batch: usize,
}

impl Budget {
    /// A self-hosted server's: no platform cap, runs every few seconds.
    pub const SERVER: Budget = Budget {
        stale_copies: 100,
        scan_requests: 200,
        move_batch: 50,
    };

    /// Within `subrequests` backend requests per run (a Worker invocation's cap): one probe
    /// per backend first, then older copies within half of what is left (they keep the
    /// one-live-copy promise), then half of the rest for a move in progress, then the usage
    /// scan.
    pub fn within(subrequests: usize, backends: usize) -> Budget {
        let left = subrequests.saturating_sub(backends);
        let stale_copies = (left / 2) / (backends + 1);
        let rest = left.saturating_sub(stale_copies * (backends + 1));
        let move_batch = rest / 2 / 5;
        Budget {
            stale_copies,
            scan_requests: rest.saturating_sub(move_batch * 5),
            move_batch,
        }
    }
}

/// When each job last ended, and which are running now.
#[derive(Debug, Default)]
pub(crate) struct Schedule {
    jobs: BTreeMap<Job, JobState>,
}

#[derive(Debug, Default, Clone, Copy)]
struct JobState {
    last_ended: Option<SystemTime>,
    running: bool,
}

impl Schedule {
    /// When `job` is due: at once if it never ran or the clock went back past its last run.
    fn due_at(&self, job: Job, config: &Config, now: SystemTime) -> Option<SystemTime> {
        let state = self.jobs.get(&job).copied().unwrap_or_default();
        if state.running {
            return None;
        }
        match state.last_ended {
            Some(ended) if ended <= now => Some(ended + job.period(config)),
            _ => Some(now),
        }
    }
}

/// What [`Engine::run_scheduled`] did: the health snapshot it stored (none if the probe run
/// could not store it) and the failures, each already logged.
#[derive(Debug, Default)]
pub struct ScheduledRun {
    pub health: Option<HealthSnapshot>,
    pub errors: Vec<String>,
}

/// Marks a job ended when dropped: after it returns, fails, panics or is cancelled.
struct Ending<'a, S: MetadataStore, C: HttpClient> {
    engine: &'a Engine<S, C>,
    job: Job,
    clock: &'a (dyn Fn() -> SystemTime + Sync),
}

impl<S: MetadataStore, C: HttpClient> Drop for Ending<'_, S, C> {
    fn drop(&mut self) {
        let ended = (self.clock)();
        self.engine.with_schedule(|s| {
            let state = s.jobs.entry(self.job).or_default();
            state.running = false;
            state.last_ended = Some(ended);
        });
    }
}

impl<S: MetadataStore, C: HttpClient> Engine<S, C> {
    fn with_schedule<T>(&self, f: impl FnOnce(&mut Schedule) -> T) -> T {
        f(&mut self.schedule.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// When the next job not running now is due (`now` or earlier: at once); `None` while
    /// every job runs.
    pub fn next_deadline(&self, now: SystemTime) -> Option<SystemTime> {
        let config = self.config();
        self.with_schedule(|s| {
            Job::ALL
                .iter()
                .filter_map(|&job| s.due_at(job, &config, now))
                .min()
        })
    }

    /// The jobs due at `now`, marked running: the caller runs each with [`Self::run_job`]
    /// (which marks it ended), so that a slow job is never started twice.
    pub fn take_due_jobs(&self, now: SystemTime) -> Vec<Job> {
        let config = self.config();
        self.with_schedule(|s| {
            let due: Vec<Job> = Job::ALL
                .into_iter()
                .filter(|&job| s.due_at(job, &config, now).is_some_and(|at| at <= now))
                .collect();
            for job in &due {
                s.jobs.entry(*job).or_default().running = true;
            }
            due
        })
    }

    /// Runs one job within `budget` and logs what it found; the job is due again one period
    /// after this ends (however it ends). `clock` gives the time (probe latency, dates).
    pub async fn run_job(
        &self,
        job: Job,
        budget: Budget,
        clock: &(dyn Fn() -> SystemTime + Sync),
    ) -> Result<Option<HealthSnapshot>, String> {
        self.with_schedule(|s| s.jobs.entry(job).or_default().running = true);
        let _ending = Ending {
            engine: self,
            job,
            clock,
        };
        let failed = |e: crate::store::StoreError| format!("{} failed: {e}", job.name());
        match job {
            Job::Refresh => self.refresh(clock()).await.map_err(failed)?,
            Job::HealthCheck => {
                let snapshot = self.check_health(clock).await.map_err(failed)?;
                let unhealthy: Vec<&String> = snapshot
                    .backends
                    .iter()
                    .filter(|(_, h)| !h.healthy)
                    .map(|(n, _)| n)
                    .collect();
                if unhealthy.is_empty() {
                    tracing::debug!("health check: all backends healthy");
                } else {
                    tracing::warn!(?unhealthy, "health check");
                }
                return Ok(Some(snapshot));
            }
            Job::SettleStaleCopies => {
                let settled = self
                    .remove_stale_copies(budget.stale_copies, clock())
                    .await
                    .map_err(failed)?;
                if settled > 0 {
                    tracing::info!(settled, "older copies settled");
                }
            }
            Job::UsageScan => self
                .scan_usage(budget.scan_requests, clock())
                .await
                .map_err(failed)?,
            Job::Moves if budget.move_batch > 0 => {
                let owner = self.instance_id(clock());
                self.continue_move_run(
                    budget.move_batch,
                    super::MoveDriver::Scheduled,
                    &owner,
                    clock(),
                )
                .await
                .map_err(|e| format!("{} failed: {e}", job.name()))?;
            }
            Job::Moves => {}
        }
        Ok(None)
    }

    /// Every job once, in the order that keeps the promises first: state read, probes,
    /// older copies, usage scan, then the counts written back. For runtimes woken by their
    /// platform (the Worker's cron, the Lambda's scheduled function). Failures are logged
    /// and returned; one failing job does not stop the others.
    pub async fn run_scheduled(
        &self,
        budget: Budget,
        clock: &(dyn Fn() -> SystemTime + Sync),
    ) -> ScheduledRun {
        let mut run = ScheduledRun::default();
        let order = [
            Job::Refresh,
            Job::HealthCheck,
            Job::SettleStaleCopies,
            Job::Moves,
            Job::UsageScan,
            Job::Refresh,
        ];
        for job in order {
            match self.run_job(job, budget, clock).await {
                Ok(Some(snapshot)) => run.health = Some(snapshot),
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!("{e}");
                    run.errors.push(e);
                }
            }
        }
        run
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Strategy;
    use crate::engine::tests::{config, Harness};

    fn at(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000 + secs)
    }

    #[test]
    fn worker_budgets_put_probes_first_then_split_the_rest() {
        assert_eq!(
            Budget::within(45, 2),
            Budget {
                stale_copies: 7,
                scan_requests: 12,
                move_batch: 2,
            }
        );
        // Not even one probe each: nothing else runs.
        assert_eq!(
            Budget::within(1, 2),
            Budget {
                stale_copies: 0,
                scan_requests: 0,
                move_batch: 0,
            }
        );
    }

    #[test]
    fn every_job_is_due_at_start_and_again_one_period_after_it_ended() {
        let harness = Harness::new(Strategy::RoundRobin);
        let engine = &harness.engine;
        let periods: BTreeMap<Job, Duration> = Job::ALL
            .iter()
            .map(|&j| (j, j.period(&engine.config())))
            .collect();
        assert_eq!(engine.next_deadline(at(0)), Some(at(0)));
        assert_eq!(engine.take_due_jobs(at(0)), Job::ALL.to_vec());
        // All running: nothing is due, and nothing is started twice.
        assert_eq!(engine.next_deadline(at(0)), None);
        assert!(engine.take_due_jobs(at(100)).is_empty());
        // They end at 1 s; each is due one of its periods later.
        for job in Job::ALL {
            drop(Ending {
                engine,
                job,
                clock: &|| at(1),
            });
        }
        let first = periods.values().min().copied().unwrap();
        assert_eq!(engine.next_deadline(at(1)), Some(at(1) + first));
        assert!(engine.take_due_jobs(at(1)).is_empty());
        let later = at(1) + REFRESH_PERIOD;
        assert!(engine.take_due_jobs(later).contains(&Job::Refresh));
        // A clock that went back makes a job due at once instead of never.
        assert!(engine.take_due_jobs(at(0)).contains(&Job::HealthCheck));
    }

    #[test]
    fn periods_follow_the_config_in_force_with_a_one_second_floor() {
        let mut c = config(Strategy::RoundRobin);
        c.balancer.health_check_period = Duration::from_secs(7);
        c.balancer.update_stats_period = Duration::ZERO;
        assert_eq!(Job::HealthCheck.period(&c), Duration::from_secs(7));
        assert_eq!(Job::UsageScan.period(&c), MIN_PERIOD);
    }

    #[test]
    fn a_scheduled_run_probes_every_backend_and_ends_every_job() {
        let harness = Harness::new(Strategy::RoundRobin);
        let engine = &harness.engine;
        let run = futures_executor::block_on(engine.run_scheduled(Budget::SERVER, &|| at(5)));
        assert!(run.errors.is_empty(), "{:?}", run.errors);
        let health = run.health.expect("a stored snapshot");
        assert_eq!(health.backends.len(), engine.config().backends.len());
        assert!(health
            .backends
            .values()
            .all(|h| h.healthy && h.last_checked > 0));
        assert!(
            engine.take_due_jobs(at(5)).is_empty(),
            "each job ended at 5 s"
        );
        assert_eq!(engine.next_deadline(at(5)), Some(at(5) + REFRESH_PERIOD));
    }
}

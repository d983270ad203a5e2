//! The projection jobs: `rebuild` replays the log into a users table, `verify` compares
//! the users table with the log and `--repair` heals the drift. Both backends, the same
//! code: everything backend-specific is behind [`ProjectionStore`], everything about
//! what a row should be is the domain's ([`replay`], [`compare`]).

use crate::app::audit_trail::all_events;
use crate::app::erasure::Erasure;
use crate::clock::EventClock;
use crate::domain::UserRow;
use crate::domain::events::is_erased;
use crate::domain::events::{Actor, EventEnvelope};
use crate::domain::projection::{expected_row, replay};
use crate::domain::verify::{Drift, cells_without_events, compare, erasure_drift, restatement};
use crate::store::{
    FinishedRange, Precondition, ProjectionStore, ScanRange, StoreError, USERS_TABLE,
};
use futures::{StreamExt, TryStreamExt};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use uuid::Uuid;

/// Ranges the key space is cut into: enough for parallelism and fine-grained resume,
/// few enough that checkpoints stay small.
pub const DEFAULT_SPLITS: usize = 256;
/// Projection writes in flight per range.
const WRITES_IN_FLIGHT: usize = 64;

/// Options of `rebuild`.
#[derive(Debug, Clone)]
pub struct RebuildOptions {
    /// Only this user.
    pub user: Option<Uuid>,
    /// Target table; `users` when `None`.
    pub into: Option<String>,
    /// Ranges scanned at once.
    pub parallel: usize,
    /// Skip ranges a previous run of the same job finished.
    pub resume: bool,
    /// Scan and count, write nothing.
    pub dry_run: bool,
    /// Key-space splits.
    pub splits: usize,
    /// Stop after this many ranges, as an interruption would (for testing `--resume`).
    pub stop_after_ranges: Option<usize>,
}

/// What `rebuild` did.
#[derive(Debug, Clone, Default)]
pub struct RebuildReport {
    /// The table written.
    pub target: String,
    /// Ranges in the key space.
    pub ranges_total: usize,
    /// Ranges skipped because a previous run finished them.
    pub ranges_skipped: usize,
    /// Ranges finished by this run.
    pub ranges_done: usize,
    /// Events replayed by this run.
    pub events: u64,
    /// Wall time.
    pub elapsed: Duration,
    /// True when stopped by `stop_after_ranges`.
    pub interrupted: bool,
}

impl RebuildReport {
    /// Events per second.
    pub fn rate(&self) -> f64 {
        self.events as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// How far a running job has got.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct JobProgress {
    /// Ranges finished so far.
    pub ranges_done: u64,
    /// Ranges this run will scan.
    pub ranges_total: u64,
    /// Events read so far.
    pub events: u64,
    /// Since the job began.
    pub elapsed: Duration,
}

impl JobProgress {
    /// Events per second so far.
    pub fn rate(&self) -> f64 {
        self.events as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// Where a job reports how far it has got. The job calls [`update`](Self::update)
/// every [`period`](Self::period) and once at the end, then [`finish`](Self::finish);
/// drawing (the command line's progress bar) is the observer's business, not the job's.
pub trait ProgressObserver: Send + Sync {
    /// How often the job reports.
    fn period(&self) -> Duration {
        Duration::from_secs(5)
    }
    /// The counts so far of the job named `job` (`rebuild`, `verify`).
    fn update(&self, job: &str, progress: JobProgress);
    /// The job is over.
    fn finish(&self) {}
}

/// Logs one line per period: what a job reports when nobody draws it.
#[derive(Debug, Clone, Copy, Default)]
pub struct LogProgress;

impl ProgressObserver for LogProgress {
    fn update(&self, job: &str, progress: JobProgress) {
        tracing::info!(
            job,
            ranges_done = progress.ranges_done,
            ranges_total = progress.ranges_total,
            events = progress.events,
            events_per_second = progress.rate() as u64,
            "progress"
        );
    }
}

/// A running job's counters, reported to its observer.
struct Progress {
    job: &'static str,
    events: AtomicU64,
    ranges: AtomicU64,
    total_ranges: u64,
    started: Instant,
    observer: Arc<dyn ProgressObserver>,
}

impl Progress {
    fn new(
        job: &'static str,
        total_ranges: usize,
        observer: Arc<dyn ProgressObserver>,
    ) -> Arc<Self> {
        Arc::new(Self {
            job,
            events: AtomicU64::new(0),
            ranges: AtomicU64::new(0),
            total_ranges: total_ranges as u64,
            started: Instant::now(),
            observer,
        })
    }

    fn tick(&self) {
        self.observer.update(
            self.job,
            JobProgress {
                ranges_done: self.ranges.load(Ordering::Relaxed),
                ranges_total: self.total_ranges,
                events: self.events.load(Ordering::Relaxed),
                elapsed: self.started.elapsed(),
            },
        );
    }

    /// Ticks every period of the observer until aborted.
    fn spawn_ticker(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let progress = Arc::clone(self);
        tokio::spawn(async move {
            let mut interval = tokio::time::interval(progress.observer.period());
            interval.tick().await;
            loop {
                interval.tick().await;
                progress.tick();
            }
        })
    }

    fn finish(&self) {
        self.observer.finish();
    }
}

/// Replays the log through the shared projection into `users` or `--into` a side
/// table. Every cell is written with its event's own write time, so the result does
/// not depend on order and the job is safe while the service runs. Progress is
/// logged ([`LogProgress`]).
pub async fn rebuild(
    store: &dyn ProjectionStore,
    options: &RebuildOptions,
) -> Result<RebuildReport, StoreError> {
    rebuild_observed(store, options, Arc::new(LogProgress)).await
}

/// [`rebuild`], reporting its progress to `observer`.
pub async fn rebuild_observed(
    store: &dyn ProjectionStore,
    options: &RebuildOptions,
    observer: Arc<dyn ProgressObserver>,
) -> Result<RebuildReport, StoreError> {
    let target = options
        .into
        .clone()
        .unwrap_or_else(|| USERS_TABLE.to_owned());
    store.prepare_table(USERS_TABLE).await?;
    if target != USERS_TABLE && !options.dry_run {
        store.prepare_table(&target).await?;
    }
    let started = Instant::now();
    let mut report = RebuildReport {
        target: target.clone(),
        ..RebuildReport::default()
    };

    if let Some(user_id) = options.user {
        let events = all_events(store, user_id).await?;
        // An erased user gets no row, whatever their log holds.
        if !options.dry_run && !is_erased(&events) {
            for event in &events {
                store.project_into(&target, event).await?;
            }
        }
        report.events = events.len() as u64;
        report.elapsed = started.elapsed();
        return Ok(report);
    }

    let job = format!("rebuild:{target}");
    if !options.resume && !options.dry_run {
        store.reset_checkpoints(&job).await?;
    }
    let finished: HashSet<i64> = if options.resume {
        store.finished_ranges(&job).await?.into_iter().collect()
    } else {
        HashSet::new()
    };
    let ranges = store.scan_ranges(options.splits);
    report.ranges_total = ranges.len();
    let pending: Vec<ScanRange> = ranges
        .into_iter()
        .filter(|r| !finished.contains(&r.start))
        .collect();
    report.ranges_skipped = report.ranges_total - pending.len();
    let pending: Vec<ScanRange> = match options.stop_after_ranges {
        Some(limit) => pending.into_iter().take(limit).collect(),
        None => pending,
    };
    report.interrupted = options
        .stop_after_ranges
        .is_some_and(|limit| report.ranges_total - report.ranges_skipped > limit);

    let progress = Progress::new("rebuild", pending.len(), observer);
    let ticker = progress.spawn_ticker();
    let outcome = futures::stream::iter(pending)
        .map(|range| {
            let (target, job, progress) = (&target, &job, &progress);
            async move {
                let events = by_user(store.scan_events(range).await?)
                    // An erased user gets no row, whatever their log holds.
                    .try_filter(|events| std::future::ready(!is_erased(events)))
                    .map_ok(|events| {
                        futures::stream::iter(events.into_iter().map(Ok::<_, StoreError>))
                    })
                    .try_flatten()
                    .map(|event| async move {
                        let event = event?;
                        if !options.dry_run {
                            store.project_into(target, &event).await?;
                        }
                        progress.events.fetch_add(1, Ordering::Relaxed);
                        Ok::<_, StoreError>(())
                    })
                    .buffer_unordered(WRITES_IN_FLIGHT)
                    .try_fold(0u64, |count, ()| async move { Ok(count + 1) })
                    .await?;
                if !options.dry_run {
                    store
                        .finish_range(job, FinishedRange { range, events })
                        .await?;
                }
                progress.ranges.fetch_add(1, Ordering::Relaxed);
                Ok::<_, StoreError>(events)
            }
        })
        .buffer_unordered(options.parallel.max(1))
        .try_fold((0usize, 0u64), |(ranges, events), n| async move {
            Ok((ranges + 1, events + n))
        })
        .await;
    ticker.abort();
    progress.tick();
    progress.finish();
    let (ranges_done, events) = outcome?;
    report.ranges_done = ranges_done;
    report.events = events;
    report.elapsed = started.elapsed();
    Ok(report)
}

/// Regroups a scan's events, which come user by user, into one vector per user, so
/// that a user can be judged by their whole log (memory: one user's log).
fn by_user(
    events: crate::store::EventStream<'_>,
) -> impl futures::Stream<Item = Result<Vec<EventEnvelope>, StoreError>> + '_ {
    futures::stream::unfold(
        (events, None::<EventEnvelope>, false),
        |(mut events, mut carried, done)| async move {
            if done {
                return None;
            }
            let mut group: Vec<EventEnvelope> = carried.take().into_iter().collect();
            loop {
                match events.next().await {
                    Some(Ok(event)) => {
                        if group
                            .first()
                            .is_some_and(|first| first.user_id != event.user_id)
                        {
                            return Some((Ok(group), (events, Some(event), false)));
                        }
                        group.push(event);
                    }
                    Some(Err(err)) => return Some((Err(err), (events, None, true))),
                    None if group.is_empty() => return None,
                    None => return Some((Ok(group), (events, None, true))),
                }
            }
        },
    )
}

/// Options of `verify`.
#[derive(Debug, Clone)]
pub struct VerifyOptions {
    /// Only this user.
    pub user: Option<Uuid>,
    /// Heal what is found.
    pub repair: bool,
    /// Ranges scanned at once.
    pub parallel: usize,
    /// Key-space splits.
    pub splits: usize,
    /// Name recorded as the actor of repair events.
    pub operator: String,
}

/// What `verify` found (and, with `--repair`, what is left).
#[derive(Debug, Clone, Default)]
pub struct VerifyReport {
    /// Users compared.
    pub users_checked: u64,
    /// Events read.
    pub events_read: u64,
    /// Every drift found.
    pub drifts: Vec<Drift>,
    /// Users repaired.
    pub repaired: Vec<Uuid>,
    /// Drift still present after repair.
    pub remaining: Vec<Drift>,
}

impl VerifyReport {
    /// True when the table agrees with the log (after repair, if repairing).
    pub fn clean(&self, repaired: bool) -> bool {
        if repaired {
            self.remaining.is_empty()
        } else {
            self.drifts.is_empty()
        }
    }
}

/// Compares one user's stored row with what its events imply. An erased user should
/// have no row and no readable personal value.
fn check_user(user_id: Uuid, events: &[EventEnvelope], actual: Option<&UserRow>) -> Vec<Drift> {
    if is_erased(events) {
        return erasure_drift(user_id, events, actual);
    }
    let expected = expected_row(user_id, events);
    let known: HashSet<Uuid> = events.iter().map(|e| e.event_id).collect();
    compare(user_id, expected.as_ref(), actual, |id| known.contains(&id))
}

/// Heals one user: re-project the log; if cells still carry later write times than the
/// log explains (or the row was deleted by a later tombstone), record a
/// `ProjectionRepaired` event that restates the expected state; delete cells and rows
/// no event wrote. Returns the drift left afterwards.
async fn repair_user(
    store: &dyn ProjectionStore,
    clock: &EventClock,
    operator: &str,
    user_id: Uuid,
) -> Result<Vec<Drift>, StoreError> {
    let events = all_events(store, user_id).await?;
    let actual = store.table_row(USERS_TABLE, user_id).await?;
    if is_erased(&events) {
        // An erasure a crash interrupted: its remaining steps. The row goes last, and
        // its email finds the credentials.
        Erasure::with_row(store, user_id, actual.as_ref())
            .finish()
            .await?;
        let events = all_events(store, user_id).await?;
        return Ok(check_user(
            user_id,
            &events,
            store.table_row(USERS_TABLE, user_id).await?.as_ref(),
        ));
    }
    let expected = replay(user_id, &events);
    if !expected.is_registered() {
        if let Some(row) = &actual {
            // No user in the log: the row goes, with a tombstone over its newest cell.
            let newest = crate::domain::columns::Column::ALL
                .iter()
                .filter_map(|c| row.cell(*c).map(|(_, at)| at))
                .chain(row.last_event_id.as_ref().map(|c| c.written_at))
                .max()
                .unwrap_or(0);
            store.delete_row(USERS_TABLE, user_id, newest).await?;
        }
        return Ok(check_user(
            user_id,
            &events,
            store.table_row(USERS_TABLE, user_id).await?.as_ref(),
        ));
    }
    for event in &events {
        store.project_into(USERS_TABLE, event).await?;
    }
    let mut actual = store.table_row(USERS_TABLE, user_id).await?;
    if let Some(row) = &actual {
        for (column, at) in cells_without_events(&expected, row) {
            store.delete_cell(USERS_TABLE, user_id, column, at).await?;
        }
        actual = store.table_row(USERS_TABLE, user_id).await?;
    }
    let still_drifting = !check_user(user_id, &events, actual.as_ref()).is_empty();
    if let Some(event) = still_drifting
        .then(|| restatement(&expected, actual.as_ref()))
        .flatten()
    {
        let envelope = EventEnvelope::new(
            user_id,
            clock.next_event_id(),
            Actor::Operator(operator.to_owned()),
            None,
            event,
        );
        store.append(&envelope, Precondition::None).await?;
    }
    let events = all_events(store, user_id).await?;
    Ok(check_user(
        user_id,
        &events,
        store.table_row(USERS_TABLE, user_id).await?.as_ref(),
    ))
}

/// Verifies one range: its events grouped by user, its rows, compared user by user.
async fn verify_range(
    store: &dyn ProjectionStore,
    range: ScanRange,
) -> Result<(u64, u64, Vec<Drift>), StoreError> {
    let mut events: HashMap<Uuid, Vec<EventEnvelope>> = HashMap::new();
    let mut stream = store.scan_events(range).await?;
    let mut event_count = 0;
    while let Some(event) = stream.next().await {
        let event = event?;
        event_count += 1;
        events.entry(event.user_id).or_default().push(event);
    }
    drop(stream);
    let mut rows: HashMap<Uuid, UserRow> = HashMap::new();
    let mut stream = store.scan_rows(USERS_TABLE, range).await?;
    while let Some(row) = stream.next().await {
        let row = row?;
        rows.insert(row.user_id, row);
    }
    let users: HashSet<Uuid> = events.keys().chain(rows.keys()).copied().collect();
    let mut drifts = Vec::new();
    for user_id in &users {
        let user_events = events.get(user_id).map(Vec::as_slice).unwrap_or_default();
        drifts.extend(check_user(*user_id, user_events, rows.get(user_id)));
    }
    Ok((users.len() as u64, event_count, drifts))
}

/// Compares the users table with the log, range by range (memory: one range), and
/// with `repair` heals every drifting user. Progress is logged ([`LogProgress`]).
pub async fn verify(
    store: &dyn ProjectionStore,
    options: &VerifyOptions,
) -> Result<VerifyReport, StoreError> {
    verify_observed(store, options, Arc::new(LogProgress)).await
}

/// [`verify`], reporting its progress to `observer`.
pub async fn verify_observed(
    store: &dyn ProjectionStore,
    options: &VerifyOptions,
    observer: Arc<dyn ProgressObserver>,
) -> Result<VerifyReport, StoreError> {
    store.prepare_table(USERS_TABLE).await?;
    let mut report = VerifyReport::default();
    if let Some(user_id) = options.user {
        let events = all_events(store, user_id).await?;
        let actual = store.table_row(USERS_TABLE, user_id).await?;
        report.users_checked = 1;
        report.events_read = events.len() as u64;
        report.drifts = check_user(user_id, &events, actual.as_ref());
    } else {
        let ranges = store.scan_ranges(options.splits);
        let progress = Progress::new("verify", ranges.len(), observer);
        let ticker = progress.spawn_ticker();
        let outcome = futures::stream::iter(ranges)
            .map(|range| {
                let progress = &progress;
                async move {
                    let result = verify_range(store, range).await?;
                    progress.events.fetch_add(result.1, Ordering::Relaxed);
                    progress.ranges.fetch_add(1, Ordering::Relaxed);
                    Ok::<_, StoreError>(result)
                }
            })
            .buffer_unordered(options.parallel.max(1))
            .try_collect::<Vec<_>>()
            .await;
        ticker.abort();
        progress.tick();
        progress.finish();
        for (users, events, drifts) in outcome? {
            report.users_checked += users;
            report.events_read += events;
            report.drifts.extend(drifts);
        }
    }
    report.drifts.sort_by_key(|d| (d.user_id, d.column, d.kind));
    if options.repair {
        let clock = EventClock::new();
        let mut users: Vec<Uuid> = report.drifts.iter().map(|d| d.user_id).collect();
        users.dedup();
        for user_id in users {
            report
                .remaining
                .extend(repair_user(store, &clock, &options.operator, user_id).await?);
            report.repaired.push(user_id);
        }
    }
    Ok(report)
}

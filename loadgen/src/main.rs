//! `loadgen`: the instrument behind docs/performance.md.
//!
//! - `loadgen http`: creates and logs in N users on a running service, then drives
//!   `PUT /api/v1/users/me` (with a configurable share of GETs and of `If-Match`
//!   updates, over few hot users or many) at a fixed concurrency or a fixed arrival
//!   rate, and reports throughput, HDR latency percentiles and statuses as JSON.
//! - `loadgen floor`: the same load with no HTTP and no service: exactly the store calls
//!   one PUT costs (auth read, event append + projection, refetch), through the same
//!   library, against the same database. Service / floor is the overhead figure.
//! - `loadgen seed`: appends events straight into a store, for the rebuild benchmark.
//! - `loadgen drop-keyspace`: drops a benchmark's Cassandra keyspace when it is done.

use clap::{Args, Parser, Subcommand};
use hdrhistogram::Histogram;
use killrvideo_users::clock::EventClock;
use killrvideo_users::config::{StoreArgs, StoreSettings};
use killrvideo_users::domain::events::{
    Actor, EventEnvelope, FieldChange, ProfileUpdated, UserEvent, UserRegistered,
};
use killrvideo_users::startup::open_store;
use killrvideo_users::store::cassandra::{migrate, open_session};
use killrvideo_users::store::{Credentials, Precondition, SharedBackend};
use serde::Serialize;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use uuid::Uuid;

mod wire;

// The same allocator as the service, so that the floor's store calls cost what the
// service's do.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "loadgen",
    about = "Load generator and driver floor for killrvideo-users"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Drive a running service over HTTP.
    Http(HttpArgs),
    /// Run the store calls of one PUT directly, without HTTP.
    Floor(FloorArgs),
    /// Append events straight into a store (for the rebuild benchmark).
    Seed(SeedArgs),
    /// Register a directory of users with varied, accented names straight into a
    /// store, and one moderator, for the search benchmark.
    SeedDirectory(SeedDirectoryArgs),
    /// Drive `GET /api/v1/moderation/users?q=...` as a moderator.
    Search(SearchArgs),
    /// Drop the configured Cassandra keyspace, so that a benchmark leaves none behind
    /// on the server (each is up to a million events, and a server holding hundreds of
    /// tables runs slower: docs/performance.md, "Cassandra's warm-up").
    DropKeyspace(DropKeyspaceArgs),
}

/// The shape of the load, shared by `http` and `floor`.
#[derive(Args, Clone)]
struct LoadArgs {
    /// Name of the scenario in the output.
    #[arg(long, default_value = "scenario")]
    label: String,
    /// Users to create.
    #[arg(long, default_value_t = 200)]
    users: usize,
    /// Requests go to the first `hot_users` users only (contention); default all.
    #[arg(long)]
    hot_users: Option<usize>,
    /// Concurrent clients (closed loop); with `--rate`, the connections (HTTP) or the
    /// store calls (floor) in flight at most, requests beyond waiting their turn.
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// Fixed arrival rate in requests/s (open loop) instead of fixed concurrency.
    #[arg(long)]
    rate: Option<u64>,
    /// Measured duration.
    #[arg(long, default_value = "30s")]
    duration: humantime::Duration,
    /// Unmeasured warm-up before it.
    #[arg(long, default_value = "5s")]
    warmup: humantime::Duration,
    /// Share of GET /me among requests (0..1).
    #[arg(long, default_value_t = 0.0)]
    get_share: f64,
    /// Share of PUTs sent with If-Match (0..1).
    #[arg(long, default_value_t = 0.0)]
    if_match_share: f64,
    /// Write the JSON result here too.
    #[arg(long)]
    out: Option<std::path::PathBuf>,
    /// Add a timeline to the result: requests and worst latency per 100 ms of the
    /// measured period, by when each request started (or was due), to see when a tail
    /// happened and line it up with the database's logs.
    #[arg(long)]
    timeline: bool,
}

impl LoadArgs {
    /// How many of `created` users the load goes to.
    fn hot_count(&self, created: usize) -> usize {
        self.hot_users.unwrap_or(created).clamp(1, created.max(1))
    }
}

#[derive(Args)]
struct HttpArgs {
    /// Service base URL.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    url: String,
    /// Send `GET /healthz` instead of the users' requests: what the loopback exchange,
    /// the HTTP stack and this client cost with no handler and no store work, the
    /// ceiling of any endpoint on this machine (docs/performance.md, "What is measured").
    #[arg(long)]
    ceiling: bool,
    #[command(flatten)]
    load: LoadArgs,
}

#[derive(Args)]
struct FloorArgs {
    #[command(flatten)]
    store: StoreArgs,
    #[command(flatten)]
    load: LoadArgs,
}

#[derive(Args)]
struct SeedArgs {
    #[command(flatten)]
    store: StoreArgs,
    /// Users to create.
    #[arg(long, default_value_t = 10_000)]
    users: usize,
    /// Profile updates per user (plus its registration).
    #[arg(long, default_value_t = 99)]
    events_per_user: usize,
    /// Appends in flight.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
}

#[derive(Args)]
struct SeedDirectoryArgs {
    #[command(flatten)]
    store: StoreArgs,
    /// Users to register.
    #[arg(long, default_value_t = 100_000)]
    users: usize,
    /// Registrations in flight.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
}

#[derive(Args)]
struct SearchArgs {
    /// Service base URL.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    url: String,
    /// The service's JWT secret, to mint the moderator's token.
    #[arg(long, env = "KILLRVIDEO_JWT_SECRET", hide_env_values = true)]
    jwt_secret: String,
    /// The moderator `seed-directory` registered.
    #[arg(long)]
    moderator: Uuid,
    #[command(flatten)]
    load: LoadArgs,
}

#[derive(Args)]
struct DropKeyspaceArgs {
    #[command(flatten)]
    store: StoreArgs,
}

/// What one measured run produced.
#[derive(Serialize)]
struct Report {
    label: String,
    /// `http`, `http-ceiling` (`--ceiling`: `GET /healthz`), `floor` or `search`.
    mode: &'static str,
    concurrency: usize,
    rate: Option<u64>,
    users: usize,
    hot_users: usize,
    get_share: f64,
    if_match_share: f64,
    duration_s: f64,
    requests: u64,
    throughput_rps: f64,
    latency_ms: BTreeMap<&'static str, f64>,
    statuses: BTreeMap<String, u64>,
    errors: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    timeline: Option<Timeline>,
}

/// Per-window view of the measured period (`--timeline`).
#[derive(Serialize)]
struct Timeline {
    /// Wall-clock time (Unix seconds) at which the measured period began.
    start_unix_s: f64,
    window_ms: u64,
    /// Requests started (or due) in each window.
    requests: Vec<u64>,
    /// The worst latency among them, in ms.
    max_ms: Vec<f64>,
}

/// Width of a timeline window.
const TIMELINE_WINDOW: Duration = Duration::from_millis(100);

/// One operation's outcome: a status (HTTP status, or `ok`/`conflict`/an error name for
/// the floor) and whether it counts as an error.
struct Outcome {
    status: String,
    error: bool,
}

/// Collects latencies and statuses across workers.
struct Recorder {
    histogram: std::sync::Mutex<Histogram<u64>>,
    statuses: std::sync::Mutex<BTreeMap<String, u64>>,
    requests: AtomicU64,
    errors: AtomicU64,
    /// Start of the measured period.
    measure_from: Instant,
    /// (requests, worst latency in µs) per [`TIMELINE_WINDOW`], kept only with
    /// `--timeline`, so that the default run's instrument does no extra work.
    windows: Option<std::sync::Mutex<Vec<(u64, u64)>>>,
}

impl Recorder {
    fn new(measure_from: Instant, timeline: bool) -> Arc<Self> {
        Arc::new(Self {
            measure_from,
            windows: timeline.then(std::sync::Mutex::default),
            histogram: std::sync::Mutex::new(
                Histogram::new_with_bounds(1, 60_000_000, 3).expect("histogram bounds"),
            ),
            statuses: std::sync::Mutex::default(),
            requests: AtomicU64::new(0),
            errors: AtomicU64::new(0),
        })
    }

    /// Records a request that started (or was due) at `started` and took `latency`.
    fn record(&self, started: Instant, latency: Duration, outcome: Outcome) {
        let micros = (latency.as_micros() as u64).clamp(1, 60_000_000);
        if let Ok(mut h) = self.histogram.lock() {
            let _ = h.record(micros);
        }
        if let Some(Ok(mut windows)) = self.windows.as_ref().map(|w| w.lock()) {
            let window = (started
                .saturating_duration_since(self.measure_from)
                .as_millis()
                / TIMELINE_WINDOW.as_millis()) as usize;
            if windows.len() <= window {
                windows.resize(window + 1, (0, 0));
            }
            let (count, worst) = &mut windows[window];
            *count += 1;
            *worst = (*worst).max(micros);
        }
        if let Ok(mut s) = self.statuses.lock() {
            *s.entry(outcome.status).or_default() += 1;
        }
        self.requests.fetch_add(1, Ordering::Relaxed);
        if outcome.error {
            self.errors.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn timeline(&self) -> Option<Timeline> {
        let windows = self.windows.as_ref()?.lock().map(|w| w.clone()).ok()?;
        // The measured period's start on the wall clock, from how long ago it was.
        let measure_from_wall = std::time::SystemTime::now() - self.measure_from.elapsed();
        Some(Timeline {
            start_unix_s: measure_from_wall
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default()
                .as_secs_f64(),
            window_ms: TIMELINE_WINDOW.as_millis() as u64,
            requests: windows.iter().map(|(count, _)| *count).collect(),
            max_ms: windows
                .iter()
                .map(|(_, worst)| *worst as f64 / 1000.0)
                .collect(),
        })
    }

    fn report(&self, load: &LoadArgs, mode: &'static str, elapsed: Duration, hot: usize) -> Report {
        let histogram = self
            .histogram
            .lock()
            .map(|h| h.clone())
            .unwrap_or_else(|e| e.into_inner().clone());
        let ms = |micros: u64| micros as f64 / 1000.0;
        let mut latency = BTreeMap::new();
        latency.insert("p50", ms(histogram.value_at_quantile(0.50)));
        latency.insert("p90", ms(histogram.value_at_quantile(0.90)));
        latency.insert("p99", ms(histogram.value_at_quantile(0.99)));
        latency.insert("p99.9", ms(histogram.value_at_quantile(0.999)));
        latency.insert("max", ms(histogram.max()));
        latency.insert("mean", histogram.mean() / 1000.0);
        let requests = self.requests.load(Ordering::Relaxed);
        Report {
            label: load.label.clone(),
            mode,
            concurrency: load.concurrency,
            rate: load.rate,
            users: load.users,
            hot_users: hot,
            get_share: load.get_share,
            if_match_share: load.if_match_share,
            duration_s: elapsed.as_secs_f64(),
            requests,
            throughput_rps: requests as f64 / elapsed.as_secs_f64().max(1e-9),
            latency_ms: latency,
            statuses: self.statuses.lock().map(|s| s.clone()).unwrap_or_default(),
            errors: self.errors.load(Ordering::Relaxed),
            timeline: self.timeline(),
        }
    }
}

/// A source of work: one call performs one request for user `index`.
trait Target: Send + Sync + 'static {
    fn call(
        self: Arc<Self>,
        index: usize,
        seq: u64,
    ) -> impl std::future::Future<Output = Outcome> + Send;
}

/// Runs `target` under the load shape: warm-up, then the measured period.
async fn drive<T: Target>(
    target: Arc<T>,
    load: &LoadArgs,
    hot: usize,
) -> (Arc<Recorder>, Duration) {
    let warmup = Duration::from(load.warmup);
    let measured = Duration::from(load.duration);
    let started = Instant::now();
    let measure_from = started + warmup;
    let recorder = Recorder::new(measure_from, load.timeline);
    let stop_at = measure_from + measured;
    let seq = Arc::new(AtomicU64::new(0));
    match load.rate {
        None => {
            let workers = (0..load.concurrency).map(|_| {
                let (target, recorder, seq) =
                    (Arc::clone(&target), Arc::clone(&recorder), Arc::clone(&seq));
                tokio::spawn(async move {
                    while Instant::now() < stop_at {
                        let n = seq.fetch_add(1, Ordering::Relaxed);
                        let user = pick_user(n, hot);
                        let begin = Instant::now();
                        let outcome = Arc::clone(&target).call(user, n).await;
                        if begin >= measure_from && begin < stop_at {
                            recorder.record(begin, begin.elapsed(), outcome);
                        }
                    }
                })
            });
            futures::future::join_all(workers).await;
        }
        Some(rate) => {
            // Open loop: requests are issued on schedule whatever the latency, and each
            // is timed from when it was due (no coordinated omission).
            let interval = Duration::from_secs_f64(1.0 / rate.max(1) as f64);
            let in_flight = Arc::new(tokio::sync::Semaphore::new(load.concurrency.max(1) * 64));
            let mut due = Instant::now();
            let mut tasks = Vec::new();
            // Issue everything that is due, then sleep until the next due time: one timer
            // per wake-up, not one per request. Sleeping per request lets the issuing
            // loop fall behind (a timer fires at best on the next millisecond tick), and
            // the lag would be counted as the service's latency.
            while due < stop_at {
                let now = Instant::now();
                while due <= now && due < stop_at {
                    let n = seq.fetch_add(1, Ordering::Relaxed);
                    let recorder = Arc::clone(&recorder);
                    let Ok(permit) = Arc::clone(&in_flight).try_acquire_owned() else {
                        if due >= measure_from {
                            recorder.record(
                                due,
                                Duration::ZERO,
                                Outcome {
                                    status: "dropped".into(),
                                    error: true,
                                },
                            );
                        }
                        due += interval;
                        continue;
                    };
                    let (target, scheduled) = (Arc::clone(&target), due);
                    tasks.push(tokio::spawn(async move {
                        let outcome = target.call(pick_user(n, hot), n).await;
                        if scheduled >= measure_from {
                            recorder.record(scheduled, scheduled.elapsed(), outcome);
                        }
                        drop(permit);
                    }));
                    due += interval;
                }
                tokio::time::sleep_until(due.into()).await;
            }
            futures::future::join_all(tasks).await;
        }
    }
    (recorder, measured)
}

/// Spreads requests over the hot users.
fn pick_user(n: u64, hot: usize) -> usize {
    // A multiplicative hash spreads consecutive sequence numbers.
    ((n.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 16) % hot.max(1) as u64) as usize
}

/// Deterministic draw in [0, 1) for request `n` and a salt.
fn draw(n: u64, salt: u64) -> f64 {
    let x = (n ^ salt)
        .wrapping_mul(0xBF58_476D_1CE4_E5B9)
        .rotate_left(31)
        .wrapping_mul(0x94D0_49BB_1331_11EB);
    (x >> 11) as f64 / (1u64 << 53) as f64
}

// ----- HTTP -----

struct HttpTarget {
    pool: wire::Pool,
    tokens: Vec<String>,
    get_share: f64,
    if_match_share: f64,
    ceiling: bool,
}

/// The endpoint under load.
const ME: &str = "/api/v1/users/me";

/// Longest a measured request may take before it counts as a `timeout` error.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

impl HttpTarget {
    async fn send(
        &self,
        method: &str,
        path: &str,
        token: &str,
        if_match: Option<&str>,
        body: Option<&str>,
    ) -> (Outcome, Option<String>) {
        let sent = self.pool.send(method, path, token, if_match, body);
        let (status, error, etag) = match tokio::time::timeout(REQUEST_TIMEOUT, sent).await {
            // 412 is the expected answer to a lost version race, not an error.
            Ok(Ok(reply)) => (
                reply.status.to_string(),
                !((200..300).contains(&reply.status) || reply.status == 412),
                reply.etag,
            ),
            Ok(Err(err)) if err.kind() == std::io::ErrorKind::ConnectionRefused => {
                ("connect".into(), true, None)
            }
            Ok(Err(_)) => ("transport".into(), true, None),
            Err(_) => ("timeout".into(), true, None),
        };
        (Outcome { status, error }, etag)
    }
}

impl Target for HttpTarget {
    async fn call(self: Arc<Self>, index: usize, seq: u64) -> Outcome {
        let token = &self.tokens[index];
        if self.ceiling {
            return self.send("GET", "/healthz", token, None, None).await.0;
        }
        if draw(seq, 1) < self.get_share {
            return self.send("GET", ME, token, None, None).await.0;
        }
        let body = format!(
            r#"{{"firstname":"F{}","lastname":"L{}"}}"#,
            seq % 1000,
            seq % 997
        );
        let mut if_match = None;
        if draw(seq, 2) < self.if_match_share {
            // Read the version first, as a client doing read-modify-write would.
            let (outcome, etag) = self.send("GET", ME, token, None, None).await;
            match etag {
                Some(etag) => if_match = Some(etag),
                None => return outcome,
            }
        }
        self.send("PUT", ME, token, if_match.as_deref(), Some(&body))
            .await
            .0
    }
}

async fn http(args: HttpArgs) -> Result<Report, String> {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(args.load.concurrency * 2)
        .timeout(Duration::from_secs(30))
        .build()
        .map_err(|e| e.to_string())?;
    let url = args.url.trim_end_matches('/').to_owned();
    eprintln!("loadgen: creating and logging in {} users", args.load.users);
    let run = Uuid::new_v4().simple().to_string();
    let setup = futures::stream::iter(0..args.load.users)
        .map(|i| {
            let (client, url, run) = (client.clone(), url.clone(), run.clone());
            async move {
                let email = format!("load-{run}-{i}@example.com");
                let password = "load-test-password";
                let registered = client
                    .post(format!("{url}/api/v1/users/register"))
                    .json(&json!({"email": email, "password": password, "firstname": "Load", "lastname": "Test"}))
                    .send()
                    .await
                    .map_err(|e| e.to_string())?;
                if !registered.status().is_success() {
                    return Err(format!("register: {}", registered.status()));
                }
                let login: Value = client
                    .post(format!("{url}/api/v1/users/login"))
                    .json(&json!({"email": email, "password": password}))
                    .send()
                    .await
                    .map_err(|e| e.to_string())?
                    .json()
                    .await
                    .map_err(|e| e.to_string())?;
                login["token"].as_str().map(str::to_owned).ok_or_else(|| format!("login: {login}"))
            }
        })
        .buffered(8)
        .collect::<Vec<_>>()
        .await;
    let tokens = setup.into_iter().collect::<Result<Vec<_>, _>>()?;
    let hot = args.load.hot_count(tokens.len());
    let target = Arc::new(HttpTarget {
        pool: wire::Pool::new(&url, args.load.concurrency).await?,
        tokens,
        get_share: args.load.get_share,
        if_match_share: args.load.if_match_share,
        ceiling: args.ceiling,
    });
    eprintln!(
        "loadgen: driving for {} after {} warm-up",
        args.load.duration, args.load.warmup
    );
    let (recorder, elapsed) = drive(target, &args.load, hot).await;
    let mode = if args.ceiling { "http-ceiling" } else { "http" };
    Ok(recorder.report(&args.load, mode, elapsed, hot))
}

// ----- floor -----

/// An event the user makes about themselves, with no request id (no HTTP request).
fn own_event(user_id: Uuid, clock: &EventClock, event: UserEvent) -> EventEnvelope {
    EventEnvelope::new(
        user_id,
        clock.next_event_id(),
        Actor::User(user_id),
        None,
        event,
    )
}

struct FloorTarget {
    store: SharedBackend,
    /// At most `--concurrency` calls in flight, as the HTTP side has connections.
    slots: tokio::sync::Semaphore,
    users: Vec<Uuid>,
    clock: EventClock,
    get_share: f64,
    if_match_share: f64,
}

fn store_outcome(result: Result<(), killrvideo_users::store::StoreError>) -> Outcome {
    use killrvideo_users::store::StoreError;
    match result {
        Ok(()) => Outcome {
            status: "ok".into(),
            error: false,
        },
        Err(StoreError::Conflict(_)) => Outcome {
            status: "conflict".into(),
            error: false,
        },
        Err(StoreError::Unavailable { .. }) => Outcome {
            status: "unavailable".into(),
            error: true,
        },
        Err(_) => Outcome {
            status: "error".into(),
            error: true,
        },
    }
}

impl Target for FloorTarget {
    async fn call(self: Arc<Self>, index: usize, seq: u64) -> Outcome {
        let user_id = self.users[index];
        // The semaphore is never closed, so acquiring only ever waits.
        let _slot = self.slots.acquire().await.ok();
        let result = async {
            // 1. The auth read.
            let row = self.store.find_user(user_id).await?.ok_or_else(|| {
                killrvideo_users::store::StoreError::internal("seeded user missing")
            })?;
            if draw(seq, 1) < self.get_share {
                return Ok(());
            }
            // 2. The event append and the projection.
            let event = UserEvent::ProfileUpdated(ProfileUpdated {
                firstname: Some(FieldChange {
                    from: row.firstname().map(str::to_owned),
                    to: format!("F{}", seq % 1000),
                }),
                lastname: Some(FieldChange {
                    from: row.lastname().map(str::to_owned),
                    to: format!("L{}", seq % 997),
                }),
            });
            let envelope = own_event(user_id, &self.clock, event);
            let precondition = match row.version() {
                Some(version) if draw(seq, 2) < self.if_match_share => {
                    Precondition::LatestEvent(version)
                }
                _ => Precondition::None,
            };
            // 3. The refetch: the same store call as the service makes, so a backend
            // that reads back inside the write does so here too.
            self.store
                .append_and_refetch(&envelope, precondition)
                .await?;
            Ok(())
        }
        .await;
        store_outcome(result)
    }
}

/// Registers users directly in the store (no argon2: the floor never logs in).
async fn seed_users(
    store: &SharedBackend,
    count: usize,
    concurrency: usize,
) -> Result<Vec<Uuid>, String> {
    let clock = EventClock::new();
    let run = Uuid::new_v4().simple().to_string();
    futures::stream::iter(0..count)
        .map(|i| {
            let (store, clock, run) = (store, &clock, &run);
            async move {
                let user_id = Uuid::new_v4();
                let email = format!("floor-{run}-{i}@example.com");
                let credentials = Credentials {
                    email_key: email.clone(),
                    password_hash: "not-a-hash".into(),
                    user_id,
                    account_locked: false,
                };
                let event = UserEvent::UserRegistered(UserRegistered {
                    email,
                    firstname: "Floor".into(),
                    lastname: "Test".into(),
                    account_status: "viewer".into(),
                });
                let envelope = own_event(user_id, clock, event);
                store
                    .register(&credentials, &envelope)
                    .await
                    .map_err(|e| e.to_string())?;
                Ok::<_, String>(user_id)
            }
        })
        .buffer_unordered(concurrency.max(1))
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect()
}

async fn floor(args: FloorArgs) -> Result<Report, String> {
    let settings = args.store.settings().map_err(|e| e.to_string())?;
    let store = open_store(&settings).await.map_err(|e| e.to_string())?;
    eprintln!("loadgen: seeding {} users in the store", args.load.users);
    let users = seed_users(&store, args.load.users, 16).await?;
    let hot = args.load.hot_count(users.len());
    let target = Arc::new(FloorTarget {
        store,
        slots: tokio::sync::Semaphore::new(args.load.concurrency.max(1)),
        users,
        clock: EventClock::new(),
        get_share: args.load.get_share,
        if_match_share: args.load.if_match_share,
    });
    let (recorder, elapsed) = drive(target, &args.load, hot).await;
    Ok(recorder.report(&args.load, "floor", elapsed, hot))
}

// ----- seed -----

async fn seed(args: SeedArgs) -> Result<Value, String> {
    let settings = args.store.settings().map_err(|e| e.to_string())?;
    let store = open_store(&settings).await.map_err(|e| e.to_string())?;
    let started = Instant::now();
    let users = seed_users(&store, args.users, args.concurrency).await?;
    let clock = EventClock::new();
    let appended = AtomicU64::new(users.len() as u64);
    let total = args.users * (args.events_per_user + 1);
    let last_report = std::sync::Mutex::new(Instant::now());
    futures::stream::iter(
        users
            .iter()
            .flat_map(|u| (0..args.events_per_user).map(move |i| (*u, i))),
    )
    .map(|(user_id, i)| {
        let (store, clock, appended, last_report) = (&store, &clock, &appended, &last_report);
        async move {
            let event = UserEvent::ProfileUpdated(ProfileUpdated {
                firstname: (i % 2 == 0).then(|| FieldChange {
                    from: None,
                    to: format!("F{i}"),
                }),
                lastname: (i % 2 == 1).then(|| FieldChange {
                    from: None,
                    to: format!("L{i}"),
                }),
            });
            let envelope = own_event(user_id, clock, event);
            store
                .append(&envelope, Precondition::None)
                .await
                .map_err(|e| e.to_string())?;
            let done = appended.fetch_add(1, Ordering::Relaxed) + 1;
            if let Ok(mut last) = last_report.lock()
                && last.elapsed() > Duration::from_secs(10)
            {
                *last = Instant::now();
                eprintln!("loadgen: seeded {done}/{total} events");
            }
            Ok::<_, String>(())
        }
    })
    .buffer_unordered(args.concurrency.max(1))
    .collect::<Vec<_>>()
    .await
    .into_iter()
    .collect::<Result<Vec<()>, String>>()?;
    let elapsed = started.elapsed().as_secs_f64();
    Ok(
        json!({"users": args.users, "events": total, "seconds": elapsed, "events_per_second": total as f64 / elapsed}),
    )
}

// ----- search -----

/// First names of the directory: accented and plain, so that folding is exercised.
const FIRST_NAMES: [&str; 40] = [
    "Jöhnny",
    "Ängela",
    "Émile",
    "Zoë",
    "Søren",
    "Mårten",
    "José",
    "Renée",
    "Łukasz",
    "Chloé",
    "Noémie",
    "François",
    "Håkon",
    "Björn",
    "Ana",
    "Maria",
    "John",
    "Michael",
    "Sarah",
    "David",
    "Laura",
    "Peter",
    "Anna",
    "Paul",
    "Marta",
    "Ingrid",
    "Oskar",
    "Lena",
    "Tomás",
    "Inés",
    "Raúl",
    "Agnès",
    "Jürgen",
    "Sven",
    "Olga",
    "Irina",
    "Dmitri",
    "Yusuf",
    "Aylin",
    "Kenji",
];
/// Last names of the directory.
const LAST_NAMES: [&str; 40] = [
    "Ångström",
    "Müller",
    "García",
    "Núñez",
    "Øland",
    "Dvořák",
    "Šimek",
    "Kovač",
    "Łęcki",
    "Brontë",
    "Smith",
    "Johnson",
    "Williams",
    "Brown",
    "Jones",
    "Miller",
    "Davis",
    "Wilson",
    "Anderson",
    "Thomas",
    "Taylor",
    "Moore",
    "Martin",
    "Jackson",
    "Thompson",
    "White",
    "Harris",
    "Clark",
    "Lewis",
    "Robinson",
    "Walker",
    "Young",
    "Allen",
    "King",
    "Wright",
    "Scott",
    "Torres",
    "Nguyen",
    "Hill",
    "Flores",
];

/// The names and email of directory user `i`.
fn directory_person(i: usize) -> (String, String, String) {
    let first = FIRST_NAMES[i % FIRST_NAMES.len()];
    let last = format!(
        "{}{}",
        LAST_NAMES[(i / FIRST_NAMES.len()) % LAST_NAMES.len()],
        i / (FIRST_NAMES.len() * LAST_NAMES.len())
    );
    let email = format!(
        "{}.{}.{i}@example.com",
        killrvideo_users::domain::search::fold(first),
        killrvideo_users::domain::search::fold(&last)
    )
    .replace(' ', "");
    (first.to_owned(), last, email)
}

async fn seed_directory(args: SeedDirectoryArgs) -> Result<Value, String> {
    let settings = args.store.settings().map_err(|e| e.to_string())?;
    let store = open_store(&settings).await.map_err(|e| e.to_string())?;
    let clock = EventClock::new();
    let started = Instant::now();
    let register = |i: Option<usize>| {
        let (store, clock) = (&store, &clock);
        async move {
            let user_id = Uuid::new_v4();
            let (first, last, email, status) = match i {
                Some(i) => {
                    let (first, last, email) = directory_person(i);
                    (first, last, email, "viewer")
                }
                None => (
                    "Bench".into(),
                    "Moderator".into(),
                    format!("moderator-{}@example.com", user_id.simple()),
                    "moderator",
                ),
            };
            let credentials = Credentials {
                email_key: email.to_ascii_lowercase(),
                password_hash: "not-a-hash".into(),
                user_id,
                account_locked: false,
            };
            let event = UserEvent::UserRegistered(UserRegistered {
                email,
                firstname: first,
                lastname: last,
                account_status: status.into(),
            });
            store
                .register(&credentials, &own_event(user_id, clock, event))
                .await
                .map_err(|e| e.to_string())?;
            Ok::<_, String>(user_id)
        }
    };
    let moderator = register(None).await?;
    let done = AtomicU64::new(0);
    futures::stream::iter(0..args.users)
        .map(|i| {
            let (register, done) = (&register, &done);
            async move {
                register(Some(i)).await?;
                let n = done.fetch_add(1, Ordering::Relaxed) + 1;
                if n.is_multiple_of(10_000) {
                    eprintln!("loadgen: registered {n}/{} users", args.users);
                }
                Ok::<_, String>(())
            }
        })
        .buffer_unordered(args.concurrency.max(1))
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<Result<Vec<()>, String>>()?;
    let seconds = started.elapsed().as_secs_f64();
    Ok(json!({"users": args.users, "moderator": moderator, "seconds": seconds}))
}

struct SearchTarget {
    pool: wire::Pool,
    token: String,
}

/// The query of request `n`: half of them a fragment of a common first name (thousands
/// of matches: a full page and a Link), half a whole email local part (one match).
fn search_query(n: u64) -> String {
    let person = (n.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 20) as usize;
    let fragment = if n.is_multiple_of(2) {
        let folded: Vec<char> =
            killrvideo_users::domain::search::fold(FIRST_NAMES[person % FIRST_NAMES.len()])
                .chars()
                .collect();
        let length = 3 + (n as usize / 2) % 3;
        let length = length.min(folded.len());
        let start = (n as usize / 6) % (folded.len() - length + 1);
        folded[start..start + length].iter().collect::<String>()
    } else {
        let (_, _, email) = directory_person(person % 100_000);
        email.split('@').next().unwrap_or_default().to_owned()
    };
    serde_urlencoded::to_string([("q", fragment)]).unwrap_or_default()
}

impl Target for SearchTarget {
    async fn call(self: Arc<Self>, _index: usize, seq: u64) -> Outcome {
        let path = format!("/api/v1/moderation/users?{}", search_query(seq));
        let sent = self.pool.send("GET", &path, &self.token, None, None);
        match tokio::time::timeout(REQUEST_TIMEOUT, sent).await {
            Ok(Ok(reply)) => Outcome {
                status: reply.status.to_string(),
                error: reply.status != 200,
            },
            Ok(Err(_)) => Outcome {
                status: "transport".into(),
                error: true,
            },
            Err(_) => Outcome {
                status: "timeout".into(),
                error: true,
            },
        }
    }
}

async fn search(args: SearchArgs) -> Result<Report, String> {
    let keys = killrvideo_users::auth::jwt::JwtKeys::new(
        args.jwt_secret.as_bytes(),
        Duration::from_secs(24 * 3600),
    );
    let token = keys
        .issue(args.moderator, "moderator", chrono::Utc::now())
        .map_err(|e| e.to_string())?;
    let url = args.url.trim_end_matches('/').to_owned();
    let target = Arc::new(SearchTarget {
        pool: wire::Pool::new(&url, args.load.concurrency).await?,
        token,
    });
    let (recorder, elapsed) = drive(target, &args.load, 1).await;
    Ok(recorder.report(&args.load, "search", elapsed, 1))
}

use futures::StreamExt;

fn emit_report(report: Report, out: Option<&std::path::Path>) -> Result<(), String> {
    emit(
        &serde_json::to_value(report).map_err(|e| e.to_string())?,
        out,
    )
}

fn emit(value: &Value, out: Option<&std::path::Path>) -> Result<(), String> {
    let text = serde_json::to_string_pretty(value).map_err(|e| e.to_string())?;
    println!("{text}");
    if let Some(path) = out {
        std::fs::write(path, text).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    }
    Ok(())
}

async fn drop_keyspace(args: DropKeyspaceArgs) -> Result<(), String> {
    let StoreSettings::Cassandra(options) = args.store.settings().map_err(|e| e.to_string())?
    else {
        return Err("drop-keyspace needs the cassandra store".into());
    };
    let session = open_session(&options).await.map_err(|e| e.to_string())?;
    migrate::drop_keyspace(&session, &options.keyspace)
        .await
        .map_err(|e| format!("cannot drop keyspace {}: {e}", options.keyspace))?;
    eprintln!("loadgen: dropped keyspace {}", options.keyspace);
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    killrvideo_users::telemetry::init(killrvideo_users::telemetry::LogFormat::Pretty);
    // The HTTP client is one thread, so that it takes as little as it can from the
    // cores it measures; the floor runs the store in-process as the service does, on
    // the same multi-threaded runtime.
    let runtime = match &cli.command {
        Command::Http(_) => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build(),
        Command::Search(_) => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build(),
        Command::Floor(_)
        | Command::Seed(_)
        | Command::SeedDirectory(_)
        | Command::DropKeyspace(_) => tokio::runtime::Runtime::new(),
    };
    let runtime = match runtime {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("loadgen: {err}");
            return ExitCode::FAILURE;
        }
    };
    let outcome = runtime.block_on(async {
        match cli.command {
            Command::Http(args) => {
                let out = args.load.out.clone();
                emit_report(http(args).await?, out.as_deref())
            }
            Command::Floor(args) => {
                let out = args.load.out.clone();
                emit_report(floor(args).await?, out.as_deref())
            }
            Command::Seed(args) => emit(&seed(args).await?, None),
            Command::SeedDirectory(args) => emit(&seed_directory(args).await?, None),
            Command::Search(args) => {
                let out = args.load.out.clone();
                emit_report(search(args).await?, out.as_deref())
            }
            Command::DropKeyspace(args) => drop_keyspace(args).await,
        }
    });
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("loadgen: {err}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok() -> Outcome {
        Outcome {
            status: "200".into(),
            error: false,
        }
    }

    #[test]
    fn the_timeline_counts_requests_and_keeps_the_worst_latency_per_window() {
        let measure_from = Instant::now();
        let recorder = Recorder::new(measure_from, true);
        let at = |ms| measure_from + Duration::from_millis(ms);
        recorder.record(at(50), Duration::from_millis(10), ok());
        recorder.record(at(150), Duration::from_millis(30), ok());
        recorder.record(at(160), Duration::from_millis(5), ok());
        recorder.record(at(420), Duration::from_millis(2), ok());
        let timeline = recorder.timeline().expect("asked for");
        assert_eq!(timeline.window_ms, 100);
        assert_eq!(timeline.requests, vec![1, 2, 0, 0, 1]);
        assert_eq!(timeline.max_ms, vec![10.0, 30.0, 0.0, 0.0, 2.0]);
        // The histogram still sees every request.
        let histogram = recorder.histogram.lock().unwrap();
        assert_eq!(histogram.len(), 4);
        assert!(histogram.equivalent(histogram.max(), 30_000));
    }

    #[test]
    fn search_queries_are_valid_fragments() {
        for n in 0..200 {
            let query = search_query(n);
            let pairs: Vec<(String, String)> = serde_urlencoded::from_str(&query).unwrap();
            let q = &pairs[0].1;
            assert!(!q.is_empty(), "{query}");
            assert!(
                killrvideo_users::domain::search::SearchFragment::parse(q)
                    .unwrap()
                    .is_some(),
                "{q}"
            );
        }
    }

    #[test]
    fn without_the_flag_there_is_no_timeline() {
        let measure_from = Instant::now();
        let recorder = Recorder::new(measure_from, false);
        recorder.record(measure_from, Duration::from_millis(1), ok());
        assert!(recorder.timeline().is_none());
        assert_eq!(recorder.requests.load(Ordering::Relaxed), 1);
    }
}

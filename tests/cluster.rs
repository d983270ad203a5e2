//! The service on the real 3-node Cassandra 5.0 cluster of `scripts/cassandra cluster`
//! (127.0.0.2-4, 16 tokens per node, datacenter dc1), on keyspaces at replication
//! factor 3 (the fault tests share one, the jobs test has its own), reached through all
//! three contact points at LOCAL_QUORUM and LOCAL_SERIAL. Under a steady load of plain and `If-Match` PUTs, one
//! node is paused, one is killed and restarted, two are killed; the lightweight
//! transactions race with a node down; the jobs run over the real token ring.
//!
//! Its own test binary, so that the faults cannot disturb the other suites (cargo runs
//! test binaries one after another), and its tests take turns: they share the cluster.
//! Every test puts the cluster back as it found it, even when it fails. The counts of
//! each fault are printed and appended to `target/reliability-counts.jsonl`
//! (docs/reliability.md).

use futures::StreamExt;
use futures::future::join_all;
use killrvideo_test_support::{self as support, Api, PASSWORD, TestApp, TestUser, unique_email};
use killrvideo_users::app::jobs::{VerifyOptions, verify};
use killrvideo_users::domain::UserEvent;
use killrvideo_users::http::Limits;
use killrvideo_users::store::cassandra::{CassandraOptions, migrate, open_session};
use killrvideo_users::store::{NodeCount, USERS_TABLE};
use reqwest::StatusCode;
use scylla::client::session::Session;
use scylla::policies::load_balancing::{NodeIdentifier, SingleTargetLoadBalancingPolicy};
use scylla::statement::Consistency;
use scylla::statement::unprepared::Statement;
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use uuid::Uuid;

/// The cluster's CQL addresses, node 1 to 3.
const NODES: [&str; 3] = ["127.0.0.2:9042", "127.0.0.3:9042", "127.0.0.4:9042"];
/// The service's Cassandra request timeout: the production default.
const CASSANDRA_TIMEOUT: Duration = Duration::from_secs(2);
/// The service's request timeout: past it a request is abandoned with a 503.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// What "within the request timeout" allows on top, for the client and the scheduler
/// of a 2-core machine running three Cassandra nodes beside the test.
const SLACK: Duration = Duration::from_millis(1500);

/// The tests share the cluster, so they take turns.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Runs `scripts/cassandra cluster ARGS`.
fn cluster(args: &[&str]) -> std::process::Output {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/cassandra");
    std::process::Command::new(script)
        .arg("cluster")
        .args(args)
        .output()
        .expect("run scripts/cassandra cluster")
}

/// Runs `scripts/cassandra cluster ARGS` off the runtime's threads, and insists.
async fn cluster_ok(args: &[&str]) {
    let owned: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
    let output = tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = owned.iter().map(String::as_str).collect();
        cluster(&args)
    })
    .await
    .unwrap();
    assert!(
        output.status.success(),
        "scripts/cassandra cluster {args:?}: {}{}\n\
         These tests need the cluster that `scripts/cassandra cluster start` (run by \
         scripts/test) starts.",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Puts the cluster back as the test found it, even when an assertion fails: resumes
/// paused nodes and starts stopped ones.
struct RestoreCluster;

impl Drop for RestoreCluster {
    fn drop(&mut self) {
        for node in ["1", "2", "3"] {
            let _ = cluster(&["resume", node]);
        }
        let output = cluster(&["start"]);
        if !output.status.success() {
            eprintln!(
                "could not restore the cluster: {}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
    }
}

/// Options for a keyspace on the cluster at RF 3.
fn cluster_options(keyspace: &str, request_timeout: Duration) -> CassandraOptions {
    CassandraOptions {
        contact_points: NODES.iter().map(|n| (*n).to_owned()).collect(),
        keyspace: keyspace.to_owned(),
        local_dc: Some("dc1".into()),
        replication: killrvideo_users::config::parse_replication("NetworkTopologyStrategy:dc1=3")
            .unwrap(),
        request_timeout,
        speculative_delay: Duration::from_millis(200),
        kek: support::test_kek(),
    }
}

/// Which keyspace a cluster test's service runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Keyspace {
    /// The keyspace the fault tests share: their users are their own, and each
    /// `verify` of it checks the others' users too. Migrating a keyspace at RF 3 takes
    /// 10-20 s of schema agreements, so it is made once per run.
    Shared,
    /// A fresh one, dropped at the end: for a test that counts everything in it.
    Own,
}

/// The shared keyspace's name; dropped and migrated afresh by the first test of a run.
const SHARED_KEYSPACE: &str = "cluster_shared";
static SHARED_MIGRATED: tokio::sync::OnceCell<()> = tokio::sync::OnceCell::const_new();

/// One test's hold on the cluster: its turn, the restoration at the end, and a
/// service over a keyspace at RF 3.
struct ClusterTest {
    app: Arc<TestApp>,
    options: CassandraOptions,
    keyspace: Keyspace,
    _restore: RestoreCluster,
    _turn: tokio::sync::MutexGuard<'static, ()>,
}

impl ClusterTest {
    async fn start(cassandra_timeout: Duration, keyspace: Keyspace) -> Self {
        let turn = ONE_AT_A_TIME.lock().await;
        cluster_ok(&["start"]).await;
        // A node resumed or restarted by the test before may not be marked up by the
        // others yet (the script settles only after such a fault).
        cluster_ok(&["settle-if-disturbed"]).await;
        let restore = RestoreCluster;
        let options = match keyspace {
            Keyspace::Own => {
                let name = support::unique_keyspace("cluster");
                let options = cluster_options(&name, cassandra_timeout);
                migrate_cluster_keyspace(&options).await;
                options
            }
            Keyspace::Shared => {
                let options = cluster_options(SHARED_KEYSPACE, cassandra_timeout);
                SHARED_MIGRATED
                    .get_or_init(|| async {
                        let session = open_session(&options).await.unwrap();
                        migrate::drop_keyspace(&session, SHARED_KEYSPACE)
                            .await
                            .unwrap();
                        migrate_cluster_keyspace(&options).await;
                    })
                    .await;
                options
            }
        };
        let limits = Limits {
            request_timeout: REQUEST_TIMEOUT,
            ..Limits::default()
        };
        let app = Arc::new(TestApp::over(&options).limits(limits).spawn().await);
        wait_until_nodes_up(&app, 3, Duration::from_secs(60)).await;
        Self {
            app,
            options,
            keyspace,
            _restore: restore,
            _turn: turn,
        }
    }

    /// Drops a keyspace of the test's own; the cluster is restored when the test ends.
    async fn finish(self) {
        if self.keyspace == Keyspace::Own {
            self.app.drop_keyspace().await;
        }
    }
}

/// Migrates a keyspace on the cluster, seen by all three nodes.
async fn migrate_cluster_keyspace(options: &CassandraOptions) {
    let report = migrate::migrate(options)
        .await
        .unwrap_or_else(|err| panic!("migrate on the cluster: {err}"));
    assert_eq!(report.nodes, NodeCount { up: 3, known: 3 });
}

/// Waits until the service's driver holds connections to `up` nodes and `/readyz`
/// answers 200. Returns how long that took.
async fn wait_until_nodes_up(app: &TestApp, up: usize, within: Duration) -> Duration {
    let started = Instant::now();
    loop {
        let seen = app.store.nodes().expect("a Cassandra store counts nodes");
        if seen.up == up
            && let Ok(r) = app.client.get(app.url("/readyz")).send().await
            && r.status() == StatusCode::OK
        {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < within,
            "the service did not see {up} nodes up within {within:?} (it sees {seen:?})"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Polls `/readyz` until it answers 200; how long that took. Panics with the last
/// answer if it has not within `within`.
async fn ready_within(app: &TestApp, within: Duration) -> Duration {
    let started = Instant::now();
    loop {
        let answer = match app.client.get(app.url("/readyz")).send().await {
            Ok(r) if r.status() == StatusCode::OK => return started.elapsed(),
            Ok(r) => format!("{}: {}", r.status(), r.text().await.unwrap_or_default()),
            Err(err) => err.to_string(),
        };
        assert!(
            started.elapsed() < within,
            "/readyz did not answer 200 within {within:?}; last: {answer}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// What a request of the steady load was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// A plain PUT: last write wins.
    Plain,
    /// The GET an `If-Match` writer reads its ETag with.
    Read,
    /// A PUT with the ETag just read.
    IfMatch,
}

/// One request of the steady load.
#[derive(Debug, Clone)]
struct Sent {
    kind: Kind,
    user: usize,
    value: String,
    status: u16,
    /// When it was sent, from the start of the load.
    at: Duration,
    latency: Duration,
    retry_after: bool,
}

/// The users a load writes to: the first `PLAIN_USERS` take plain PUTs from three
/// writers, each of the others has one `If-Match` writer of its own (so a 412 would be
/// a lost or phantom write, never a race).
const PLAIN_USERS: usize = 3;
const IF_MATCH_USERS: usize = 2;

async fn load_users(app: &TestApp) -> Vec<TestUser> {
    let mut users = Vec::new();
    for _ in 0..PLAIN_USERS + IF_MATCH_USERS {
        users.push(app.register_user().await);
    }
    users
}

/// The steady load of a fault test, running: its users, and when it began (the origin
/// of every [`Sent::at`]).
struct Load {
    users: Arc<Vec<TestUser>>,
    origin: Instant,
    stop: Arc<AtomicBool>,
    running: tokio::task::JoinHandle<Vec<Sent>>,
}

impl Load {
    /// Registers the load's users and starts the load.
    async fn start(app: &Arc<TestApp>) -> Self {
        let users = Arc::new(load_users(app).await);
        let stop = Arc::new(AtomicBool::new(false));
        let origin = Instant::now();
        let running = steady_load(
            Arc::clone(app),
            Arc::clone(&users),
            Arc::clone(&stop),
            origin,
        );
        Self {
            users,
            origin,
            stop,
            running,
        }
    }

    /// Stops the load and returns what it sent.
    async fn finish(self) -> Vec<Sent> {
        self.stop.store(true, Ordering::Relaxed);
        self.running.await.unwrap()
    }
}

/// A steady PUT load until `stop`: three plain writers over the plain users, and one
/// `If-Match` writer per version-checked user (GET the ETag, PUT with it).
fn steady_load(
    app: Arc<TestApp>,
    users: Arc<Vec<TestUser>>,
    stop: Arc<AtomicBool>,
    origin: Instant,
) -> tokio::task::JoinHandle<Vec<Sent>> {
    tokio::spawn(async move {
        let mut workers = Vec::new();
        for worker in 0..3 {
            let (app, users, stop) = (Arc::clone(&app), Arc::clone(&users), Arc::clone(&stop));
            workers.push(tokio::spawn(async move {
                let mut sent = Vec::new();
                let mut n = 0;
                while !stop.load(Ordering::Relaxed) {
                    let user = (n + worker) % PLAIN_USERS;
                    let value = format!("P{worker}x{n}");
                    let request = app
                        .client
                        .put(app.url("/api/v1/users/me"))
                        .bearer_auth(&users[user].token)
                        .json(&json!({"lastname": value}));
                    let (response, at, latency) = send(request, origin).await;
                    sent.push(record(Kind::Plain, user, value, &response, at, latency));
                    n += 1;
                    if sent.last().is_some_and(|s| s.status != 200) {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                }
                sent
            }));
        }
        for user in PLAIN_USERS..PLAIN_USERS + IF_MATCH_USERS {
            let (app, users, stop) = (Arc::clone(&app), Arc::clone(&users), Arc::clone(&stop));
            workers.push(tokio::spawn(async move {
                let mut sent = Vec::new();
                let mut n = 0;
                while !stop.load(Ordering::Relaxed) {
                    let request = app
                        .client
                        .get(app.url("/api/v1/users/me"))
                        .bearer_auth(&users[user].token);
                    let (response, at, latency) = send(request, origin).await;
                    let etag = response.as_ref().ok().and_then(|r| {
                        (r.status() == StatusCode::OK)
                            .then(|| r.headers().get("etag")?.to_str().ok().map(str::to_owned))
                            .flatten()
                    });
                    sent.push(record(
                        Kind::Read,
                        user,
                        String::new(),
                        &response,
                        at,
                        latency,
                    ));
                    if let Some(etag) = etag {
                        let value = format!("V{user}x{n}");
                        let request = app
                            .client
                            .put(app.url("/api/v1/users/me"))
                            .bearer_auth(&users[user].token)
                            .header("if-match", etag)
                            .json(&json!({"lastname": value}));
                        let (response, at, latency) = send(request, origin).await;
                        sent.push(record(Kind::IfMatch, user, value, &response, at, latency));
                    }
                    n += 1;
                    if sent.last().is_some_and(|s| s.status != 200) {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                }
                sent
            }));
        }
        let mut all = Vec::new();
        for worker in join_all(workers).await {
            all.extend(worker.unwrap());
        }
        all.sort_by_key(|s| s.at);
        all
    })
}

/// Sends one request of the load; returns the answer, when it was sent and how long
/// it took.
async fn send(
    request: reqwest::RequestBuilder,
    origin: Instant,
) -> (reqwest::Result<reqwest::Response>, Duration, Duration) {
    let started = Instant::now();
    let response = request
        .timeout(REQUEST_TIMEOUT + Duration::from_secs(20))
        .send()
        .await;
    (response, started.duration_since(origin), started.elapsed())
}

fn record(
    kind: Kind,
    user: usize,
    value: String,
    response: &reqwest::Result<reqwest::Response>,
    at: Duration,
    latency: Duration,
) -> Sent {
    let (status, retry_after) = match response {
        Ok(r) => (r.status().as_u16(), r.headers().contains_key("retry-after")),
        Err(_) => (0, false),
    };
    Sent {
        kind,
        user,
        value,
        status,
        at,
        latency,
        retry_after,
    }
}

/// What a fault test found, as docs/reliability.md tabulates it.
#[derive(Debug, Default)]
struct Counts {
    requests: usize,
    ok: usize,
    unavailable: usize,
    others: usize,
    events_found: usize,
    slowest: Duration,
    /// 412s that answered an `If-Match` writer whose previous write had answered 503
    /// and then applied after all (see `check_guarantees`).
    stale_after_unknown: usize,
}

/// The guarantees every fault keeps: each request got a 2xx or a 503 with
/// `Retry-After` within the request timeout; each acknowledged update is in the log
/// exactly once, and nothing is in it twice; `verify` finds the table equal to the log.
///
/// One other answer is right: a 503 means "unknown", and a version-checked write that
/// answered 503 may still be completed by the next Paxos round on its user. The `If-Match`
/// writer's next PUT, carrying the ETag it read before that completion, then gets 412.
/// Its users have no other writer, so a 412 is allowed only right after that writer's
/// own 503, whose update must then be in the log.
async fn check_guarantees(app: &TestApp, users: &[TestUser], sent: &[Sent]) -> Counts {
    let mut counts = Counts {
        requests: sent.len(),
        ..Counts::default()
    };
    for s in sent {
        match s.status {
            200 => counts.ok += 1,
            503 => {
                counts.unavailable += 1;
                assert!(s.retry_after, "a 503 without Retry-After: {s:?}");
            }
            _ => counts.others += 1,
        }
        counts.slowest = counts.slowest.max(s.latency);
    }
    let mut completed_late: Vec<&Sent> = Vec::new();
    let mut others: Vec<&Sent> = Vec::new();
    for answer in sent.iter().filter(|s| s.status != 200 && s.status != 503) {
        let previous = sent
            .iter()
            .filter(|s| s.user == answer.user && s.kind == Kind::IfMatch && s.at < answer.at)
            .max_by_key(|s| s.at);
        match previous {
            Some(previous)
                if answer.status == 412
                    && answer.kind == Kind::IfMatch
                    && previous.status == 503 =>
            {
                completed_late.push(previous);
                counts.others -= 1;
                counts.stale_after_unknown += 1;
            }
            _ => others.push(answer),
        }
    }
    assert!(
        others.is_empty(),
        "answers other than 200 and 503: {others:?}"
    );
    assert!(
        counts.slowest <= REQUEST_TIMEOUT + SLACK,
        "a request took {:?}",
        counts.slowest
    );
    assert!(counts.ok > 0, "the load made progress");

    for (index, user) in users.iter().enumerate() {
        let mut seen: HashMap<String, usize> = HashMap::new();
        for event in app.events(user.id).await {
            if let UserEvent::ProfileUpdated(p) = &event.event
                && let Some(change) = &p.lastname
            {
                *seen.entry(change.to.clone()).or_default() += 1;
            }
        }
        let twice: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
        assert!(twice.is_empty(), "events in the log twice: {twice:?}");
        for s in sent
            .iter()
            .filter(|s| s.user == index && s.status == 200 && s.kind != Kind::Read)
            .chain(completed_late.iter().copied().filter(|s| s.user == index))
        {
            assert_eq!(
                seen.get(&s.value),
                Some(&1),
                "the acknowledged update {} is in the log",
                s.value
            );
        }
        counts.events_found += seen.len();
    }
    let report = verify_keyspace(app).await;
    assert!(
        report.clean(false),
        "verify after the fault: {:?}",
        report.drifts
    );
    counts
}

async fn verify_keyspace(app: &TestApp) -> killrvideo_users::app::jobs::VerifyReport {
    let options = VerifyOptions {
        user: None,
        repair: false,
        parallel: 4,
        splits: 64,
        operator: "cluster-test".into(),
    };
    verify(app.jobs.as_ref(), &options).await.expect("verify")
}

/// Prints the counts and appends them to `target/reliability-counts.jsonl`.
fn report(fault: &str, counts: &Counts, extra: Value) {
    let mut line = json!({
        "fault": fault,
        "requests": counts.requests,
        "2xx": counts.ok,
        "503": counts.unavailable,
        "others": counts.others,
        "update_events_found": counts.events_found,
        "verify": "clean",
        "slowest_ms": counts.slowest.as_millis() as u64,
        "412_after_a_503_that_applied": counts.stale_after_unknown,
    });
    if let (Some(line), Value::Object(extra)) = (line.as_object_mut(), extra) {
        line.extend(extra);
    }
    support::report_reliability_counts(&line);
}

fn node_address(node: usize) -> SocketAddr {
    NODES[node - 1].parse().unwrap()
}

/// A statement served by one node, as coordinator, at consistency ONE. The cluster's
/// static snitch (`dynamic_snitch: false`) makes a replica serve such a read itself, so
/// this reads what that replica holds.
fn on_one_replica(cql: String, node: usize) -> Statement {
    let mut statement = Statement::new(cql);
    statement.set_consistency(Consistency::One);
    statement.set_load_balancing_policy(Some(SingleTargetLoadBalancingPolicy::new(
        NodeIdentifier::NodeAddress(node_address(node)),
        None,
    )));
    statement
}

/// How many events one replica holds for each user.
async fn events_on_replica(
    session: &Session,
    keyspace: &str,
    node: usize,
    users: &[TestUser],
) -> Vec<usize> {
    let mut counts = Vec::new();
    for user in users {
        let result = session
            .query_unpaged(
                on_one_replica(
                    format!("SELECT event_id FROM {keyspace}.user_events WHERE userid = ?"),
                    node,
                ),
                (user.id,),
            )
            .await
            .expect("read one replica");
        counts.push(result.into_rows_result().unwrap().rows_num());
    }
    counts
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_migrations_run_at_once_agree_on_one_schema() {
    let test = ClusterTest::start(CASSANDRA_TIMEOUT, Keyspace::Shared).await;
    // Three processes migrate one fresh keyspace at the same moment, each through a
    // different first contact point, so their statements reach different coordinators.
    let keyspace = support::unique_keyspace("cluster");
    let runs = (0..3).map(|first| {
        let keyspace = keyspace.clone();
        tokio::task::spawn_blocking(move || {
            let mut points: Vec<&str> = NODES.to_vec();
            points.rotate_left(first);
            support::service_command()
                .arg("migrate")
                .env("KILLRVIDEO_STORE", "cassandra")
                .env("KILLRVIDEO_CASSANDRA_KEYSPACE", &keyspace)
                .env("KILLRVIDEO_CASSANDRA_CONTACT_POINTS", points.join(","))
                .env("KILLRVIDEO_CASSANDRA_LOCAL_DC", "dc1")
                .env(
                    "KILLRVIDEO_CASSANDRA_REPLICATION",
                    "NetworkTopologyStrategy:dc1=3",
                )
                .output()
                .expect("run migrate")
        })
    });
    let mut applied = 0;
    for output in join_all(runs).await {
        let output = output.unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success(),
            "migrate: {stdout}{}",
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(
            stdout.contains("agreed by the 3 nodes up (3 known)"),
            "{stdout}"
        );
        if !stdout.contains(": applied [],") {
            applied += 1;
        }
    }
    assert_eq!(
        applied, 1,
        "one process applied the migrations, the others found them"
    );

    // Every node holds the same tables with the same ids, and the keyspace replicates
    // as asked.
    let session = open_session(&test.options).await.unwrap();
    let mut schemas = Vec::new();
    for node in 1..=3 {
        let result = session
            .query_unpaged(
                on_one_replica(
                    "SELECT table_name, id FROM system_schema.tables WHERE keyspace_name = ?"
                        .into(),
                    node,
                ),
                (&keyspace,),
            )
            .await
            .unwrap();
        let tables: BTreeMap<String, Uuid> = result
            .into_rows_result()
            .unwrap()
            .rows::<(String, Uuid)>()
            .unwrap()
            .map(Result::unwrap)
            .collect();
        schemas.push(tables);
    }
    assert!(schemas[0].contains_key("user_events"), "{:?}", schemas[0]);
    assert_eq!(schemas[0], schemas[1]);
    assert_eq!(schemas[0], schemas[2]);
    let result = session
        .query_unpaged(
            "SELECT replication FROM system_schema.keyspaces WHERE keyspace_name = ?",
            (&keyspace,),
        )
        .await
        .unwrap();
    let (replication,): (HashMap<String, String>,) =
        result.into_rows_result().unwrap().first_row().unwrap();
    assert_eq!(replication.get("dc1").map(String::as_str), Some("3"));
    migrate::drop_keyspace(&session, &keyspace).await.unwrap();

    let ready: Value = test
        .app
        .client
        .get(test.app.url("/readyz"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(ready["nodes"], json!({"up": 3, "known": 3}), "{ready}");
    test.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_one_node_paused_costs_no_acknowledged_update() {
    let test = ClusterTest::start(CASSANDRA_TIMEOUT, Keyspace::Shared).await;
    let app = Arc::clone(&test.app);
    let load = Load::start(&app).await;
    let users = Arc::clone(&load.users);
    tokio::time::sleep(Duration::from_secs(3)).await;

    cluster_ok(&["pause", "2"]).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    // Two replicas of three still make a quorum.
    let asked = Instant::now();
    let ready = app.client.get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), StatusCode::OK, "a quorum is up");
    let readiness_latency = asked.elapsed();
    tokio::time::sleep(Duration::from_secs(13)).await;
    cluster_ok(&["resume", "2"]).await;
    let recovery = wait_until_nodes_up(&app, 3, Duration::from_secs(30)).await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let sent = load.finish().await;

    let counts = check_guarantees(&app, &users, &sent).await;
    let slow_plain = sent
        .iter()
        .filter(|s| s.kind == Kind::Plain && s.latency > Duration::from_secs(1))
        .count();
    report(
        "cluster: one node paused 15 s",
        &counts,
        json!({
            "plain_puts_slower_than_1s": slow_plain,
            "if_match_puts": sent.iter().filter(|s| s.kind == Kind::IfMatch).count(),
            "readyz_while_paused_ms": readiness_latency.as_millis() as u64,
            "recovery_ms": recovery.as_millis() as u64,
        }),
    );
    test.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_one_node_killed_and_restarted_converges() {
    let test = ClusterTest::start(CASSANDRA_TIMEOUT, Keyspace::Shared).await;
    let app = Arc::clone(&test.app);
    let load = Load::start(&app).await;
    let users = Arc::clone(&load.users);
    tokio::time::sleep(Duration::from_secs(3)).await;

    cluster_ok(&["kill", "3"]).await;
    // Until the coordinators convict node 3 (phi 5: about 10 s here, longer on a loaded
    // machine), a quorum read that picks it as a replica waits out the readiness
    // timeout, so `/readyz` may answer 503 at first. Once node 3 is known down, two of
    // three replicas answer and the service is ready again.
    let ready_after_kill = ready_within(&app, Duration::from_secs(45)).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let restart = Instant::now();
    cluster_ok(&["start"]).await;
    let restarted_in = restart.elapsed();
    let seen_in = wait_until_nodes_up(&app, 3, Duration::from_secs(30)).await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let sent = load.finish().await;

    // The restarted node catches up on what it missed: hints (dispatched every 10 s),
    // or read repair. It is read first, alone, since a quorum read that involves it
    // repairs what it reads.
    let session = open_session(&test.options).await.unwrap();
    let converging = Instant::now();
    let mut on_node_3 = events_on_replica(&session, &test.options.keyspace, 3, &users).await;
    let quorum: Vec<usize> = join_all(users.iter().map(|u| app.events(u.id)))
        .await
        .iter()
        .map(Vec::len)
        .collect();
    let behind_at_first = quorum
        .iter()
        .zip(&on_node_3)
        .map(|(q, r)| q.saturating_sub(*r))
        .sum::<usize>();
    while on_node_3 != quorum {
        assert!(
            converging.elapsed() < Duration::from_secs(90),
            "node 3 holds {on_node_3:?} events per user, a quorum {quorum:?}"
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
        on_node_3 = events_on_replica(&session, &test.options.keyspace, 3, &users).await;
    }
    let counts = check_guarantees(&app, &users, &sent).await;
    report(
        "cluster: one node killed, restarted",
        &counts,
        json!({
            "readyz_200_after_kill_ms": ready_after_kill.as_millis() as u64,
            "restart_ms": restarted_in.as_millis() as u64,
            "recovery_ms": seen_in.as_millis() as u64,
            "events_missing_on_restarted_node": behind_at_first,
            "converged_ms": converging.elapsed().as_millis() as u64,
        }),
    );
    test.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_two_nodes_down_is_a_fast_503_and_recovers() {
    let test = ClusterTest::start(CASSANDRA_TIMEOUT, Keyspace::Shared).await;
    let app = Arc::clone(&test.app);
    let load = Load::start(&app).await;
    let (users, origin) = (Arc::clone(&load.users), load.origin);
    tokio::time::sleep(Duration::from_secs(3)).await;

    cluster_ok(&["kill", "2"]).await;
    cluster_ok(&["kill", "3"]).await;
    let down_at = origin.elapsed();
    // Node 1 convicts the others after 12-13 s (phi 5); until then its quorum writes
    // time out, after that they are refused at once. Wait for the conviction (a fast
    // 503 from /readyz), then let the load meet a few seconds of fast refusals.
    let convicted = Instant::now();
    let (ready, readiness_latency) = loop {
        let asked = Instant::now();
        let ready = app.client.get(app.url("/readyz")).send().await.unwrap();
        let latency = asked.elapsed();
        if ready.status() == StatusCode::SERVICE_UNAVAILABLE && latency < Duration::from_millis(200)
        {
            break (ready, latency);
        }
        assert!(
            convicted.elapsed() < Duration::from_secs(60),
            "the outage was not known within 60 s: /readyz answers {}",
            ready.status()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    tokio::time::sleep(Duration::from_secs(3)).await;
    let detail = ready.json::<Value>().await.unwrap()["detail"].clone();
    assert!(
        detail
            .as_str()
            .unwrap_or_default()
            .contains("of 3 nodes up"),
        "{detail}"
    );

    // Quorum returns with node 2, once it answers CQL (the script then waits for the
    // ring to settle, which the service need not); the service recovers by itself.
    let restart_begun_at = origin.elapsed();
    let restart = tokio::spawn(cluster_ok(&["restart", "2"]));
    while tokio::net::TcpStream::connect("127.0.0.3:9042")
        .await
        .is_err()
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let recovered = {
        let started = Instant::now();
        // Each try writes a value of its own: a try answered 503 may still apply (its
        // outcome is unknown), and the log must then hold it once, not twice.
        let mut tries = 0;
        loop {
            let ready = app.client.get(app.url("/readyz")).send().await.unwrap();
            if ready.status() == StatusCode::OK {
                tries += 1;
                let put = app
                    .put_me(
                        &users[0].token,
                        &json!({"lastname": format!("AfterQuorum{tries}")}),
                    )
                    .await;
                if put.status() == StatusCode::OK {
                    break started.elapsed();
                }
            }
            assert!(
                started.elapsed() < Duration::from_secs(5),
                "not recovered within 5 s of quorum returning"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    restart.await.unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let sent = load.finish().await;
    cluster_ok(&["start"]).await;
    wait_until_nodes_up(&app, 3, Duration::from_secs(30)).await;

    // Once node 1 has convicted the others, every request is refused in milliseconds.
    let during: Vec<&Sent> = sent
        .iter()
        .filter(|s| s.at > down_at && s.at + s.latency < restart_begun_at)
        .collect();
    let known_at = during
        .iter()
        .find(|s| s.status == 503 && s.latency < Duration::from_millis(100))
        .map(|s| s.at)
        .expect("the outage was answered with fast 503s once known");
    let after_known: Vec<&&Sent> = during
        .iter()
        .filter(|s| s.at > known_at + Duration::from_millis(500))
        .collect();
    assert!(!after_known.is_empty());
    for s in &after_known {
        assert_eq!(s.status, 503, "no quorum, yet {s:?}");
        assert!(s.latency < Duration::from_secs(1), "a slow refusal: {s:?}");
    }
    let mut fast: Vec<Duration> = after_known.iter().map(|s| s.latency).collect();
    fast.sort();
    let counts = check_guarantees(&app, &users, &sent).await;
    report(
        "cluster: two nodes down",
        &counts,
        json!({
            "known_after_ms": (known_at - down_at).as_millis() as u64,
            "refusals_once_known": after_known.len(),
            "refusal_p50_ms": fast[fast.len() / 2].as_secs_f64() * 1000.0,
            "refusal_max_ms": fast.last().unwrap().as_secs_f64() * 1000.0,
            "readyz_ms": readiness_latency.as_millis() as u64,
            "recovery_ms": recovered.as_millis() as u64,
        }),
    );
    test.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_lightweight_transactions_keep_their_promise_with_a_node_down() {
    // Twenty rounds on one partition contend; give them the test stores' timeout.
    let test = ClusterTest::start(support::TEST_REQUEST_TIMEOUT, Keyspace::Shared).await;
    let app = Arc::clone(&test.app);
    let user = app.register_user().await;
    cluster_ok(&["kill", "3"]).await;
    // The promise is about a node known to be down: until the others convict it they
    // still send it their share, and wait out its timeout (the kill test covers that).
    cluster_ok(&["settle", "2"]).await;
    wait_until_nodes_up(&app, 2, Duration::from_secs(30)).await;

    // Twenty If-Match PUTs with one ETag: one winner.
    let etag = app.etag(&user.token).await;
    let events_before = app.events(user.id).await.len();
    let attempts = (0..20).map(|i| {
        let (app, user, etag) = (&app, &user, &etag);
        async move {
            app.put_me_if_match(&user.token, etag, &json!({"firstname": format!("W{i}")}))
                .await
                .status()
        }
    });
    let statuses = join_all(attempts).await;
    let ok = statuses.iter().filter(|s| **s == StatusCode::OK).count();
    let refused = statuses
        .iter()
        .filter(|s| **s == StatusCode::PRECONDITION_FAILED)
        .count();
    assert_eq!((ok, refused), (1, 19), "{statuses:?}");
    assert_eq!(app.events(user.id).await.len(), events_before + 1);

    // Ten registrations of one email: one account.
    let email = unique_email();
    let attempts = (0..10).map(|i| {
        let (app, email) = (&app, &email);
        async move { app.register(email, "Racer", &format!("N{i}")).await }
    });
    let mut created = Vec::new();
    let mut conflicts = 0;
    for response in join_all(attempts).await {
        match response.status() {
            StatusCode::CREATED => created.push(response.json::<Value>().await.unwrap()),
            StatusCode::CONFLICT => conflicts += 1,
            other => panic!("unexpected {other}: {}", response.text().await.unwrap()),
        }
    }
    assert_eq!((created.len(), conflicts), (1, 9));
    let winner = Uuid::parse_str(created[0]["userId"].as_str().unwrap()).unwrap();
    let credentials = app
        .credentials(&email)
        .await
        .expect("the winner's credentials");
    assert_eq!(credentials.user_id, winner);
    let registered = app.scanned_events(64)
        .await
        .into_iter()
        .filter(|e| {
            matches!(&e.event, UserEvent::UserRegistered(r) if r.email.eq_ignore_ascii_case(&email))
        })
        .count();
    assert_eq!(registered, 1, "one UserRegistered for the email");
    assert_eq!(
        app.login(&email, PASSWORD).await.status(),
        StatusCode::OK,
        "the winner logs in"
    );
    test.finish().await;
}

/// Every row of a table, keyed by user, and how many rows the scan returned (a range
/// read twice would show as more rows than users).
async fn whole_table(
    app: &TestApp,
    table: &str,
) -> (BTreeMap<Uuid, killrvideo_users::domain::UserRow>, usize) {
    let rows = app.scanned_rows(table, 64).await;
    let scanned = rows.len();
    (
        rows.into_iter().map(|row| (row.user_id, row)).collect(),
        scanned,
    )
}

/// The ring's tokens, from node 1's view of itself and its peers.
async fn ring_tokens(session: &Session) -> Vec<i64> {
    let mut tokens = Vec::new();
    for table in ["system.local", "system.peers"] {
        let result = session
            .query_unpaged(on_one_replica(format!("SELECT tokens FROM {table}"), 1), ())
            .await
            .unwrap();
        for row in result
            .into_rows_result()
            .unwrap()
            .rows::<(HashSet<String>,)>()
            .unwrap()
        {
            tokens.extend(row.unwrap().0.iter().map(|t| t.parse::<i64>().unwrap()));
        }
    }
    tokens.sort_unstable();
    tokens
}

/// The events count a `rebuild` reports.
fn events_rebuilt(output: &str) -> u64 {
    let (_, rest) = output.split_once(": ").expect("a rebuild report");
    rest.split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no event count in {output}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_jobs_cover_the_real_token_ring_exactly_once() {
    let test = ClusterTest::start(CASSANDRA_TIMEOUT, Keyspace::Own).await;
    let app = Arc::clone(&test.app);
    const USERS: usize = 10_000;
    const UPDATED: usize = 1_000;
    let seeded: Vec<Uuid> = futures::stream::iter(0..USERS)
        .map(|i| {
            let app = Arc::clone(&app);
            async move {
                app.seed_user(&format!("ring{i}@example.com"), "Ring", &format!("User{i}"))
                    .await
            }
        })
        // Each registration is a lightweight transaction and three writes; 64 at once
        // on three nodes sharing two cores timed out in CI (2 s), 16 keep every node busy.
        .buffer_unordered(16)
        .collect()
        .await;
    // A thousand users with a longer history: two updates each, through the service.
    let statuses: Vec<StatusCode> = futures::stream::iter(seeded.iter().take(UPDATED))
        .flat_map(|id| futures::stream::iter([(*id, 0), (*id, 1)]))
        .map(|(id, n)| {
            let app = Arc::clone(&app);
            async move {
                let token = app.token_for(id);
                app.put_me(&token, &json!({"firstname": format!("Ring{n}")}))
                    .await
                    .status()
            }
        })
        .buffer_unordered(32)
        .collect()
        .await;
    assert!(statuses.iter().all(|s| *s == StatusCode::OK));
    let log_events = app.scanned_events(64).await.len() as u64;
    assert_eq!(log_events, (USERS + 2 * UPDATED) as u64);

    // The ring: 48 tokens, so 48 ranges, one of them wrapping from the last token
    // round to the first.
    let session = open_session(&test.options).await.unwrap();
    let ring = ring_tokens(&session).await;
    assert_eq!(ring.len(), 48, "16 tokens on each of 3 nodes");
    let (first, last) = (ring[0], *ring.last().unwrap());
    let result = session
        .query_iter(
            format!(
                "SELECT userid, token(userid) FROM {}.users",
                test.options.keyspace
            ),
            (),
        )
        .await
        .unwrap();
    let user_tokens: Vec<(Uuid, i64)> = result
        .rows_stream::<(Uuid, i64)>()
        .unwrap()
        .map(Result::unwrap)
        .collect()
        .await;
    let wrapping: HashSet<Uuid> = user_tokens
        .iter()
        .filter(|(_, t)| *t > last || *t <= first)
        .map(|(id, _)| *id)
        .collect();
    let per_range: Vec<usize> = ring
        .windows(2)
        .map(|w| {
            user_tokens
                .iter()
                .filter(|(_, t)| *t > w[0] && *t <= w[1])
                .count()
        })
        .collect();
    assert!(!wrapping.is_empty(), "users in the wrap-around range");
    assert!(per_range.iter().all(|n| *n > 0), "{per_range:?}");

    // Rebuild into a side table, several ranges at once: every event replayed once,
    // and the side table equal to the live one, values and write times.
    let (code, output) = app.cli_text(&["rebuild", "--into", "users_side", "--parallel", "4"]);
    assert_eq!(code, 0, "{output}");
    assert_eq!(events_rebuilt(&output), log_events, "{output}");
    let (live, live_scanned) = whole_table(&app, USERS_TABLE).await;
    let (side, side_scanned) = whole_table(&app, "users_side").await;
    assert_eq!((live.len(), live_scanned), (USERS, USERS));
    assert_eq!(side_scanned, USERS);
    assert!(wrapping.iter().all(|id| side.contains_key(id)));
    assert!(side == live, "the side table differs from the live one");

    // Interrupted after 40 ranges, then resumed: the same table, each event once.
    let (code, output) = app.cli_text(&[
        "rebuild",
        "--into",
        "users_resumed",
        "--parallel",
        "3",
        "--stop-after-ranges",
        "40",
    ]);
    assert_eq!(code, 1, "{output}");
    let first_part = events_rebuilt(&output);
    let (code, output) = app.cli_text(&["rebuild", "--into", "users_resumed", "--resume"]);
    assert_eq!(code, 0, "{output}");
    assert!(output.contains("40 of 256 ranges skipped"), "{output}");
    assert_eq!(first_part + events_rebuilt(&output), log_events, "{output}");
    let (resumed, _) = whole_table(&app, "users_resumed").await;
    assert!(
        resumed == live,
        "the resumed table differs from the live one"
    );

    // A rebuild of the live table while the service writes to it: the table still
    // equals the log afterwards, since every cell carries its event's write time.
    let load = Load::start(&app).await;
    let users = Arc::clone(&load.users);
    let (code, output) = app.cli_text(&["rebuild", "--parallel", "4"]);
    let sent = load.finish().await;
    assert_eq!(code, 0, "{output}");
    let written = sent
        .iter()
        .filter(|s| s.kind != Kind::Read && s.status == 200)
        .count();
    assert!(written > 0, "the service wrote during the rebuild");
    let counts = check_guarantees(&app, &users, &sent).await;
    report(
        "cluster: rebuild of the live table under load",
        &counts,
        json!({
            "users": USERS,
            "log_events": log_events,
            "ring_ranges": per_range.len() + 1,
            "users_in_wrap_around_range": wrapping.len(),
        }),
    );
    test.finish().await;
}

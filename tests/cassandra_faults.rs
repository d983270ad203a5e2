//! Fault injection on the real Cassandra of `scripts/cassandra`, under a steady PUT
//! load: the process is paused (SIGSTOP/SIGCONT), then killed and started afresh. The
//! service must answer fast 503s while it is gone, recover by itself, and lose or
//! duplicate nothing it acknowledged.
//!
//! Its own test binary, so that pausing Cassandra cannot disturb the other suites (cargo
//! runs test binaries one after another).

use killrvideo_test_support::{Api, Backend, TestApp, report_reliability_counts};
use killrvideo_users::app::jobs::{VerifyOptions, verify};
use killrvideo_users::domain::UserEvent;
use reqwest::StatusCode;
use serde_json::json;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// The pid of the Cassandra that `scripts/cassandra` started.
fn cassandra_pid() -> String {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/cassandra");
    let output = std::process::Command::new(script)
        .arg("pid")
        .output()
        .expect("run scripts/cassandra pid");
    let pid = String::from_utf8_lossy(&output.stdout).trim().to_owned();
    assert!(
        output.status.success() && !pid.is_empty(),
        "these tests pause the Cassandra started by `scripts/cassandra start`, and none is running"
    );
    pid
}

fn signal(pid: &str, signal: &str) {
    let status = std::process::Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(pid)
        .status()
        .unwrap();
    assert!(status.success(), "kill -{signal} {pid}");
}

/// Resumes Cassandra even if an assertion fails while it is paused.
struct Resume(String);

impl Drop for Resume {
    fn drop(&mut self) {
        signal(&self.0, "CONT");
    }
}

/// How the database goes away.
#[derive(Debug, Clone, Copy)]
enum Outage {
    /// SIGSTOP for a few seconds, then SIGCONT: a hung node.
    Pause,
    /// SIGKILL, then a fresh start through `scripts/cassandra start`: a crashed node.
    KillAndRestart,
}

/// One request of the steady load.
struct Sent {
    user: usize,
    value: String,
    status: u16,
    latency: Duration,
    retry_after: bool,
}

/// Drives PUTs with unique last names from four clients until told to stop.
fn steady_load(
    app: Arc<TestApp>,
    tokens: Arc<Vec<String>>,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<Vec<Sent>> {
    tokio::spawn(async move {
        let workers = (0..4).map(|worker| {
            let (app, tokens, stop) = (Arc::clone(&app), Arc::clone(&tokens), Arc::clone(&stop));
            tokio::spawn(async move {
                let mut sent = Vec::new();
                let mut n = 0;
                while !stop.load(Ordering::Relaxed) {
                    let user = n % tokens.len();
                    let value = format!("R{worker}x{n}");
                    let started = Instant::now();
                    let response = app
                        .client
                        .put(app.url("/api/v1/users/me"))
                        .bearer_auth(&tokens[user])
                        .json(&json!({"lastname": value}))
                        .timeout(Duration::from_secs(30))
                        .send()
                        .await;
                    let (status, retry_after) = match &response {
                        Ok(r) => (r.status().as_u16(), r.headers().contains_key("retry-after")),
                        Err(_) => (0, false),
                    };
                    sent.push(Sent {
                        user,
                        value,
                        status,
                        latency: started.elapsed(),
                        retry_after,
                    });
                    n += 1;
                    if status != 200 {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                }
                sent
            })
        });
        let mut all = Vec::new();
        for worker in futures::future::join_all(workers).await {
            all.extend(worker.unwrap());
        }
        all
    })
}

async fn wait_ready(app: &TestApp, within: Duration) -> Duration {
    let started = Instant::now();
    loop {
        if let Ok(r) = app.client.get(app.url("/readyz")).send().await
            && r.status() == StatusCode::OK
        {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < within,
            "the service did not recover within {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn survive(outage: Outage) {
    let request_timeout = Duration::from_secs(2);
    let app = Arc::new(
        TestApp::on(Backend::Cassandra)
            .request_timeout(request_timeout)
            .spawn()
            .await,
    );
    let mut users = Vec::new();
    for _ in 0..4 {
        users.push(app.register_user().await);
    }
    let tokens = Arc::new(users.iter().map(|u| u.token.clone()).collect::<Vec<_>>());
    let stop = Arc::new(AtomicBool::new(false));
    let load = steady_load(Arc::clone(&app), tokens, Arc::clone(&stop));
    tokio::time::sleep(Duration::from_secs(2)).await;

    let pid = cassandra_pid();
    let recovery = match outage {
        Outage::Pause => {
            signal(&pid, "STOP");
            let resume = Resume(pid);
            tokio::time::sleep(Duration::from_secs(1)).await;
            let asked = Instant::now();
            let ready = app.client.get(app.url("/readyz")).send().await.unwrap();
            assert!(
                asked.elapsed() < Duration::from_secs(2),
                "/readyz answered in {:?}",
                asked.elapsed()
            );
            assert_eq!(
                ready.status(),
                StatusCode::SERVICE_UNAVAILABLE,
                "/readyz while paused"
            );
            tokio::time::sleep(Duration::from_secs(4)).await;
            drop(resume);
            wait_ready(&app, Duration::from_secs(5)).await
        }
        Outage::KillAndRestart => {
            signal(&pid, "KILL");
            tokio::time::sleep(Duration::from_secs(2)).await;
            let ready = app.client.get(app.url("/readyz")).send().await.unwrap();
            assert_eq!(
                ready.status(),
                StatusCode::SERVICE_UNAVAILABLE,
                "/readyz while down"
            );
            let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/cassandra");
            let started = tokio::task::spawn_blocking(move || {
                std::process::Command::new(script).arg("start").status()
            })
            .await
            .unwrap()
            .unwrap();
            assert!(started.success(), "Cassandra restarted");
            // Recovery is measured from the moment CQL answers again.
            wait_ready(&app, Duration::from_secs(5)).await
        }
    };
    tokio::time::sleep(Duration::from_secs(3)).await;
    stop.store(true, Ordering::Relaxed);
    let sent = load.await.unwrap();

    // While down: fast 503s with Retry-After, never a hang, never anything else.
    let slowest = sent.iter().map(|s| s.latency).max().unwrap();
    assert!(
        slowest < request_timeout + Duration::from_millis(1500),
        "a request took {slowest:?}"
    );
    for s in &sent {
        assert!(
            s.status == 200 || s.status == 503,
            "unexpected status {}",
            s.status
        );
        if s.status == 503 {
            assert!(s.retry_after, "503 without Retry-After");
        }
    }
    let ok = sent.iter().filter(|s| s.status == 200).count();
    let unavailable = sent.iter().filter(|s| s.status == 503).count();
    assert!(unavailable > 0, "the outage was felt");
    assert!(ok > 0);

    // Every acknowledged update is in the log exactly once; none is duplicated.
    let mut found = 0;
    for (index, user) in users.iter().enumerate() {
        let events = app.events(user.id).await;
        let mut seen: HashMap<String, usize> = HashMap::new();
        for event in &events {
            if let UserEvent::ProfileUpdated(p) = &event.event
                && let Some(change) = &p.lastname
            {
                *seen.entry(change.to.clone()).or_default() += 1;
            }
        }
        assert!(seen.values().all(|n| *n == 1), "an event was duplicated");
        for s in sent.iter().filter(|s| s.user == index && s.status == 200) {
            assert_eq!(
                seen.get(&s.value),
                Some(&1),
                "acknowledged {} is in the log",
                s.value
            );
        }
        found += seen.len();
    }
    // And in the projection, after a repair if the protocol left anything behind.
    for user in &users {
        let options = VerifyOptions {
            user: Some(user.id),
            repair: true,
            parallel: 1,
            splits: 1,
            operator: "fault-test".into(),
        };
        let report = verify(app.jobs.as_ref(), &options).await.unwrap();
        assert!(report.remaining.is_empty(), "{:?}", report.remaining);
        let row = app.row(user.id).await.unwrap();
        let latest = app
            .events(user.id)
            .await
            .into_iter()
            .filter(|e| matches!(e.event, UserEvent::ProfileUpdated(_)))
            .max_by_key(|e| e.write_time)
            .unwrap();
        assert_eq!(row.version(), Some(latest.event_id));
    }
    let counts = json!({
        "outage": format!("{outage:?}"),
        "requests": sent.len(),
        "2xx": ok,
        "503": unavailable,
        "update_events_found": found,
        "slowest_ms": slowest.as_millis() as u64,
        "recovery_ms": recovery.as_millis() as u64,
    });
    report_reliability_counts(&counts);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn steady_load_survives_cassandra_pausing_and_being_killed() {
    // One test, two outages in turn: they must not overlap.
    survive(Outage::Pause).await;
    survive(Outage::KillAndRestart).await;
}

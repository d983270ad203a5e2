//! Fault injection on the real Cassandra of `scripts/cassandra`: the process is paused
//! (SIGSTOP) and the service must answer fast 503s, then recover by itself (SIGCONT).
//!
//! Its own test binary, so that pausing Cassandra cannot disturb the other suites (cargo
//! runs test binaries one after another).

#[allow(dead_code)]
#[path = "api/support.rs"]
mod support;

use reqwest::StatusCode;
use serde_json::json;
use std::time::{Duration, Instant};
use support::{Backend, spawn_app_with_timeout};

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_cassandra_gives_fast_503s_and_the_service_recovers_by_itself() {
    // The service's default request timeout.
    let app = spawn_app_with_timeout(Backend::Cassandra, Duration::from_secs(2)).await;
    let user = app.register_user().await;
    let pid = cassandra_pid();

    signal(&pid, "STOP");
    let resume = Resume(pid);

    let started = Instant::now();
    let ready = app.client.get(app.url("/readyz")).send().await.unwrap();
    let readiness_latency = started.elapsed();
    assert_eq!(ready.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(ready.headers().contains_key("retry-after"));
    assert!(
        readiness_latency < Duration::from_secs(2),
        "readyz took {readiness_latency:?}"
    );

    let started = Instant::now();
    let put = app
        .put_me(&user.token, &json!({"firstname": "DuringOutage"}))
        .await;
    let put_latency = started.elapsed();
    assert_eq!(put.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(put.headers()["retry-after"], "1");
    // One auth read that times out: the request timeout plus a little.
    assert!(
        put_latency < Duration::from_millis(2500),
        "PUT took {put_latency:?}"
    );

    drop(resume);
    let resumed = Instant::now();
    loop {
        let ready = app.client.get(app.url("/readyz")).send().await.unwrap();
        if ready.status() == StatusCode::OK {
            break;
        }
        assert!(
            resumed.elapsed() < Duration::from_secs(5),
            "no recovery within 5 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let after = app
        .put_me(&user.token, &json!({"firstname": "AfterOutage"}))
        .await;
    assert_eq!(after.status(), StatusCode::OK);
    assert_eq!(
        app.row(user.id).await.unwrap().firstname(),
        Some("AfterOutage")
    );
}

//! The binary as an operator meets it: settings, exit codes, migrate, serve, SIGTERM.
//! The Cassandra cases run against the real server of `scripts/cassandra`.

use killrvideo_test_support::{
    cassandra_contact_points, cassandra_options, drop_keyspace, migrated_keyspace_without_kek,
    seed_user, service_command as command, succeeded, unique_email, unique_keyspace,
};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// The test Cassandra's contact points, as `KILLRVIDEO_CASSANDRA_CONTACT_POINTS` takes
/// them.
fn contact_points() -> String {
    cassandra_contact_points().join(",")
}

#[test]
fn bad_settings_exit_2_with_one_line_naming_the_variable() {
    let cases = [
        ("KILLRVIDEO_STORE", "postgres", "serve"),
        ("KILLRVIDEO_LISTEN", "localhost", "serve"),
        ("KILLRVIDEO_JWT_TTL", "forever", "serve"),
        ("KILLRVIDEO_JWT_SECRET", "short", "serve"),
        ("KILLRVIDEO_KEY_ENCRYPTION_KEY", "c2hvcnQ=", "serve"),
        (
            "KILLRVIDEO_OLD_KEY_ENCRYPTION_KEYS",
            "not base64!",
            "migrate",
        ),
        ("KILLRVIDEO_LOG_FORMAT", "xml", "serve"),
        ("KILLRVIDEO_CASSANDRA_KEYSPACE", "bad-name", "migrate"),
        (
            "KILLRVIDEO_CASSANDRA_REPLICATION",
            "EverywhereStrategy:9",
            "migrate",
        ),
        ("KILLRVIDEO_CASSANDRA_CONTACT_POINTS", "no-port", "migrate"),
        ("KILLRVIDEO_MAX_IN_FLIGHT", "0", "serve"),
        ("KILLRVIDEO_REQUEST_TIMEOUT", "soon", "serve"),
        ("KILLRVIDEO_CASSANDRA_REQUEST_TIMEOUT", "-1s", "serve"),
        // Credentials are always allowed, and a wildcard origin with credentials is
        // exactly what CORS forbids.
        ("KILLRVIDEO_CORS_ORIGINS", "*", "serve"),
        ("KILLRVIDEO_CORS_ORIGINS", "localhost:8080", "serve"),
    ];
    for (variable, value, subcommand) in cases {
        let mut command = command();
        command.arg(subcommand).env(variable, value);
        if variable.starts_with("KILLRVIDEO_CASSANDRA") {
            command.env("KILLRVIDEO_STORE", "cassandra");
        }
        let output = command.output().expect("run binary");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(
            output.status.code(),
            Some(2),
            "{variable}={value}: {stderr}"
        );
        let lines: Vec<&str> = stderr.lines().collect();
        assert_eq!(lines.len(), 1, "one line: {stderr}");
        assert!(lines[0].contains(variable), "{stderr}");
        assert!(lines[0].contains("expected"), "{stderr}");
        assert!(!stderr.contains("panicked"));
        if variable == "KILLRVIDEO_JWT_SECRET" || variable.contains("KEY_ENCRYPTION") {
            assert!(!stderr.contains(value), "the secret is not echoed");
        }
    }
}

#[test]
fn migrate_twice_and_concurrently_on_a_fresh_keyspace() {
    let keyspace = unique_keyspace("mig");
    let migrate = || {
        command()
            .arg("migrate")
            .env("KILLRVIDEO_STORE", "cassandra")
            .env("KILLRVIDEO_CASSANDRA_CONTACT_POINTS", contact_points())
            .env("KILLRVIDEO_CASSANDRA_KEYSPACE", &keyspace)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn migrate")
    };
    // Two at once, then a third after both.
    let first = migrate();
    let second = migrate();
    for child in [first, second] {
        let output = child.wait_with_output().unwrap();
        succeeded(&output);
    }
    let third = migrate().wait_with_output().unwrap();
    assert!(third.status.success());
    let stdout = String::from_utf8_lossy(&third.stdout);
    assert!(
        stdout.contains("applied [], already applied [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]"),
        "{stdout}"
    );

    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let session = scylla::client::session_builder::SessionBuilder::new()
            .known_node(contact_points())
            .build()
            .await
            .expect("connect to the test Cassandra (scripts/cassandra start)");
        let result = session
            .query_unpaged(
                "SELECT table_name FROM system_schema.tables WHERE keyspace_name = ?",
                (&keyspace,),
            )
            .await
            .unwrap();
        let mut tables: Vec<String> = result
            .into_rows_result()
            .unwrap()
            .rows::<(String,)>()
            .unwrap()
            .map(|r| r.unwrap().0)
            .collect();
        tables.sort();
        assert_eq!(
            tables,
            [
                "key_encryption_keys",
                "leases",
                "login_budgets",
                "projection_checkpoints",
                "schema_migration_lease",
                "schema_migrations",
                "user_credentials",
                "user_events",
                "user_keys",
                "users"
            ]
        );
        let versions = session
            .query_unpaged(
                format!("SELECT version FROM {keyspace}.schema_migrations"),
                (),
            )
            .await
            .unwrap()
            .into_rows_result()
            .unwrap()
            .rows::<(i32,)>()
            .unwrap()
            .count();
        assert_eq!(versions, 10);
        session
            .query_unpaged(format!("DROP KEYSPACE {keyspace}"), ())
            .await
            .unwrap();
    });
}

#[test]
fn serve_refuses_to_start_on_an_unmigrated_keyspace() {
    let output = command()
        .arg("serve")
        .env("KILLRVIDEO_STORE", "cassandra")
        .env("KILLRVIDEO_CASSANDRA_CONTACT_POINTS", contact_points())
        .env(
            "KILLRVIDEO_CASSANDRA_KEYSPACE",
            unique_keyspace("never_migrated"),
        )
        .env("KILLRVIDEO_LISTEN", "127.0.0.1:0")
        .output()
        .expect("run serve");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("killrvideo-users migrate"), "{stderr}");
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn get(port: u16, path: &str) -> Option<(u16, String)> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let status = response.split_whitespace().nth(1)?.parse().ok()?;
    Some((status, response))
}

#[test]
fn serve_on_the_embedded_default_answers_and_stops_on_sigterm() {
    let data_dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut child = command()
        .arg("serve")
        .env("KILLRVIDEO_DATA_DIR", data_dir.path())
        .env("KILLRVIDEO_LISTEN", format!("127.0.0.1:{port}"))
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn serve");
    let deadline = Instant::now() + Duration::from_secs(20);
    let ready = loop {
        if let Some(answer) = get(port, "/readyz") {
            break answer;
        }
        assert!(Instant::now() < deadline, "serve did not come up");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(ready.0, 200, "{}", ready.1);
    assert!(ready.1.contains("\"store\":\"embedded\""));
    assert!(data_dir.path().join("killrvideo-users.db").exists());

    let status = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status()
        .unwrap();
    assert!(status.success());
    let exit = exit_within(&mut child, Duration::from_secs(10));
    assert!(exit.success(), "graceful shutdown exits 0: {exit:?}");
    let mut stderr = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut stderr).unwrap();
    assert!(
        stderr.contains("KILLRVIDEO_JWT_SECRET is not set"),
        "loud warning: {stderr}"
    );
}

/// Starts `serve` with this data directory and extra environment (the embedded store
/// unless `extra` names another); returns the child and its port once `/readyz`
/// answers.
fn serve_in(data_dir: &std::path::Path, extra: &[(&str, &str)]) -> (std::process::Child, u16) {
    let port = free_port();
    let mut command = command();
    command
        .arg("serve")
        .env("KILLRVIDEO_DATA_DIR", data_dir)
        .env("KILLRVIDEO_LISTEN", format!("127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    for (key, value) in extra {
        command.env(key, value);
    }
    let child = command.spawn().expect("spawn serve");
    let deadline = Instant::now() + Duration::from_secs(20);
    while get(port, "/readyz").is_none_or(|(status, _)| status != 200) {
        assert!(Instant::now() < deadline, "serve did not come up");
        std::thread::sleep(Duration::from_millis(50));
    }
    (child, port)
}

fn terminate(child: &mut std::process::Child) -> std::process::ExitStatus {
    Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status()
        .unwrap();
    exit_within(child, Duration::from_secs(15))
}

/// Waits for the child to exit, failing the test if it has not within `within`.
fn exit_within(child: &mut std::process::Child, within: Duration) -> std::process::ExitStatus {
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(
            started.elapsed() < within,
            "serve did not stop within {within:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Counts, from the server's debug log, the registrations it has begun and finished
/// (not the readiness probes logged before them).
fn count_registrations(stderr: std::process::ChildStderr) -> (Arc<AtomicUsize>, Arc<AtomicUsize>) {
    use std::io::BufRead;
    let (started, finished) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let (started_count, finished_count) = (started.clone(), finished.clone());
    std::thread::spawn(move || {
        let lines = std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok);
        for line in lines.filter(|line| line.contains("/api/v1/users/register")) {
            if line.contains("started processing request") {
                started_count.fetch_add(1, Ordering::SeqCst);
            } else if line.contains("finished processing request") {
                finished_count.fetch_add(1, Ordering::SeqCst);
            }
        }
    });
    (started, finished)
}

#[test]
fn sigterm_lets_in_flight_requests_finish() {
    const REGISTRATIONS: usize = 24;
    let data_dir = tempfile::tempdir().unwrap();
    // tower_http logs at debug when the server begins a request: SIGTERM is sent only
    // once all of them have begun, not after a guessed delay (a request still on its
    // way in may rightly be refused).
    let (mut child, port) = serve_in(data_dir.path(), &[("RUST_LOG", "info,tower_http=debug")]);
    let (started, finished) = count_registrations(child.stderr.take().expect("stderr"));
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let statuses = runtime.block_on(async {
        let client = reqwest::Client::new();
        // Registrations hash passwords, one per core at a time: two dozen of them keep
        // the server busy for a good while.
        let requests: Vec<_> = (0..REGISTRATIONS)
            .map(|i| {
                let client = client.clone();
                tokio::spawn(async move {
                    client
                        .post(format!("http://127.0.0.1:{port}/api/v1/users/register"))
                        .json(&serde_json::json!({
                            "email": format!("drain-{i}-{}@example.com", uuid::Uuid::new_v4().simple()),
                            "password": "correct horse battery",
                            "firstname": "Drain",
                            "lastname": "Test"
                        }))
                        .send()
                        .await
                        .map(|r| r.status().as_u16())
                        .map_err(|e| e.to_string())
                })
            })
            .collect();
        // Wait until the server has begun every request, then ask it to stop.
        let deadline = Instant::now() + Duration::from_secs(30);
        while started.load(Ordering::SeqCst) < REGISTRATIONS {
            assert!(Instant::now() < deadline, "the server never began every request");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert!(
            finished.load(Ordering::SeqCst) < REGISTRATIONS,
            "some requests must still be in flight at SIGTERM for this test to mean anything"
        );
        let pid = child.id().to_string();
        tokio::task::spawn_blocking(move || Command::new("kill").arg("-TERM").arg(pid).status().unwrap())
            .await
            .unwrap();
        let mut statuses = Vec::new();
        for request in requests {
            statuses.push(request.await.unwrap());
        }
        statuses
    });
    let exit = exit_within(&mut child, Duration::from_secs(15));
    assert!(exit.success(), "{exit:?}");
    assert!(
        statuses.iter().all(|s| *s == Ok(201)),
        "every request in flight at SIGTERM completed: {statuses:?}"
    );
    assert!(
        get(port, "/healthz").is_none(),
        "no longer accepting connections"
    );
}

#[test]
fn logs_never_contain_passwords_tokens_or_the_secret() {
    let data_dir = tempfile::tempdir().unwrap();
    let secret = "log-test-secret-log-test-secret-log-test";
    let password = "Sup3r-S3cret-Passw0rd";
    let wrong_password = "Wr0ng-Passw0rd-Attempt";
    let (mut child, port) = serve_in(
        data_dir.path(),
        &[
            ("KILLRVIDEO_JWT_SECRET", secret),
            ("KILLRVIDEO_LOG_FORMAT", "json"),
            ("RUST_LOG", "trace,hyper=debug,h2=debug"),
        ],
    );
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let token = runtime.block_on(async {
        let client = reqwest::Client::new();
        let base = format!("http://127.0.0.1:{port}/api/v1/users");
        let email = format!("logs-{}@example.com", uuid::Uuid::new_v4().simple());
        let register = client
            .post(format!("{base}/register"))
            .json(&serde_json::json!({"email": email, "password": password, "firstname": "Log", "lastname": "Test"}))
            .send()
            .await
            .unwrap();
        assert_eq!(register.status(), 201);
        let failed = client
            .post(format!("{base}/login"))
            .json(&serde_json::json!({"email": email, "password": wrong_password}))
            .send()
            .await
            .unwrap();
        assert_eq!(failed.status(), 401);
        let login: serde_json::Value = client
            .post(format!("{base}/login"))
            .json(&serde_json::json!({"email": email, "password": password}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let token = login["token"].as_str().unwrap().to_owned();
        let put = client
            .put(format!("{base}/me"))
            .bearer_auth(&token)
            .json(&serde_json::json!({"firstname": "Logged"}))
            .send()
            .await
            .unwrap();
        assert_eq!(put.status(), 200);
        let tampered = format!("{token}x");
        let refused = client.get(format!("{base}/me")).bearer_auth(&tampered).send().await.unwrap();
        assert_eq!(refused.status(), 401);
        token
    });
    assert!(terminate(&mut child).success());
    let mut logs = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut logs).unwrap();
    assert!(
        logs.lines().count() > 10,
        "trace logging produced output: {logs}"
    );
    assert!(logs.contains("/api/v1/users/login"), "requests are logged");
    let signature = token.rsplit('.').next().unwrap();
    for (what, needle) in [
        ("password", password),
        ("wrong password", wrong_password),
        ("JWT secret", secret),
        ("token", token.as_str()),
        ("token signature", signature),
    ] {
        assert!(!logs.contains(needle), "the {what} leaked into the logs");
    }
}

/// The shell commands of the first ```sh block after `heading` in the README.
fn readme_commands(heading: &str) -> Vec<String> {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"))
        .expect("README.md");
    let section = readme
        .split_once(heading)
        .unwrap_or_else(|| panic!("README has a `{heading}` section"))
        .1;
    let block = section
        .split_once("```sh\n")
        .and_then(|(_, rest)| rest.split_once("```"))
        .map(|(block, _)| block)
        .expect("a ```sh block in the quick start");
    block
        .lines()
        .map(|line| line.split_once('#').map_or(line, |(code, _)| code).trim())
        .filter(|line| !line.is_empty())
        .map(str::to_owned)
        .collect()
}

/// The README's first command, run as it is written, from the project directory: it
/// must serve on the embedded default (a bare `cargo run` once stopped with "could not
/// determine which binary to run").
#[test]
fn the_readme_quick_start_command_serves() {
    let commands = readme_commands("## Quick start");
    assert_eq!(commands[0], "cargo run", "the README's first command");
    let data_dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut child = {
        use std::os::unix::process::CommandExt;
        let mut shell = Command::new("sh");
        shell
            .arg("-c")
            .arg(&commands[0])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            // Its own process group, so that cargo and the server it starts stop together.
            .process_group(0)
            .env("KILLRVIDEO_DATA_DIR", data_dir.path())
            .env("KILLRVIDEO_LISTEN", format!("127.0.0.1:{port}"))
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (key, _) in std::env::vars() {
            if key.starts_with("KILLRVIDEO_")
                && key != "KILLRVIDEO_DATA_DIR"
                && key != "KILLRVIDEO_LISTEN"
            {
                shell.env_remove(key);
            }
        }
        shell.spawn().expect("run the README command")
    };
    // cargo may have to build the binary first.
    let deadline = Instant::now() + Duration::from_secs(600);
    let ready = loop {
        if let Some(answer) = get(port, "/readyz") {
            break Some(answer);
        }
        if child.try_wait().unwrap().is_some() || Instant::now() > deadline {
            break None;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let group = format!("-{}", child.id());
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg("--")
        .arg(&group)
        .status();
    let _ = child.wait();
    let mut stderr = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut stderr).unwrap();
    let (status, body) = ready.unwrap_or_else(|| panic!("`cargo run` did not serve: {stderr}"));
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"store\":\"embedded\""), "{body}");
    assert!(data_dir.path().join("killrvideo-users.db").exists());
}

/// Shed load is counted and summarised, not logged line by line: a flood against an
/// in-flight bound of one leaves a few WARN summaries and no ERROR (the probe saw every
/// shed 503 logged twice, once at ERROR: 17 MB/s of logs).
#[test]
fn shed_load_is_summarised_in_the_log_not_logged_per_request() {
    let data_dir = tempfile::tempdir().unwrap();
    let (mut child, port) = serve_in(
        data_dir.path(),
        &[("KILLRVIDEO_MAX_IN_FLIGHT", "1"), ("RUST_LOG", "info")],
    );
    let stderr = child.stderr.take().unwrap();
    let lines = std::thread::spawn(move || {
        let mut text = String::new();
        std::io::Read::read_to_string(&mut std::io::BufReader::new(stderr), &mut text).unwrap();
        text
    });
    let started = Instant::now();
    let shed = Arc::new(AtomicUsize::new(0));
    let senders: Vec<_> = (0..8)
        .map(|t| {
            let shed = Arc::clone(&shed);
            std::thread::spawn(move || {
                for i in 0..40 {
                    let body = format!(
                        r#"{{"email":"shed-{t}-{i}@example.com","password":"a long password","firstname":"S","lastname":"H"}}"#
                    );
                    use std::io::{Read, Write};
                    let Ok(mut stream) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
                        continue;
                    };
                    let _ = write!(
                        stream,
                        "POST /api/v1/users/register HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\
                         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                        body.len()
                    );
                    let mut answer = String::new();
                    let _ = stream.read_to_string(&mut answer);
                    if answer.starts_with("HTTP/1.1 503") {
                        shed.fetch_add(1, Ordering::SeqCst);
                    }
                }
            })
        })
        .collect();
    for sender in senders {
        sender.join().unwrap();
    }
    let seconds = started.elapsed().as_secs() as usize;
    assert!(terminate(&mut child).success());
    let log = lines.join().unwrap();
    let shed = shed.load(Ordering::SeqCst);
    assert!(shed >= 20, "the flood is shed ({shed} of 320)");
    assert!(
        !log.contains("ERROR"),
        "no shed request is an error:\n{log}"
    );
    let summaries = log.lines().filter(|l| l.contains("shedding load")).count();
    assert!(summaries >= 1, "shedding is logged");
    assert!(
        summaries <= seconds + 2,
        "{summaries} summaries in {seconds} s for {shed} shed requests"
    );
    let per_request = log
        .lines()
        .filter(|l| l.contains("finished processing request") && l.contains("status=503"))
        .count();
    assert_eq!(per_request, 0, "no line per shed request");
}

/// Two KEKs, in the form `KILLRVIDEO_KEY_ENCRYPTION_KEY` takes.
fn two_keks() -> (String, String) {
    use base64::Engine;
    let encode = |bytes: [u8; 32]| base64::engine::general_purpose::STANDARD.encode(bytes);
    (encode([1; 32]), encode([2; 32]))
}

/// Registers a user with Zora Quince's names through a store opened with `kek`.
async fn register_under(store: &dyn killrvideo_users::store::UserStore) -> uuid::Uuid {
    seed_user(store, &unique_email(), "Zora", "Quince").await
}

fn kek_settings(current: &str, old: &[&str]) -> killrvideo_users::store::keys::KekSettings {
    use killrvideo_users::store::sealing::Kek;
    killrvideo_users::store::keys::KekSettings {
        current: Some(Kek::from_base64(current).unwrap()),
        old: old.iter().map(|k| Kek::from_base64(k).unwrap()).collect(),
        development_dir: None,
    }
}

/// A wrong KEK is refused at start-up with exit 2 and one line; after a rotation, the
/// old KEK configured beside the new one opens what it wrapped. `backend_env` points
/// the binary at the store; `open` opens it in process with the given KEKs.
fn wrong_kek_and_rotation(
    backend_env: &[(&str, String)],
    open: impl Fn(
        killrvideo_users::store::keys::KekSettings,
    ) -> std::pin::Pin<
        Box<dyn std::future::Future<Output = killrvideo_users::store::SharedStore>>,
    >,
) {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let (old, new) = two_keks();
    let first = runtime.block_on(async {
        let store = open(kek_settings(&old, &[])).await;
        register_under(store.as_ref()).await
    });
    let binary = |args: &[&str], kek: Option<&str>, old_keks: Option<&str>| {
        let mut command = command();
        command.args(args);
        for (key, value) in backend_env {
            command.env(key, value);
        }
        if let Some(kek) = kek {
            command.env("KILLRVIDEO_KEY_ENCRYPTION_KEY", kek);
        }
        if let Some(old_keks) = old_keks {
            command.env("KILLRVIDEO_OLD_KEY_ENCRYPTION_KEYS", old_keks);
        }
        command.output().expect("run the binary")
    };

    // The wrong KEK, for the server and for a job: exit 2, one line, no key echoed.
    let user = first.to_string();
    for args in [vec!["serve"], vec!["history", user.as_str()]] {
        let output = binary(&args, Some(&new), None);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{args:?}: {stderr}");
        let lines: Vec<&str> = stderr.lines().collect();
        assert_eq!(lines.len(), 1, "one line: {stderr}");
        assert!(
            lines[0].contains("KILLRVIDEO_KEY_ENCRYPTION_KEY"),
            "{stderr}"
        );
        assert!(!stderr.contains(&new) && !stderr.contains(&old), "{stderr}");
        assert!(output.stdout.is_empty(), "no output: {:?}", output.stdout);
    }

    // Rotated: the new KEK current, the old one for reading. The old user's values
    // open; a new user's key is wrapped by the new KEK.
    let second = runtime.block_on(async {
        let store = open(kek_settings(&new, &[&old])).await;
        register_under(store.as_ref()).await
    });
    for user in [first, second] {
        let output = binary(&["history", &user.to_string()], Some(&new), Some(&old));
        let stdout = String::from_utf8_lossy(&output.stdout);
        succeeded(&output);
        assert!(
            stdout.contains("Zora") && stdout.contains("Quince"),
            "{stdout}"
        );
    }
    // The new KEK alone now knows the store (it has wrapped a key), but not the first
    // user's key: that read fails, it never shows garbage.
    let output = binary(&["history", &first.to_string()], Some(&new), None);
    assert!(!output.status.success());
    assert!(!String::from_utf8_lossy(&output.stdout).contains("Zora"));
}

#[test]
fn embedded_wrong_kek_is_refused_and_old_keks_open_after_rotation() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_owned();
    wrong_kek_and_rotation(
        &[("KILLRVIDEO_DATA_DIR", path.display().to_string())],
        move |kek| {
            let path = path.clone();
            Box::pin(async move {
                let store = killrvideo_users::store::embedded::EmbeddedStore::open_with(
                    &path,
                    killrvideo_users::store::embedded::SyncMode::Full,
                    &kek,
                )
                .unwrap();
                Arc::new(store) as killrvideo_users::store::SharedStore
            })
        },
    );
}

#[test]
fn cassandra_wrong_kek_is_refused_and_old_keks_open_after_rotation() {
    use killrvideo_users::store::cassandra::{CassandraOptions, CassandraStore};
    let runtime = tokio::runtime::Runtime::new().unwrap();
    // No KEK: the binary and the stores below bring their own.
    let options = runtime.block_on(migrated_keyspace_without_kek("kek"));
    let keyspace = options.keyspace.clone();
    let env = [
        ("KILLRVIDEO_STORE", "cassandra".to_owned()),
        ("KILLRVIDEO_CASSANDRA_CONTACT_POINTS", contact_points()),
        ("KILLRVIDEO_CASSANDRA_KEYSPACE", keyspace.clone()),
        ("KILLRVIDEO_LISTEN", "127.0.0.1:0".to_owned()),
    ];
    wrong_kek_and_rotation(&env, move |kek| {
        let options = CassandraOptions {
            kek,
            ..options.clone()
        };
        Box::pin(async move {
            Arc::new(CassandraStore::connect(&options).await.unwrap())
                as killrvideo_users::store::SharedStore
        })
    });
    runtime.block_on(drop_keyspace(&cassandra_options(
        &keyspace,
        Duration::from_secs(10),
    )));
}

/// The README's "Running against Cassandra" steps with no key-encryption key: `serve`,
/// register, stop, `serve` again and log in, then `verify`. The development KEK is kept
/// in the data directory, so the second process opens what the first one sealed.
#[test]
fn cassandra_without_a_kek_keeps_a_development_key_across_restarts() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let options = runtime.block_on(migrated_keyspace_without_kek("devkek"));
    let keyspace = options.keyspace.clone();
    let data_dir = tempfile::tempdir().unwrap();
    let env = [
        ("KILLRVIDEO_STORE", "cassandra".to_owned()),
        ("KILLRVIDEO_CASSANDRA_CONTACT_POINTS", contact_points()),
        ("KILLRVIDEO_CASSANDRA_KEYSPACE", keyspace.clone()),
        // One JWT secret for both processes, so the first one's token is not the point.
        (
            "KILLRVIDEO_JWT_SECRET",
            "dev-key-test-secret-dev-key-test-secret".to_owned(),
        ),
    ];
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let client = reqwest::Client::new();
    let email = format!("{}@example.org", uuid::Uuid::new_v4().simple());
    let credentials = serde_json::json!({"email": email, "password": "correct horse battery"});

    // First process: register (which creates and wraps the user's data key).
    let (mut first, port) = serve_in(data_dir.path(), &env);
    let registered = runtime.block_on(async {
        let mut body = credentials.clone();
        body["firstname"] = "Dora".into();
        body["lastname"] = "Keeper".into();
        client
            .post(format!("http://127.0.0.1:{port}/api/v1/users/register"))
            .json(&body)
            .send()
            .await
            .unwrap()
            .status()
    });
    assert_eq!(registered, 201);
    assert!(terminate(&mut first).success());
    let mut stderr = String::new();
    std::io::Read::read_to_string(first.stderr.as_mut().unwrap(), &mut stderr).unwrap();
    let key_file = data_dir
        .path()
        .join(killrvideo_users::store::keys::DEVELOPMENT_KEK_FILE);
    assert!(
        stderr.contains("KILLRVIDEO_KEY_ENCRYPTION_KEY is not set")
            && stderr.contains(&key_file.display().to_string()),
        "a loud warning naming the file: {stderr}"
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&key_file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "only the owner reads the key");
    }

    // Second process: the same account logs in and reads its sealed names.
    let (mut second, port) = serve_in(data_dir.path(), &env);
    let me = runtime.block_on(async {
        let login: serde_json::Value = client
            .post(format!("http://127.0.0.1:{port}/api/v1/users/login"))
            .json(&credentials)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let token = login["token"].as_str().expect("a token").to_owned();
        client
            .get(format!("http://127.0.0.1:{port}/api/v1/users/me"))
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
            .json::<serde_json::Value>()
            .await
            .unwrap()
    });
    assert_eq!(me["firstname"], "Dora", "{me}");
    assert_eq!(me["lastname"], "Keeper", "{me}");
    assert!(terminate(&mut second).success());

    // A job with no key configured opens the same data keys: verify finds no drift.
    let mut verify = command();
    verify
        .arg("verify")
        .env("KILLRVIDEO_DATA_DIR", data_dir.path());
    for (key, value) in &env {
        verify.env(key, value);
    }
    let output = verify.output().expect("run verify");
    assert!(
        output.status.success(),
        "verify: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );

    // Without the file, a new development key cannot open this keyspace: refused with
    // one line, exit 2, as a wrong KEK is.
    std::fs::remove_file(&key_file).unwrap();
    let output = command()
        .arg("history")
        .arg(uuid::Uuid::new_v4().to_string())
        .env("KILLRVIDEO_DATA_DIR", data_dir.path())
        .envs(env.iter().copied())
        .output()
        .expect("run history");
    assert_eq!(
        output.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );

    runtime.block_on(drop_keyspace(&options));
}

//! The binary as an operator meets it: settings, exit codes, migrate, serve, SIGTERM.
//! The Cassandra cases run against the real server of `scripts/cassandra`.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_killrvideo-users");

fn contact_points() -> String {
    std::env::var("KILLRVIDEO_TEST_CASSANDRA").unwrap_or_else(|_| "127.0.0.1:9042".into())
}

/// The binary with a clean KILLRVIDEO_* environment.
fn command() -> Command {
    let mut command = Command::new(BIN);
    for (key, _) in std::env::vars() {
        if key.starts_with("KILLRVIDEO_") {
            command.env_remove(key);
        }
    }
    command.env("RUST_LOG", "warn");
    command
}

fn unique_keyspace(prefix: &str) -> String {
    let name = format!("{prefix}_{}", uuid::Uuid::new_v4().simple());
    name[..name.len().min(48)].to_owned()
}

#[test]
fn bad_settings_exit_2_with_one_line_naming_the_variable() {
    let cases = [
        ("KILLRVIDEO_STORE", "postgres", "serve"),
        ("KILLRVIDEO_LISTEN", "localhost", "serve"),
        ("KILLRVIDEO_JWT_TTL", "forever", "serve"),
        ("KILLRVIDEO_JWT_SECRET", "short", "serve"),
        ("KILLRVIDEO_LOG_FORMAT", "xml", "serve"),
        ("KILLRVIDEO_CASSANDRA_KEYSPACE", "bad-name", "migrate"),
        (
            "KILLRVIDEO_CASSANDRA_REPLICATION",
            "EverywhereStrategy:9",
            "migrate",
        ),
        ("KILLRVIDEO_CASSANDRA_CONTACT_POINTS", "no-port", "migrate"),
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
        if variable == "KILLRVIDEO_JWT_SECRET" {
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
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let third = migrate().wait_with_output().unwrap();
    assert!(third.status.success());
    let stdout = String::from_utf8_lossy(&third.stdout);
    assert!(
        stdout.contains("applied [], already applied [1, 2, 3, 4, 5]"),
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
                "projection_checkpoints",
                "schema_migration_lease",
                "schema_migrations",
                "user_credentials",
                "user_events",
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
        assert_eq!(versions, 5);
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
    let started = Instant::now();
    let exit = loop {
        if let Some(exit) = child.try_wait().unwrap() {
            break exit;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "serve ignored SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(exit.success(), "graceful shutdown exits 0: {exit:?}");
    let mut stderr = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut stderr).unwrap();
    assert!(
        stderr.contains("KILLRVIDEO_JWT_SECRET is not set"),
        "loud warning: {stderr}"
    );
}

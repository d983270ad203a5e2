//! What every test binary of `killrvideo-users` shares.
//!
//! - [`TestApp`]: a real server on port 0 over a real store, built by one builder,
//!   `TestApp::on(backend).limits(..).cors(..).isolated().spawn().await`. The
//!   end-to-end tests (`tests/api`) run each test once per [`Backend`] through
//!   [`backend_tests!`]; the Cassandra runs need the server that `scripts/test` starts
//!   through `scripts/cassandra`, and fail loudly, rather than skip, without it.
//! - [`TestRouter`]: the router driven by `oneshot` over the embedded store, for the
//!   handler tests (`tests/handlers.rs`): the HTTP contract that no store decides.
//! - [`Api`]: the requests both of them send, written once.
//! - The test Cassandra ([`cassandra_options`], [`unique_keyspace`]), seeding
//!   ([`seed_user`]), the binary ([`service_command`]) and the reliability counts the
//!   fault tests append ([`report_reliability_counts`]).
//!
//! A crate of its own, not a module each binary includes: a library's public items are
//! never dead code in the binaries that use only some of them.

mod api;
mod app;
mod cassandra;
mod handlers;

pub use api::{Api, Call, Reply, TestUser, problem, sign, unauthorized};
pub use app::{Raw, TestApp, TestAppBuilder};
pub use cassandra::{
    TEST_KEYSPACE, cassandra_contact_points, cassandra_options, cassandra_store, drop_keyspace,
    migrated_keyspace_without_kek, unique_keyspace,
};
pub use handlers::TestRouter;

use killrvideo_users::domain::events::{Actor, EventEnvelope, UserEvent, UserRegistered};
use killrvideo_users::store::UserStore;
use std::path::PathBuf;
use std::time::Duration;
use uuid::Uuid;

/// The secret every test server signs with, so tests can mint their own tokens.
pub const JWT_SECRET: &[u8] = b"test-secret-test-secret-test-secret!";
/// Password used by [`Api::register_user`].
pub const PASSWORD: &str = "correct horse battery";

/// The key-encryption key of every Cassandra store the tests open, in process and in
/// the binaries they run, so that all of them open each other's data keys. (The
/// embedded stores use the development KEK kept in their data directory.)
pub const TEST_KEK: &str = "dGVzdC1rZXktZW5jcnlwdGlvbi1rZXktMzItYnl0ZXM=";

/// The request timeout of test stores: generous, because two cores run the tests, the
/// service and Cassandra at once.
pub const TEST_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// [`TEST_KEK`] as store settings.
pub fn test_kek() -> killrvideo_users::store::keys::KekSettings {
    killrvideo_users::store::keys::KekSettings::with(
        killrvideo_users::store::sealing::Kek::from_base64(TEST_KEK).expect("a valid KEK"),
    )
}

/// Which store a test runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// SQLite in a temporary directory.
    Embedded,
    /// The real Cassandra of `scripts/cassandra`.
    Cassandra,
}

/// Runs each named `async fn(Backend)` of the calling module once per backend.
#[macro_export]
macro_rules! backend_tests {
    ($($name:ident),* $(,)?) => {
        mod embedded {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name($crate::Backend::Embedded).await
                }
            )*
        }
        mod cassandra {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name($crate::Backend::Cassandra).await
                }
            )*
        }
    };
}

/// A unique address for a test user.
pub fn unique_email() -> String {
    format!("user-{}@example.com", Uuid::new_v4().simple())
}

/// Registers a user straight through the store (no HTTP, no password hashing: it
/// cannot log in), for tests that need many users fast or a store no server runs on.
/// Returns the id.
pub async fn seed_user(
    store: &dyn UserStore,
    email: &str,
    firstname: &str,
    lastname: &str,
) -> Uuid {
    let user_id = Uuid::new_v4();
    let credentials = killrvideo_users::store::Credentials {
        email_key: email.to_ascii_lowercase(),
        password_hash: "not-a-hash".into(),
        user_id,
        account_locked: false,
    };
    let registered = EventEnvelope::new(
        user_id,
        killrvideo_users::clock::EventClock::new().next_event_id(),
        Actor::User(user_id),
        None,
        UserEvent::UserRegistered(UserRegistered {
            email: email.to_owned(),
            firstname: firstname.to_owned(),
            lastname: lastname.to_owned(),
            account_status: "viewer".into(),
        }),
    );
    store
        .register(&credentials, &registered)
        .await
        .expect("seed a user");
    user_id
}

/// The service's binary. Cargo names it to the tests of the service's own package
/// (`CARGO_BIN_EXE_killrvideo-users`, read at run time since this crate is not that
/// package); run by hand, a test binary finds it beside its own `deps` directory.
pub fn service_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("CARGO_BIN_EXE_killrvideo-users") {
        return path.into();
    }
    let test_binary = std::env::current_exe().expect("the test binary's path");
    test_binary
        .parent()
        .and_then(std::path::Path::parent)
        .map(|profile_dir| profile_dir.join("killrvideo-users"))
        .expect("the test binary lives in target/<profile>/deps")
}

/// The binary with a clean `KILLRVIDEO_*` environment, logging warnings only.
pub fn service_command() -> std::process::Command {
    let mut command = std::process::Command::new(service_binary());
    for (key, _) in std::env::vars() {
        if key.starts_with("KILLRVIDEO_") {
            command.env_remove(key);
        }
    }
    command.env("RUST_LOG", "warn");
    command
}

/// Asserts that a process succeeded, showing what it printed if not; returns its
/// stdout.
pub fn succeeded(output: &std::process::Output) -> String {
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "{:?}: {stdout}{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

/// Prints what a fault test counted and appends it to `target/reliability-counts.jsonl`
/// (docs/reliability.md tabulates it). A file that cannot be written is no failure.
pub fn report_reliability_counts(counts: &serde_json::Value) {
    println!("reliability counts: {counts}");
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../target/reliability-counts.jsonl"
    );
    if let Ok(mut file) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
    {
        use std::io::Write;
        let _ = writeln!(file, "{counts}");
    }
}

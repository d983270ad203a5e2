//! The test Cassandra: the single node of `scripts/cassandra start`, or whatever
//! `KILLRVIDEO_TEST_CASSANDRA` names.

use crate::test_kek;
use killrvideo_users::store::cassandra::{CassandraOptions, CassandraStore, migrate};
use std::time::Duration;
use tokio::sync::OnceCell;
use uuid::Uuid;

/// The keyspace the API tests share; users are random, so tests do not collide.
pub const TEST_KEYSPACE: &str = "killrvideo_test";

/// Contact points of the test Cassandra (`KILLRVIDEO_TEST_CASSANDRA`, comma-separated,
/// default local).
pub fn cassandra_contact_points() -> Vec<String> {
    std::env::var("KILLRVIDEO_TEST_CASSANDRA")
        .unwrap_or_else(|_| "127.0.0.1:9042".into())
        .split(',')
        .map(str::to_owned)
        .collect()
}

/// Options for a keyspace on the test Cassandra, with [`crate::TEST_KEK`].
pub fn cassandra_options(keyspace: &str, request_timeout: Duration) -> CassandraOptions {
    CassandraOptions {
        contact_points: cassandra_contact_points(),
        keyspace: keyspace.to_owned(),
        local_dc: None,
        replication: "{'class': 'SimpleStrategy', 'replication_factor': 1}".into(),
        request_timeout,
        speculative_delay: Duration::from_millis(200),
        kek: test_kek(),
    }
}

/// A keyspace name no other test uses: `prefix_<uuid>`, within Cassandra's 48
/// characters.
pub fn unique_keyspace(prefix: &str) -> String {
    let name = format!("{prefix}_{}", Uuid::new_v4().simple());
    name[..name.len().min(48)].to_owned()
}

/// A freshly migrated keyspace on the test Cassandra whose stores bring their own
/// key-encryption keys (none configured here): for the tests of the binary's keys.
pub async fn migrated_keyspace_without_kek(prefix: &str) -> CassandraOptions {
    let options = CassandraOptions {
        kek: Default::default(),
        ..cassandra_options(&unique_keyspace(prefix), Duration::from_secs(10))
    };
    migrate::migrate(&options)
        .await
        .expect("migrate a keyspace (scripts/cassandra start)");
    options
}

/// Drops the keyspace of `options`, if it is there.
pub async fn drop_keyspace(options: &CassandraOptions) {
    let session = killrvideo_users::store::cassandra::open_session(options)
        .await
        .expect("connect to the test Cassandra");
    let _ = migrate::drop_keyspace(&session, &options.keyspace).await;
}

static MIGRATED: OnceCell<()> = OnceCell::const_new();

/// Connects to the shared test keyspace, migrating it once per test binary.
pub async fn cassandra_store(request_timeout: Duration) -> CassandraStore {
    let options = cassandra_options(TEST_KEYSPACE, request_timeout);
    MIGRATED
        .get_or_init(|| async {
            if let Err(err) = migrate::migrate(&options).await {
                panic!(
                    "cannot migrate the test keyspace on Cassandra at {:?}: {err}\n\
                     Start Cassandra with `scripts/cassandra start` (scripts/test does it).",
                    options.contact_points
                );
            }
        })
        .await;
    connect(&options).await
}

/// Connects with `options` to an already migrated keyspace.
pub(crate) async fn connect(options: &CassandraOptions) -> CassandraStore {
    CassandraStore::connect(options)
        .await
        .unwrap_or_else(|err| panic!("cannot connect to the test Cassandra: {err}"))
}

/// A freshly migrated keyspace of its own, and its name.
pub(crate) async fn isolated_store(request_timeout: Duration) -> (CassandraStore, String) {
    let options = cassandra_options(&unique_keyspace("jobs"), request_timeout);
    migrate::migrate(&options)
        .await
        .expect("migrate an isolated keyspace");
    (connect(&options).await, options.keyspace)
}

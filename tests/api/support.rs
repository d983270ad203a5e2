//! The test harness: a real server on port 0 over a real store, one per test.
//!
//! Every end-to-end test runs once per backend (see [`backend_tests!`]). The Cassandra
//! runs need the real server that `scripts/test` starts through `scripts/cassandra`; if
//! it is not reachable the tests fail, loudly, rather than skip.

use chrono::Utc;
use killrvideo_users::auth::jwt::JwtKeys;
use killrvideo_users::domain::UserRow;
use killrvideo_users::domain::events::{Actor, EventEnvelope, UserEvent};
use killrvideo_users::http::CorsOrigins;
use killrvideo_users::startup::Application;
use killrvideo_users::store::cassandra::{CassandraOptions, CassandraStore, migrate};
use killrvideo_users::store::embedded::EmbeddedStore;
use killrvideo_users::store::{EventPage, Precondition, SharedProjectionStore, SharedStore};
use reqwest::{Response, StatusCode};
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::OnceCell;
use uuid::Uuid;

/// The secret every test server signs with, so tests can mint their own tokens.
pub const JWT_SECRET: &[u8] = b"test-secret-test-secret-test-secret!";
/// Password used by [`TestApp::register_user`].
pub const PASSWORD: &str = "correct horse battery";

/// The key-encryption key of every Cassandra store the tests open, in process and in
/// the binaries they run, so that all of them open each other's data keys. (The
/// embedded stores use the development KEK kept in their data directory.)
pub const TEST_KEK: &str = "dGVzdC1rZXktZW5jcnlwdGlvbi1rZXktMzItYnl0ZXM=";

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
                    super::$name($crate::support::Backend::Embedded).await
                }
            )*
        }
        mod cassandra {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name($crate::support::Backend::Cassandra).await
                }
            )*
        }
    };
}

/// Contact points of the test Cassandra (`KILLRVIDEO_TEST_CASSANDRA`, default local).
pub fn cassandra_contact_points() -> Vec<String> {
    std::env::var("KILLRVIDEO_TEST_CASSANDRA")
        .unwrap_or_else(|_| "127.0.0.1:9042".into())
        .split(',')
        .map(str::to_owned)
        .collect()
}

/// Options for a keyspace on the test Cassandra.
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

/// The request timeout of test stores: generous, because two cores run the tests, the
/// service and Cassandra at once.
pub const TEST_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// The keyspace the API tests share; users are random, so tests do not collide.
pub const TEST_KEYSPACE: &str = "killrvideo_test";

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
    CassandraStore::connect(&options)
        .await
        .unwrap_or_else(|err| panic!("cannot connect to the test Cassandra: {err}"))
}

/// Direct access to the backend behind the API, for arranging and checking state.
pub enum Raw {
    /// The SQLite store.
    Embedded(EmbeddedStore),
    /// The Cassandra store.
    Cassandra(CassandraStore),
}

/// A running server and what a test needs around it.
pub struct TestApp {
    /// `http://127.0.0.1:<port>`
    pub address: String,
    /// A client without redirects or cookies.
    pub client: reqwest::Client,
    /// The same store the server uses.
    pub store: SharedStore,
    /// The same store, as the projection jobs see it.
    pub jobs: SharedProjectionStore,
    /// The Cassandra keyspace (unused on the embedded backend).
    pub keyspace: String,
    /// Backend-specific access.
    pub raw: Raw,
    /// Token minting with the server's secret.
    pub jwt: JwtKeys,
    /// The server's password hashing (its counters).
    pub passwords: killrvideo_users::auth::password::Passwords,
    /// The `/metrics` URL, when served.
    pub metrics: Option<String>,
    /// How the store reaches Cassandra, when not the default test server (the cluster
    /// tests): the CLI is pointed at the same nodes.
    pub cassandra: Option<CassandraOptions>,
    _data_dir: Option<tempfile::TempDir>,
}

/// A registered, logged-in user.
#[derive(Debug, Clone)]
pub struct TestUser {
    /// Id.
    pub id: Uuid,
    /// Registered email.
    pub email: String,
    /// A valid token.
    pub token: String,
}

/// Starts a server on port 0 over a fresh store of the given backend.
pub async fn spawn_app(backend: Backend) -> TestApp {
    spawn_app_with_timeout(backend, TEST_REQUEST_TIMEOUT).await
}

/// [`spawn_app`] with a chosen Cassandra request timeout.
pub async fn spawn_app_with_timeout(backend: Backend, request_timeout: Duration) -> TestApp {
    let store = match backend {
        Backend::Embedded => None,
        Backend::Cassandra => Some(cassandra_store(request_timeout).await),
    };
    spawn_over(store, TEST_KEYSPACE).await
}

/// A server over a store of its own: on Cassandra a freshly migrated keyspace, for
/// tests that scan or repair a whole table and must not see other tests' users.
/// Call [`TestApp::drop_keyspace`] at the end.
pub async fn spawn_isolated_app(backend: Backend) -> TestApp {
    match backend {
        Backend::Embedded => spawn_over(None, TEST_KEYSPACE).await,
        Backend::Cassandra => {
            let keyspace = format!("jobs_{}", Uuid::new_v4().simple());
            let options = cassandra_options(&keyspace, TEST_REQUEST_TIMEOUT);
            migrate::migrate(&options)
                .await
                .expect("migrate an isolated keyspace");
            let store = CassandraStore::connect(&options).await.expect("connect");
            spawn_over(Some(store), &keyspace).await
        }
    }
}

/// How a test server differs from the default.
#[derive(Default)]
pub struct AppOptions {
    /// Overload and connection limits.
    pub limits: Option<killrvideo_users::http::Limits>,
    /// Browser origins allowed by CORS.
    pub cors: CorsOrigins,
    /// Proxies whose `X-Forwarded-For` is believed.
    pub trusted_proxies: killrvideo_users::http::client::TrustedProxies,
    /// Serve `/metrics` on a port of its own.
    pub metrics: bool,
}

/// A store of the given backend: a fresh SQLite, or the shared test keyspace.
pub async fn shared_store(backend: Backend) -> Option<CassandraStore> {
    match backend {
        Backend::Embedded => None,
        Backend::Cassandra => Some(cassandra_store(TEST_REQUEST_TIMEOUT).await),
    }
}

/// [`spawn_app`] with chosen overload limits.
pub async fn spawn_app_with_limits(
    backend: Backend,
    limits: killrvideo_users::http::Limits,
) -> TestApp {
    let options = AppOptions {
        limits: Some(limits),
        ..AppOptions::default()
    };
    spawn_with(backend, options).await
}

/// [`spawn_app`] allowing browser calls from these origins (CORS).
pub async fn spawn_app_with_cors(backend: Backend, origins: &[&str]) -> TestApp {
    let cors = killrvideo_users::config::parse_cors_origins(&origins.join(",")).expect("origins");
    let options = AppOptions {
        cors,
        ..AppOptions::default()
    };
    spawn_with(backend, options).await
}

/// [`spawn_app`] with other options.
pub async fn spawn_with(backend: Backend, options: AppOptions) -> TestApp {
    spawn_over_with(shared_store(backend).await, TEST_KEYSPACE, options).await
}

/// A second server over the same store as `app` (the same SQLite file, the same
/// keyspace): several service instances.
pub async fn spawn_instance_beside(app: &TestApp) -> TestApp {
    let store = match &app.raw {
        Raw::Embedded(_) => panic!("the embedded store has one process"),
        Raw::Cassandra(_) => {
            let options = cassandra_options(&app.keyspace, TEST_REQUEST_TIMEOUT);
            CassandraStore::connect(&options).await.expect("connect")
        }
    };
    spawn_over_with(Some(store), &app.keyspace, AppOptions::default()).await
}

/// A server over a Cassandra reached with these options (an already migrated keyspace),
/// with these limits: the cluster tests.
#[allow(dead_code)] // tests/cluster.rs
pub async fn spawn_over_cassandra(
    options: &CassandraOptions,
    limits: killrvideo_users::http::Limits,
) -> TestApp {
    let store = CassandraStore::connect(options).await.expect("connect");
    let app_options = AppOptions {
        limits: Some(limits),
        ..AppOptions::default()
    };
    let mut app = spawn_over_with(Some(store), &options.keyspace, app_options).await;
    app.cassandra = Some(options.clone());
    app
}

async fn spawn_over(cassandra: Option<CassandraStore>, keyspace: &str) -> TestApp {
    spawn_over_with(cassandra, keyspace, AppOptions::default()).await
}

async fn spawn_over_with(
    cassandra: Option<CassandraStore>,
    keyspace: &str,
    options: AppOptions,
) -> TestApp {
    let (store, jobs, raw, data_dir): (SharedStore, SharedProjectionStore, Raw, _) = match cassandra
    {
        None => {
            let dir = tempfile::tempdir().expect("temp dir");
            let store = EmbeddedStore::open(dir.path()).expect("open embedded store");
            (
                Arc::new(store.clone()),
                Arc::new(store.clone()),
                Raw::Embedded(store),
                Some(dir),
            )
        }
        Some(store) => (
            Arc::new(store.clone()),
            Arc::new(store.clone()),
            Raw::Cassandra(store),
            None,
        ),
    };
    let mut application = Application::with_store(
        "127.0.0.1:0".parse().expect("address"),
        Arc::clone(&store),
        JwtKeys::new(JWT_SECRET, Duration::from_secs(1800)),
    )
    .await
    .expect("build application")
    .with_limits(options.limits.unwrap_or_default())
    .with_cors(options.cors)
    .with_trusted_proxies(options.trusted_proxies);
    if options.metrics {
        application = application
            .with_metrics("127.0.0.1:0".parse().expect("address"))
            .await
            .expect("metrics listener");
    }
    let address = format!("http://{}", application.local_addr().expect("local addr"));
    let metrics = application
        .metrics_addr()
        .map(|a| format!("http://{a}/metrics"));
    let passwords = application.passwords();
    tokio::spawn(application.run_until(std::future::pending()));
    TestApp {
        address,
        client: reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("client"),
        store,
        jobs,
        keyspace: keyspace.to_owned(),
        raw,
        jwt: JwtKeys::new(JWT_SECRET, Duration::from_secs(1800)),
        passwords,
        metrics,
        cassandra: None,
        _data_dir: data_dir,
    }
}

/// A unique address for a test user.
pub fn unique_email() -> String {
    format!("user-{}@example.com", Uuid::new_v4().simple())
}

impl TestApp {
    /// An absolute URL for a path.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.address)
    }

    /// POSTs JSON.
    pub async fn post_json(&self, path: &str, body: &Value) -> Response {
        self.client
            .post(self.url(path))
            .json(body)
            .send()
            .await
            .expect("POST")
    }

    /// Registers a user with the given names.
    pub async fn register(&self, email: &str, firstname: &str, lastname: &str) -> Response {
        self.post_json(
            "/api/v1/users/register",
            &json!({"email": email, "password": PASSWORD, "firstname": firstname, "lastname": lastname}),
        )
        .await
    }

    /// A client whose connections come from another loopback address (127.0.0.2,
    /// 127.0.0.3, ...): another client address, as the server sees it.
    pub fn client_from(&self, address: [u8; 4]) -> reqwest::Client {
        reqwest::Client::builder()
            .local_address(std::net::IpAddr::from(address))
            .build()
            .expect("client")
    }

    /// Logs in from another client address.
    pub async fn login_from(&self, address: [u8; 4], email: &str, password: &str) -> Response {
        self.client_from(address)
            .post(self.url("/api/v1/users/login"))
            .json(&json!({"email": email, "password": password}))
            .send()
            .await
            .expect("POST")
    }

    /// Logs in.
    pub async fn login(&self, email: &str, password: &str) -> Response {
        self.post_json(
            "/api/v1/users/login",
            &json!({"email": email, "password": password}),
        )
        .await
    }

    /// Registers "John Doe" with a fresh email and logs in.
    pub async fn register_user(&self) -> TestUser {
        let email = unique_email();
        let registered = self.register(&email, "John", "Doe").await;
        assert_eq!(registered.status(), StatusCode::CREATED);
        let body: Value = registered.json().await.expect("register body");
        let id = Uuid::parse_str(body["userId"].as_str().expect("userId")).expect("uuid");
        let login = self.login(&email, PASSWORD).await;
        assert_eq!(login.status(), StatusCode::OK);
        let token = login.json::<Value>().await.expect("login body")["token"]
            .as_str()
            .expect("token")
            .to_owned();
        TestUser { id, email, token }
    }

    /// PUT /me with a JSON body.
    pub async fn put_me(&self, token: &str, body: &Value) -> Response {
        self.client
            .put(self.url("/api/v1/users/me"))
            .bearer_auth(token)
            .json(body)
            .send()
            .await
            .expect("PUT")
    }

    /// GET /me.
    pub async fn get_me(&self, token: &str) -> Response {
        self.client
            .get(self.url("/api/v1/users/me"))
            .bearer_auth(token)
            .send()
            .await
            .expect("GET")
    }

    /// The raw users row, straight from the store.
    pub async fn row(&self, user_id: Uuid) -> Option<UserRow> {
        self.store.raw_row(user_id).await.expect("load row")
    }

    /// The whole users row as the jobs read it, search terms included.
    pub async fn full_row(&self, user_id: Uuid) -> Option<UserRow> {
        let table = killrvideo_users::store::USERS_TABLE;
        self.jobs.prepare_table(table).await.expect("prepare");
        self.jobs.table_row(table, user_id).await.expect("row")
    }

    /// Every event of a user, oldest first.
    pub async fn events(&self, user_id: Uuid) -> Vec<EventEnvelope> {
        let mut events = self
            .store
            .events(
                user_id,
                EventPage {
                    before: None,
                    limit: 10_000,
                },
            )
            .await
            .expect("events");
        events.reverse();
        events
    }

    /// Records an event directly (as an operator would), e.g. to give a user a status.
    pub async fn record(&self, user_id: Uuid, event: UserEvent) {
        let envelope = EventEnvelope::new(
            user_id,
            killrvideo_users::clock::EventClock::new().next_event_id(),
            Actor::Operator("test".into()),
            None,
            event,
        );
        self.store
            .append(&envelope, Precondition::None)
            .await
            .expect("append");
    }

    /// Sets KillrVideo's `account_locked` flag on a credential.
    pub async fn lock_account(&self, email: &str) {
        let key = email.to_ascii_lowercase();
        match &self.raw {
            Raw::Embedded(store) => {
                let connection = rusqlite::Connection::open(store.path()).expect("open sqlite");
                connection
                    .execute(
                        "UPDATE user_credentials SET account_locked = 1 WHERE email = ?1",
                        [&key],
                    )
                    .expect("lock");
            }
            Raw::Cassandra(store) => {
                store
                    .session()
                    .query_unpaged(
                        format!(
                            "UPDATE {}.user_credentials SET account_locked = true WHERE email = ?",
                            self.keyspace
                        ),
                        (key,),
                    )
                    .await
                    .expect("lock");
            }
        }
    }

    /// Runs the real binary (`killrvideo-users <args>`) against this app's store.
    pub fn cli(&self, args: &[&str]) -> std::process::Output {
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_killrvideo-users"));
        command.args(args).env("RUST_LOG", "warn");
        for (key, _) in std::env::vars() {
            if key.starts_with("KILLRVIDEO_") {
                command.env_remove(key);
            }
        }
        match &self.raw {
            Raw::Embedded(store) => {
                let dir = store.path().parent().expect("data dir");
                command.env("KILLRVIDEO_DATA_DIR", dir);
            }
            Raw::Cassandra(_) => {
                let contact_points = self
                    .cassandra
                    .as_ref()
                    .map_or_else(cassandra_contact_points, |o| o.contact_points.clone());
                command
                    .env("KILLRVIDEO_STORE", "cassandra")
                    .env("KILLRVIDEO_KEY_ENCRYPTION_KEY", TEST_KEK)
                    .env("KILLRVIDEO_CASSANDRA_KEYSPACE", &self.keyspace)
                    .env(
                        "KILLRVIDEO_CASSANDRA_CONTACT_POINTS",
                        contact_points.join(","),
                    );
                if let Some(dc) = self.cassandra.as_ref().and_then(|o| o.local_dc.as_ref()) {
                    command.env("KILLRVIDEO_CASSANDRA_LOCAL_DC", dc);
                }
            }
        }
        command.output().expect("run killrvideo-users")
    }

    /// GET a path with a bearer token.
    pub async fn get_with_token(&self, path: &str, token: &str) -> Response {
        self.client
            .get(self.url(path))
            .bearer_auth(token)
            .send()
            .await
            .expect("GET")
    }

    /// PUT /me with `If-Match`.
    pub async fn put_me_if_match(&self, token: &str, etag: &str, body: &Value) -> Response {
        self.client
            .put(self.url("/api/v1/users/me"))
            .bearer_auth(token)
            .header("if-match", etag)
            .json(body)
            .send()
            .await
            .expect("PUT")
    }

    /// The current ETag of the caller, from GET /me.
    pub async fn etag(&self, token: &str) -> String {
        let response = self.get_me(token).await;
        assert_eq!(response.status(), StatusCode::OK);
        response.headers()["etag"]
            .to_str()
            .expect("etag")
            .to_owned()
    }

    /// Runs a statement directly on the backend, bypassing the service: CQL on
    /// Cassandra (`{ks}` is replaced by the keyspace), SQL on SQLite.
    pub async fn raw_statement(&self, cql: &str, sql: &str) {
        match &self.raw {
            Raw::Embedded(store) => {
                let connection = rusqlite::Connection::open(store.path()).expect("open sqlite");
                connection.execute_batch(sql).expect("raw SQL");
            }
            Raw::Cassandra(store) => {
                store
                    .session()
                    .query_unpaged(cql.replace("{ks}", &self.keyspace), ())
                    .await
                    .expect("raw CQL");
            }
        }
    }

    /// The user's events as the database holds them, read past the service (SQL or CQL
    /// through the driver): `(event id, schema version, payload)`, oldest first.
    pub async fn raw_payloads(&self, user_id: Uuid) -> Vec<(Uuid, i32, String)> {
        match &self.raw {
            Raw::Embedded(store) => {
                let connection = rusqlite::Connection::open(store.path()).expect("open sqlite");
                let mut statement = connection
                    .prepare(
                        "SELECT event_id, schema_version, payload FROM user_events \
                         WHERE userid = ?1 ORDER BY event_time, event_id",
                    )
                    .unwrap();
                statement
                    .query_map([user_id.to_string()], |row| {
                        Ok((
                            Uuid::parse_str(&row.get::<_, String>(0)?).unwrap(),
                            row.get(1)?,
                            row.get(2)?,
                        ))
                    })
                    .unwrap()
                    .map(Result::unwrap)
                    .collect()
            }
            Raw::Cassandra(store) => {
                let result = store
                    .session()
                    .query_unpaged(
                        format!(
                            "SELECT event_id, schema_version, payload FROM {}.user_events \
                             WHERE userid = ? ORDER BY event_id ASC",
                            self.keyspace
                        ),
                        (user_id,),
                    )
                    .await
                    .expect("raw CQL");
                result
                    .into_rows_result()
                    .unwrap()
                    .rows::<(scylla::value::CqlTimeuuid, i32, String)>()
                    .unwrap()
                    .map(|row| {
                        let (id, version, payload) = row.unwrap();
                        (Uuid::from(id), version, payload)
                    })
                    .collect()
            }
        }
    }

    /// Every row of `user_keys`, read past the service: `(user id, wrapped key)`.
    pub async fn raw_wrapped_keys(&self) -> Vec<(Uuid, Vec<u8>)> {
        match &self.raw {
            Raw::Embedded(store) => {
                let connection = rusqlite::Connection::open(store.path()).expect("open sqlite");
                let mut statement = connection
                    .prepare("SELECT userid, wrapped FROM user_keys")
                    .unwrap();
                statement
                    .query_map([], |row| {
                        Ok((
                            Uuid::parse_str(&row.get::<_, String>(0)?).unwrap(),
                            row.get(1)?,
                        ))
                    })
                    .unwrap()
                    .map(Result::unwrap)
                    .collect()
            }
            Raw::Cassandra(store) => {
                let result = store
                    .session()
                    .query_unpaged(
                        format!("SELECT userid, wrapped FROM {}.user_keys", self.keyspace),
                        (),
                    )
                    .await
                    .expect("raw CQL");
                result
                    .into_rows_result()
                    .unwrap()
                    .rows::<(Uuid, Vec<u8>)>()
                    .unwrap()
                    .map(Result::unwrap)
                    .collect()
            }
        }
    }

    /// The KEKs the app's store uses: the development KEK of its data directory on
    /// SQLite, [`TEST_KEK`] on Cassandra.
    pub fn key_ring(&self) -> killrvideo_users::store::sealing::KeyRing {
        use killrvideo_users::store::sealing::{Kek, KeyRing};
        let kek = match &self.raw {
            Raw::Embedded(store) => {
                let dir = store.path().parent().expect("data dir");
                let text = std::fs::read_to_string(
                    dir.join(killrvideo_users::store::keys::DEVELOPMENT_KEK_FILE),
                )
                .expect("the development KEK");
                Kek::from_base64(&text).unwrap()
            }
            Raw::Cassandra(_) => Kek::from_base64(TEST_KEK).unwrap(),
        };
        KeyRing::new(kek, Vec::new())
    }

    /// DELETE /me with a JSON body.
    pub async fn delete_me(&self, token: &str, body: &Value) -> Response {
        self.client
            .delete(self.url("/api/v1/users/me"))
            .bearer_auth(token)
            .json(body)
            .send()
            .await
            .expect("DELETE")
    }

    /// Drops an isolated test keyspace (no-op on SQLite, whose directory is temporary).
    pub async fn drop_keyspace(&self) {
        if let Raw::Cassandra(store) = &self.raw
            && self.keyspace != TEST_KEYSPACE
        {
            // With the store's 2 s request timeout these drops failed unnoticed on a busy
            // node and the keyspaces piled up on developers' servers.
            if let Err(err) = migrate::drop_keyspace(&store.session(), &self.keyspace).await {
                eprintln!("could not drop test keyspace {}: {err}", self.keyspace);
            }
        }
    }

    /// Registers a user straight through the store (no HTTP, no password hashing: it
    /// cannot log in), for tests that need many users fast. Returns the id.
    pub async fn seed_user(&self, email: &str, firstname: &str, lastname: &str) -> Uuid {
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
            UserEvent::UserRegistered(killrvideo_users::domain::events::UserRegistered {
                email: email.to_owned(),
                firstname: firstname.to_owned(),
                lastname: lastname.to_owned(),
                account_status: "viewer".into(),
            }),
        );
        self.store
            .register(&credentials, &registered)
            .await
            .expect("seed a user");
        user_id
    }

    /// Gives a user a status through the operator command, as an operator would.
    pub fn set_role(&self, user_id: Uuid, status: &str) {
        let output = self.cli(&["set-role", &user_id.to_string(), status]);
        assert!(
            output.status.success(),
            "set-role: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }

    /// POST a path with a bearer token and no body.
    pub async fn post_with_token(&self, path: &str, token: &str) -> Response {
        self.client
            .post(self.url(path))
            .bearer_auth(token)
            .send()
            .await
            .expect("POST")
    }

    /// A token for any subject, signed with the server's secret.
    pub fn token_for(&self, user_id: Uuid) -> String {
        self.jwt
            .issue(user_id, "viewer", Utc::now())
            .expect("token")
    }
}

/// Reads a problem-details body, checking the media type and the members every problem
/// carries.
pub async fn problem(response: Response, status: StatusCode) -> Value {
    assert_eq!(response.status(), status);
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert_eq!(content_type, "application/problem+json");
    let body: Value = response.json().await.expect("problem body");
    assert_eq!(body["status"], status.as_u16());
    for member in ["type", "title", "detail", "instance", "request_id"] {
        assert!(
            body.get(member).is_some(),
            "problem lacks `{member}`: {body}"
        );
    }
    body
}

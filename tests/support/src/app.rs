//! [`TestApp`]: a real server on port 0 over a real store, one per test, and the one
//! builder that says how it differs from the default.

use crate::api::{Api, Call};
use crate::cassandra::{self, cassandra_contact_points, cassandra_options, cassandra_store};
use crate::{Backend, JWT_SECRET, TEST_KEK, TEST_KEYSPACE, TEST_REQUEST_TIMEOUT};
use futures::StreamExt;
use killrvideo_users::auth::jwt::JwtKeys;
use killrvideo_users::domain::UserRow;
use killrvideo_users::domain::events::EventEnvelope;
use killrvideo_users::http::{CorsOrigins, Limits};
use killrvideo_users::startup::Application;
use killrvideo_users::store::cassandra::{CassandraOptions, CassandraStore, migrate};
use killrvideo_users::store::embedded::EmbeddedStore;
use killrvideo_users::store::{SharedProjectionStore, SharedStore};
use std::sync::Arc;
use std::time::Duration;
use uuid::Uuid;

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

/// Where a [`TestApp`]'s store comes from.
enum Store {
    /// A fresh SQLite, or the shared test keyspace.
    Fresh,
    /// A fresh SQLite, or a freshly migrated keyspace of its own.
    Isolated,
    /// The keyspace of another app, reached the same way.
    Beside {
        keyspace: String,
        options: Option<CassandraOptions>,
    },
    /// An already migrated keyspace reached with these options (the cluster tests).
    Options(CassandraOptions),
}

/// How a test server differs from the default; [`TestApp::on`] starts one.
#[must_use = "a builder does nothing until `spawn`"]
pub struct TestAppBuilder {
    backend: Backend,
    store: Store,
    request_timeout: Duration,
    limits: Limits,
    cors: CorsOrigins,
    metrics: bool,
}

impl TestApp {
    /// A server over a fresh store of `backend`: a new SQLite file, or the shared test
    /// keyspace on Cassandra (users are random, so tests do not collide).
    pub fn on(backend: Backend) -> TestAppBuilder {
        TestAppBuilder {
            backend,
            store: Store::Fresh,
            request_timeout: TEST_REQUEST_TIMEOUT,
            limits: Limits::default(),
            cors: CorsOrigins::default(),
            metrics: false,
        }
    }

    /// A server over a Cassandra reached with `options` (an already migrated keyspace):
    /// the cluster tests. The CLI run by [`TestApp::cli`] is pointed at the same nodes.
    pub fn over(options: &CassandraOptions) -> TestAppBuilder {
        TestAppBuilder {
            store: Store::Options(options.clone()),
            ..Self::on(Backend::Cassandra)
        }
    }
}

impl TestAppBuilder {
    /// The Cassandra store's request timeout (default [`TEST_REQUEST_TIMEOUT`]).
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// Overload and connection limits.
    pub fn limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// Allows browser calls from these origins (CORS).
    pub fn cors(mut self, origins: &[&str]) -> Self {
        self.cors =
            killrvideo_users::config::parse_cors_origins(&origins.join(",")).expect("origins");
        self
    }

    /// Serves `/metrics` on a port of its own ([`TestApp::metrics`]).
    pub fn metrics(mut self) -> Self {
        self.metrics = true;
        self
    }

    /// A store of its own: on Cassandra a freshly migrated keyspace, for tests that
    /// scan or repair a whole table and must not see other tests' users. Call
    /// [`TestApp::drop_keyspace`] at the end.
    pub fn isolated(mut self) -> Self {
        self.store = Store::Isolated;
        self
    }

    /// Over the same store as `other` (the same keyspace, reached the same way):
    /// several service instances. Cassandra only: the embedded store has one process.
    pub fn beside(mut self, other: &TestApp) -> Self {
        self.store = Store::Beside {
            keyspace: other.keyspace.clone(),
            options: other.cassandra.clone(),
        };
        self
    }

    /// Starts the server on port 0.
    pub async fn spawn(self) -> TestApp {
        let (cassandra, keyspace, options) = match (self.backend, self.store) {
            (Backend::Embedded, Store::Fresh | Store::Isolated) => {
                (None, TEST_KEYSPACE.to_owned(), None)
            }
            (Backend::Embedded, _) => panic!("the embedded store has one process"),
            (Backend::Cassandra, Store::Fresh) => (
                Some(cassandra_store(self.request_timeout).await),
                TEST_KEYSPACE.to_owned(),
                None,
            ),
            (Backend::Cassandra, Store::Isolated) => {
                let (store, keyspace) = cassandra::isolated_store(self.request_timeout).await;
                (Some(store), keyspace, None)
            }
            (Backend::Cassandra, Store::Beside { keyspace, options }) => {
                let reach = options
                    .clone()
                    .unwrap_or_else(|| cassandra_options(&keyspace, self.request_timeout));
                (Some(cassandra::connect(&reach).await), keyspace, options)
            }
            (Backend::Cassandra, Store::Options(options)) => (
                Some(cassandra::connect(&options).await),
                options.keyspace.clone(),
                Some(options),
            ),
        };
        let mut app = serve(cassandra, &keyspace, self.limits, self.cors, self.metrics).await;
        app.cassandra = options;
        app
    }
}

async fn serve(
    cassandra: Option<CassandraStore>,
    keyspace: &str,
    limits: Limits,
    cors: CorsOrigins,
    metrics: bool,
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
    .with_limits(limits)
    .with_cors(cors);
    if metrics {
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

impl Api for TestApp {
    type Response = reqwest::Response;

    async fn send(&self, call: Call) -> reqwest::Response {
        let mut request = self.client.request(call.method, self.url(&call.path));
        if let Some(token) = &call.token {
            request = request.bearer_auth(token);
        }
        for (name, value) in &call.headers {
            request = request.header(*name, value);
        }
        if let Some(body) = &call.json {
            request = request.json(body);
        }
        request.send().await.expect("send the request")
    }

    fn store(&self) -> &SharedStore {
        &self.store
    }

    fn jwt(&self) -> &JwtKeys {
        &self.jwt
    }
}

impl TestApp {
    /// An absolute URL for a path.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.address)
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
    pub async fn login_from(
        &self,
        address: [u8; 4],
        email: &str,
        password: &str,
    ) -> reqwest::Response {
        self.client_from(address)
            .post(self.url("/api/v1/users/login"))
            .json(&serde_json::json!({"email": email, "password": password}))
            .send()
            .await
            .expect("POST")
    }

    /// The whole users row as the jobs read it, search terms included.
    pub async fn full_row(&self, user_id: Uuid) -> Option<UserRow> {
        let table = killrvideo_users::store::USERS_TABLE;
        self.jobs.prepare_table(table).await.expect("prepare");
        self.jobs.table_row(table, user_id).await.expect("row")
    }

    /// Every event of the store, through the jobs' scan of `splits` token ranges.
    pub async fn scanned_events(&self, splits: usize) -> Vec<EventEnvelope> {
        self.jobs
            .prepare_table(killrvideo_users::store::USERS_TABLE)
            .await
            .expect("prepare");
        let mut events = Vec::new();
        for range in self.jobs.scan_ranges(splits) {
            let mut stream = self.jobs.scan_events(range).await.expect("scan");
            while let Some(event) = stream.next().await {
                events.push(event.expect("an event"));
            }
        }
        events
    }

    /// Every row of a table, through the jobs' scan of `splits` token ranges, as the
    /// scan returns them (a range read twice would show as a row twice).
    pub async fn scanned_rows(&self, table: &str, splits: usize) -> Vec<UserRow> {
        self.jobs.prepare_table(table).await.expect("prepare");
        let mut rows = Vec::new();
        for range in self.jobs.scan_ranges(splits) {
            let mut stream = self.jobs.scan_rows(table, range).await.expect("scan");
            while let Some(row) = stream.next().await {
                rows.push(row.expect("a row"));
            }
        }
        rows
    }

    /// The embedded store's SQLite file, opened past the service.
    ///
    /// # Panics
    /// On Cassandra.
    pub fn sqlite(&self) -> rusqlite::Connection {
        let Raw::Embedded(store) = &self.raw else {
            panic!("the SQLite file of a Cassandra store")
        };
        rusqlite::Connection::open(store.path()).expect("open sqlite")
    }

    /// Runs a CQL statement past the service (`{ks}` is replaced by the keyspace) and
    /// returns its rows.
    ///
    /// # Panics
    /// On the embedded store.
    pub async fn cql_rows<T>(
        &self,
        cql: &str,
        values: impl scylla::serialize::row::SerializeRow,
    ) -> Vec<T>
    where
        T: for<'frame, 'metadata> scylla::deserialize::row::DeserializeRow<'frame, 'metadata>,
    {
        let Raw::Cassandra(store) = &self.raw else {
            panic!("CQL on the embedded store")
        };
        let result = store
            .session()
            .query_unpaged(cql.replace("{ks}", &self.keyspace), values)
            .await
            .expect("raw CQL");
        match result.into_rows_result() {
            Ok(rows) => rows
                .rows::<T>()
                .expect("rows of that type")
                .map(|row| row.expect("a row"))
                .collect(),
            // A statement without rows (an UPDATE, a DROP).
            Err(_) => Vec::new(),
        }
    }

    /// Sets KillrVideo's `account_locked` flag on a credential.
    pub async fn lock_account(&self, email: &str) {
        let key = email.to_ascii_lowercase();
        match &self.raw {
            Raw::Embedded(_) => {
                self.sqlite()
                    .execute(
                        "UPDATE user_credentials SET account_locked = 1 WHERE email = ?1",
                        [&key],
                    )
                    .expect("lock");
            }
            Raw::Cassandra(_) => {
                self.cql_rows::<()>(
                    "UPDATE {ks}.user_credentials SET account_locked = true WHERE email = ?",
                    (key,),
                )
                .await;
            }
        }
    }

    /// Runs the real binary (`killrvideo-users <args>`) against this app's store.
    pub fn cli(&self, args: &[&str]) -> std::process::Output {
        let mut command = crate::service_command();
        command.args(args);
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

    /// Runs the real binary like [`TestApp::cli`]: its exit code (-1 when a signal ended
    /// it) and what it printed, stdout then stderr.
    pub fn cli_text(&self, args: &[&str]) -> (i32, String) {
        let output = self.cli(args);
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        (output.status.code().unwrap_or(-1), text)
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

    /// Runs a statement directly on the backend, bypassing the service: CQL on
    /// Cassandra (`{ks}` is replaced by the keyspace), SQL on SQLite.
    pub async fn raw_statement(&self, cql: &str, sql: &str) {
        match &self.raw {
            Raw::Embedded(_) => self.sqlite().execute_batch(sql).expect("raw SQL"),
            Raw::Cassandra(_) => {
                self.cql_rows::<()>(cql, ()).await;
            }
        }
    }

    /// The user's events as the database holds them, read past the service (SQL or CQL
    /// through the driver): `(event id, schema version, payload)`, oldest first.
    pub async fn raw_payloads(&self, user_id: Uuid) -> Vec<(Uuid, i32, String)> {
        match &self.raw {
            Raw::Embedded(_) => sqlite_rows(
                &self.sqlite(),
                "SELECT event_id, schema_version, payload FROM user_events \
                 WHERE userid = ?1 ORDER BY event_time, event_id",
                [user_id.to_string()],
                |row| {
                    Ok((
                        parse_uuid(&row.get::<_, String>(0)?),
                        row.get(1)?,
                        row.get(2)?,
                    ))
                },
            ),
            Raw::Cassandra(_) => self
                .cql_rows::<(scylla::value::CqlTimeuuid, i32, String)>(
                    "SELECT event_id, schema_version, payload FROM {ks}.user_events \
                     WHERE userid = ? ORDER BY event_id ASC",
                    (user_id,),
                )
                .await
                .into_iter()
                .map(|(id, version, payload)| (Uuid::from(id), version, payload))
                .collect(),
        }
    }

    /// Every row of `user_keys`, read past the service: `(user id, wrapped key)`.
    pub async fn raw_wrapped_keys(&self) -> Vec<(Uuid, Vec<u8>)> {
        match &self.raw {
            Raw::Embedded(_) => sqlite_rows(
                &self.sqlite(),
                "SELECT userid, wrapped FROM user_keys",
                [],
                |row| Ok((parse_uuid(&row.get::<_, String>(0)?), row.get(1)?)),
            ),
            Raw::Cassandra(_) => {
                self.cql_rows("SELECT userid, wrapped FROM {ks}.user_keys", ())
                    .await
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
                Kek::from_base64(&text).expect("a valid development KEK")
            }
            Raw::Cassandra(_) => Kek::from_base64(TEST_KEK).expect("a valid KEK"),
        };
        KeyRing::new(kek, Vec::new())
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
}

/// Every row a SQL query returns, mapped.
fn sqlite_rows<T>(
    connection: &rusqlite::Connection,
    sql: &str,
    params: impl rusqlite::Params,
    map: impl FnMut(&rusqlite::Row<'_>) -> rusqlite::Result<T>,
) -> Vec<T> {
    let mut statement = connection.prepare(sql).expect("prepare SQL");
    statement
        .query_map(params, map)
        .expect("query")
        .map(|row| row.expect("a row"))
        .collect()
}

fn parse_uuid(text: &str) -> Uuid {
    Uuid::parse_str(text).expect("a stored uuid")
}

//! Building and running the service: open the store, bind, serve until told to stop.

use crate::auth::jwt::JwtKeys;
use crate::auth::password::Passwords;
use crate::clock::EventClock;
use crate::config::{ServeSettings, StoreSettings};
use crate::http::{AppState, CorsOrigins, Limits, router};
use crate::secret::Secret;
use crate::store::cassandra::CassandraStore;
use crate::store::embedded::EmbeddedStore;
use crate::store::{SharedBackend, SharedStore, StoreError};
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::TcpListener;

/// Opens the configured backend; for Cassandra this also checks the schema and prepares
/// every statement.
pub async fn open_store(settings: &StoreSettings) -> Result<SharedBackend, StoreError> {
    Ok(match settings {
        StoreSettings::Embedded {
            data_dir,
            sync,
            kek,
        } => {
            let (data_dir, sync, kek) = (data_dir.clone(), *sync, kek.clone());
            let store = tokio::task::spawn_blocking(move || {
                EmbeddedStore::open_with(&data_dir, sync, &kek)
            })
            .await
            .map_err(|err| StoreError::internal(err.to_string()))??;
            tracing::info!(path = %store.path().display(), "opened embedded store");
            Arc::new(store)
        }
        StoreSettings::Cassandra(options) => {
            let store = CassandraStore::connect(options).await?;
            tracing::info!(contact_points = ?options.contact_points, keyspace = %options.keyspace, "connected to Cassandra");
            Arc::new(store)
        }
    })
}

/// A bound, ready-to-serve service.
pub struct Application {
    listener: TcpListener,
    state: AppState,
    limits: Limits,
    cors: CorsOrigins,
    /// The metrics listener, bound, when `/metrics` is served.
    metrics: Option<TcpListener>,
}

/// Why the service could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    /// The store could not be opened (or its schema is missing).
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The listen address could not be bound.
    #[error("cannot listen on {address}: {source}")]
    Bind {
        /// The address.
        address: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// Preparing the password decoy failed.
    #[error("{0}")]
    Passwords(String),
}

async fn bind(address: SocketAddr) -> Result<TcpListener, StartupError> {
    TcpListener::bind(address)
        .await
        .map_err(|source| StartupError::Bind { address, source })
}

/// The largest request head accepted (request line and headers): hyper's default is
/// about 400 KB, which 800 slow connections turned into 480 MB of buffers. 16 KiB
/// holds any header this API reads, a bearer token included, several times over.
pub const MAX_HEAD_BYTES: usize = 16 * 1024;

/// File descriptors kept for everything but client connections: the listeners, the
/// database files or the driver's connections, logs.
const RESERVED_FILES: usize = 128;

/// The soft limit on open files, from `/proc/self/limits` (Linux); `None` elsewhere.
fn open_file_limit() -> Option<usize> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

/// The connection cap: the configured one, but never so many that accepting would
/// run out of file descriptors (then the listener could not even accept a probe).
fn connection_cap(configured: usize) -> usize {
    match open_file_limit() {
        Some(files) => configured.min(files.saturating_sub(RESERVED_FILES).max(1)),
        None => configured,
    }
}

/// What a connection over the cap is told before it is closed.
static OVER_CAPACITY: std::sync::LazyLock<Vec<u8>> = std::sync::LazyLock::new(|| {
    let body = r#"{"type":"urn:killrvideo:problem:overloaded","title":"Service Unavailable","status":503,"detail":"too many connections"}"#;
    format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/problem+json\r\n\
         retry-after: 1\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
});

impl Application {
    /// Opens the store and binds the listener described by `settings`.
    pub async fn build(settings: ServeSettings) -> Result<Self, StartupError> {
        let store: SharedStore = open_store(&settings.store).await?;
        let secret = settings.jwt_secret.unwrap_or_else(|| {
            tracing::warn!(
                "KILLRVIDEO_JWT_SECRET is not set: using a random secret. Tokens will not survive a restart \
                 and other instances will reject them. Set KILLRVIDEO_JWT_SECRET in production!"
            );
            Secret::new(rand::random::<[u8; 32]>().to_vec())
        });
        let jwt = JwtKeys::new(secret.expose(), settings.jwt_ttl);
        let mut application = Self::with_store(settings.listen, store, jwt).await?;
        application.limits = settings.limits;
        application.cors = settings.cors_origins;
        application.state.trusted_proxies = Arc::new(settings.trusted_proxies);
        if let Some(address) = settings.metrics_listen {
            application.metrics = Some(bind(address).await?);
        }
        Ok(application)
    }

    /// Binds `listen` (port 0 picks a free port) around an already opened store.
    pub async fn with_store(
        listen: SocketAddr,
        store: SharedStore,
        jwt: JwtKeys,
    ) -> Result<Self, StartupError> {
        let passwords = tokio::task::spawn_blocking(Passwords::new)
            .await
            .map_err(|err| StartupError::Passwords(err.to_string()))?
            .map_err(|err| StartupError::Passwords(err.to_string()))?;
        Ok(Self {
            listener: bind(listen).await?,
            state: AppState {
                store,
                jwt: Arc::new(jwt),
                clock: Arc::new(EventClock::new()),
                passwords,
                turns: Arc::default(),
                trusted_proxies: Arc::default(),
            },
            limits: Limits::default(),
            cors: CorsOrigins::default(),
            metrics: None,
        })
    }

    /// Replaces the overload limits.
    pub fn with_limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// Allows these browser origins (CORS).
    pub fn with_cors(mut self, cors: CorsOrigins) -> Self {
        self.cors = cors;
        self
    }

    /// Believes `X-Forwarded-For` from these proxies.
    pub fn with_trusted_proxies(mut self, proxies: crate::http::client::TrustedProxies) -> Self {
        self.state.trusted_proxies = Arc::new(proxies);
        self
    }

    /// Serves `/metrics` on a listener of its own, bound now.
    pub async fn with_metrics(mut self, listen: SocketAddr) -> Result<Self, StartupError> {
        self.metrics = Some(bind(listen).await?);
        Ok(self)
    }

    /// The bound address.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// The bound metrics address, when `/metrics` is served.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics.as_ref().and_then(|l| l.local_addr().ok())
    }

    /// The password hashing of this instance (its counters are what the login
    /// throttle's tests read).
    pub fn passwords(&self) -> Passwords {
        self.state.passwords.clone()
    }

    /// Serves until `shutdown` completes, then stops accepting and lets in-flight
    /// requests finish.
    ///
    /// Connections are served by hyper directly rather than through `axum::serve`,
    /// for the settings a hostile client makes necessary: a head read timeout (it
    /// starts whenever a connection waits for a request, so it closes unfinished and
    /// trickled heads, silent connections and idle keep-alive connections alike), a
    /// cap on the head's size, and a cap on open connections. HTTP/1.1 only. Each request carries the
    /// peer address (`ConnectInfo`) for the login throttle.
    pub async fn run_until(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        use hyper_util::rt::{TokioIo, TokioTimer};
        use tower::ServiceExt;

        let Application {
            listener,
            state,
            limits,
            cors,
            metrics,
        } = self;
        tracing::info!(address = %listener.local_addr()?, store = state.store.backend(), "serving");
        if let Some(metrics) = metrics {
            tracing::info!(address = %metrics.local_addr()?, "serving /metrics");
            tokio::spawn(serve_metrics(metrics));
        }
        let app = router(state, limits, &cors);
        let cap = connection_cap(limits.max_connections);
        let connections = Arc::new(tokio::sync::Semaphore::new(cap));
        // HTTP/1.1 only: the header read timer starts as soon as a connection waits for
        // a request, so a silent connection is closed too. Detecting HTTP/2 (prior
        // knowledge, the only HTTP/2 without TLS) would mean waiting for a client's
        // first bytes with no timer at all; TLS and HTTP/2 are a proxy's to terminate.
        let mut builder = hyper::server::conn::http1::Builder::new();
        builder
            .timer(TokioTimer::new())
            .header_read_timeout(limits.header_read_timeout)
            .max_buf_size(MAX_HEAD_BYTES);
        let graceful = hyper_util::server::graceful::GracefulShutdown::new();
        tokio::pin!(shutdown);
        loop {
            let (stream, peer) = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok(accepted) => accepted,
                    Err(err) => {
                        // Out of file descriptors, or the peer gave up first: wait a
                        // moment rather than spin.
                        tracing::warn!(error = %err, "accept failed");
                        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                        continue;
                    }
                },
                () = &mut shutdown => break,
            };
            let Ok(permit) = Arc::clone(&connections).try_acquire_owned() else {
                crate::telemetry::connection_refused();
                let _ = stream.try_write(&OVER_CAPACITY);
                continue;
            };
            let _ = stream.set_nodelay(true);
            let service = app.clone().map_request(
                move |mut request: axum::extract::Request<hyper::body::Incoming>| {
                    request
                        .extensions_mut()
                        .insert(axum::extract::ConnectInfo(peer));
                    request
                },
            );
            let connection = builder.serve_connection(
                TokioIo::new(stream),
                hyper_util::service::TowerToHyperService::new(service),
            );
            let connection = graceful.watch(connection);
            let open = Arc::clone(&connections);
            tokio::spawn(async move {
                crate::telemetry::connections_open(cap - open.available_permits());
                if let Err(err) = connection.await {
                    tracing::debug!(%peer, error = %err, "connection ended with an error");
                }
                drop(permit);
                crate::telemetry::connections_open(cap - open.available_permits());
            });
        }
        drop(listener);
        graceful.shutdown().await;
        Ok(())
    }
}

/// `/metrics` in the Prometheus text format, on its own listener.
async fn serve_metrics(listener: TcpListener) {
    let handle = crate::telemetry::metrics_handle();
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || async move { handle.render() }),
    );
    if let Err(err) = axum::serve(listener, app).await {
        tracing::warn!(error = %err, "the metrics listener failed");
    }
}

/// Completes on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
    tracing::info!("shutdown signal received; draining in-flight requests");
}

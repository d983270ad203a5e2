//! Building and running the service: open the store, bind, serve until told to stop.

use crate::auth::jwt::JwtKeys;
use crate::auth::password::Passwords;
use crate::clock::EventClock;
use crate::config::{ServeSettings, StoreSettings};
use crate::http::{AppState, CorsOrigins, Limits, router};
use crate::store::cassandra::CassandraStore;
use crate::store::embedded::EmbeddedStore;
use crate::store::{SharedProjectionStore, SharedStore, StoreError};
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::TcpListener;

/// Opens the configured backend; for Cassandra this also checks the schema and prepares
/// every statement.
pub async fn open_store(settings: &StoreSettings) -> Result<SharedProjectionStore, StoreError> {
    Ok(match settings {
        StoreSettings::Embedded { data_dir } => {
            let data_dir = data_dir.clone();
            let store = tokio::task::spawn_blocking(move || EmbeddedStore::open(&data_dir))
                .await
                .map_err(|err| StoreError::Internal(err.to_string()))??;
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

impl Application {
    /// Opens the store and binds the listener described by `settings`.
    pub async fn build(settings: ServeSettings) -> Result<Self, StartupError> {
        let store: SharedStore = open_store(&settings.store).await?;
        let secret = settings.jwt_secret.unwrap_or_else(|| {
            tracing::warn!(
                "KILLRVIDEO_JWT_SECRET is not set: using a random secret. Tokens will not survive a restart \
                 and other instances will reject them. Set KILLRVIDEO_JWT_SECRET in production!"
            );
            rand::random::<[u8; 32]>().to_vec()
        });
        let jwt = JwtKeys::new(&secret, settings.jwt_ttl);
        let mut application = Self::with_store(settings.listen, store, jwt).await?;
        application.limits = settings.limits;
        application.cors = settings.cors_origins;
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
        let listener = TcpListener::bind(listen)
            .await
            .map_err(|source| StartupError::Bind {
                address: listen,
                source,
            })?;
        Ok(Self {
            listener,
            state: AppState {
                store,
                jwt: Arc::new(jwt),
                clock: Arc::new(EventClock::new()),
                passwords,
            },
            limits: Limits::default(),
            cors: CorsOrigins::default(),
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

    /// The bound address.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until `shutdown` completes, then stops accepting and lets in-flight
    /// requests finish.
    pub async fn run_until(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        tracing::info!(address = %self.listener.local_addr()?, store = self.state.store.backend(), "serving");
        axum::serve(self.listener, router(self.state, self.limits, &self.cors))
            .with_graceful_shutdown(shutdown)
            .await
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

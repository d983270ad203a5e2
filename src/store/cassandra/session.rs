//! The driver session: how it connects (token-aware, at LOCAL_QUORUM and LOCAL_SERIAL),
//! and the supervisor that swaps in a fresh one after an outage.

use super::CassandraOptions;
use crate::store::{NodeCount, StoreError};
use arc_swap::ArcSwap;
use scylla::client::execution_profile::ExecutionProfile;
use scylla::client::session::Session;
use scylla::client::session_builder::SessionBuilder;
use scylla::errors::{DbError, RequestAttemptError};
use scylla::policies::load_balancing::DefaultPolicy;
use scylla::policies::retry::{
    DefaultRetrySession, RequestInfo, RetryDecision, RetryPolicy, RetrySession,
};
use scylla::policies::speculative_execution::{Context, SpeculativeExecutionPolicy};
use scylla::statement::{Consistency, SerialConsistency};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Opens a session. Used by `serve`, `migrate` and the jobs alike.
pub async fn open_session(options: &CassandraOptions) -> Result<Session, StoreError> {
    let mut policy = DefaultPolicy::builder().token_aware(true);
    if let Some(dc) = &options.local_dc {
        policy = policy
            .prefer_datacenter(dc.clone())
            .permit_dc_failover(false);
    }
    // A coordinator that stops answering (paused, in a long GC, its network gone) keeps
    // its connections open, so the driver goes on choosing it for a third of the
    // requests on three replicas. An idempotent statement that has waited
    // `speculative_delay` is sent to the next replica as well, and the first answer
    // wins; non-idempotent ones (the first attempt of each lightweight transaction)
    // never are (docs/consistency.md, "Retries and idempotence").
    let refusals = Arc::new(Refusals::new());
    let speculation = Speculation {
        delay: options.speculative_delay,
        refusals: Arc::clone(&refusals),
    };
    let profile = ExecutionProfile::builder()
        .consistency(Consistency::LocalQuorum)
        .serial_consistency(Some(SerialConsistency::LocalSerial))
        .request_timeout(Some(options.request_timeout))
        .load_balancing_policy(policy.build())
        .speculative_execution_policy(Some(Arc::new(speculation)))
        .retry_policy(Arc::new(UnavailableIsFinal { refusals }))
        .build();
    SessionBuilder::new()
        .known_nodes(&options.contact_points)
        .connection_timeout(options.request_timeout)
        .default_execution_profile_handle(profile.into_handle())
        .build()
        .await
        .map_err(|err| {
            StoreError::unavailable(format!(
                "cannot connect to Cassandra at {}: {err}",
                options.contact_points.join(",")
            ))
        })
}

/// When a coordinator last answered `Unavailable`: that too few replicas of a partition
/// are alive for the consistency level, by its failure detector, which every
/// coordinator in the datacenter shares within a second or two. One per session,
/// shared by its retry and speculative execution policies.
#[derive(Debug)]
struct Refusals {
    epoch: Instant,
    /// Milliseconds since `epoch`, plus one; 0 for never.
    last: AtomicU64,
}

impl Refusals {
    /// For how long after an `Unavailable` statements are not raced.
    const MEMORY: Duration = Duration::from_secs(1);

    fn new() -> Self {
        Self {
            epoch: Instant::now(),
            last: AtomicU64::new(0),
        }
    }

    fn now(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX - 1) + 1
    }

    fn note(&self) {
        self.last.store(self.now(), Ordering::Relaxed);
    }

    fn recent(&self) -> bool {
        let last = self.last.load(Ordering::Relaxed);
        last != 0 && self.now().saturating_sub(last) < Self::MEMORY.as_millis() as u64
    }
}

/// The driver's default retries, except that an `Unavailable` is final: another
/// coordinator would give the same verdict, and trying one that has stopped answering
/// (a paused node) would hold the request for the whole request timeout. The price is
/// a node cut off from its peers alone: its share of requests is refused rather than
/// retried elsewhere.
#[derive(Debug)]
struct UnavailableIsFinal {
    refusals: Arc<Refusals>,
}

impl RetryPolicy for UnavailableIsFinal {
    fn new_session(&self) -> Box<dyn RetrySession> {
        Box::new(UnavailableIsFinalSession {
            refusals: Arc::clone(&self.refusals),
            default: DefaultRetrySession::new(),
        })
    }
}

struct UnavailableIsFinalSession {
    refusals: Arc<Refusals>,
    default: DefaultRetrySession,
}

impl RetrySession for UnavailableIsFinalSession {
    fn decide_should_retry(&mut self, request: RequestInfo) -> RetryDecision {
        if matches!(
            request.error,
            RequestAttemptError::DbError(DbError::Unavailable { .. }, _)
        ) {
            self.refusals.note();
            return RetryDecision::DontRetry;
        }
        self.default.decide_should_retry(request)
    }

    fn reset(&mut self) {
        self.default.reset();
    }
}

/// Speculative execution, paused for a second after an `Unavailable`. The driver
/// counts that answer among the errors another node might not give, and holds it back
/// until its next speculative attempt has run out of nodes: without the pause, every
/// refusal during an outage would take the whole speculative delay, or the request
/// timeout when the other nodes are silent, instead of a millisecond.
#[derive(Debug)]
struct Speculation {
    delay: Duration,
    refusals: Arc<Refusals>,
}

impl SpeculativeExecutionPolicy for Speculation {
    fn max_retry_count(&self, _: &Context) -> usize {
        if self.refusals.recent() { 0 } else { 2 }
    }

    fn retry_interval(&self, _: &Context) -> Duration {
        self.delay
    }
}

/// How often the supervisor checks that the session can reach the cluster.
pub(super) const SUPERVISION_PERIOD: Duration = Duration::from_secs(1);

/// Keeps the service's session usable after an outage. The driver reconnects by itself,
/// but with an exponential backoff that reaches 10 s, so after a long outage it can
/// take that long to notice the cluster is back. Every second, if a cheap query fails,
/// the supervisor tries to open a fresh session and swaps it in; prepared statements
/// carry their text, so the driver re-prepares them on the new connections. Ends when
/// the store is dropped.
pub(super) async fn supervise(
    session: std::sync::Weak<ArcSwap<Session>>,
    options: CassandraOptions,
) {
    let mut ticks = tokio::time::interval(SUPERVISION_PERIOD);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let Some(slot) = session.upgrade() else {
            return;
        };
        let current = slot.load_full();
        drop(slot);
        let probe = current.query_unpaged(
            "SELECT release_version FROM system.local WHERE key = 'local'",
            (),
        );
        let reachable = matches!(
            tokio::time::timeout(options.request_timeout, probe).await,
            Ok(Ok(_))
        );
        crate::telemetry::cassandra_session(reachable, node_count(&current).up);
        if reachable {
            continue;
        }
        // The cluster does not answer on this session. A new one either connects (the
        // cluster is back: swap) or fails fast (still down: try again next tick).
        if let Ok(Ok(fresh)) =
            tokio::time::timeout(options.request_timeout, open_session(&options)).await
        {
            let Some(slot) = session.upgrade() else {
                return;
            };
            slot.store(Arc::new(fresh));
            crate::telemetry::cassandra_session_replaced();
            tracing::info!("Cassandra reachable again; replaced the driver session");
        }
    }
}

/// The nodes the driver holds a connection to, of those it knows.
pub fn node_count(session: &Session) -> NodeCount {
    let state = session.get_cluster_state();
    let nodes = state.get_nodes_info();
    NodeCount {
        up: nodes.iter().filter(|node| node.is_connected()).count(),
        known: nodes.len(),
    }
}

//! The driver session: how it connects (token-aware, at LOCAL_QUORUM and LOCAL_SERIAL),
//! and the supervisor that swaps in a fresh one after an outage.

use super::CassandraOptions;
use crate::store::StoreError;
use arc_swap::ArcSwap;
use scylla::client::execution_profile::ExecutionProfile;
use scylla::client::session::Session;
use scylla::client::session_builder::SessionBuilder;
use scylla::policies::load_balancing::DefaultPolicy;
use scylla::statement::{Consistency, SerialConsistency};
use std::sync::Arc;
use std::time::Duration;

/// Opens a session. Used by `serve`, `migrate` and the jobs alike.
pub async fn open_session(options: &CassandraOptions) -> Result<Session, StoreError> {
    let mut policy = DefaultPolicy::builder().token_aware(true);
    if let Some(dc) = &options.local_dc {
        policy = policy
            .prefer_datacenter(dc.clone())
            .permit_dc_failover(false);
    }
    let profile = ExecutionProfile::builder()
        .consistency(Consistency::LocalQuorum)
        .serial_consistency(Some(SerialConsistency::LocalSerial))
        .request_timeout(Some(options.request_timeout))
        .load_balancing_policy(policy.build())
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
        crate::telemetry::cassandra_session(reachable, nodes_up(&current));
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

/// The nodes the driver holds a connection to.
pub fn nodes_up(session: &Session) -> usize {
    session
        .get_cluster_state()
        .get_nodes_info()
        .iter()
        .filter(|node| node.is_connected())
        .count()
}

//! Liveness and readiness.

use super::AppState;
use super::error::ApiError;
use axum::Json;
use axum::extract::State;
use serde_json::{Value, json};
use std::time::Duration;

/// How long `/readyz` waits for the store before calling it unreachable.
pub const READINESS_TIMEOUT: Duration = Duration::from_millis(1500);

/// `/healthz`: the process is up.
#[utoipa::path(get, path = "/healthz", tag = "health", responses((status = 200, description = "Alive")))]
pub async fn healthz() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

/// `/readyz`: the store answers. 503 with the reason otherwise, never a hang. On
/// Cassandra it names how many nodes the driver sees up (`nodes`), and needs a quorum
/// of replicas to answer.
#[utoipa::path(
    get, path = "/readyz", tag = "health",
    responses((status = 200, description = "Ready"), (status = 503, description = "Store unreachable"))
)]
pub async fn readyz(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    let backend = state.store.backend();
    let answer = tokio::time::timeout(READINESS_TIMEOUT, state.store.ping()).await;
    // Counted after the ping, which is what brings news of a node that went away.
    let nodes = state.store.nodes();
    let seen = nodes.map_or_else(String::new, |n| {
        format!(" ({} of {} nodes up)", n.up, n.known)
    });
    match answer {
        Ok(Ok(())) => {
            let mut body = json!({"status": "ready", "store": backend});
            if let Some(nodes) = nodes {
                body["nodes"] = json!(nodes);
            }
            Ok(Json(body))
        }
        Ok(Err(err)) => Err(ApiError::NotReady(format!("{backend} store: {err}{seen}"))),
        Err(_) => Err(ApiError::NotReady(format!(
            "{backend} store did not answer within {} ms{seen}",
            READINESS_TIMEOUT.as_millis()
        ))),
    }
}

//! `serve`: the HTTP API until SIGTERM or Ctrl-C.

use super::CliError;
use crate::config::ServeArgs;
use crate::startup::{Application, shutdown_signal};

/// Serves until told to stop, then drains in-flight requests.
pub async fn run(args: ServeArgs) -> Result<(), CliError> {
    let settings = args.settings()?;
    let application = Application::build(settings).await.map_err(|err| {
        tracing::error!(error = %err, "cannot start");
        CliError::Failed(format!("cannot start: {err}"))
    })?;
    application
        .run_until(shutdown_signal())
        .await
        .map_err(|err| CliError::Failed(format!("server failed: {err}")))
}

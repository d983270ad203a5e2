//! `serve`: the HTTP API until SIGTERM or Ctrl-C.

use super::CliError;
use crate::config::ServeArgs;
use crate::startup::{Application, StartupError, shutdown_signal};
use crate::store::StoreError;

/// Serves until told to stop, then drains in-flight requests.
pub async fn run(args: ServeArgs) -> Result<(), CliError> {
    let settings = args.settings()?;
    let application = Application::build(settings)
        .await
        .map_err(|err| match err {
            StartupError::Store(err @ StoreError::WrongKey(_)) => CliError::from(err),
            err => {
                tracing::error!(error = %err, "cannot start");
                CliError::Failed(format!("cannot start: {err}"))
            }
        })?;
    application
        .run_until(shutdown_signal())
        .await
        .map_err(|err| CliError::Failed(format!("server failed: {err}")))
}

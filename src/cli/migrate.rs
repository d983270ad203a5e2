//! `migrate`: the schema, created or brought up to date.

use super::CliError;
use crate::config::{StoreArgs, StoreSettings};
use crate::store::cassandra::migrate;
use crate::store::embedded::EmbeddedStore;

/// Applies every pending migration (the embedded store applies them when it opens).
pub async fn run(args: StoreArgs) -> Result<(), CliError> {
    let failed = |err: crate::store::StoreError| {
        CliError::Failed(format!("migrate failed: {}", err.report()))
    };
    match args.settings()? {
        StoreSettings::Embedded {
            data_dir,
            sync,
            kek,
        } => {
            let store = EmbeddedStore::open_with(&data_dir, sync, &kek).map_err(failed)?;
            println!("embedded store at {} is migrated", store.path().display());
        }
        StoreSettings::Cassandra(options) => {
            let report = migrate::migrate(&options).await.map_err(failed)?;
            println!(
                "keyspace {}: applied {:?}, already applied {:?}; schema {} agreed by the {} nodes up ({} known)",
                options.keyspace,
                report.applied,
                report.already_applied,
                report.schema_version,
                report.nodes.up,
                report.nodes.known
            );
        }
    }
    Ok(())
}

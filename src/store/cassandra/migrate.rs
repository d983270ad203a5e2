//! Schema migrations for Cassandra: the numbered CQL files of `migrations/cassandra/`,
//! compiled into the binary (never read relative to the working directory), applied in
//! order and recorded in `schema_migrations`.
//!
//! Safe to run twice or from two processes at once: every statement is `IF NOT EXISTS`,
//! and a lease taken with a lightweight transaction lets one process apply at a time, so
//! two coordinators never race to create the same table with different ids.

use super::{CassandraOptions, LwtAnswer, classify, node_count, open_session, outcome_unknown};
use crate::store::schema::validate_identifier;
use crate::store::{NodeCount, StoreError};
use scylla::client::session::Session;
use scylla::statement::unprepared::Statement;
use scylla::value::CqlValue;
use std::time::Duration;
use uuid::Uuid;

/// One numbered migration file.
#[derive(Debug, Clone, Copy)]
pub struct Migration {
    /// Its number, the order of application.
    pub version: i32,
    /// File name, recorded for humans.
    pub name: &'static str,
    /// The CQL, `;`-separated.
    pub cql: &'static str,
}

/// Every migration this build knows, in order.
pub const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "0001_keyspace.cql",
        cql: include_str!("../../../migrations/cassandra/0001_keyspace.cql"),
    },
    Migration {
        version: 2,
        name: "0002_users.cql",
        cql: include_str!("../../../migrations/cassandra/0002_users.cql"),
    },
    Migration {
        version: 3,
        name: "0003_user_credentials.cql",
        cql: include_str!("../../../migrations/cassandra/0003_user_credentials.cql"),
    },
    Migration {
        version: 4,
        name: "0004_user_events.cql",
        cql: include_str!("../../../migrations/cassandra/0004_user_events.cql"),
    },
    Migration {
        version: 5,
        name: "0005_projection_checkpoints.cql",
        cql: include_str!("../../../migrations/cassandra/0005_projection_checkpoints.cql"),
    },
    Migration {
        version: 6,
        name: "0006_login_failures.cql",
        cql: include_str!("../../../migrations/cassandra/0006_login_failures.cql"),
    },
    Migration {
        version: 7,
        name: "0007_user_search.cql",
        cql: include_str!("../../../migrations/cassandra/0007_user_search.cql"),
    },
    Migration {
        version: 8,
        name: "0008_leases.cql",
        cql: include_str!("../../../migrations/cassandra/0008_leases.cql"),
    },
    Migration {
        version: 9,
        name: "0009_login_budgets.cql",
        cql: include_str!("../../../migrations/cassandra/0009_login_budgets.cql"),
    },
    Migration {
        version: 10,
        name: "0010_user_keys.cql",
        cql: include_str!("../../../migrations/cassandra/0010_user_keys.cql"),
    },
];

/// How long a migration lease lives if its holder dies without releasing it.
const LEASE_TTL_SECONDS: i32 = 120;

/// Splits a file into statements: `--` comments dropped, `;` ends a statement.
pub fn statements(cql: &str) -> Vec<String> {
    let without_comments: String = cql
        .lines()
        .map(|line| line.split_once("--").map_or(line, |(code, _)| code))
        .collect::<Vec<_>>()
        .join("\n");
    without_comments
        .split(';')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

fn ddl_error(err: impl std::fmt::Display) -> StoreError {
    StoreError::internal(format!("schema statement failed: {err}"))
}

/// How long one schema statement (DDL, or the lease's lightweight transaction) may
/// take. A schema change is acknowledged only once the new schema has settled, which on
/// a busy node takes seconds: far longer than the request path's timeout
/// (`KILLRVIDEO_CASSANDRA_REQUEST_TIMEOUT`, 2 s by default), which made `migrate`
/// fail on a loaded server.
const SCHEMA_STATEMENT_TIMEOUT: Duration = Duration::from_secs(30);

/// A schema statement (of the migration, a rebuild's target table, or a clean-up
/// dropping a keyspace), with the schema statement timeout.
pub(crate) fn schema_statement(cql: impl Into<String>) -> Statement {
    let mut statement = Statement::new(cql.into());
    statement.set_request_timeout(Some(SCHEMA_STATEMENT_TIMEOUT));
    statement
}

async fn run(session: &Session, cql: &str) -> Result<(), StoreError> {
    session
        .query_unpaged(schema_statement(cql), ())
        .await
        .map(|_| ())
        .map_err(|err| match classify(err) {
            unavailable @ StoreError::Unavailable { .. } => unavailable,
            other => ddl_error(format!("`{cql}`: {}", other.report())),
        })
}

/// Drops a keyspace and everything in it, if it exists: the benchmark's and the tests'
/// clean-up, never the service's.
pub async fn drop_keyspace(session: &Session, keyspace: &str) -> Result<(), StoreError> {
    validate_identifier(keyspace)
        .map_err(|rule| StoreError::internal(format!("keyspace `{keyspace}`: {rule}")))?;
    run(session, &format!("DROP KEYSPACE IF EXISTS {keyspace}")).await
}

/// What `migrate` did.
#[derive(Debug, Default)]
pub struct MigrationReport {
    /// Versions applied by this run.
    pub applied: Vec<i32>,
    /// Versions found already applied.
    pub already_applied: Vec<i32>,
    /// The schema version every reachable node agreed on at the end.
    pub schema_version: Uuid,
    /// The nodes the session saw up, of those it knew, when they agreed.
    pub nodes: NodeCount,
}

/// A bookkeeping table's id, the same in every `migrate` process: those two tables are
/// created before the lease that serialises the rest, and two coordinators creating
/// one table at the same moment would otherwise give it two ids, which Cassandra 5.0's
/// schema merge does not reconcile (its data is then written under an id that other
/// nodes do not know).
fn bookkeeping_table_id(keyspace: &str, table: &str) -> Uuid {
    Uuid::new_v5(
        &Uuid::NAMESPACE_OID,
        format!("killrvideo-users/{keyspace}.{table}").as_bytes(),
    )
}

/// Creates the keyspace and applies every pending migration.
pub async fn migrate(options: &CassandraOptions) -> Result<MigrationReport, StoreError> {
    validate_identifier(&options.keyspace).map_err(|accepts| {
        StoreError::internal(format!(
            "invalid keyspace `{}`: expected {accepts}",
            options.keyspace
        ))
    })?;
    let session = open_session(options).await?;
    let ks = &options.keyspace;
    for statement in statements(MIGRATIONS[0].cql) {
        run(
            &session,
            &statement
                .replace("{keyspace}", ks)
                .replace("{replication}", &options.replication),
        )
        .await?;
    }
    // `CREATE KEYSPACE IF NOT EXISTS` answers at once, without a schema change the
    // driver would wait on, when another process created the keyspace through another
    // coordinator; the next statement can then reach a node that has not heard of it
    // yet ("keyspace does not exist", caught by the cluster test in CI). Agreement first.
    agree_on_schema(&session).await?;
    run(
        &session,
        &format!(
            "CREATE TABLE IF NOT EXISTS {ks}.schema_migrations \
             (version int PRIMARY KEY, name text, applied_at timestamp) WITH id = {}",
            bookkeeping_table_id(ks, "schema_migrations")
        ),
    )
    .await?;
    run(
        &session,
        &format!(
            "CREATE TABLE IF NOT EXISTS {ks}.schema_migration_lease \
             (name text PRIMARY KEY, owner uuid) WITH id = {}",
            bookkeeping_table_id(ks, "schema_migration_lease")
        ),
    )
    .await?;

    // `IF NOT EXISTS` answers at once when another process created the table, possibly
    // through another coordinator that has not told ours yet: the lease's LWT below
    // then met "table schema_migration_lease does not exist" (a race the cluster test
    // caught in CI). Agreement first.
    agree_on_schema(&session).await?;

    let owner = Uuid::new_v4();
    acquire_lease(&session, ks, owner).await?;
    let outcome = apply_pending(&session, ks).await;
    release_lease(&session, ks, owner).await;
    let mut report = outcome?;
    // The driver waits for agreement after each schema change it makes, but not after
    // a run that changed nothing, nor for changes another process made: success means
    // every node the session reaches holds the same schema, so the service that starts
    // next prepares its statements against tables every coordinator knows.
    report.schema_version = agree_on_schema(&session).await?;
    report.nodes = node_count(&session);
    Ok(report)
}

/// Waits until every node the session reaches holds the same schema; its version.
async fn agree_on_schema(session: &Session) -> Result<Uuid, StoreError> {
    tokio::time::timeout(SCHEMA_AGREEMENT_TIMEOUT, session.await_schema_agreement())
        .await
        .map_err(|_| {
            StoreError::unavailable(format!(
                "the nodes did not agree on the schema within {} s",
                SCHEMA_AGREEMENT_TIMEOUT.as_secs()
            ))
        })?
        .map_err(|err| StoreError::unavailable(format!("schema agreement: {err}")))
}

/// How long `migrate` waits for the nodes to agree on the schema. Three
/// nodes on two cores took about 5 s after a DDL (../shared/notes/cluster.md).
const SCHEMA_AGREEMENT_TIMEOUT: Duration = Duration::from_secs(60);

async fn acquire_lease(session: &Session, ks: &str, owner: Uuid) -> Result<(), StoreError> {
    let claim = format!(
        "INSERT INTO {ks}.schema_migration_lease (name, owner) VALUES ('migrate', ?) IF NOT EXISTS USING TTL {LEASE_TTL_SECONDS}"
    );
    let deadline = tokio::time::Instant::now() + Duration::from_secs(LEASE_TTL_SECONDS as u64 + 10);
    loop {
        match session
            .query_unpaged(schema_statement(claim.as_str()), (owner,))
            .await
        {
            Ok(result) => {
                // A claim whose earlier attempt applied unseen finds our own name.
                if LwtAnswer::read(result)?.applied_or_already("owner", &CqlValue::Uuid(owner)) {
                    return Ok(());
                }
            }
            // Several processes claiming at once contend in Paxos, and a round can time
            // out with its outcome unknown: claiming again settles it.
            Err(err) if outcome_unknown(&err) => {
                tracing::info!(error = %err, "the migration lease claim timed out; claiming again");
            }
            Err(err) => return Err(classify(err)),
        }
        if tokio::time::Instant::now() > deadline {
            return Err(ddl_error(
                "another migrate holds the lease; gave up waiting",
            ));
        }
        tracing::info!("another migrate is running; waiting for its lease");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

async fn release_lease(session: &Session, ks: &str, owner: Uuid) {
    let release =
        format!("DELETE FROM {ks}.schema_migration_lease WHERE name = 'migrate' IF owner = ?");
    if let Err(err) = session
        .query_unpaged(schema_statement(release), (owner,))
        .await
    {
        tracing::warn!(error = %err, "could not release the migration lease; it expires by itself");
    }
}

async fn applied_versions(session: &Session, ks: &str) -> Result<Vec<i32>, StoreError> {
    let result = session
        .query_unpaged(format!("SELECT version FROM {ks}.schema_migrations"), ())
        .await
        .map_err(|err| match classify(err) {
            unavailable @ StoreError::Unavailable { .. } => unavailable,
            other => StoreError::SchemaMissing(format!(
                "keyspace `{ks}` is not migrated ({other}); run `killrvideo-users migrate`"
            )),
        })?;
    let rows = result.into_rows_result().map_err(ddl_error)?;
    let mut versions = Vec::new();
    for row in rows.rows::<(i32,)>().map_err(ddl_error)? {
        versions.push(row.map_err(ddl_error)?.0);
    }
    versions.sort_unstable();
    Ok(versions)
}

async fn apply_pending(session: &Session, ks: &str) -> Result<MigrationReport, StoreError> {
    let done = applied_versions(session, ks).await?;
    let mut report = MigrationReport::default();
    for migration in MIGRATIONS {
        if done.contains(&migration.version) {
            report.already_applied.push(migration.version);
            continue;
        }
        if migration.version > 1 {
            for statement in statements(migration.cql) {
                // Tables are created in the configured keyspace.
                session
                    .use_keyspace(ks, true)
                    .await
                    .map_err(|err| StoreError::unavailable(err.to_string()))?;
                run(session, &statement).await?;
            }
        }
        session
            .query_unpaged(
                schema_statement(format!("INSERT INTO {ks}.schema_migrations (version, name, applied_at) VALUES (?, ?, toTimestamp(now()))")),
                (migration.version, migration.name),
            )
            .await
            .map_err(classify)?;
        tracing::info!(
            version = migration.version,
            name = migration.name,
            "applied migration"
        );
        report.applied.push(migration.version);
    }
    Ok(report)
}

/// Fails unless every migration of this build is recorded: `serve` refuses to start on
/// an outdated schema instead of failing on every request.
pub async fn ensure_migrated(session: &Session, ks: &str) -> Result<(), StoreError> {
    validate_identifier(ks).map_err(|accepts| {
        StoreError::SchemaMissing(format!("invalid keyspace `{ks}`: {accepts}"))
    })?;
    let done = applied_versions(session, ks).await?;
    let missing: Vec<&str> = MIGRATIONS
        .iter()
        .filter(|m| !done.contains(&m.version))
        .map(|m| m.name)
        .collect();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(StoreError::SchemaMissing(format!(
            "keyspace `{ks}` lacks migrations {}; run `killrvideo-users migrate`",
            missing.join(", ")
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schema_statements_outwait_the_request_timeout() {
        let statement = schema_statement("CREATE TABLE IF NOT EXISTS ks.t (k int PRIMARY KEY)");
        assert_eq!(
            statement.get_request_timeout(),
            Some(SCHEMA_STATEMENT_TIMEOUT)
        );
        assert!(SCHEMA_STATEMENT_TIMEOUT > Duration::from_secs(2));
    }

    #[test]
    fn statements_drop_comments_and_split() {
        let parsed = statements(
            "-- a; comment\nCREATE TABLE a (x int); -- trailing\n\nCREATE TABLE b (y int);\n",
        );
        assert_eq!(parsed, ["CREATE TABLE a (x int)", "CREATE TABLE b (y int)"]);
    }

    #[test]
    fn migrations_are_numbered_in_order() {
        for (index, migration) in MIGRATIONS.iter().enumerate() {
            assert_eq!(migration.version as usize, index + 1);
            assert!(
                migration
                    .name
                    .starts_with(&format!("{:04}_", migration.version))
            );
            assert!(!statements(migration.cql).is_empty());
        }
    }
}

-- Short leases for decisions that span users (see migrations/cassandra/0008_leases.cql).
CREATE TABLE IF NOT EXISTS leases (
    name       TEXT PRIMARY KEY,
    owner      TEXT    NOT NULL,
    expires_at INTEGER NOT NULL -- microseconds
) WITHOUT ROWID;

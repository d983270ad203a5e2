-- The embedded store's schema: the same three tables as on Cassandra. SQLite has no
-- per-cell write times, so each projected column carries its own `*_wt` (microseconds)
-- beside it; the shared projection code merges cells with them exactly as Cassandra
-- does with WRITETIME.

CREATE TABLE IF NOT EXISTS user_events (
    userid         TEXT    NOT NULL,
    event_time     INTEGER NOT NULL, -- microseconds, the time in event_id
    event_id       TEXT    NOT NULL, -- v1 time UUID
    event_type     TEXT    NOT NULL,
    schema_version INTEGER NOT NULL,
    payload        TEXT    NOT NULL,
    actor          TEXT    NOT NULL,
    request_id     TEXT,
    PRIMARY KEY (userid, event_time, event_id)
) WITHOUT ROWID;

CREATE TABLE IF NOT EXISTS users (
    userid             TEXT PRIMARY KEY,
    email              TEXT,    email_wt           INTEGER,
    firstname          TEXT,    firstname_wt       INTEGER,
    lastname           TEXT,    lastname_wt        INTEGER,
    account_status     TEXT,    account_status_wt  INTEGER,
    created_date       INTEGER, created_date_wt    INTEGER, -- milliseconds
    last_login_date    INTEGER, last_login_date_wt INTEGER, -- milliseconds
    last_event_id      TEXT,    last_event_id_wt   INTEGER
) WITHOUT ROWID;

CREATE TABLE IF NOT EXISTS user_credentials (
    email          TEXT PRIMARY KEY, -- lowercased: uniqueness is case-insensitive
    password       TEXT    NOT NULL, -- argon2id PHC string
    userid         TEXT    NOT NULL,
    account_locked INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;

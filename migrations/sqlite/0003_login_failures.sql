-- Failed logins per email key, for the temporary lockout (src/domain/login.rs).
CREATE TABLE IF NOT EXISTS login_failures (
    email     TEXT    NOT NULL,
    failed_at INTEGER NOT NULL -- microseconds
);
CREATE INDEX IF NOT EXISTS login_failures_by_email ON login_failures (email, failed_at);

-- Password guesses reserved per email key and scope (a client address, or `*` for all
-- addresses): the login throttle (src/domain/login.rs). A row says nothing once its
-- window has passed (`expires_at`), and reservations sweep such rows away, so the table
-- holds about one window's worth. It replaces `login_failures`, which counted only
-- failures, after the password check, and never expired.
CREATE TABLE IF NOT EXISTS login_budgets (
    email        TEXT    NOT NULL,
    scope        TEXT    NOT NULL,
    used         INTEGER NOT NULL,
    pending      INTEGER NOT NULL, -- reserved, not settled yet
    window_start INTEGER NOT NULL, -- microseconds
    expires_at   INTEGER NOT NULL, -- microseconds
    PRIMARY KEY (email, scope)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS login_budgets_by_expiry ON login_budgets (expires_at);
DROP TABLE IF EXISTS login_failures;
